"""CNI spec versions: what cloudnic speaks and how a config's version is negotiated.

A config names its version with ``cniVersion`` and, since spec 1.1.0, may also list
``cniVersions``; the highest version both sides support wins (libcni does the same).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cloudnic.errors import IncompatibleVersion, InvalidConfig

from ._text import got, show, type_name

SUPPORTED: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED[-1]

_VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,8})(?:\.(0|[1-9][0-9]{0,8}))?(?:\.(0|[1-9][0-9]{0,8}))?")
_SUPPORTED_TEXT = ", ".join(SUPPORTED)


def parse(v: str) -> tuple[int, int, int]:
    """``"1.0.0"`` -> ``(1, 0, 0)``; ``"1"`` and ``"1.0"`` are accepted as libcni does.

    Raises ``IncompatibleVersion`` for a string that is not a version at all.
    """
    m = _VERSION_RE.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise IncompatibleVersion(
            f"CNI version {show(v)} is not a version number; use one of {_SUPPORTED_TEXT}"
        )
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def _at_least(v: str, minimum: tuple[int, int, int]) -> bool:
    return parse(v) >= minimum


def supports_check(v: str) -> bool:
    """CHECK exists since spec 0.4.0."""
    return _at_least(v, (0, 4, 0))


def supports_prev_result_on_del(v: str) -> bool:
    """DEL receives ``prevResult`` since spec 0.4.0."""
    return _at_least(v, (0, 4, 0))


def supports_status_gc(v: str) -> bool:
    """STATUS and GC exist since spec 1.1.0."""
    return _at_least(v, (1, 1, 0))


def _check_single(value: Any) -> str:
    if value is None or value == "":
        raise IncompatibleVersion(
            f'config has no "cniVersion" (libcni reads that as 0.1.0); set "cniVersion" to one of '
            f"{_SUPPORTED_TEXT}"
        )
    if not isinstance(value, str):
        raise InvalidConfig(f'config key "cniVersion" must be a string, got {got(value)}')
    if value not in SUPPORTED:
        raise IncompatibleVersion(
            f'config "cniVersion" {show(value)} is not supported by cloudnic; use one of {_SUPPORTED_TEXT}'
        )
    return value


def negotiate(conf: Mapping[str, Any]) -> str:
    """The spec version to speak for ``conf`` (a decoded network configuration)."""
    if "cniVersions" not in conf or conf["cniVersions"] is None:
        return _check_single(conf.get("cniVersion"))
    versions = conf["cniVersions"]
    if not isinstance(versions, list):
        raise InvalidConfig(
            f'config key "cniVersions" must be an array of version strings, got {type_name(versions)}'
        )
    for i, item in enumerate(versions):
        if not isinstance(item, str):
            raise InvalidConfig(
                f'config key "cniVersions"[{i}] must be a string, got {got(item)}'
            )
    if conf.get("cniVersion") not in (None, ""):
        _check_single(conf["cniVersion"])
    common = [v for v in SUPPORTED if v in versions]
    if not common:
        raise IncompatibleVersion(
            f'config "cniVersions" {show(versions)} has no version cloudnic supports; '
            f"add one of {_SUPPORTED_TEXT}"
        )
    return common[-1]
