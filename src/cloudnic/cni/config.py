"""The network configuration a runtime passes on stdin, decoded and validated.

Unknown keys are kept in ``NetConf.raw`` (the spec requires plugins to ignore, not
reject, them). Errors: ``DecodeFailure`` (6) for bytes that are not a JSON object,
``IncompatibleVersion`` (1), ``UnsupportedField`` (2) for ``ipam``, ``InvalidConfig``
(7) for everything else, each naming the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cloudnic.errors import CNIError, DecodeFailure, InvalidConfig, UnsupportedField

from . import version
from ._text import got, show, type_name

MAX_DEPTH = 64
MAX_CONFIG_BYTES = 16 << 20  # the shim refuses more than this itself
MTU_MIN, MTU_MAX = 68, 65535
MAX_NAME = 255  # names and ids (network, subnet, security group): Neutron's own limit
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    network: str = ""  # provider network; empty means "same as name"
    subnet: str | None = None
    security_groups: tuple[str, ...] = ()
    mtu: int | None = None
    runtime_config: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)  # top-level keys lower-cased
    args: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    prev_result: Mapping[str, Any] | None = None
    valid_attachments: tuple[tuple[str, str], ...] | None = None  # GC: (containerID, ifname)
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        if not self.network:
            object.__setattr__(self, "network", self.name)


def ci_get(mapping: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """``mapping[key]`` matching the key case-insensitively (an exact match is preferred).

    containerd 1.6 sends Go field names (``PortMappings``, ``HostPort``), podman and
    cnitool send camelCase; Go plugins accept both, so do we.
    """
    if key in mapping:
        return mapping[key]
    folded = key.lower()
    for k, v in mapping.items():
        if isinstance(k, str) and k.lower() == folded:
            return v
    return default


class _Constant(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _Constant(name)


def _too_deep(obj: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def decode(data: bytes, max_bytes: int = MAX_CONFIG_BYTES) -> dict[str, Any]:
    """Strict JSON decoding of a config: UTF-8, no NaN/Infinity, nesting ≤ 64, an object."""
    if len(data) > max_bytes:
        raise DecodeFailure(f"network configuration is {len(data)} bytes; at most {max_bytes} accepted")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeFailure(f"network configuration is not UTF-8: invalid byte at offset {e.start}") from None
    too_deep = DecodeFailure(f"network configuration nests deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise DecodeFailure(
            f"network configuration is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} "
            f"(char {e.pos})"
        ) from None
    except _Constant as e:
        raise DecodeFailure(f"network configuration is not valid JSON: {e} is not a JSON value") from None
    except RecursionError:
        raise too_deep from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise DecodeFailure(f"network configuration is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise DecodeFailure(f"network configuration must be a JSON object, got {type_name(obj)}")
    if (text.count("{") + text.count("[") > MAX_DEPTH) and _too_deep(obj, MAX_DEPTH):
        raise too_deep
    return obj


def _optional(conf: Mapping[str, Any], key: str, kind: type | tuple[type, ...], expect: str) -> Any:
    value = conf.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidConfig(f'config key "{key}" must be {expect}, got {got(value)}')
    return value


def _nonempty_str(conf: Mapping[str, Any], key: str) -> str | None:
    value = _optional(conf, key, str, "a non-empty string")
    if value == "":
        raise InvalidConfig(f'config key "{key}" must be a non-empty string; remove it or give a value')
    if value is not None and len(value) > MAX_NAME:
        raise InvalidConfig(f'config key "{key}" is {len(value)} characters long; at most {MAX_NAME} allowed')
    return value


def _security_groups(conf: Mapping[str, Any]) -> tuple[str, ...]:
    groups = _optional(conf, "securityGroups", list, "an array of security group names or ids")
    out: list[str] = []
    for i, g in enumerate(groups or ()):
        if not isinstance(g, str) or g == "" or len(g) > MAX_NAME:
            raise InvalidConfig(f'config key "securityGroups"[{i}] must be a non-empty string of at most '
                                f"{MAX_NAME} characters, got {show(g)}")
        if g not in out:
            out.append(g)
    return tuple(out)


def _mtu(conf: Mapping[str, Any]) -> int | None:
    mtu = _optional(conf, "mtu", int, f"an integer between {MTU_MIN} and {MTU_MAX}")
    if mtu is not None and not MTU_MIN <= mtu <= MTU_MAX:
        raise InvalidConfig(f'config key "mtu" is {mtu}; it must be between {MTU_MIN} and {MTU_MAX}')
    return mtu


def _runtime_config(conf: Mapping[str, Any]) -> Mapping[str, Any]:
    rc = _optional(conf, "runtimeConfig", dict, "an object")
    lowered: dict[str, Any] = {}
    original: dict[str, str] = {}
    for k, v in (rc or {}).items():
        low = k.lower()
        if low in lowered:
            raise InvalidConfig(
                f'config key "runtimeConfig" has both "{original[low]}" and "{k}"; keys are matched '
                "case-insensitively, keep one"
            )
        lowered[low], original[low] = v, k
    return MappingProxyType(lowered)


def _valid_attachments(conf: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    key = VALID_ATTACHMENTS_KEY
    items = _optional(conf, key, list, "an array of {containerID, ifname} objects")
    if items is None:
        return None
    out: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidConfig(f'config key "{key}"[{i}] must be an object, got {type_name(item)}')
        cid, ifname = item.get("containerID"), item.get("ifname")
        if not isinstance(cid, str) or cid == "":
            raise InvalidConfig(
                f'config key "{key}"[{i}].containerID must be a non-empty string, got {show(cid)}'
            )
        if not isinstance(ifname, str):
            raise InvalidConfig(f'config key "{key}"[{i}].ifname must be a string, got {show(ifname)}')
        out.append((cid, ifname))
    return tuple(out)


def _identity(conf: Mapping[str, Any], command: str) -> tuple[str, str, str]:
    """(cni_version, name, type); VERSION needs none of them, so it never fails on them."""
    if command == "VERSION":
        try:
            cni_version = version.negotiate(conf)
        except CNIError:
            cni_version = version.LATEST
        name, typ = conf.get("name"), conf.get("type")
        return cni_version, name if isinstance(name, str) else "", typ if isinstance(typ, str) else ""
    cni_version = version.negotiate(conf)
    name = conf.get("name")
    if name is None or name == "":
        raise InvalidConfig('config key "name" is required: give the network a name')
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        raise InvalidConfig(
            f'config key "name" {show(name)} is invalid: it must start with a letter or digit and contain '
            f"only letters, digits, '_', '.' and '-' (at most {MAX_NAME})"
        )
    typ = conf.get("type")
    if not isinstance(typ, str) or typ == "":
        raise InvalidConfig(f'config key "type" is required and must be a non-empty string, got {show(typ)}')
    return cni_version, name, typ


def parse_netconf(data: bytes, command: str, *, max_bytes: int = MAX_CONFIG_BYTES) -> NetConf:
    """Decode and validate the stdin of a plugin call for ``command`` (``CNI_COMMAND``)."""
    conf = decode(data, max_bytes) if (command != "VERSION" or data.strip()) else {}
    cni_version, name, typ = _identity(conf, command)
    if command == "VERSION":  # only cniVersion matters; never fail VERSION on other keys
        return NetConf(cni_version=cni_version, name=name, type=typ, raw=MappingProxyType(conf))
    if conf.get("ipam") is not None:
        raise UnsupportedField(
            f'config key "ipam" ({show(conf["ipam"])}) is not supported: cloudnic does its own IPAM; '
            'remove "ipam" and choose addresses with "subnet" or the cloudnic.io/ip annotation'
        )
    args = _optional(conf, "args", dict, "an object")
    prev = _optional(conf, "prevResult", dict, "an object (the previous plugin's result)")
    return NetConf(
        cni_version=cni_version,
        name=name,
        type=typ,
        network=_nonempty_str(conf, "network") or name,
        subnet=_nonempty_str(conf, "subnet"),
        security_groups=_security_groups(conf),
        mtu=_mtu(conf),
        runtime_config=_runtime_config(conf),
        args=MappingProxyType(args) if args is not None else _EMPTY,
        prev_result=MappingProxyType(prev) if prev is not None else None,
        valid_attachments=_valid_attachments(conf),
        raw=MappingProxyType(conf),
    )
