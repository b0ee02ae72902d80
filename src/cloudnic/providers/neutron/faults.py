"""Neutron's error replies and transport failures, translated into cloudnic's errors.

Neutron answers a failed request with ``{"NeutronError": {"type", "message", "detail"}}``;
the ``type`` (``IpAddressAlreadyAllocated``, ``OverQuota``, ``NetworkNotFound`` ...) is
what the mapping keys on. Messages name the object; no credential ever appears (the
transport errors quote keystoneauth's text, which carries URLs but never a token or
password).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from cloudnic.errors import (
    AddressExhausted,
    AddressUnavailable,
    CNIError,
    InvalidConfig,
    NotFound,
    ProviderError,
    TryAgainLater,
)

_QUOTA_RE = re.compile(r"resources?:\s*\[([^\]]*)\]")
IP_IN_USE = frozenset({"IpAddressAlreadyAllocated", "IpAddressInUse"})
MAC_IN_USE = frozenset({"MacAddressInUse"})


@dataclass(frozen=True)
class Fault:
    """A non-2xx reply from Neutron."""

    status: int
    type: str = ""
    message: str = ""
    request_id: str = ""

    @classmethod
    def parse(cls, status: int, text: str, request_id: str = "") -> Fault:
        kind, message = "", ""
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            err = body.get("NeutronError")
            if isinstance(err, dict):
                kind = str(err.get("type") or "")
                message = str(err.get("message") or "")
            elif isinstance(err, str):
                message = err
            elif isinstance(body.get("error"), dict):        # keystone / some proxies
                message = str(body["error"].get("message") or "")
            elif isinstance(body.get("message"), str):
                message = body["message"]
        if not message:
            message = " ".join(text.split())[:300] if text else f"HTTP {status}"
        return cls(status=status, type=kind, message=message, request_id=request_id)

    @property
    def details(self) -> str:
        parts = [f"HTTP {self.status}"]
        if self.type:
            parts.append(self.type)
        if self.request_id:
            parts.append(self.request_id)
        return ", ".join(parts)

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


def quota_resources(message: str) -> list[str]:
    """``"Quota exceeded for resources: ['port']."`` -> ``["port"]``."""
    m = _QUOTA_RE.search(message)
    if not m:
        return []
    return [x.strip().strip("'\"") for x in m.group(1).split(",") if x.strip()]


def translate(fault: Fault, *, what: str, endpoint: str, project: str = "") -> CNIError:
    """The cloudnic error for ``fault``; ``what`` names the operation and object."""
    s, kind, msg, det = fault.status, fault.type, fault.message, fault.details
    if kind in IP_IN_USE:
        return AddressUnavailable(f"{what}: {msg}; choose another address or release the port holding it", det)
    if kind in MAC_IN_USE:
        return AddressUnavailable(f"{what}: {msg}; choose another MAC or release the port holding it", det)
    if kind == "IpAddressGenerationFailure":
        return AddressExhausted(f"{what}: {msg}; add a subnet or widen the allocation pools", det)
    if kind == "OverQuota":
        res = ", ".join(quota_resources(msg)) or "port"
        proj = f"project {project}" if project else "the project"
        return TryAgainLater(f"{what}: Neutron {res} quota of {proj} is exhausted; delete unused "
                             f"{res}s or raise the quota (openstack quota set --{res}s N)", det + f": {msg}")
    if s == 404 or kind.endswith("NotFound"):
        return NotFound(f"{what}: {msg}", det)
    if s in (401, 403):
        return ProviderError(f"{what}: Neutron at {endpoint} refused the request (HTTP {s}: {msg}); check the "
                             "provider.auth_type credentials and the role of the user or application credential",
                             det)
    if s == 400:
        return InvalidConfig(f"{what}: Neutron refused the request as invalid: {msg}", det)
    if s == 409:
        return TryAgainLater(f"{what}: Neutron reported a conflict: {msg}", det)
    if fault.retryable:
        return TryAgainLater(f"{what}: Neutron at {endpoint} is failing (HTTP {s}: {msg}); retry later", det)
    return ProviderError(f"{what}: Neutron at {endpoint} answered HTTP {s}: {msg}", det)


def classify_transport(exc: BaseException) -> tuple[str, bool]:
    """``(kind, request_never_sent)`` for a keystoneauth/requests transport exception.

    ``request_never_sent`` is True only when the TCP connection itself was refused or
    timed out, so even a POST may be retried safely.
    """
    from keystoneauth1 import exceptions as ksa

    never_sent = any(_is_connect_failure(e) for e in exception_chain(exc))
    if isinstance(exc, ksa.SSLError):
        return "tls", False
    if isinstance(exc, ksa.ConnectTimeout):
        return ("connect_timeout" if never_sent else "timeout"), never_sent
    if isinstance(exc, ksa.ConnectFailure):
        return ("refused" if never_sent else "connection"), never_sent
    if isinstance(exc, ksa.UnknownConnectionError):
        return "connection", never_sent
    return type(exc).__name__, never_sent


def transport_error(exc: BaseException, kind: str, *, what: str, endpoint: str) -> CNIError:
    text = str(exc)
    if kind == "tls":
        return ProviderError(f"{what}: TLS to {endpoint} failed; check provider.ca_file (or, for a lab only, "
                             "provider.insecure)", text)
    if kind in ("timeout", "connect_timeout"):
        return TryAgainLater(f"{what}: Neutron at {endpoint} did not answer in time; retry later "
                             "(provider.timeout_s sets the limit)", text)
    return TryAgainLater(f"{what}: cannot reach Neutron at {endpoint}; is the server up?", text)


def exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes, contexts and wrapped reasons (bounded), outermost first."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo and len(seen) < 32:
        e = todo.pop()
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        todo.extend([e.__cause__, e.__context__, getattr(e, "reason", None), *e.args])
    return seen


def _is_connect_failure(e: BaseException) -> bool:
    try:
        from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
    except ImportError:  # pragma: no cover - urllib3 comes with requests
        return False
    if isinstance(e, NewConnectionError | ConnectTimeoutError):
        return True
    return isinstance(e, ConnectionRefusedError)
