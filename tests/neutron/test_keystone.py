"""The neutron provider's Keystone auth paths against a real Keystone: Debian 12's ``keystone`` (Zed) on loopback
(``scripts/keystone-peer.sh``), with the real neutron-server (noauth) of the ``neutron`` fixture as the network
endpoint.

Every test drives the real provider (``settings_from_table`` + ``NeutronProvider``) with secrets in 0600 files. A
counting proxy in front of Keystone shows the token requests; another in front of Neutron shows the API calls. The
whole test logs at DEBUG into a buffer, and no secret (passwords, the application credential's secret, the tokens
Keystone issued) may appear in it, nor in stdout/stderr.

Neutron runs with ``auth_strategy = noauth``: it accepts a request carrying ``X-Auth-Token`` and ignores the token
(noauth's ``NoauthFakeProjectId`` makes every such request admin in project ``fake_project_id``). So these tests prove
that cloudnic gets a real token from Keystone and sends it (keystoneauth's DEBUG log shows each Neutron request's
``X-Auth-Token`` as a SHA-256 fingerprint), not that Neutron validates it.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from keystone_peer import KeystonePeer, token_fingerprint
from peer import NeutronPeer, Project

from cloudnic.errors import CNIError, ProviderError, TryAgainLater
from cloudnic.providers.base import PortSpec
from cloudnic.providers.neutron import NeutronProvider, settings_from_table

pytestmark = pytest.mark.neutron

CLUSTER = "cnn-ks-cluster"
NODE = "cnn-ks-node"
OWNER = (f"cloudnic:cluster={CLUSTER}", f"cloudnic:node={NODE}")


# ---- fixtures --------------------------------------------------------------------------------------------------


@dataclass
class Watch:
    """Everything logged (root logger, DEBUG) during one test, and the secrets that must not be in it."""

    buffer: io.StringIO = field(default_factory=io.StringIO)
    secrets: set[str] = field(default_factory=set)

    def text(self) -> str:
        return self.buffer.getvalue()

    def keep_out(self, *values: str) -> None:
        self.secrets.update(v for v in values if v)

    def lines(self, *needles: str) -> list[str]:
        return [line for line in self.text().splitlines() if all(n in line for n in needles)]


@pytest.fixture
def watch(keystone: KeystonePeer, capfd: pytest.CaptureFixture[str]) -> Iterator[Watch]:
    """DEBUG logging of the whole test into a buffer; at the end no secret may be in it (nor in stdout/stderr)."""
    w = Watch()
    w.keep_out(*keystone.secrets)
    handler = logging.StreamHandler(w.buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    # the libraries too, whatever an earlier in-process caller set (the agent's log setup pins them at INFO)
    libs = [logging.getLogger(name) for name in ("keystoneauth", "openstack", "urllib3")]
    old_levels = [(logger, logger.level) for logger in (root, *libs)]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for lib in libs:
        lib.setLevel(logging.NOTSET)
    try:
        yield w
    finally:
        root.removeHandler(handler)
        for logger, level in old_levels:
            logger.setLevel(level)
    out, err = capfd.readouterr()
    text = w.text()
    assert "keystoneauth" in text, "the DEBUG capture saw nothing of keystoneauth"
    leaked = [s for s in w.secrets if s in text or s in out or s in err]
    assert not leaked, f"{len(leaked)} secret(s) appeared in the log output"


def secret_file(directory: Path, name: str, value: str) -> str:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return str(path)


def password_auth(keystone: KeystonePeer, tmp_path: Path, *, password: str | None = None) -> dict[str, Any]:
    c = keystone.creds
    return {
        "auth_type": "password",
        "auth_url": keystone.counted_auth_url,
        "username": c["username"],
        "password_file": secret_file(tmp_path, f"password-{secrets.token_hex(3)}", password or c["password"]),
        "user_domain_name": c["user_domain_name"],
        "project_name": c["project_name"],
        "project_domain_name": c["project_domain_name"],
    }


def appcred_auth(keystone: KeystonePeer, tmp_path: Path, *, secret: str | None = None) -> dict[str, Any]:
    c = keystone.creds
    return {
        "auth_type": "v3applicationcredential",
        "auth_url": keystone.counted_auth_url,
        "application_credential_id": c["application_credential_id"],
        "application_credential_secret_file": secret_file(
            tmp_path, f"ac-secret-{secrets.token_hex(3)}", secret or c["application_credential_secret"]
        ),
    }


def make(endpoint: str | None, auth: dict[str, Any], **extra: Any) -> NeutronProvider:
    table: dict[str, Any] = {"type": "neutron", "timeout_s": 60, **auth, **extra}
    if endpoint:
        table["endpoint"] = endpoint
    return NeutronProvider(settings_from_table(table))


def no_secret_in(err: CNIError, *values: str) -> None:
    text = f"{err} {err.msg} {err.details} {err!r}"
    for v in values:
        assert v not in text, "a secret appears in the error"


def token_requests(keystone: KeystonePeer) -> int:
    return keystone.counting.counts().get("POST /v3/auth/tokens", 0)


def port_lifecycle(provider: NeutronProvider, neutron: NeutronPeer, project: Project, cidr: str) -> str:
    """Create, read, list and delete one port through the provider; returns the port's id."""
    net = project.network(cidr=cidr)
    assert provider.describe().tags
    (port,) = provider.create_ports(PortSpec(network_id=net.network_name, name="cnn-ks/pod-a", tags=OWNER))
    assert port.network_id == net.network_id and set(OWNER) <= set(port.tags)
    got = provider.get_port(port.id)
    assert got is not None and (got.id, got.mac, got.fixed_ips) == (port.id, port.mac, port.fixed_ips)
    # noauth ignores the token: the port lands in noauth's fake project, not in Keystone's "cloudnic" project
    assert project.net.get_port(port.id).project_id == "fake_project_id"
    assert [p.id for p in provider.list_owned_ports(CLUSTER, NODE)] == [port.id]
    provider.delete_ports([port.id])
    assert provider.get_port(port.id) is None
    counts = neutron.counting_endpoint.counts()
    assert counts.get("POST /v2.0/ports") == 1
    assert neutron.counting_endpoint.total("DELETE", f"/v2.0/ports/{port.id}") == 1
    return port.id


