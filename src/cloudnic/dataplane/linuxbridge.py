"""Linuxbridge mode: Neutron's linuxbridge-agent naming, so the agent adopts what we plug.

The host end of the veth is ``tap<port_id[:11]>`` and its bridge ``brq<network_id[:11]>``
(``lb_utils.get_tap_device_name`` / ``get_bridge_name`` in Neutron). The agent finds the
tap, binds the port, installs the port's security groups (iptables ``physdev`` chains,
ebtables ARP/MAC rules) and reports it ACTIVE. For ``device_owner`` ``compute:*`` (ours:
``compute:cloudnic``) the agent does **not** put the tap into the bridge, expecting Nova
to have done it, so with ``enslave`` (default) the plugger does: it creates ``brq…``
when the agent has not yet (up, forward delay 0, STP off, no IPv6 on the bridge, the
network MTU; the agent later adds its physical or vxlan interface to it) and creates the
tap already enslaved. With ``enslave=False`` (other device owners) the agent enslaves it.

The sandbox end gets the port MAC, its addresses with the subnet prefix, a default route
via the subnet gateway (a Neutron router somewhere on the network: the bridge carries no
gateway address), the subnet host routes and the MTU. A gateway outside the subnet (which
Neutron allows) gets an on-link host route first; a host route whose nexthop is 0.0.0.0
or :: is on-link.

This mode is also a :class:`ParkingDataplane`: pooled ports are parked in the parking
netns (``parking.py``), moved into a sandbox by ``plug_parked`` and back by
``return_to_park``, which also removes the traffic control a chained ``bandwidth`` plugin
left on the tap (root and ingress qdiscs, its ifb: ``tc.py``) so that the next pod on the
port does not inherit the previous pod's rate limit (a re-created pair has none). Unplug
deletes the tap (which deletes the pair); bridges are left to the Neutron agent, which
removes a ``brq…`` once its network has no port on the node (``remove_bridge_if_empty``
is for teardown without an agent).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace

from cloudnic import crash
from cloudnic.dataplane import parking, tc
from cloudnic.dataplane.base import Attachment, ParkingDataplane, Plugged, RouteSpec
from cloudnic.dataplane.bridge import bridge_full
from cloudnic.dataplane.check import link_problems
from cloudnic.dataplane.kernel import Kernel, LinkChange, LinkInfo, LinkSpec, cause_errno
from cloudnic.dataplane.links import Bridge
from cloudnic.dataplane.names import derived_mac
from cloudnic.dataplane.netns import netns_socket
from cloudnic.dataplane.parking import RESOURCE_ID_LENGTH, ParkingLot, parked_name
from cloudnic.dataplane.spec import PlugSpec, prepare, subnet_routes
from cloudnic.dataplane.undo import Undo
from cloudnic.dataplane.veth import (
    HOST,
    SANDBOX,
    VethDataplane,
    configure_sandbox,
    create_veth,
    delete_if_ours,
    require_free_ifname,
)
from cloudnic.errors import CNIError, DataplaneError, InvalidConfig

log = logging.getLogger(__name__)

TAP_PREFIX = "tap"
BRIDGE_PREFIX = "brq"
TAP_RE = re.compile(r"^tap[0-9a-f-]{11}$")


def tap_name(port_id: str) -> str:
    return TAP_PREFIX + port_id[:RESOURCE_ID_LENGTH]


def bridge_name(network_id: str) -> str:
    return BRIDGE_PREFIX + network_id[:RESOURCE_ID_LENGTH]


def sandbox_routes(spec: PlugSpec) -> tuple[RouteSpec, ...]:
    """On-link routes to gateways outside every subnet of their family, then the L2 modes' routes."""
    out = [RouteSpec(f"{gw}/{gw.max_prefixlen}", None, scope_link=True) for v, gw in spec.gateways.items()
           if not any(gw in a.network for a in spec.addresses if a.version == v)]
    seen = {r.dst for r in out}
    out += [r for r in subnet_routes(spec) if r.dst not in seen]
    return tuple(out)


def _on_link_if_unspecified(r: RouteSpec) -> RouteSpec:
    try:
        unspecified = bool(r.gw) and ipaddress.ip_address(r.gw or "").is_unspecified
    except ValueError:
        return r            # prepare() names the bad gateway
    return RouteSpec(r.dst, None, scope_link=True) if unspecified else r


def run_atomic(what: str, undo: Undo, fn: Callable[[], Plugged]) -> Plugged:
    """Run ``fn``; on any failure undo what it recorded and raise a cloudnic error."""
    try:
        return fn()
    except BaseException as e:
        undo.run()
        if isinstance(e, CNIError | KeyboardInterrupt | SystemExit):
            raise
        raise DataplaneError(f"{what} failed unexpectedly: {type(e).__name__}", str(e)) from e


