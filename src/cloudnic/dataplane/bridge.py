"""Bridge mode: the host end of each veth is a port of a Linux bridge.

The bridge is created on first use with a fixed MAC derived from its name (a bridge
otherwise takes the lowest port MAC and changes it as ports come and go, which flushes
neighbour caches), up, with the network MTU. The MTU is set after creation because only
a change through the bridge itself pins it (IFLA_MTU at creation does not, and an empty
bridge would fall back to 1500); at 1500 nothing is pinned and the bridge follows its
smallest port, which is the pods' MTU anyway. An existing bridge is used as it is.
With ``gateway_on_bridge`` the bridge carries each subnet gateway with the subnet's
prefix, so the node is the pods' router.

The bridge and its gateway addresses are shared by all attachments: unplug never
removes them (a bridge left empty is harmless and saves the next plug a request).
``remove_bridge_if_empty()`` is for teardown and demos. A failed plug removes the
bridge only when it created it and no port is left. The lock guards the bridge's
lookup/creation and removal, never the per-port netlink calls (concurrent plugs create
their veths in parallel; the kernel orders them): a plug counts itself in flight under
the lock from the moment it has the bridge's ifindex until its veth is in the bridge,
and removal leaves a bridge alone while any plug is in flight, so a concurrent plug
never loses the bridge it just found.

Per ADD the bridge costs nothing: its ifindex is cached after the first plug (and looked
up again when the kernel refuses it as master: the bridge was deleted behind our back),
and each gateway address is added once per bridge incarnation (the cache of gateways
known to be on the bridge is reset whenever the bridge is looked up again).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import threading

from cloudnic import crash
from cloudnic.dataplane.base import Attachment, IPInterface, Plugged
from cloudnic.dataplane.check import address_problems, link_problems
from cloudnic.dataplane.kernel import Kernel, LinkChange, LinkInfo, LinkSpec, cause_errno
from cloudnic.dataplane.links import Bridge
from cloudnic.dataplane.names import derived_mac, require_ifname
from cloudnic.dataplane.spec import PlugSpec, subnet_routes
from cloudnic.dataplane.undo import Undo
from cloudnic.dataplane.veth import HOST, VethDataplane, configure_sandbox, create_veth, delete_if_ours
from cloudnic.errors import DataplaneError, InvalidConfig


def gateway_interfaces(addresses: tuple[IPInterface, ...], gateways: tuple[ipaddress.IPv4Address |
                       ipaddress.IPv6Address, ...]) -> tuple[IPInterface, ...]:
    """Each gateway with the prefix of the subnet (address) it belongs to."""
    out = []
    for gw in gateways:
        for a in addresses:
            if a.version == gw.version and gw in a.network:
                out.append(ipaddress.ip_interface(f"{gw}/{a.network.prefixlen}"))
                break
    return tuple(out)


STALE_MASTER = frozenset({errno.EINVAL, errno.ENODEV, errno.ENOENT, errno.EOPNOTSUPP})
BRIDGE_MAX_PORTS = 1023       # BR_MAX_PORTS - 1 (port number 0 is reserved): EXFULL beyond


def bridge_full(bridge: str, e: DataplaneError) -> DataplaneError | None:
    """The kernel's EXFULL for one port too many, as an error that says what it means."""
    if cause_errno(e) != errno.EXFULL:
        return None
    return DataplaneError(f"bridge {bridge} has {BRIDGE_MAX_PORTS} ports, the kernel's limit for one bridge: "
                          "no more pods fit on this network on this node; put further pods on another network "
                          "(another bridge) or use the routed mode", e.details)