def assert_token_used(keystone: KeystonePeer, provider: NeutronProvider, neutron: NeutronPeer, watch: Watch) -> str:
    """The provider's token is a real Keystone token for the expected user, and every Neutron request carried it."""
    token = provider.conn.session.get_token()  # cached: no new request
    watch.keep_out(token)
    assert token_requests(keystone) == 1, keystone.counting.counts()
    neutron_requests = watch.lines("REQ: curl", neutron.counting_endpoint.url)
    assert neutron_requests, "keystoneauth logged no request to Neutron"
    fingerprint = token_fingerprint(token)
    assert all(f"X-Auth-Token: {fingerprint}" in line for line in neutron_requests)
    return token


# ---- the peer itself ---------------------------------------------------------------------------------------------


def test_keystone_peer_is_debians_keystone_on_loopback(keystone: KeystonePeer) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(keystone.auth_url, timeout=10) as resp:
        version = json.load(resp)["version"]
    assert version["id"] == "v3.14" and version["status"] == "stable"  # Zed
    listeners = subprocess.run(
        ["ss", "-Hltn", f"sport = :{keystone.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listeners[3::5] == [f"127.0.0.1:{keystone.port}"], listeners
    dpkg = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "keystone"], capture_output=True, text=True)
    assert dpkg.stdout.startswith("2:22."), dpkg.stdout
    status, token, body = keystone.token()
    assert status == 201 and token and body["token"]["project"]["name"] == "cloudnic"
    assert keystone.token(password="cnn-not-the-password")[0] == 401
    assert keystone.timings.get("total", 0) < 180, keystone.timings


