"""Validate an ``Attachment`` before touching the kernel, and plan the sandbox routes.

Pure functions: everything here runs without root, so the rules are unit-tested. A plug
that fails validation has created nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cloudnic.dataplane.base import Attachment, IPAddress, IPInterface, RouteSpec
from cloudnic.dataplane.kernel import IPNetwork
from cloudnic.dataplane.names import host_ifname_for, normalize_mac, require_ifname
from cloudnic.errors import InvalidConfig

MIN_MTU_V4 = 68
MIN_MTU_V6 = 1280
MAX_MTU = 65535


@dataclass(frozen=True)
class PlugSpec:
    """A validated attachment with normalized values."""

    key: str
    ifname: str
    host_ifname: str                     # "" where the mode has no host end
    mac: str
    mtu: int
    addresses: tuple[IPInterface, ...]
    gateways: dict[int, IPAddress]       # by IP version
    routes: tuple[RouteSpec, ...]        # att.routes, normalized ("10.1.0.0/16", gw as str)

    @property
    def families(self) -> tuple[int, ...]:
        """IP versions of the addresses, in order of first appearance."""
        return tuple(dict.fromkeys(a.version for a in self.addresses))


def _network(text: str, what: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise InvalidConfig(f"{what} {text!r} is not a CIDR; use e.g. 10.0.0.0/16 or 0.0.0.0/0") from e


def _address(text: str, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError as e:
        raise InvalidConfig(f"{what} {text!r} is not an IP address") from e


def _require_unicast(ip: IPAddress, what: str) -> None:
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        raise InvalidConfig(f"{what} is not a unicast address; give a host address")


def prepare(att: Attachment, default_mtu: int, *, host_end: bool, gateway_in_subnet: bool) -> PlugSpec:
    """Check ``att`` and normalize it; ``InvalidConfig`` names the first bad field."""
    ifname = require_ifname(att.ifname, "CNI_IFNAME")
    host_ifname = ""
    if host_end:
        host_ifname = require_ifname(att.host_ifname or host_ifname_for(att.key), "host interface name")
    mac = normalize_mac(att.mac, f"MAC of {ifname}")
    mtu = att.mtu or default_mtu
    versions = {a.version for a in att.addresses}
    low = MIN_MTU_V6 if 6 in versions else MIN_MTU_V4
    if not low <= mtu <= MAX_MTU:
        raise InvalidConfig(f"MTU {mtu} of {ifname} is out of range; use {low}-{MAX_MTU}"
                            + (" (IPv6 needs at least 1280)" if low == MIN_MTU_V6 else ""))
    for a in att.addresses:
        _require_unicast(a.ip, f"address {a.with_prefixlen} of {ifname}")
    if len(set(att.addresses)) != len(att.addresses):
        raise InvalidConfig(f"the addresses of {ifname} repeat an address: "
                            f"{', '.join(a.with_prefixlen for a in att.addresses)}")
    gateways: dict[int, IPAddress] = {}
    for gw in att.gateways:
        _require_unicast(gw, f"gateway {gw} of {ifname}")
        if gw.version in gateways:
            raise InvalidConfig(f"{ifname} has two IPv{gw.version} gateways ({gateways[gw.version]}, {gw}); "
                                "give at most one per family")
        if gw.version not in versions:
            raise InvalidConfig(f"gateway {gw} of {ifname} has no IPv{gw.version} address to go with it")
        if any(a.ip == gw for a in att.addresses):
            raise InvalidConfig(f"gateway {gw} of {ifname} is the interface's own address")
        if gateway_in_subnet and not any(gw in a.network for a in att.addresses if a.version == gw.version):
            subnets = ", ".join(str(a.network) for a in att.addresses if a.version == gw.version)
            raise InvalidConfig(f"gateway {gw} of {ifname} is outside its subnet {subnets}")
        gateways[gw.version] = gw
    routes = []
    for r in att.routes:
        dst = _network(r.dst, f"route destination of {ifname}")
        if dst.version not in versions:
            raise InvalidConfig(f"route {r.dst} of {ifname} is IPv{dst.version} but {ifname} has no "
                                f"IPv{dst.version} address")
        via: str | None = None
        if r.gw:
            gwa = _address(r.gw, f"gateway of route {r.dst}")
            if gwa.version != dst.version:
                raise InvalidConfig(f"route {r.dst} of {ifname} has an IPv{gwa.version} gateway {gwa}")
            via = str(gwa)
        if r.scope_link and via:
            raise InvalidConfig(f"route {r.dst} of {ifname} is on-link (scope link) but has gateway {via}")
        routes.append(RouteSpec(dst=dst.with_prefixlen, gw=via, scope_link=r.scope_link))
    return PlugSpec(key=att.key, ifname=ifname, host_ifname=host_ifname, mac=mac, mtu=mtu,
                    addresses=tuple(att.addresses), gateways=gateways, routes=tuple(routes))


def default_dst(version: int) -> str:
    return "0.0.0.0/0" if version == 4 else "::/0"


def _dedupe(routes: list[RouteSpec]) -> tuple[RouteSpec, ...]:
    """One route per destination (the kernel refuses a second): the first one wins."""
    seen: dict[str, RouteSpec] = {}
    for r in routes:
        seen.setdefault(r.dst, r)
    return tuple(seen.values())


def subnet_routes(spec: PlugSpec) -> tuple[RouteSpec, ...]:
    """Sandbox routes of the L2 modes (bridge, macvlan): default via each gateway, then extras.

    An extra route without gateway and not on-link goes via its family's gateway (the
    CNI result's meaning of a route without ``gw``), or on-link when there is none.
    """
    out = [RouteSpec(default_dst(v), str(spec.gateways[v])) for v in spec.families if v in spec.gateways]
    for r in spec.routes:
        version = ipaddress.ip_network(r.dst).version
        if r.gw or r.scope_link:
            out.append(r)
        elif version in spec.gateways:
            out.append(RouteSpec(r.dst, str(spec.gateways[version])))
        else:
            out.append(RouteSpec(r.dst, None, scope_link=True))
    return _dedupe(out)


def routed_routes(spec: PlugSpec, gateways: dict[int, IPAddress]) -> tuple[RouteSpec, ...]:
    """Sandbox routes of the routed mode: on-link route to the gateway, default via it, extras.

    Extra routes go via the routed gateway whatever gateway they name: the pod's only
    neighbour is the node; a subnet router is not on-link from an address/32.
    """
    out: list[RouteSpec] = []
    for v in spec.families:
        gw = gateways[v]
        out.append(RouteSpec(f"{gw}/{gw.max_prefixlen}", None, scope_link=True))
        out.append(RouteSpec(default_dst(v), str(gw)))
    for r in spec.routes:
        if r.scope_link:
            out.append(r)
        else:
            out.append(RouteSpec(r.dst, str(gateways[ipaddress.ip_network(r.dst).version])))
    return _dedupe(out)


def host_route_prefix(addr: IPInterface) -> IPNetwork:
    """The /32 (/128) a routed host route points at."""
    return ipaddress.ip_network(f"{addr.ip}/{addr.max_prefixlen}")
