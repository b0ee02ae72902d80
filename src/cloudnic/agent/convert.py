"""Conversions between the layers' values: store rows ↔ dataplane values, and the CNI result."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from cloudnic.cni.result import DNS, Interface, IPConfig, Result, Route
from cloudnic.dataplane.base import Attachment, Plugged, RouteSpec
from cloudnic.providers.base import Port, Subnet


def attachment_to_dict(att: Attachment) -> dict[str, Any]:
    return {
        "key": att.key, "ifname": att.ifname, "mac": att.mac, "mtu": att.mtu,
        "addresses": [str(a) for a in att.addresses], "gateways": [str(g) for g in att.gateways],
        "routes": [route_to_dict(r) for r in att.routes], "host_ifname": att.host_ifname,
        "port_id": att.port_id, "network_id": att.network_id,
    }


def attachment_from_dict(d: dict[str, Any]) -> Attachment:
    return Attachment(
        key=d["key"], ifname=d["ifname"], mac=d["mac"], mtu=int(d["mtu"]),
        addresses=tuple(ipaddress.ip_interface(a) for a in d.get("addresses", ())),
        gateways=tuple(ipaddress.ip_address(g) for g in d.get("gateways", ())),
        routes=tuple(route_from_dict(r) for r in d.get("routes", ())),
        host_ifname=d.get("host_ifname", ""), port_id=d.get("port_id", ""), network_id=d.get("network_id", ""),
    )


def route_to_dict(r: RouteSpec) -> dict[str, Any]:
    return {"dst": r.dst, "gw": r.gw, "scope_link": r.scope_link}


def route_from_dict(d: dict[str, Any]) -> RouteSpec:
    return RouteSpec(dst=d["dst"], gw=d.get("gw"), scope_link=bool(d.get("scope_link", False)))


def plugged_to_dict(p: Plugged) -> dict[str, Any]:
    return {
        "host_ifname": p.host_ifname, "host_mac": p.host_mac, "sandbox_ifname": p.sandbox_ifname,
        "sandbox_mac": p.sandbox_mac, "mtu": p.mtu, "routes": [route_to_dict(r) for r in p.routes],
        "gateways": [str(g) for g in p.gateways], "extra": dict(p.extra),
    }


def plugged_from_dict(d: dict[str, Any]) -> Plugged:
    return Plugged(
        host_ifname=d.get("host_ifname", ""), host_mac=d.get("host_mac", ""),
        sandbox_ifname=d["sandbox_ifname"], sandbox_mac=d["sandbox_mac"], mtu=int(d["mtu"]),
        routes=tuple(route_from_dict(r) for r in d.get("routes", ())),
        gateways=tuple(ipaddress.ip_address(g) for g in d.get("gateways", ())),
        extra=dict(d.get("extra", {})),
    )


def build_attachment(key: str, ifname: str, host_ifname: str, port: Port, subnets: dict[str, Subnet],
                     mtu: int) -> Attachment:
    """What the dataplane needs, from the provider's port and its subnets."""
    addresses = []
    gateways: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    routes: list[RouteSpec] = []
    for fip in port.fixed_ips:
        sub = subnets[fip.subnet_id]
        addresses.append(ipaddress.ip_interface(f"{fip.address}/{sub.cidr.prefixlen}"))
        if sub.gateway is not None and all(g.version != sub.gateway.version for g in gateways):
            gateways.append(sub.gateway)
        for r in sub.host_routes:
            routes.append(RouteSpec(dst=r.dst, gw=r.gw))
    return Attachment(
        key=key, ifname=ifname, mac=port.mac, mtu=mtu, addresses=tuple(addresses),
        gateways=tuple(gateways), routes=tuple(routes), host_ifname=host_ifname, port_id=port.id,
        network_id=port.network_id,
    )


def build_result(att: Attachment, plugged: Plugged, netns: str, mode: str,
                 subnets: dict[str, Subnet], port: Port) -> Result:
    """The CNI result of an ADD, in the newest form (converted on output)."""
    interfaces: list[Interface] = []
    if plugged.host_ifname:
        interfaces.append(Interface(name=plugged.host_ifname, mac=plugged.host_mac))
    sandbox_idx = len(interfaces)
    interfaces.append(Interface(name=plugged.sandbox_ifname, mac=plugged.sandbox_mac, mtu=plugged.mtu,
                                sandbox=netns))
    gw_by_family = {g.version: g for g in plugged.gateways}
    ips = []
    for configured in att.addresses:
        addr = ipaddress.ip_interface(f"{configured.ip}/{configured.max_prefixlen}") if mode == "routed" \
            else configured
        ips.append(IPConfig(address=addr, gateway=gw_by_family.get(addr.version), interface=sandbox_idx))
    routes = [Route(dst=r.dst, gw=r.gw) for r in plugged.routes if not r.scope_link]
    nameservers: list[str] = []
    for fip in port.fixed_ips:
        for ns in subnets[fip.subnet_id].dns_nameservers:
            if ns not in nameservers:
                nameservers.append(ns)
    return Result(interfaces=tuple(interfaces), ips=tuple(ips), routes=tuple(routes),
                  dns=DNS(nameservers=tuple(nameservers)))


def chain_onto(prev: Result, ours: Result) -> Result:
    """ADD with a prevResult (cloudnic is not the first plugin of the chain): pass the
    earlier plugins' result through and append ours, re-indexing our interfaces."""
    offset = len(prev.interfaces)
    ips = tuple(dataclasses.replace(ip, interface=None if ip.interface is None else ip.interface + offset)
                for ip in ours.ips)
    dns = ours.dns if ours.dns.nameservers else prev.dns
    return Result(interfaces=prev.interfaces + ours.interfaces, ips=prev.ips + ips,
                  routes=prev.routes + ours.routes, dns=dns)
