"""CHECK helpers: compare the kernel with what plug made, one readable line per difference."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from cloudnic.dataplane.base import IPAddress, IPInterface, Plugged, RouteSpec
from cloudnic.dataplane.kernel import Kernel, LinkInfo, Route
from cloudnic.errors import CheckFailed


def route_key(r: RouteSpec) -> Route:
    return ipaddress.ip_network(r.dst), (ipaddress.ip_address(r.gw) if r.gw else None)


def describe_route(r: RouteSpec) -> str:
    return f"{r.dst} via {r.gw}" if r.gw else f"{r.dst} (on-link)"


def link_problems(kernel: Kernel, ifname: str, where: str, *, kind: str = "", mac: str = "",
                  mtu: int = 0, master: int | None = None, master_name: str = "",
                  ) -> tuple[LinkInfo | None, list[str]]:
    """The link named ``ifname`` and how it differs from the expectations given."""
    link = kernel.link(ifname)
    if link is None:
        return None, [f"{ifname} {where} is missing"]
    out = []
    if kind and link.kind != kind:
        out.append(f"{ifname} {where} is a {link.kind or 'plain'} link, expected {kind}")
    if not link.up:
        out.append(f"{ifname} {where} is down")
    if mac and link.mac != mac.lower():
        out.append(f"{ifname} {where} has MAC {link.mac}, expected {mac.lower()}")
    if mtu and link.mtu != mtu:
        out.append(f"{ifname} {where} has MTU {link.mtu}, expected {mtu}")
    if master is not None and link.master != master:
        out.append(f"{ifname} {where} is not enslaved to {master_name or f'ifindex {master}'}")
    return link, out


def address_problems(kernel: Kernel, link: LinkInfo, where: str,
                     expected: Iterable[IPInterface]) -> list[str]:
    have = kernel.addresses(link.index)
    return [f"{link.ifname} {where} lacks address {a.with_prefixlen}" for a in expected if a not in have]


def route_problems(kernel: Kernel, link: LinkInfo, where: str, expected: Iterable[RouteSpec]) -> list[str]:
    have = kernel.routes(link.index)
    return [f"{link.ifname} {where} lacks route {describe_route(r)}" for r in expected
            if route_key(r) not in have]


def neigh_problems(kernel: Kernel, link: LinkInfo, where: str, ip: IPAddress, mac: str) -> list[str]:
    entry = kernel.neigh(link.index, ip)
    if entry is None:
        return [f"{link.ifname} {where} lacks the permanent neighbour entry {ip} -> {mac}"]
    lladdr, permanent = entry
    out = []
    if lladdr != mac.lower():
        out.append(f"{link.ifname} {where}: neighbour {ip} points at {lladdr or 'nothing'}, expected {mac}")
    if not permanent:
        out.append(f"{link.ifname} {where}: neighbour entry {ip} is not permanent")
    return out


def sandbox_problems(sb: Kernel, plugged: Plugged, kind: str,
                     addresses: Iterable[IPInterface]) -> tuple[LinkInfo | None, list[str]]:
    """The sandbox interface: exists, kind, up, MAC, MTU, each address, each route."""
    where = "in the sandbox"
    link, out = link_problems(sb, plugged.sandbox_ifname, where, kind=kind, mac=plugged.sandbox_mac,
                              mtu=plugged.mtu)
    if link is None:
        return None, out
    out += address_problems(sb, link, where, addresses)
    out += route_problems(sb, link, where, plugged.routes)
    return link, out


def raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise CheckFailed(f"{what}: " + "; ".join(problems),
                          "run DEL and ADD again to recreate the attachment")
