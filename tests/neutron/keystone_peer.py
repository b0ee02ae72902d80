"""The real Keystone of the keystone tests: Debian 12's ``keystone`` (Zed) on loopback, made by
``scripts/keystone-peer.sh``, as an object a session fixture hands to tests.

``KeystonePeer.up()`` runs the script (a fresh SQLite database, fernet and credential keys, ``keystone-manage
bootstrap``, a project ``cloudnic`` with a user ``cloudnic`` (member role) and an application credential of that
user, both made through the API) and reads back what it made from ``<dir>/credentials.json``. ``counting`` is an
``HttpCounter`` in front of Keystone, so a test can give the code under test ``counted_auth_url`` and count the
token requests (``"POST /v3/auth/tokens"``) or take Keystone away (``counting.down()``) without stopping it.

Env: ``KEYSTONE_CI_DIR`` (/var/tmp/cloudnic-keystone), ``KEYSTONE_PORT`` (15000); ``CLOUDNIC_NEUTRON_KEEP=1`` reuses
a Keystone that ``scripts/keystone-peer.sh up`` already started and leaves it running (development only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from http_counter import HttpCounter

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "keystone-peer.sh"
DEFAULT_DIR = Path(os.environ.get("KEYSTONE_CI_DIR", "/var/tmp/cloudnic-keystone"))
DEFAULT_PORT = int(os.environ.get("KEYSTONE_PORT", "15000"))
KEEP = os.environ.get("CLOUDNIC_NEUTRON_KEEP") == "1"


def token_fingerprint(token: str) -> str:
    """How keystoneauth's DEBUG request log shows a token: ``X-Auth-Token: {SHA256}<hex>``."""
    return "{SHA256}" + hashlib.sha256(token.encode()).hexdigest()


@dataclass
class KeystonePeer:
    """A running Keystone made by keystone-peer.sh, its credentials, and a counting proxy in front of it."""

    directory: Path = DEFAULT_DIR
    port: int = DEFAULT_PORT
    creds: dict[str, Any] = field(default_factory=dict, repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    counting: HttpCounter = field(init=False)

    def __post_init__(self) -> None:
        self.counting = HttpCounter(f"http://127.0.0.1:{self.port}")

    # ---- life cycle --------------------------------------------------------------------------------------------
    @property
    def auth_url(self) -> str:
        """Keystone itself (``http://127.0.0.1:<port>/v3``)."""
        return f"http://127.0.0.1:{self.port}/v3"

    @property
    def counted_auth_url(self) -> str:
        """Keystone through the counting proxy."""
        return f"{self.counting.url}/v3"

    @property
    def log_path(self) -> Path:
        return self.directory / "log" / "keystone.log"

    def script(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KEYSTONE_CI_DIR=str(self.directory), KEYSTONE_PORT=str(self.port))
        proc = subprocess.run(
            ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/keystone-peer.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def running(self) -> bool:
        try:
            with urllib.request.urlopen(self.auth_url, timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def up(self) -> KeystonePeer:
        started = time.monotonic()
        if not (KEEP and self.running() and (self.directory / "credentials.json").is_file()):
            self.script("up")
        self.creds = json.loads((self.directory / "credentials.json").read_text())
        self.timings = self._read_timings()
        self.timings["fixture"] = round(time.monotonic() - started, 1)
        self.counting.start()
        return self

    def down(self) -> None:
        self.counting.close()
        if not KEEP:
            self.script("down", timeout=120)

    def _read_timings(self) -> dict[str, float]:
        path = self.directory / "timings"
        out: dict[str, float] = {}
        for line in path.read_text().splitlines() if path.exists() else []:
            key, _, value = line.partition("=")
            out[key] = float(value.rstrip("s"))
        return out

    # ---- credentials -------------------------------------------------------------------------------------------
    @property
    def secrets(self) -> list[str]:
        """Every secret the peer made (passwords, the application credential's secret)."""
        c = self.creds
        return [c["password"], c["admin"]["password"], c["application_credential_secret"]]

    def token(self, *, admin: bool = False, password: str | None = None) -> tuple[int, str, dict[str, Any]]:
        """``(status, X-Subject-Token, body)`` of a project-scoped password token for the ``cloudnic`` user (or
        admin), straight from Keystone (not counted). A refused password gives its status and an empty token."""
        who = self.creds["admin"] if admin else self.creds
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": who["username"],
                            "domain": {"id": "default"},
                            "password": who["password"] if password is None else password,
                        }
                    },
                },
                "scope": {"project": {"name": who["project_name"], "domain": {"id": "default"}}},
            }
        }
        req = urllib.request.Request(
            f"{self.auth_url}/auth/tokens",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.headers.get("X-Subject-Token", ""), json.load(resp)
        except urllib.error.HTTPError as e:
            return e.code, "", {}

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """A request to Keystone's API (``path`` under /v3) with an admin token; the decoded JSON (or None)."""
        status, token, _ = self.token(admin=True)
        assert status == 201, f"admin token: HTTP {status}"
        req = urllib.request.Request(
            self.auth_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-Auth-Token": token},
            method=method,
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
        return json.loads(data) if data else None

    def validate(self, token: str) -> dict[str, Any]:
        """Keystone's own view of ``token`` (``GET /v3/auth/tokens`` with an admin token): its ``token`` object."""
        status, admin_token, _ = self.token(admin=True)
        assert status == 201, f"admin token: HTTP {status}"
        req = urllib.request.Request(
            f"{self.auth_url}/auth/tokens", headers={"X-Auth-Token": admin_token, "X-Subject-Token": token}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            body: dict[str, Any] = json.load(resp)["token"]
        return body

    @contextlib.contextmanager
    def catalog_service(self, service_type: str, url: str, interface: str = "public") -> Iterator[str]:
        """Register a service of ``service_type`` with one ``interface`` endpoint at ``url`` in RegionOne; yields the
        service id and deletes the service (and so its endpoint) afterwards."""
        svc = self.admin("POST", "/services", {"service": {"type": service_type, "name": f"cnn-{service_type}"}})
        sid = svc["service"]["id"]
        try:
            self.admin(
                "POST",
                "/endpoints",
                {"endpoint": {"service_id": sid, "interface": interface, "url": url, "region_id": "RegionOne"}},
            )
            yield sid
        finally:
            self.admin("DELETE", f"/services/{sid}")