def test_noauth_neutron_accepts_a_request_carrying_a_keystone_token(
    keystone: KeystonePeer, neutron: NeutronPeer
) -> None:
    import json
    import urllib.request

    _, token, _ = keystone.token()
    for value in (token, "cnn-not-a-token"):  # noauth does not look at it
        req = urllib.request.Request(f"{neutron.host_endpoint}/v2.0/networks?limit=1", headers={"X-Auth-Token": value})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200 and "networks" in json.load(resp)


# ---- password -----------------------------------------------------------------------------------------------------


def test_password_auth_gets_one_token_and_drives_a_port_through_neutron(
    keystone: KeystonePeer, neutron: NeutronPeer, neutron_project: Project, watch: Watch, tmp_path: Path
) -> None:
    provider = make(neutron.counting_endpoint.url, password_auth(keystone, tmp_path))
    try:
        port_lifecycle(provider, neutron, neutron_project, "10.77.61.0/24")
        for _ in range(3):
            assert provider.health().ok
        token = assert_token_used(keystone, provider, neutron, watch)
        seen = keystone.validate(token)
        assert seen["user"]["name"] == "cloudnic" and seen["project"]["id"] == keystone.creds["project_id"]
        assert seen["methods"] == ["password"]
        assert "member" in {r["name"] for r in seen["roles"]}
    finally:
        provider.close()


def test_wrong_password_is_a_provider_error_that_names_no_secret(
    keystone: KeystonePeer, neutron: NeutronPeer, watch: Watch, tmp_path: Path
) -> None:
    wrong = f"cnn-wrong-{secrets.token_urlsafe(12)}"
    watch.keep_out(wrong)
    provider = make(neutron.counting_endpoint.url, password_auth(keystone, tmp_path, password=wrong))
    try:
        with pytest.raises(ProviderError) as info:
            provider.describe()
    finally:
        provider.close()
    assert info.value.code == 103
    assert keystone.counted_auth_url in info.value.msg and "401" in info.value.details
    no_secret_in(info.value, wrong, *keystone.secrets)
    assert token_requests(keystone) == 1  # a refused password is not retried
    assert neutron.counting_endpoint.total() == 0  # nothing went to Neutron without a token


# ---- application credential ---------------------------------------------------------------------------------------


def test_application_credential_gets_one_token_and_drives_a_port_through_neutron(
    keystone: KeystonePeer, neutron: NeutronPeer, neutron_project: Project, watch: Watch, tmp_path: Path
) -> None:
    provider = make(neutron.counting_endpoint.url, appcred_auth(keystone, tmp_path))
    try:
        port_lifecycle(provider, neutron, neutron_project, "10.77.62.0/24")
        assert provider.health().ok
        token = assert_token_used(keystone, provider, neutron, watch)
        seen = keystone.validate(token)
        assert seen["methods"] == ["application_credential"]
        assert seen["application_credential"]["id"] == keystone.creds["application_credential_id"]
        assert seen["user"]["name"] == "cloudnic" and seen["project"]["name"] == "cloudnic"
    finally:
        provider.close()


def test_wrong_application_credential_secret_is_a_provider_error(
    keystone: KeystonePeer, neutron: NeutronPeer, watch: Watch, tmp_path: Path
) -> None:
    wrong = f"cnn-wrong-{secrets.token_urlsafe(12)}"
    watch.keep_out(wrong)
    provider = make(neutron.counting_endpoint.url, appcred_auth(keystone, tmp_path, secret=wrong))
    try:
        with pytest.raises(ProviderError) as info:
            provider.describe()
    finally:
        provider.close()
    assert info.value.code == 103 and "401" in info.value.details
    no_secret_in(info.value, wrong, *keystone.secrets)
    assert token_requests(keystone) == 1 and neutron.counting_endpoint.total() == 0


