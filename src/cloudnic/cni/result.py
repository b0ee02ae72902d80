"""The CNI result: typed values, conversion to every supported spec version, parsing.

Serialisation follows the Go types of libcni (``types/100`` for 1.x, ``types/040`` for
0.3.x/0.4.0): empty optional fields are omitted, ``dns`` is always present, and 0.x
results carry ``"version": "4"|"6"`` on each IP. Fields added in 1.1.0 (interface
``mtu``/``socketPath``/``pciID``, route ``mtu``/``advmss``/``priority``/``table``/``scope``)
are dropped for older versions.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudnic.errors import IncompatibleVersion, InvalidConfig

from . import version as _version
from ._text import got, show

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    mtu: int | None = None
    sandbox: str = ""
    socket_path: str = ""
    pci_id: str = ""


@dataclass(frozen=True)
class IPConfig:
    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None  # index into Result.interfaces


@dataclass(frozen=True)
class Route:
    dst: str  # CIDR
    gw: str | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None


@dataclass(frozen=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out


def _interface_dict(i: Interface, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": i.name}
    if i.mac:
        out["mac"] = i.mac
    if full and i.mtu:
        out["mtu"] = i.mtu
    if i.sandbox:
        out["sandbox"] = i.sandbox
    if full and i.socket_path:
        out["socketPath"] = i.socket_path
    if full and i.pci_id:
        out["pciID"] = i.pci_id
    return out


def _ip_dict(ip: IPConfig, legacy: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"version": str(ip.address.version)} if legacy else {}
    if ip.interface is not None:
        out["interface"] = ip.interface
    out["address"] = str(ip.address)
    if ip.gateway is not None:
        out["gateway"] = str(ip.gateway)
    return out


def _route_dict(r: Route, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": r.dst}
    if r.gw:
        out["gw"] = r.gw
    if full:
        for key, value in (("mtu", r.mtu), ("advmss", r.advmss), ("priority", r.priority)):
            if value:
                out[key] = value
        for key, value in (("table", r.table), ("scope", r.scope)):
            if value is not None:
                out[key] = value
    return out


@dataclass(frozen=True)
class Result:
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)

    def to_dict(self, version: str) -> dict[str, Any]:
        """The result as spec version ``version`` puts it on the wire."""
        if version not in _version.SUPPORTED:
            raise IncompatibleVersion(
                f"cannot write a result for CNI version {version!r}; "
                f"supported: {', '.join(_version.SUPPORTED)}"
            )
        full = version == "1.1.0"
        legacy = _version.parse(version) < (1, 0, 0)
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [_interface_dict(i, full) for i in self.interfaces]
        if self.ips:
            out["ips"] = [_ip_dict(ip, legacy) for ip in self.ips]
        if self.routes:
            out["routes"] = [_route_dict(r, full) for r in self.routes]
        out["dns"] = self.dns.to_dict()
        return out

    def to_json(self, version: str) -> bytes:
        return json.dumps(self.to_dict(version), separators=(",", ":")).encode()


# ---- parsing (prevResult) ------------------------------------------------------------


def _bad(path: str, what: str, value: Any) -> InvalidConfig:
    return InvalidConfig(f"{path} must be {what}, got {got(value)}")


def _get(obj: Mapping[str, Any], key: str, path: str, kind: type, what: str) -> Any:
    """``obj[key]`` checked against ``kind``; None when absent or null."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _bad(f"{path}.{key}", what, value)
    return value


def _int(obj: Mapping[str, Any], key: str, path: str, minimum: int | None = 0) -> int | None:
    value = _get(obj, key, path, int, "an integer")
    if value is not None and minimum is not None and value < minimum:
        raise InvalidConfig(f"{path}.{key} must be >= {minimum}, got {value}")
    return value


def _objects(obj: Mapping[str, Any], key: str, path: str) -> list[tuple[str, Mapping[str, Any]]]:
    items = _get(obj, key, path, list, "an array") or []
    out: list[tuple[str, Mapping[str, Any]]] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise _bad(f"{path}.{key}[{i}]", "an object", item)
        out.append((f"{path}.{key}[{i}]", item))
    return out


