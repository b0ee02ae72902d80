"""What a plugin prints on stdout besides a result: error objects and the VERSION answer."""

from __future__ import annotations

import json
from typing import Any

from cloudnic.errors import CNIError

from .version import LATEST, SUPPORTED


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def error_dict(exc: CNIError, cni_version: str) -> dict[str, Any]:
    """``{cniVersion, code, msg[, details]}``; ``details`` is omitted when empty, like libcni."""
    out: dict[str, Any] = {
        "cniVersion": cni_version if isinstance(cni_version, str) and cni_version else LATEST,
        "code": exc.code,
        "msg": exc.msg,
    }
    if exc.details:
        out["details"] = exc.details
    return out


def error_object(exc: CNIError, cni_version: str) -> bytes:
    """The spec error object as compact JSON bytes, without a trailing newline."""
    return _dump(error_dict(exc, cni_version))


def version_object(cni_version: str) -> bytes:
    """The VERSION answer: ``{cniVersion, supportedVersions}``."""
    v = cni_version if isinstance(cni_version, str) and cni_version else LATEST
    return _dump({"cniVersion": v, "supportedVersions": list(SUPPORTED)})