# ---- Keystone unreachable -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["password", "v3applicationcredential"])
def test_unreachable_keystone_is_try_again_later(
    auth: str, keystone: KeystonePeer, neutron: NeutronPeer, watch: Watch, tmp_path: Path
) -> None:
    table = password_auth(keystone, tmp_path) if auth == "password" else appcred_auth(keystone, tmp_path)
    keystone.counting.down()  # connections to the auth URL are refused
    provider = make(neutron.counting_endpoint.url, table, retries=1, backoff_base_s=0.05, backoff_max_s=0.1)
    try:
        with pytest.raises(TryAgainLater) as info:
            provider.describe()
    finally:
        provider.close()
    assert info.value.code == 11
    no_secret_in(info.value, *keystone.secrets)
    assert neutron.counting_endpoint.total() == 0


def test_keystone_answering_503_is_try_again_later(
    keystone: KeystonePeer, neutron: NeutronPeer, watch: Watch, tmp_path: Path
) -> None:
    keystone.counting.fail(503)
    provider = make(neutron.counting_endpoint.url, password_auth(keystone, tmp_path), retries=0)
    try:
        with pytest.raises(TryAgainLater) as info:
            provider.describe()
    finally:
        provider.close()
    assert info.value.code == 11 and "503" in info.value.details
    assert neutron.counting_endpoint.total() == 0


def test_neutron_refusing_the_token_gets_one_fresh_token_then_provider_error(
    keystone: KeystonePeer, neutron: NeutronPeer, watch: Watch, tmp_path: Path
) -> None:
    provider = make(neutron.counting_endpoint.url, password_auth(keystone, tmp_path))
    try:
        assert provider.health().ok
        first = provider.conn.session.get_token()
        watch.keep_out(first)
        neutron.counting_endpoint.reset()
        neutron.counting_endpoint.fail(401)  # as a Neutron with keystonemiddleware answers a revoked token
        health = provider.health()
        assert not health.ok and "HTTP 401" in health.detail, health.detail
        # keystoneauth invalidated the token, fetched a new one and sent the request once more
        assert token_requests(keystone) == 2
        assert neutron.counting_endpoint.counts() == {"GET /v2.0/networks": 2}
        with pytest.raises(ProviderError) as info:  # what an ADD would get
            provider.client.request("list_networks", "GET", "/networks", what="list networks")
        assert info.value.code == 103 and "HTTP 401" in info.value.msg
        second = provider.conn.session.get_token()
        watch.keep_out(second)
        assert second != first
    finally:
        provider.close()


def test_unreachable_keystone_error_names_keystone_not_neutron(
    keystone: KeystonePeer, neutron: NeutronPeer, tmp_path: Path
) -> None:
    keystone.counting.down()
    provider = make(neutron.counting_endpoint.url, password_auth(keystone, tmp_path), retries=0)
    try:
        with pytest.raises(TryAgainLater) as info:
            provider.describe()
    finally:
        provider.close()
    assert "Keystone" in info.value.msg or keystone.counting.url in info.value.msg, info.value.msg


def test_unreachable_keystone_with_an_unversioned_auth_url_is_try_again_later(
    keystone: KeystonePeer, neutron: NeutronPeer, tmp_path: Path
) -> None:
    keystone.counting.down()
    table = dict(password_auth(keystone, tmp_path), auth_url=keystone.counting.url)
    provider = make(neutron.counting_endpoint.url, table, retries=0)
    try:
        with pytest.raises(CNIError) as info:
            provider.describe()
    finally:
        provider.close()
    assert info.value.code == 11, f"{info.value.code}: {info.value.msg}"


