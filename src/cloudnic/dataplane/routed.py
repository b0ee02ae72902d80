"""Routed mode: the pod owns an address/32 (/128) and the node routes to it.

Sandbox: the port's addresses as /32 and /128, an on-link route to a link-local
gateway (169.254.1.1, fe80::1), the default route via it, and a permanent neighbour
entry gateway -> the host end's MAC, so the pod never ARPs/NDs. Host: a /32 (/128)
route to each pod address through the host end, a permanent neighbour entry pod ->
port MAC, and the gateway addresses on the host end (169.254.1.1/32, fe80::1/64) so
the node answers the pod's gateway ping. With ``enable_forwarding`` the host netns
forwards (``net/ipv4/ip_forward``, ``net/ipv6/conf/all/forwarding``); forwarding is
node configuration and is not turned off again by unplug or a failed plug.

Everything host-side lives on the host end, so deleting it (DEL, undo) removes it all.
The sandbox side is configured first (one send), then the host side (one send): a pod
is reachable only once both are done.
``Attachment.gateways`` (the subnet's router) is not used: the node is the pod's router.
"""

from __future__ import annotations

import ipaddress

from cloudnic import crash
from cloudnic.dataplane import rtmsg
from cloudnic.dataplane.base import Attachment, IPAddress, IPInterface, Plugged, RouteSpec
from cloudnic.dataplane.check import address_problems, link_problems, neigh_problems, route_problems
from cloudnic.dataplane.kernel import Kernel, LinkInfo, Request
from cloudnic.dataplane.spec import PlugSpec, host_route_prefix, routed_routes
from cloudnic.dataplane.undo import Undo
from cloudnic.dataplane.veth import (
    HOST,
    SANDBOX,
    VethDataplane,
    configure_sandbox,
    create_veth,
    delete_if_ours,
)
from cloudnic.errors import DataplaneError, InvalidConfig

FORWARDING = {4: "net/ipv4/ip_forward", 6: "net/ipv6/conf/all/forwarding"}


def _gateway(text: str, version: int, setting: str) -> IPAddress:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError as e:
        raise InvalidConfig(f"routed setting {setting} {text!r} is not an IP address") from e
    if ip.version != version or ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        raise InvalidConfig(f"routed setting {setting} {text!r} must be a unicast IPv{version} address")
    return ip


def pod_interfaces(addresses: tuple[IPInterface, ...]) -> tuple[IPInterface, ...]:
    """The pod's addresses as host routes: /32 and /128."""
    return tuple(ipaddress.ip_interface(f"{a.ip}/{a.max_prefixlen}") for a in addresses)


def host_gateway_interface(gw: IPAddress) -> IPInterface:
    """The gateway address on the host end: /32; fe80::/64 for a link-local v6, else /128."""
    if gw.version == 6 and gw.is_link_local:
        return ipaddress.ip_interface(f"{gw}/64")
    return ipaddress.ip_interface(f"{gw}/{gw.max_prefixlen}")