class LinuxBridgeDataplane(VethDataplane, ParkingDataplane):
    mode = "linuxbridge"

    def __init__(self, mtu: int = 1500, host_netns_fd: int | None = None, enslave: bool = True,
                 parking_netns: str = parking.DEFAULT_PARKING, deferred_delete: bool = False) -> None:
        self.enslave = enslave
        self._lot = ParkingLot(parking_netns)
        self._lock = threading.Lock()                     # bridge lookup/creation and removal
        self._in_flight: Counter[int] = Counter()         # bridge ifindex -> ports being made in it
        super().__init__(mtu, host_netns_fd, deferred_delete)

    # ---- names and validation ---------------------------------------------------------

    def _normalize(self, att: Attachment) -> Attachment:
        if not att.port_id:
            raise InvalidConfig(f"attachment {att.key} has no port id; the linuxbridge dataplane names the "
                                "host end tap<port_id[:11]> and needs it")
        if self.enslave and not att.network_id:
            raise InvalidConfig(f"attachment {att.key} (port {att.port_id}) has no network id; the linuxbridge "
                                "dataplane needs it for the bridge brq<network_id[:11]>")
        return replace(att, host_ifname=tap_name(att.port_id),
                       routes=tuple(_on_link_if_unspecified(r) for r in att.routes))

    def _prepare(self, att: Attachment) -> tuple[Attachment, PlugSpec]:
        att = self._normalize(att)
        return att, prepare(att, self.mtu, host_end=True, gateway_in_subnet=False)

    def _plugged(self, att: Attachment, spec: PlugSpec, routes: tuple[RouteSpec, ...], how: str) -> Plugged:
        gateways = tuple(spec.gateways[v] for v in spec.families if v in spec.gateways)
        return Plugged(host_ifname=spec.host_ifname, host_mac=self.host_mac_for(spec.host_ifname),
                       sandbox_ifname=spec.ifname, sandbox_mac=spec.mac, mtu=spec.mtu, routes=routes,
                       gateways=gateways, extra={"bridge": bridge_name(att.network_id) if self.enslave else "",
                                                 "port_id": att.port_id, "plugged": how})

    # ---- the bridge -------------------------------------------------------------------

    def _ensure_bridge(self, host: Kernel, name: str, mtu: int, undo: Undo) -> LinkInfo:
        """``brq…`` up; created like the Neutron agent does when it is not there yet. Call under the lock."""
        link = host.link(name)
        created = False
        if link is None:
            try:
                host.add_link(LinkSpec(ifname=name, kind=Bridge(forward_delay=0, stp=False),
                                       mac=derived_mac("bridge:" + name), up=True), f"bridge {name}")
                created = True
                undo.add(f"remove bridge {name}", lambda: self._remove_bridge_if_empty(host, name))
            except DataplaneError as e:
                if cause_errno(e) != errno.EEXIST:
                    raise
            link = host.link(name)
            if link is None:
                raise DataplaneError(f"bridge {name} vanished from the host netns during plug; retry")
        if link.kind != "bridge":
            raise InvalidConfig(f"{name} exists in the host netns but is a {link.kind or 'plain'} link, not the "
                                "bridge of a Neutron network; remove it")
        if created:
            if link.mtu != mtu:
                host.set_link(link.index, LinkChange(mtu=mtu), f"MTU of bridge {name} to {mtu}")
            with contextlib.suppress(CNIError):       # no IPv6 at all on this node: nothing to disable
                self._host.sysctl_set(f"net/ipv6/conf/{name}/disable_ipv6", "1")
        if not link.up:
            host.set_up(link.index, name)
        return link

    def _remove_bridge_if_empty(self, host: Kernel, name: str) -> bool:
        with self._lock:
            link = host.link(name)
            if (link is None or link.kind != "bridge" or self._in_flight[link.index]
                    or host.links(master=link.index)):
                return False
            return host.delete_link(link.index, name)

    def remove_bridge_if_empty(self, network_id: str) -> bool:
        """Delete ``brq<network_id[:11]>`` when no port is left (teardown without a Neutron agent)."""
        return self._remove_bridge_if_empty(self.host_kernel(), bridge_name(network_id))

    @contextlib.contextmanager
    def _master(self, host: Kernel, att: Attachment, mtu: int, undo: Undo) -> Iterator[int]:
        """The ifindex of the port's bridge (0 without ``enslave``), counted in flight until the block
        (which makes the port in it) is over: the lock is not held across the port's netlink calls,
        and an empty bridge is not removed while a port is being made in it."""
        if not self.enslave:
            yield 0
            return
        with self._lock:
            master = self._ensure_bridge(host, bridge_name(att.network_id), mtu, undo).index
            self._in_flight[master] += 1
        try:
            yield master
        finally:
            with self._lock:
                self._in_flight[master] -= 1
                if not self._in_flight[master]:
                    del self._in_flight[master]

    def _repair_tap(self, host: Kernel, tap: LinkInfo, att: Attachment, mtu: int) -> None:
        """A parked port's tap: up and, with ``enslave``, in its bridge."""
        if self.enslave:
            with self._lock:
                bridge = self._ensure_bridge(host, bridge_name(att.network_id), mtu, Undo())
                if tap.master != bridge.index:
                    host.set_link(tap.index, LinkChange(master=bridge.index),
                                  f"{tap.ifname} into bridge {bridge.ifname}")
        if not tap.up:
            host.set_up(tap.index, tap.ifname)

    # ---- plug / unplug / check --------------------------------------------------------

    def plug(self, sandbox_fd: int, att: Attachment) -> Plugged:
        att, spec = self._prepare(att)
        host = self.host_kernel()
        with contextlib.closing(netns_socket(sandbox_fd)) as sock:
            sb = Kernel(sock, SANDBOX)
            undo = Undo()

            def run() -> Plugged:
                with self._master(host, att, spec.mtu, undo) as master:
                    try:
                        peer_index = create_veth(host, sb, sandbox_fd, spec, master=master, reap=self._reap_peer,
                                                 host_mac=self.host_mac_for(spec.host_ifname))
                    except DataplaneError as e:
                        full = bridge_full(bridge_name(att.network_id), e)
                        if full is not None:
                            raise full from e
                        raise
                undo.add(f"delete {spec.host_ifname}", lambda: delete_if_ours(host, spec.host_ifname, "veth"))
                crash.point("plug:veth-created")
                routes = sandbox_routes(spec)
                configure_sandbox(sb, spec, spec.addresses, routes, index=peer_index)
                crash.point("plug:sandbox-configured")
                return self._plugged(att, spec, routes, "new")

            return run_atomic(f"plugging {spec.ifname}", undo, run)

    def unplug(self, sandbox_fd: int | None, att: Attachment, plugged: Plugged | None) -> None:
        if att.port_id:
            att = replace(att, host_ifname=tap_name(att.port_id))
        super().unplug(sandbox_fd, att, plugged)

    def _check_more(self, host: Kernel, sb: Kernel, sb_link: LinkInfo | None, att: Attachment,
                    plugged: Plugged) -> list[str]:
        if not self.enslave:
            return link_problems(host, plugged.host_ifname, HOST, kind="veth", mac=plugged.host_mac)[1]
        name = bridge_name(att.network_id)
        bridge, problems = link_problems(host, name, HOST, kind="bridge")
        if bridge is None:
            return problems
        return problems + link_problems(host, plugged.host_ifname, HOST, kind="veth", mac=plugged.host_mac,
                                        master=bridge.index, master_name=f"bridge {name}")[1]

    def host_objects(self) -> set[str]:
        """The ``tap…`` veth ends plugged into sandboxes (parked ones are left out).

        Every linuxbridge dataplane of one host netns sees the same set: reconcile against
        the union of all networks' records, not per network.
        """
        taps = {lk.ifname for lk in self.host_kernel().links(kind="veth") if TAP_RE.match(lk.ifname)}
        parked = {TAP_PREFIX + name[len(parking.PARKED_PREFIX):] for name in self._lot.ends()}
        return taps - parked

    # ---- parking ----------------------------------------------------------------------

    def park(self, att: Attachment) -> None:
        att, spec = self._prepare(att)
        tap, parked = spec.host_ifname, parked_name(att.port_id)
        host, lot = self.host_kernel(), self._lot.kernel()
        end, tap_link = lot.link(parked), host.link(tap)
        if end is not None and tap_link is None:      # a stray end: its pair cannot be ours
            lot.delete_link(end.index, parked)
            end = None
        if end is not None and tap_link is not None:  # parked already (restart, retry): complete it
            self._repair_tap(host, tap_link, att, spec.mtu)
            parking.set_alias(lot, end.index, parked, att.port_id)   # a crash may have left it without
            return
        if tap_link is not None:
            raise DataplaneError(f"port {att.port_id} is not parked: its host end {tap} exists and the other end "
                                 "is in a sandbox; DEL that attachment (or return it to the pool) first")
        undo = Undo()
        try:
            with self._master(host, att, spec.mtu, undo) as master:
                parking.create_parked(host, self._lot, tap=tap, port_id=att.port_id, mac=spec.mac,
                                      host_mac=self.host_mac_for(tap), mtu=spec.mtu, master=master)
        except BaseException:
            undo.run()
            raise

    def plug_parked(self, sandbox_fd: int, att: Attachment) -> Plugged:
        att, spec = self._prepare(att)
        parked = parked_name(att.port_id)
        lot = self._lot.kernel()
        end = lot.link(parked)
        if end is None:
            log.warning("port %s is not parked; plugging it anew (it may not be ACTIVE yet)", att.port_id)
            return self.plug(sandbox_fd, att)
        with contextlib.closing(netns_socket(sandbox_fd)) as sock:
            sb = Kernel(sock, SANDBOX)
            require_free_ifname(sb, spec.ifname)    # a move under a taken name would half-happen
            undo = Undo()

            def run() -> Plugged:
                parking.move_to_sandbox(lot, end.index, parked, sandbox_fd, ifname=spec.ifname, mac=spec.mac,
                                        mtu=spec.mtu)
                undo.add(f"return {spec.ifname} to the parking netns", lambda: self._move_back(sb, att, spec))
                routes = sandbox_routes(spec)
                configure_sandbox(sb, spec, spec.addresses, routes)
                return self._plugged(att, spec, routes, "parked")

            return run_atomic(f"plugging parked port {att.port_id} as {spec.ifname}", undo, run)

    def _move_back(self, sb: Kernel, att: Attachment, spec: PlugSpec) -> None:
        link = sb.link(spec.ifname)
        if link is None:
            raise DataplaneError(f"{spec.ifname} is gone from the sandbox; cannot return it to the parking netns")
        parking.move_to_lot(sb, link.index, spec.ifname, self._lot, port_id=att.port_id, mac=spec.mac,
                            mtu=spec.mtu)

    def return_to_park(self, sandbox_fd: int | None, att: Attachment, plugged: Plugged | None = None) -> None:
        att, spec = self._prepare(att)
        host = self.host_kernel()
        if self._lot.kernel().link(parked_name(att.port_id)) is not None:
            self.park(att)                             # already back (a retried DEL)
            tap_link = host.link(spec.host_ifname)
            if tap_link is not None:                   # that DEL may have failed before the scrub
                tc.scrub_host_end(host, tap_link.index, tap_link.ifname)
            return
        tap_link = host.link(spec.host_ifname)
        if sandbox_fd is not None and tap_link is not None:
            ifname = plugged.sandbox_ifname if plugged else spec.ifname
            with contextlib.closing(netns_socket(sandbox_fd)) as sock:
                sb = Kernel(sock, SANDBOX)
                link = sb.link(ifname)
                if link is not None and link.kind == "veth" and parking.peer_index(sb, link.index) == tap_link.index:
                    parking.move_to_lot(sb, link.index, ifname, self._lot, port_id=att.port_id, mac=spec.mac,
                                        mtu=spec.mtu)
                    self._repair_tap(host, tap_link, att, spec.mtu)
                    tc.scrub_host_end(host, tap_link.index, tap_link.ifname)   # no rate limit for the next pod
                    return
        # the sandbox end is gone (with its netns, which deleted the pair) or is not this port's
        if tap_link is not None:
            log.warning("port %s: its host end %s lost its sandbox end; re-creating the pair", att.port_id,
                        spec.host_ifname)
            delete_if_ours(host, spec.host_ifname, "veth")
        self.park(att)

    def unpark(self, att: Attachment) -> None:
        if not att.port_id:
            raise InvalidConfig(f"attachment {att.key} has no port id; cannot find its parked end")
        parked, tap = parked_name(att.port_id), tap_name(att.port_id)
        end = self._lot.ends().get(parked)
        if end is not None:
            self._lot.kernel().delete_link(end.index, parked)    # deletes the pair, tap included
            return
        tap_link = self.host_kernel().link(tap)
        if tap_link is not None and tap_link.kind == "veth":
            raise DataplaneError(f"port {att.port_id} is not parked: {tap} exists and its other end is in a "
                                 "sandbox; DEL that attachment first")

    def parked_ports(self) -> set[str]:
        return {e.port_id for e in self._lot.ends().values() if e.port_id}

    def parked_ends(self) -> dict[str, parking.ParkedEnd]:
        """Every parked end by name, including any a crash left without its port id."""
        return self._lot.ends()

    def prune_parked(self, keep: set[str]) -> list[str]:
        """Delete the parked ends of ports not in ``keep`` (reconciliation); their names."""
        return parking.prune(self._lot, keep)

    def remove_parking(self) -> bool:
        """Delete the parking netns and every parked port with it (uninstall, tests)."""
        return self._lot.remove()

    def close(self) -> None:
        super().close()
        self._lot.close()
