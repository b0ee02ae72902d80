"""runtimeConfig capabilities cloudnic passes on but does not act on: ``portMappings`` and ``bandwidth``.

A chained plugin (portmap, bandwidth) reads them; a wrong type there would fail it after cloudnic has
plumbed the pod, so they are checked up front, naming the entry and the field (code 7). Field names
match case-insensitively (containerd 1.6 sends Go names such as ``HostPort``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from cloudnic.errors import InvalidConfig

from ._text import got, show, type_name
from .config import ci_get

PROTOCOLS = ("tcp", "udp", "sctp")
BANDWIDTH_KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")


def _port(m: Mapping[str, Any], key: str, where: str, required: bool) -> None:
    value = ci_get(m, key)
    if value is None and not required:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise InvalidConfig(f'{where}.{key} must be a port number from 1 to 65535, got {type_name(value)} '
                            f"{show(value)}")


def port_mappings(value: Any) -> tuple[Mapping[str, Any], ...]:
    """runtimeConfig ``portMappings``: ``[{hostPort, containerPort, protocol?, hostIP?}]``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidConfig(f'runtimeConfig "portMappings" must be an array of objects, got {show(value)}')
    out: list[Mapping[str, Any]] = []
    for i, m in enumerate(value):
        where = f'runtimeConfig "portMappings"[{i}]'
        if not isinstance(m, dict):
            raise InvalidConfig(f"{where} must be an object, got {got(m)}")
        _port(m, "hostPort", where, True)
        _port(m, "containerPort", where, True)
        proto = ci_get(m, "protocol")
        if proto is not None and (not isinstance(proto, str) or proto.lower() not in PROTOCOLS):
            raise InvalidConfig(f"{where}.protocol must be one of {', '.join(PROTOCOLS)}, got {show(proto)}")
        host_ip = ci_get(m, "hostIP")
        if host_ip not in (None, ""):
            try:
                ipaddress.ip_address(host_ip if isinstance(host_ip, str) else "")
            except ValueError:
                raise InvalidConfig(f"{where}.hostIP must be an IP address, got {show(host_ip)}") from None
        out.append(MappingProxyType(m))
    return tuple(out)


def bandwidth(value: Any) -> None:
    """runtimeConfig ``bandwidth``: an object of non-negative integer rates and bursts (bits, bytes)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidConfig(f'runtimeConfig "bandwidth" must be an object, got {got(value)}')
    for key in BANDWIDTH_KEYS:
        v = ci_get(value, key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise InvalidConfig(f'runtimeConfig "bandwidth".{key} must be a non-negative integer, got '
                                f"{got(v)}")