class RoutedDataplane(VethDataplane):
    mode = "routed"

    def __init__(self, mtu: int = 1500, host_netns_fd: int | None = None, gateway_v4: str = "169.254.1.1",
                 gateway_v6: str = "fe80::1", enable_forwarding: bool = True, deferred_delete: bool = False) -> None:
        self.gateways: dict[int, IPAddress] = {4: _gateway(gateway_v4, 4, "gateway_v4"),
                                               6: _gateway(gateway_v6, 6, "gateway_v6")}
        self.enable_forwarding = enable_forwarding
        self._forwarding: set[int] = set()
        super().__init__(mtu, host_netns_fd, deferred_delete)

    def _gateway_in_subnet(self) -> bool:
        return False

    def _sandbox_addresses(self, att: Attachment) -> tuple[IPInterface, ...]:
        return pod_interfaces(tuple(att.addresses))

    def _forward(self, families: tuple[int, ...]) -> None:
        """Forwarding on, checked once per family per dataplane (CHECK reads it every time)."""
        for v in families:
            if v in self._forwarding:
                continue
            if self._host.sysctl_get(FORWARDING[v]) != "1":
                self._host.sysctl_set(FORWARDING[v], "1")
            self._forwarding.add(v)

    def _plug(self, host: Kernel, sb: Kernel, sandbox_fd: int, spec: PlugSpec, undo: Undo) -> Plugged:
        for a in spec.addresses:
            if a.ip == self.gateways[a.version]:
                raise InvalidConfig(f"address {a.ip} of {spec.ifname} is the routed gateway; the gateway "
                                    "must not be handed out to a pod (change gateway_v4/gateway_v6)")
        if self.enable_forwarding:
            self._forward(spec.families)
        host_mac = self.host_mac_for(spec.host_ifname)
        peer_index = create_veth(host, sb, sandbox_fd, spec, host_mac=host_mac, reap=self._reap_peer)
        undo.add(f"delete {spec.host_ifname}", lambda: delete_if_ours(host, spec.host_ifname, "veth"))
        crash.point("plug:veth-created")
        routes = routed_routes(spec, self.gateways)
        configure_sandbox(sb, spec, pod_interfaces(spec.addresses), routes,
                          neighbours=[(self.gateways[v], host_mac) for v in spec.families], index=peer_index)
        crash.point("plug:sandbox-configured")
        hlink = host.link(spec.host_ifname)
        if hlink is None:
            raise DataplaneError(f"{spec.host_ifname} vanished from the host netns right after its creation")
        host.batch(self._host_requests(hlink.index, spec), f"configuring host end {spec.host_ifname}")
        return Plugged(host_ifname=spec.host_ifname, host_mac=host_mac, sandbox_ifname=spec.ifname,
                       sandbox_mac=spec.mac, mtu=spec.mtu, routes=routes,
                       gateways=tuple(self.gateways[v] for v in spec.families), extra={"mode": "routed"})

    def _host_requests(self, index: int, spec: PlugSpec) -> list[Request]:
        """Gateway addresses on the host end, a host route and a permanent neighbour per pod address."""
        name = spec.host_ifname
        reqs = []
        for v in spec.families:
            gw = host_gateway_interface(self.gateways[v])
            reqs.append(rtmsg.newaddr(index, gw, f"adding address {gw.with_prefixlen} to {name}"))
        for a in spec.addresses:
            prefix = host_route_prefix(a)
            reqs.append(rtmsg.newroute(index, prefix, None, True, f"adding route {prefix} dev {name}"))
            reqs.append(rtmsg.newneigh(index, a.ip, spec.mac,
                                       f"adding permanent neighbour {a.ip} -> {spec.mac} on {name}"))
        return reqs

    def _check_more(self, host: Kernel, sb: Kernel, sb_link: LinkInfo | None, att: Attachment,
                    plugged: Plugged) -> list[str]:
        families = tuple(dict.fromkeys(a.version for a in att.addresses))
        problems = []
        if sb_link is not None:
            for v in families:
                problems += neigh_problems(sb, sb_link, SANDBOX, self.gateways[v], plugged.host_mac)
        hlink, more = link_problems(host, plugged.host_ifname, HOST, kind="veth", mac=plugged.host_mac)
        problems += more
        if hlink is not None:
            problems += address_problems(host, hlink, HOST,
                                         [host_gateway_interface(self.gateways[v]) for v in families])
            problems += route_problems(host, hlink, HOST, [RouteSpec(str(host_route_prefix(a)), None, True)
                                                           for a in att.addresses])
            for a in att.addresses:
                problems += neigh_problems(host, hlink, HOST, a.ip, plugged.sandbox_mac)
        if self.enable_forwarding:
            problems += [f"forwarding is off in the host netns ({FORWARDING[v]} = 0)" for v in families
                         if self._host.sysctl_get(FORWARDING[v]) != "1"]
        return problems