def _strings(obj: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    items = _get(obj, key, path, list, "an array of strings") or []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _bad(f"{path}.{key}[{i}]", "a string", item)
    return tuple(items)


def _parse_interface(path: str, o: Mapping[str, Any]) -> Interface:
    return Interface(
        name=_get(o, "name", path, str, "a string") or "",
        mac=_get(o, "mac", path, str, "a string") or "",
        mtu=_int(o, "mtu", path) or None,
        sandbox=_get(o, "sandbox", path, str, "a string") or "",
        socket_path=_get(o, "socketPath", path, str, "a string") or "",
        pci_id=_get(o, "pciID", path, str, "a string") or "",
    )


def _parse_ip(path: str, o: Mapping[str, Any], n_interfaces: int) -> IPConfig:
    text = _get(o, "address", path, str, "a CIDR string such as 10.0.0.5/24")
    if text is None:
        raise InvalidConfig(f"{path}.address is required (a CIDR string such as 10.0.0.5/24)")
    try:
        if "/" not in text:
            raise ValueError(text)
        address = ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidConfig(
            f"{path}.address {show(text)} is not an address with prefix such as 10.0.0.5/24"
        ) from None
    gw_text = _get(o, "gateway", path, str, "an IP address string")
    try:
        gateway = ipaddress.ip_address(gw_text) if gw_text else None
    except ValueError:
        raise InvalidConfig(f"{path}.gateway {show(gw_text)} is not an IP address") from None
    index = _int(o, "interface", path)
    if index is not None and index >= n_interfaces:
        raise InvalidConfig(f"{path}.interface is {index} but the result has {n_interfaces} interface(s)")
    family = o.get("version")
    if family is not None and family != str(address.version):
        raise InvalidConfig(f"{path}.version is {show(family)} but the address is IPv{address.version}")
    return IPConfig(address=address, gateway=gateway, interface=index)


def _parse_route(path: str, o: Mapping[str, Any]) -> Route:
    dst = _get(o, "dst", path, str, "a CIDR string")
    if dst is None:
        raise InvalidConfig(f"{path}.dst is required (a CIDR string such as 0.0.0.0/0)")
    try:
        if "/" not in dst:
            raise ValueError(dst)
        ipaddress.ip_network(dst, strict=False)
    except ValueError:
        raise InvalidConfig(f"{path}.dst {show(dst)} is not a CIDR such as 10.0.0.0/8") from None
    gw = _get(o, "gw", path, str, "an IP address string") or None
    if gw is not None:
        try:
            ipaddress.ip_address(gw)
        except ValueError:
            raise InvalidConfig(f"{path}.gw {show(gw)} is not an IP address") from None
    return Route(
        dst=dst,
        gw=gw,
        mtu=_int(o, "mtu", path) or None,
        advmss=_int(o, "advmss", path) or None,
        priority=_int(o, "priority", path) or None,
        table=_int(o, "table", path, None),
        scope=_int(o, "scope", path, None),
    )


def parse_result(obj: Mapping[str, Any], path: str = "prevResult") -> Result:
    """A result of any supported version (typically ``prevResult``), validated.

    Raises ``InvalidConfig`` naming ``prevResult.<path>`` for bad content.
    """
    if not isinstance(obj, Mapping):
        raise _bad(path, "an object", obj)
    v = obj.get("cniVersion")
    if v is not None and v not in _version.SUPPORTED:
        raise InvalidConfig(
            f"{path}.cniVersion {show(v)} is not a result version cloudnic reads; "
            f"supported: {', '.join(_version.SUPPORTED)}"
        )
    interfaces = tuple(_parse_interface(p, o) for p, o in _objects(obj, "interfaces", path))
    ips = tuple(_parse_ip(p, o, len(interfaces)) for p, o in _objects(obj, "ips", path))
    routes = tuple(_parse_route(p, o) for p, o in _objects(obj, "routes", path))
    dns_obj = _get(obj, "dns", path, Mapping, "an object") or {}
    dns = DNS(
        nameservers=_strings(dns_obj, "nameservers", f"{path}.dns"),
        domain=_get(dns_obj, "domain", f"{path}.dns", str, "a string") or "",
        search=_strings(dns_obj, "search", f"{path}.dns"),
        options=_strings(dns_obj, "options", f"{path}.dns"),
    )
    return Result(interfaces=interfaces, ips=ips, routes=routes, dns=dns)