# ---- clouds.yaml and the catalog ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["password", "v3applicationcredential"])
def test_clouds_yaml_cloud_gets_one_token_and_drives_a_port(
    kind: str,
    keystone: KeystonePeer,
    neutron: NeutronPeer,
    neutron_project: Project,
    watch: Watch,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = keystone.creds
    if kind == "password":
        auth = (
            f"      username: {c['username']}\n      password: {c['password']}\n"
            f"      project_name: {c['project_name']}\n      user_domain_name: {c['user_domain_name']}\n"
            f"      project_domain_name: {c['project_domain_name']}\n"
        )
    else:
        auth = (
            f"      application_credential_id: {c['application_credential_id']}\n"
            f"      application_credential_secret: {c['application_credential_secret']}\n"
        )
    clouds = secret_file(
        tmp_path,
        "clouds.yaml",
        "clouds:\n  cnn-keystone:\n"
        f"    auth_type: {kind}\n    identity_api_version: 3\n    region_name: RegionOne\n"
        f"    auth:\n      auth_url: {keystone.counted_auth_url}\n{auth}",
    )
    for name in [k for k in os.environ if k.startswith("OS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", clouds)
    provider = make(neutron.counting_endpoint.url, {"auth_type": "cloud", "cloud": "cnn-keystone"})
    try:
        port_lifecycle(provider, neutron, neutron_project, "10.77.63.0/24" if kind == "password" else "10.77.64.0/24")
        token = assert_token_used(keystone, provider, neutron, watch)
        assert keystone.validate(token)["user"]["name"] == "cloudnic"
    finally:
        provider.close()


def test_network_endpoint_from_the_keystone_catalog(
    keystone: KeystonePeer, neutron: NeutronPeer, watch: Watch, tmp_path: Path
) -> None:
    with keystone.catalog_service("network", neutron.counting_endpoint.url):
        provider = make(None, password_auth(keystone, tmp_path), region_name="RegionOne", interface="public")
        try:
            health = provider.health()
            assert health.ok, health.detail
            assert provider.client.display_endpoint == f"{neutron.counting_endpoint.url}/v2.0"
            assert neutron.counting_endpoint.total("GET", "/v2.0/networks") == 1
            assert_token_used(keystone, provider, neutron, watch)
        finally:
            provider.close()


# ---- refused credentials: no re-sending during a back-off (account lockout) ---------------------------------------


@pytest.mark.parametrize("auth", ["password", "v3applicationcredential"])
def test_refused_credentials_are_not_sent_again_until_the_back_off_ends(
    auth: str, keystone: KeystonePeer, neutron: NeutronPeer, watch: Watch, tmp_path: Path
) -> None:
    wrong = f"cnn-wrong-{secrets.token_urlsafe(12)}"
    watch.keep_out(wrong)
    table = (
        password_auth(keystone, tmp_path, password=wrong)
        if auth == "password"
        else appcred_auth(keystone, tmp_path, secret=wrong)
    )
    provider = make(neutron.counting_endpoint.url, table, auth_backoff_base_s=4, auth_backoff_max_s=8)
    try:
        errors = []
        for _ in range(10):  # an agent under load: every ADD, STATUS and pool refill asks
            with pytest.raises(ProviderError) as info:
                provider.describe()
            errors.append(info.value)
            assert not provider.health().ok
        assert token_requests(keystone) == 1, keystone.counting.counts()
        last = errors[-1]
        assert last.code == 103 and keystone.counted_auth_url in last.msg and "not sent again before" in last.msg
        who = (
            f'user "{keystone.creds["username"]}"'
            if auth == "password"
            else f"application credential {keystone.creds['application_credential_id']}"
        )
        assert who in last.msg, last.msg
        for err in errors:
            no_secret_in(err, wrong, *keystone.secrets)
        # the period ends (2..4 s, jittered): one more attempt, refused, and a longer period (4..8 s)
        wait = provider.client.auth.blocked_for()
        assert 0 < wait <= 4
        time.sleep(wait + 0.05)
        with pytest.raises(ProviderError):
            provider.describe()
        assert token_requests(keystone) == 2
        assert 2 < provider.client.auth.blocked_for() <= 8
        assert neutron.counting_endpoint.total() == 0  # nothing went to Neutron without a token
    finally:
        provider.close()
    # new credentials (a reloaded config builds a new provider): asked at once, and they work
    good = make(
        neutron.counting_endpoint.url,
        password_auth(keystone, tmp_path) if auth == "password" else appcred_auth(keystone, tmp_path),
    )
    try:
        assert good.health().ok
        assert token_requests(keystone) == 3
        watch.keep_out(good.conn.session.get_token())
    finally:
        good.close()