class BridgeDataplane(VethDataplane):
    mode = "bridge"

    def __init__(self, bridge: str, mtu: int = 1500, gateway_on_bridge: bool = True,
                 host_netns_fd: int | None = None, deferred_delete: bool = False) -> None:
        self.bridge = require_ifname(bridge, "bridge name")
        self.gateway_on_bridge = gateway_on_bridge
        self.bridge_mac = derived_mac("bridge:" + bridge)
        self._lock = threading.Lock()
        self._index = 0                                   # cached ifindex of the bridge, 0 = unknown
        self._gateways: set[IPInterface] = set()          # gateway addresses known to be on it
        self._in_flight = 0                               # plugs between bridge lookup and veth in it
        super().__init__(mtu, host_netns_fd, deferred_delete)

    # ---- the bridge -------------------------------------------------------------------

    def _ensure_bridge(self, host: Kernel) -> tuple[LinkInfo, bool]:
        """The bridge (created, up) and whether this call created it."""
        created = False
        link = host.link(self.bridge)
        if link is None:
            try:
                host.add_link(LinkSpec(ifname=self.bridge, kind=Bridge(), mac=self.bridge_mac, up=True),
                              f"bridge {self.bridge}")
                created = True
            except DataplaneError as e:
                if cause_errno(e) != errno.EEXIST:
                    raise
            link = host.link(self.bridge)
            if link is None:
                raise DataplaneError(f"bridge {self.bridge} vanished from the host netns during plug; retry")
        if link.kind != "bridge":
            raise InvalidConfig(f"{self.bridge} exists in the host netns but is a {link.kind or 'plain'} "
                                "link, not a bridge; choose another bridge name")
        if created and link.mtu != self.mtu:
            # set after creation: only a change through the bridge's ndo pins its MTU
            host.set_link(link.index, LinkChange(mtu=self.mtu), f"MTU of bridge {self.bridge} to {self.mtu}")
        if not link.up:
            host.set_up(link.index, self.bridge)
        return link, created

    def _ports(self, host: Kernel, bridge_index: int) -> list[str]:
        return [link.ifname for link in host.links(master=bridge_index)]

    def _bridge_index(self, host: Kernel, undo: Undo) -> int:
        """The bridge's ifindex: cached, else ensured (created when missing). Call under the lock."""
        if not self._index:
            bridge, created = self._ensure_bridge(host)
            if created:
                undo.add(f"remove bridge {self.bridge}", self.remove_bridge_if_empty)
            self._index, self._gateways = bridge.index, set()
        return self._index

    def _forget_bridge(self) -> None:
        self._index, self._gateways = 0, set()

    def remove_bridge_if_empty(self) -> bool:
        """Delete the bridge when no port is left; True when it was deleted."""
        host = self.host_kernel()
        with self._lock:
            if self._in_flight:
                return False
            link = host.link(self.bridge)
            if link is None or link.kind != "bridge" or self._ports(host, link.index):
                return False
            self._forget_bridge()
            return host.delete_link(link.index, self.bridge)

    def _remove_gateway_if_unused(self, host: Kernel, iface: IPInterface) -> None:
        with self._lock:
            link = host.link(self.bridge)
            self._gateways.discard(iface)
            if link is not None and not self._ports(host, link.index):
                host.delete_address(link.index, iface, self.bridge)

    # ---- plug / check -----------------------------------------------------------------

    def _create_port(self, host: Kernel, sb: Kernel, sandbox_fd: int, spec: PlugSpec, host_mac: str,
                     undo: Undo) -> tuple[int, int]:
        """The veth, its host end created in the bridge: (the bridge's ifindex, the peer's as echoed
        or 0). The lock is held for the bridge's lookup only; the plug counts as in flight until
        its veth is in the bridge."""
        with self._lock:
            cached = bool(self._index)
            index = self._bridge_index(host, undo)
            self._in_flight += 1
        try:
            try:
                peer = create_veth(host, sb, sandbox_fd, spec, host_mac=host_mac, master=index,
                                   reap=self._reap_peer)
            except DataplaneError as e:
                full = bridge_full(self.bridge, e)
                if full is not None:
                    raise full from e
                if not cached or cause_errno(e) not in STALE_MASTER:
                    raise
                # the cached bridge is gone (deleted behind our back): look it up again, once
                with self._lock:
                    if self._index == index:
                        self._forget_bridge()
                    index = self._bridge_index(host, undo)
                peer = create_veth(host, sb, sandbox_fd, spec, host_mac=host_mac, master=index,
                                   reap=self._reap_peer)
        finally:
            with self._lock:
                self._in_flight -= 1
        return index, peer

    def _plug(self, host: Kernel, sb: Kernel, sandbox_fd: int, spec: PlugSpec, undo: Undo) -> Plugged:
        host_mac = self.host_mac_for(spec.host_ifname)
        bridge_index, peer_index = self._create_port(host, sb, sandbox_fd, spec, host_mac, undo)
        undo.add(f"delete {spec.host_ifname}", lambda: delete_if_ours(host, spec.host_ifname, "veth"))
        crash.point("plug:veth-created")
        routes = subnet_routes(spec)
        configure_sandbox(sb, spec, spec.addresses, routes, index=peer_index)
        crash.point("plug:sandbox-configured")
        gateways = tuple(spec.gateways[v] for v in spec.families if v in spec.gateways)
        if self.gateway_on_bridge:
            self._add_gateways(host, bridge_index, gateway_interfaces(spec.addresses, gateways), undo)
        return Plugged(host_ifname=spec.host_ifname, host_mac=host_mac, sandbox_ifname=spec.ifname,
                       sandbox_mac=spec.mac, mtu=spec.mtu, routes=routes, gateways=gateways,
                       extra={"bridge": self.bridge})

    def _add_gateways(self, host: Kernel, index: int, ifaces: tuple[IPInterface, ...], undo: Undo) -> None:
        """Each gateway on the bridge, unless known to be there since the bridge was last looked up."""
        for iface in ifaces:
            with self._lock:
                if iface in self._gateways and index == self._index:
                    continue
            if host.add_address(index, iface, self.bridge, exist_ok=True):
                undo.add(f"remove gateway {iface} from {self.bridge}",
                         functools.partial(self._remove_gateway_if_unused, host, iface))
            with self._lock:
                if index == self._index:
                    self._gateways.add(iface)

    def _check_more(self, host: Kernel, sb: Kernel, sb_link: LinkInfo | None, att: Attachment,
                    plugged: Plugged) -> list[str]:
        bridge, problems = link_problems(host, self.bridge, HOST, kind="bridge")
        if bridge is None:
            return problems
        problems += link_problems(host, plugged.host_ifname, HOST, kind="veth", mac=plugged.host_mac,
                                  master=bridge.index, master_name=f"bridge {self.bridge}")[1]
        if self.gateway_on_bridge:
            problems += address_problems(host, bridge, HOST, gateway_interfaces(tuple(att.addresses),
                                                                                 plugged.gateways))
        return problems

    def host_objects(self) -> set[str]:
        """The veth host ends that are ports of this bridge."""
        host = self.host_kernel()
        bridge = host.link(self.bridge)
        if bridge is None:
            return set()
        return {link.ifname for link in host.links(master=bridge.index, kind="veth")}
