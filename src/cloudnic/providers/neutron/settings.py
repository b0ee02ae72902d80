"""The ``[provider]`` table of a ``type = "neutron"`` agent config.

Every key is checked here and a bad one is named as ``provider.<key>`` with what to
do about it. Secrets come only from files that nobody but the owner can read; the
secret text is held in a :class:`Secret` whose ``repr``/``str`` never show it, so a
logged or printed :class:`NeutronSettings` carries no secret.
"""

from __future__ import annotations

import os
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cloudnic.errors import InvalidConfig

AUTH_TYPES = ("noauth", "password", "v3applicationcredential", "cloud")
PORT_READY = ("plugged", "active")
INTERFACES = ("public", "internal", "admin")
OWNERSHIP = ("auto", "tags", "names")
_SECRET_KEYS = {"password": "password_file", "application_credential_secret": "application_credential_secret_file"}


class Secret:
    """A secret read from a file. It never shows itself in repr, str or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


NO_SECRET = Secret("")


@dataclass(frozen=True, repr=False)
class NeutronSettings:
    type: str = "neutron"
    auth_type: str = "noauth"
    endpoint: str = ""                 # the network endpoint (override); "" = from host/port or the catalog
    project_id: str = ""
    cloud: str = ""
    auth_url: str = ""
    username: str = ""
    password_file: str = ""
    user_domain_name: str = "Default"
    project_name: str = ""
    project_domain_name: str = "Default"
    application_credential_id: str = ""
    application_credential_secret_file: str = ""
    region_name: str = ""
    interface: str = "public"
    ca_file: str = ""
    insecure: bool = False
    timeout_s: float = 30.0
    retries: int = 3
    device_owner: str = "compute:cloudnic"
    port_ready: str = "plugged"
    active_timeout_s: float = 30.0
    # client behaviour (optional keys)
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 40
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0
    cache_ttl_s: float = 30.0
    # after Keystone refuses the credentials (401): no new token request for this long, doubling per refusal
    auth_backoff_base_s: float = 30.0
    auth_backoff_max_s: float = 900.0
    ownership: str = "auto"            # auto: tags when the server has them, else names
    # secrets, read from the *_file keys
    password: Secret = field(default=NO_SECRET, compare=False)
    application_credential_secret: Secret = field(default=NO_SECRET, compare=False)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_KEYS:
                value = "***" if value else ""
            shown.append(f"{f.name}={value!r}")
        return f"NeutronSettings({', '.join(shown)})"

    __str__ = __repr__


_STR_KEYS = ("type", "auth_type", "endpoint", "project_id", "cloud", "auth_url", "username", "password_file",
             "user_domain_name", "project_name", "project_domain_name", "application_credential_id",
             "application_credential_secret_file", "region_name", "interface", "ca_file", "device_owner",
             "port_ready", "ownership", "host", "protocol", "path_prefix")
_FLOAT_KEYS = {"timeout_s": (0.1, 600.0), "active_timeout_s": (0.1, 3600.0), "rate_limit_per_s": (0.1, 10000.0),
               "backoff_base_s": (0.0, 60.0), "backoff_max_s": (0.0, 600.0), "cache_ttl_s": (0.0, 3600.0),
               "auth_backoff_base_s": (0.0, 3600.0), "auth_backoff_max_s": (0.0, 86400.0)}
_INT_KEYS = {"retries": (0, 10), "rate_limit_burst": (1, 100000), "port": (1, 65535)}
_BOOL_KEYS = ("insecure",)
KNOWN_KEYS = frozenset(_STR_KEYS) | frozenset(_FLOAT_KEYS) | frozenset(_INT_KEYS) | frozenset(_BOOL_KEYS)


def settings_from_table(table: Mapping[str, Any]) -> NeutronSettings:
    """Validate the ``[provider]`` table and read the secret files it names."""
    for key in table:
        if key in _SECRET_KEYS:
            raise InvalidConfig(f"provider.{key}: secrets are not accepted inline; put it in a file readable only "
                                f"by the agent (mode 0600) and set provider.{_SECRET_KEYS[key]} to its path")
        if key not in KNOWN_KEYS:
            raise InvalidConfig(f"provider.{key}: unknown key for the neutron provider; known keys: "
                                f"{', '.join(sorted(KNOWN_KEYS))}")
    values: dict[str, Any] = {}
    for key in _STR_KEYS:
        if key in table:
            values[key] = _str(table, key)
    for key, (lo, hi) in _FLOAT_KEYS.items():
        if key in table:
            values[key] = _number(table, key, lo, hi)
    for key, (lo, hi) in _INT_KEYS.items():
        if key in table:
            values[key] = _int(table, key, lo, hi)
    for key in _BOOL_KEYS:
        if key in table:
            if not isinstance(table[key], bool):
                raise InvalidConfig(f"provider.{key}: expected true or false, got {table[key]!r}")
            values[key] = table[key]

    if values.get("type", "neutron") != "neutron":
        raise InvalidConfig(f'provider.type: expected "neutron", got {values["type"]!r}')
    _choice(values, "auth_type", AUTH_TYPES)
    _choice(values, "port_ready", PORT_READY)
    _choice(values, "interface", INTERFACES)
    _choice(values, "ownership", OWNERSHIP)
    if "device_owner" in values and not values["device_owner"]:
        raise InvalidConfig('provider.device_owner: must not be empty (the default is "compute:cloudnic")')
    if values.get("backoff_max_s", 5.0) < values.get("backoff_base_s", 0.2):
        raise InvalidConfig("provider.backoff_max_s: must be at least provider.backoff_base_s")
    if values.get("auth_backoff_max_s", 900.0) < values.get("auth_backoff_base_s", 30.0):
        raise InvalidConfig("provider.auth_backoff_max_s: must be at least provider.auth_backoff_base_s")

    values["endpoint"] = _endpoint(values)
    for key in ("host", "protocol", "path_prefix", "port"):
        values.pop(key, None)
    auth = values.get("auth_type", "noauth")
    _check_auth(auth, values)
    if values.get("auth_url"):
        _url(values["auth_url"], "auth_url")
    if values.get("ca_file"):
        if values.get("insecure"):
            raise InvalidConfig("provider.ca_file: set either provider.ca_file or provider.insecure = true, not both")
        if not os.path.isfile(values["ca_file"]):
            raise InvalidConfig(f"provider.ca_file: {values['ca_file']} is not a readable file; give the path "
                                "of the PEM bundle that signed the API's certificate")
    if values.get("password_file"):
        values["password"] = Secret(read_secret_file(values["password_file"], "password_file"))
    if values.get("application_credential_secret_file"):
        values["application_credential_secret"] = Secret(
            read_secret_file(values["application_credential_secret_file"], "application_credential_secret_file"))
    return NeutronSettings(**values)


def read_secret_file(path: str, key: str) -> str:
    """The first line of a secret file that only its owner may read."""
    if not os.path.isabs(path):
        raise InvalidConfig(f"provider.{key}: {path!r} must be an absolute path")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise InvalidConfig(f"provider.{key}: cannot open {path} ({e.strerror}); create it with mode 0600, "
                            "owned by the user the agent runs as") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidConfig(f"provider.{key}: {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise InvalidConfig(f"provider.{key}: {path} has mode {mode:04o}, so other users can read or change "
                                f"the secret; run: chmod 600 {path}")
        if st.st_uid not in (0, os.geteuid()):
            raise InvalidConfig(f"provider.{key}: {path} is owned by uid {st.st_uid}, not by the agent's user "
                                f"(uid {os.geteuid()}) or root; run: chown {os.geteuid()} {path}")
        with os.fdopen(fd, "r", encoding="utf-8", closefd=True) as fh:
            fd = -1
            text = fh.read(65536)
    finally:
        if fd >= 0:
            os.close(fd)
    secret = text.split("\n", 1)[0].rstrip("\r")
    if not secret:
        raise InvalidConfig(f"provider.{key}: {path} is empty; write the secret on its first line")
    return secret


def _check_auth(auth: str, v: dict[str, Any]) -> None:
    def need(*keys: str) -> None:
        for k in keys:
            if not v.get(k):
                raise InvalidConfig(f'provider.{k}: required when provider.auth_type = "{auth}"')

    if auth == "noauth":
        need("project_id")
        if not v.get("endpoint"):
            raise InvalidConfig('provider.endpoint: required when provider.auth_type = "noauth" (e.g. '
                                '"http://127.0.0.1:9696"), or set provider.host (and port, protocol, path_prefix)')
    elif auth == "password":
        need("auth_url", "username", "password_file")
        if not (v.get("project_name") or v.get("project_id")):
            raise InvalidConfig('provider.project_name: required when provider.auth_type = "password" '
                                "(or set provider.project_id)")
    elif auth == "v3applicationcredential":
        need("auth_url", "application_credential_id", "application_credential_secret_file")


def _endpoint(v: dict[str, Any]) -> str:
    endpoint = v.get("endpoint", "")
    host = v.get("host", "")
    if endpoint and (host or "protocol" in v or "path_prefix" in v or "port" in v):
        raise InvalidConfig("provider.endpoint: set either provider.endpoint or provider.host/port/protocol/"
                            "path_prefix, not both")
    if host:
        protocol = v.get("protocol") or "http"
        if protocol not in ("http", "https"):
            raise InvalidConfig(f'provider.protocol: expected "http" or "https", got {protocol!r}')
        prefix = v.get("path_prefix", "")
        if prefix and not prefix.startswith("/"):
            raise InvalidConfig(f"provider.path_prefix: must start with '/', got {prefix!r}")
        hostpart = f"[{host}]" if ":" in host and not host.startswith("[") else host
        port = v.get("port")
        endpoint = f"{protocol}://{hostpart}{f':{port}' if port else ''}{prefix}"
    elif "protocol" in v or "path_prefix" in v or "port" in v:
        raise InvalidConfig("provider.host: required when provider.port, protocol or path_prefix is set")
    if not endpoint:
        return ""
    _url(endpoint, "endpoint" if not host else "host")
    endpoint = endpoint.rstrip("/")
    if endpoint.endswith("/v2.0"):
        endpoint = endpoint[: -len("/v2.0")]
    return endpoint


def _url(url: str, key: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidConfig(f"provider.{key}: {url!r} is not an http(s) URL with a host "
                            '(e.g. "http://127.0.0.1:9696")')
    try:
        _ = parsed.port
    except ValueError:
        raise InvalidConfig(f"provider.{key}: {url!r} has an invalid port") from None
    if parsed.query or parsed.fragment:
        raise InvalidConfig(f"provider.{key}: {url!r} must not carry a query or fragment")


def _choice(v: dict[str, Any], key: str, allowed: tuple[str, ...]) -> None:
    if key in v and v[key] not in allowed:
        raise InvalidConfig(f"provider.{key}: {v[key]!r} is not one of {', '.join(allowed)}")


def _str(t: Mapping[str, Any], key: str) -> str:
    value = t[key]
    if not isinstance(value, str):
        raise InvalidConfig(f"provider.{key}: expected a string, got {type(value).__name__} {value!r}")
    return value.strip()


def _number(t: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    value = t[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidConfig(f"provider.{key}: expected a number, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidConfig(f"provider.{key}: {value} is outside {lo:g}..{hi:g}")
    return float(value)


def _int(t: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = t[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfig(f"provider.{key}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidConfig(f"provider.{key}: {value} is outside {lo}..{hi}")
    return value
