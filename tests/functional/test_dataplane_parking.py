"""Parking: pooled ports pre-plugged (tap in brq, other end parked), moved into sandboxes and back.

A "node" netns plays the host; each test has its own parking netns (cnl-park-…) and
removes it. Crash-safety: what a restarted agent finds is proven by closing a dataplane
and opening a new one on the same parking netns.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from cloudnic.dataplane import LinuxBridgeDataplane, NetnsSafeExecutor, PortParker, park_attachment, tap_name
from cloudnic.dataplane import parking as parking_mod
from cloudnic.dataplane.base import Attachment, RouteSpec
from cloudnic.dataplane.parking import ALIAS_PREFIX, parked_name
from cloudnic.errors import DataplaneError, InvalidConfig
from tests.functional.netns_util import (
    NETNS_DIR,
    Netns,
    addresses,
    all_addresses,
    close_netns,
    create_netns,
    is_up,
    link,
    link_names,
    ping,
    routes,
    sh,
    unique,
)
from tests.functional.test_dataplane_linuxbridge import BRQ, MTU, NET, attachment, bridge_ports, port_id

pytestmark = pytest.mark.functional


@dataclass
class Lot:
    """The parking netns as the tests read it (through ``ip``, not the code under test)."""

    name: str

    def ip(self, *args: str) -> Any:
        import json
        out = sh("ip", "-n", self.name, "-j", *args)
        return json.loads(out) if out.strip() else []

    def ends(self) -> dict[str, dict[str, Any]]:
        return {lk["ifname"]: lk for lk in self.ip("-d", "link", "show") if lk["ifname"] != "lo"}


@pytest.fixture
def node() -> Iterator[Netns]:
    ns = create_netns(unique("node", "cnl-"))
    try:
        yield ns
    finally:
        close_netns(ns)


@pytest.fixture
def sandboxes() -> Iterator[list[Netns]]:
    made: list[Netns] = []
    try:
        for _ in range(4):
            made.append(create_netns(unique("sb", "cnl-")))
        yield made
    finally:
        for ns in made:
            close_netns(ns)


@pytest.fixture
def lot_name() -> Iterator[str]:
    name = unique("park", "cnl-")
    try:
        yield name
    finally:
        parking_mod.remove_netns_file(f"{NETNS_DIR}/{name}")


@pytest.fixture
def dp(node: Netns, lot_name: str) -> Iterator[LinuxBridgeDataplane]:
    d = LinuxBridgeDataplane(mtu=MTU, host_netns_fd=node.fd, parking_netns=lot_name)
    try:
        yield d
    finally:
        d.close()


def parked(i: int) -> Attachment:
    return park_attachment(port_id(i), NET, f"fa:16:3e:71:00:{i:02x}", MTU)


def test_park_makes_the_tap_ready_for_neutron_and_parks_the_other_end(
        node: Netns, lot_name: str, dp: LinuxBridgeDataplane) -> None:
    assert not os.path.exists(f"{NETNS_DIR}/{lot_name}"), "nothing is created before the first park"
    for i in range(4):
        dp.park(parked(i))
    taps = {tap_name(port_id(i)) for i in range(4)}
    assert bridge_ports(node) == taps
    for t in taps:
        info = link(node, t)
        assert info is not None and is_up(info) and info["mtu"] == MTU
    ends = Lot(lot_name).ends()
    assert set(ends) == {parked_name(port_id(i)) for i in range(4)}
    for i in range(4):
        end = ends[parked_name(port_id(i))]
        assert "UP" not in end["flags"], "a parked end is down"
        assert end["address"] == f"fa:16:3e:71:00:{i:02x}" and end["mtu"] == MTU
        assert end["ifalias"] == ALIAS_PREFIX + port_id(i)
        assert all_addresses(Netns(lot_name, -1), end["ifname"]) == set(), "and has no address at all"
    assert dp.parked_ports() == {port_id(i) for i in range(4)}
    assert dp.host_objects() == set(), "parked taps are not attachments"
    dp.park(parked(0))                      # idempotent
    assert dp.parked_ports() == {port_id(i) for i in range(4)}


def test_plug_parked_gives_the_pod_its_port_and_pods_talk_through_brq(
        node: Netns, sandboxes: list[Netns], lot_name: str, dp: LinuxBridgeDataplane) -> None:
    for i in range(3):
        dp.park(parked(i))
    a, b = attachment(0), attachment(1)
    pa = dp.plug_parked(sandboxes[0].fd, a)
    pb = dp.plug_parked(sandboxes[1].fd, b)
    assert pa.extra["plugged"] == "parked" and pa.host_ifname == tap_name(a.port_id)
    for sb, att in ((sandboxes[0], a), (sandboxes[1], b)):
        pod = link(sb, "eth0")
        assert pod is not None and is_up(pod) and pod["address"] == att.mac and pod["mtu"] == MTU
        assert "ifalias" not in pod, "the parking alias does not follow the port into the pod"
        assert addresses(sb, "eth0") == {x.with_prefixlen for x in att.addresses}
        assert ("default", "10.71.0.1") in routes(sb, "eth0", 4)
        assert ("default", "fd00:71::1") in routes(sb, "eth0", 6)
    assert ping(sandboxes[0], "10.71.0.11") and ping(sandboxes[1], "fd00:71::a")
    assert set(Lot(lot_name).ends()) == {parked_name(port_id(2))}
    assert dp.parked_ports() == {port_id(2)}
    assert dp.host_objects() == {pa.host_ifname, pb.host_ifname}
    dp.check(sandboxes[0].fd, a, pa)
    assert bridge_ports(node) == {tap_name(port_id(i)) for i in range(3)}


def test_return_to_park_scrubs_and_the_port_serves_another_pod(
        node: Netns, sandboxes: list[Netns], lot_name: str, dp: LinuxBridgeDataplane) -> None:
    dp.park(parked(0))
    dp.park(parked(1))
    first = attachment(0, routes=(RouteSpec("10.90.0.0/16", "10.71.0.254"),))
    plugged = dp.plug_parked(sandboxes[0].fd, first)
    sh("ip", "-n", sandboxes[0].name, "neigh", "add", "10.71.0.77", "lladdr", "02:00:00:00:00:77", "dev", "eth0")
    sh("ip", "-n", sandboxes[0].name, "link", "set", "eth0", "address", "02:00:00:00:99:99")   # e.g. tuning
    dp.return_to_park(sandboxes[0].fd, first, plugged)
    assert link_names(sandboxes[0]) == {"lo"}
    end = Lot(lot_name).ends()[parked_name(port_id(0))]
    assert "UP" not in end["flags"] and end["address"] == first.mac and end["ifalias"] == ALIAS_PREFIX + port_id(0)
    assert all_addresses(Netns(lot_name, -1), end["ifname"]) == set()
    assert Lot(lot_name).ip("neigh", "show") == [] and Lot(lot_name).ip("-4", "route", "show") == []
    assert dp.parked_ports() == {port_id(0), port_id(1)}
    assert tap_name(port_id(0)) in bridge_ports(node)
    dp.return_to_park(sandboxes[0].fd, first, plugged)        # a retried DEL: nothing changes
    # the same port, another pod, another address: nothing of the first pod remains
    second = attachment(0, family="v4", addresses=(ipaddress.ip_interface("10.71.0.40/24"),), key="pods/c9/eth0")
    p2 = dp.plug_parked(sandboxes[2].fd, second)
    assert addresses(sandboxes[2], "eth0") == {"10.71.0.40/24"}
    assert routes(sandboxes[2], "eth0", 4) == {("default", "10.71.0.1"), ("10.71.0.0/24", None)}
    other = dp.plug_parked(sandboxes[1].fd, attachment(1, family="v4"))
    assert ping(sandboxes[1], "10.71.0.40")
    dp.check(sandboxes[2].fd, second, p2)
    dp.check(sandboxes[1].fd, attachment(1, family="v4"), other)


def qdiscs(ns: Netns, dev: str) -> list[tuple[str, str]]:
    """(kind, parent) of every qdisc on ``dev`` as ``tc`` shows them."""
    import json
    return sorted((q["kind"], q.get("parent", "root")) for q in json.loads(sh("tc", "-n", ns.name, "-j", "qdisc",
                                                                              "show", "dev", dev) or "[]"))


def shape_like_the_bandwidth_plugin(node: Netns, tap: str, ifb: str, foreign_ifb: str) -> None:
    """What a chained ``bandwidth`` plugin leaves on a pod's host end, done with ``tc``; plus an ifb of
    someone else's that the tap's ingress also redirects to (it must survive the scrub)."""
    def tc(*args: str) -> None:
        sh("tc", "-n", node.name, *args)
    tc("qdisc", "add", "dev", tap, "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "100ms")
    for name in (ifb, foreign_ifb):
        sh("ip", "-n", node.name, "link", "add", name, "type", "ifb")
        sh("ip", "-n", node.name, "link", "set", name, "up")
    tc("qdisc", "add", "dev", ifb, "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "100ms")
    tc("qdisc", "add", "dev", tap, "ingress")
    for pref, target in (("1", ifb), ("2", foreign_ifb)):
        tc("filter", "add", "dev", tap, "parent", "ffff:", "pref", pref, "protocol", "all", "u32", "match", "u32",
           "0", "0", "action", "mirred", "egress", "redirect", "dev", target)


def test_return_to_park_removes_what_a_chained_bandwidth_plugin_left_on_the_tap(
        node: Netns, sandboxes: list[Netns], lot_name: str, dp: LinuxBridgeDataplane) -> None:
    dp.park(parked(0))
    dp.park(parked(1))
    tap, other_tap = tap_name(port_id(0)), tap_name(port_id(1))
    ifb, foreign = unique("bwp", "")[:15], unique("ifk", "")
    first = attachment(0)
    plugged = dp.plug_parked(sandboxes[0].fd, first)
    other = dp.plug_parked(sandboxes[3].fd, attachment(1))      # never shaped: the default to compare with
    default_host, default_pod = qdiscs(node, other_tap), qdiscs(sandboxes[3], "eth0")
    assert qdiscs(node, tap) == default_host
    shape_like_the_bandwidth_plugin(node, tap, ifb, foreign)
    shaped = qdiscs(node, tap)
    assert ("tbf", "root") in shaped and ("ingress", "ffff:fff1") in shaped, shaped
    dp.return_to_park(sandboxes[0].fd, first, plugged)
    assert qdiscs(node, tap) == qdiscs(node, other_tap), "no qdisc but the default is left on the parked tap"
    assert link(node, ifb) is None, "the plugin's ifb, which the tap's ingress redirected to, is gone"
    assert link(node, foreign) is not None, "an ifb not named like the plugin's is left alone"
    assert tap_name(port_id(0)) in bridge_ports(node) and dp.parked_ports() == {port_id(0)}
    # a DEL that failed after the move but before the scrub: its retry scrubs
    sh("tc", "-n", node.name, "qdisc", "add", "dev", tap, "root", "tbf", "rate", "1mbit", "burst", "32kbit",
       "latency", "100ms")
    sh("tc", "-n", node.name, "qdisc", "add", "dev", tap, "ingress")
    dp.return_to_park(sandboxes[0].fd, first, plugged)
    assert qdiscs(node, tap) == qdiscs(node, other_tap)
    # the next pod on that port: the default qdiscs on both of its ends, and it still works
    second = attachment(0, family="v4", addresses=(ipaddress.ip_interface("10.71.0.40/24"),), key="pods/c9/eth0")
    p2 = dp.plug_parked(sandboxes[1].fd, second)
    assert qdiscs(node, tap) == default_host
    assert qdiscs(sandboxes[1], "eth0") == default_pod
    assert ping(sandboxes[3], "10.71.0.40")
    dp.check(sandboxes[1].fd, second, p2)
    dp.check(sandboxes[3].fd, attachment(1), other)


def test_a_sandbox_gone_before_return_re_creates_the_parked_port(
        node: Netns, sandboxes: list[Netns], lot_name: str, dp: LinuxBridgeDataplane) -> None:
    dp.park(parked(0))
    att = attachment(0)
    plugged = dp.plug_parked(sandboxes[0].fd, att)
    close_netns(sandboxes[0])                     # the runtime deleted the netns: the pair died with it
    for _ in range(50):
        if link(node, plugged.host_ifname) is None:
            break
        time.sleep(0.05)
    assert link(node, plugged.host_ifname) is None
    dp.return_to_park(None, att, plugged)
    assert dp.parked_ports() == {port_id(0)}
    assert tap_name(port_id(0)) in bridge_ports(node)
    p = dp.plug_parked(sandboxes[1].fd, att)
    dp.check(sandboxes[1].fd, att, p)


def test_a_sandbox_whose_interface_vanished_re_creates_it_too(
        node: Netns, sandboxes: list[Netns], lot_name: str, dp: LinuxBridgeDataplane) -> None:
    dp.park(parked(0))
    att = attachment(0)
    dp.plug_parked(sandboxes[0].fd, att)
    sh("ip", "-n", sandboxes[0].name, "link", "del", "eth0")
    dp.return_to_park(sandboxes[0].fd, att, None)
    assert dp.parked_ports() == {port_id(0)}
    assert link(node, tap_name(port_id(0))) is not None


def test_unpark_deletes_both_ends_and_refuses_a_port_in_use(
        node: Netns, sandboxes: list[Netns], lot_name: str, dp: LinuxBridgeDataplane) -> None:
    dp.park(parked(0))
    dp.park(parked(1))
    dp.plug_parked(sandboxes[0].fd, attachment(1))
    dp.unpark(parked(0))
    assert link(node, tap_name(port_id(0))) is None
    assert parked_name(port_id(0)) not in Lot(lot_name).ends()
    dp.unpark(parked(0))                              # idempotent
    with pytest.raises(DataplaneError, match=f"port {port_id(1)} is not parked: {tap_name(port_id(1))} exists"):
        dp.unpark(parked(1))
    assert link(sandboxes[0], "eth0") is not None, "the pod keeps its interface"
    with pytest.raises(DataplaneError, match=f"port {port_id(1)} is not parked"):
        dp.park(parked(1))


def test_plug_parked_failures_leave_the_port_parked(
        node: Netns, sandboxes: list[Netns], lot_name: str, dp: LinuxBridgeDataplane) -> None:
    dp.park(parked(0))
    sh("ip", "-n", sandboxes[0].name, "link", "add", "eth0", "type", "veth", "peer", "name", "x0")
    with pytest.raises(InvalidConfig, match="CNI_IFNAME 'eth0' already exists"):
        dp.plug_parked(sandboxes[0].fd, attachment(0))
    # fails after the move (a route the kernel refuses): the end goes back to the parking netns
    bad = attachment(0, routes=(RouteSpec("10.82.0.0/16", "192.168.250.1"),))
    with pytest.raises(DataplaneError, match=r"adding route 10\.82\.0\.0/16 via 192\.168\.250\.1"):
        dp.plug_parked(sandboxes[1].fd, bad)
    assert link_names(sandboxes[1]) == {"lo"}
    assert dp.parked_ports() == {port_id(0)}
    end = Lot(lot_name).ends()[parked_name(port_id(0))]
    assert all_addresses(Netns(lot_name, -1), end["ifname"]) == set()
    dp.check(sandboxes[2].fd, attachment(0), dp.plug_parked(sandboxes[2].fd, attachment(0)))


def test_a_port_that_is_not_parked_is_plugged_anew(node: Netns, sandboxes: list[Netns],
                                                    dp: LinuxBridgeDataplane) -> None:
    att = attachment(5)
    plugged = dp.plug_parked(sandboxes[0].fd, att)
    assert plugged.extra["plugged"] == "new"
    dp.check(sandboxes[0].fd, att, plugged)
    dp.return_to_park(sandboxes[0].fd, att, plugged)     # and a normally plugged port can join the pool
    assert dp.parked_ports() == {port_id(5)}


def test_parallel_plug_parked(node: Netns, sandboxes: list[Netns], dp: LinuxBridgeDataplane) -> None:
    for i in range(4):
        dp.park(parked(i))
    ex = NetnsSafeExecutor(max_workers=4)
    try:
        futs = [ex.submit(dp.plug_parked, sb.fd, attachment(i, "v4")) for i, sb in enumerate(sandboxes)]
        plugged = [f.result(60) for f in futs]
    finally:
        ex.shutdown()
    assert dp.parked_ports() == set()
    assert ping(sandboxes[0], "10.71.0.13")
    for i, (sb, p) in enumerate(zip(sandboxes, plugged, strict=True)):
        dp.check(sb.fd, attachment(i, "v4"), p)


def test_a_restarted_agent_finds_its_parked_ports_and_repairs_a_half_done_park(
        node: Netns, sandboxes: list[Netns], lot_name: str, dp: LinuxBridgeDataplane) -> None:
    for i in range(3):
        dp.park(parked(i))
    dp.plug_parked(sandboxes[0].fd, attachment(2))
    dp.close()                                      # the agent stops (or crashes): nothing is torn down
    assert len(Lot(lot_name).ends()) == 2
    # a crash between creating a pair and labelling it: an end without alias, and a stray one
    sh("ip", "-n", node.name, "link", "add", tap_name(port_id(7)), "type", "veth", "peer", "name",
       parked_name(port_id(7)), "netns", lot_name)
    sh("ip", "-n", node.name, "link", "add", tap_name(port_id(8)), "type", "veth", "peer", "name",
       parked_name(port_id(8)), "netns", lot_name)
    again = LinuxBridgeDataplane(mtu=MTU, host_netns_fd=node.fd, parking_netns=lot_name)
    try:
        assert again.parked_ports() == {port_id(0), port_id(1)}
        ends = again.parked_ends()
        assert ends[parked_name(port_id(7))].port_id == "" and ends[parked_name(port_id(8))].port_id == ""
        assert again.host_objects() == {tap_name(port_id(2))}, "the plugged pod's tap is an attachment"
        # the pool re-parks what it knows (7 gets its alias and joins the bridge) and prunes the rest
        again.park(parked(7))
        assert again.parked_ports() == {port_id(0), port_id(1), port_id(7)}
        assert tap_name(port_id(7)) in bridge_ports(node)
        assert sorted(again.prune_parked({port_id(0), port_id(7)})) == sorted(
            [parked_name(port_id(1)), parked_name(port_id(8))])
        assert again.parked_ports() == {port_id(0), port_id(7)}
        assert link(node, tap_name(port_id(8))) is None and link(node, tap_name(port_id(1))) is None
        p = again.plug_parked(sandboxes[1].fd, attachment(0))
        again.check(sandboxes[1].fd, attachment(0), p)
    finally:
        again.close()


def test_remove_parking_deletes_every_parked_port(node: Netns, lot_name: str, dp: LinuxBridgeDataplane) -> None:
    for i in range(2):
        dp.park(parked(i))
    assert dp.remove_parking() is True
    assert not os.path.exists(f"{NETNS_DIR}/{lot_name}")
    for _ in range(50):
        if not {tap_name(port_id(i)) for i in range(2)} & link_names(node):
            break
        time.sleep(0.05)
    assert not {tap_name(port_id(i)) for i in range(2)} & link_names(node)
    assert dp.parked_ports() == set()
    assert dp.remove_parking() is False


def test_the_parking_netns_is_an_ip_netns(lot_name: str, dp: LinuxBridgeDataplane) -> None:
    dp.park(parked(0))
    out = subprocess.run(["ip", "netns", "exec", lot_name, "ip", "-br", "link"], capture_output=True, text=True,
                         check=True).stdout
    assert parked_name(port_id(0)) in out


def test_the_move_is_one_setlink_with_netns_fd_and_ifname(node: Netns, sandboxes: list[Netns],
                                                          dp: LinuxBridgeDataplane) -> None:
    dp.park(parked(0))
    lot = dp._lot.kernel()
    end = lot.link(parked_name(port_id(0)))
    assert end is not None
    parking_mod.move_to_sandbox(lot, end.index, end.ifname, sandboxes[0].fd, ifname="net1",
                                mac="fa:16:3e:71:00:00", mtu=MTU)
    moved = link(sandboxes[0], "net1")
    assert moved is not None and moved["address"] == "fa:16:3e:71:00:00"
    assert lot.link(end.ifname) is None


def test_port_parker_is_the_pools_view(node: Netns, lot_name: str, dp: LinuxBridgeDataplane) -> None:
    @dataclass(frozen=True)
    class FakePort:
        id: str
        network_id: str
        mac: str

    parker: PortParker[FakePort] = PortParker(dp, lambda p: park_attachment(p.id, p.network_id, p.mac, MTU))
    port = FakePort(port_id(3), NET, "fa:16:3e:71:00:03")
    parker.park(port)
    assert dp.parked_ports() == {port.id}
    parker.unpark(port)
    assert dp.parked_ports() == set() and link(node, tap_name(port.id)) is None


def test_parking_settings_are_checked() -> None:
    with pytest.raises(InvalidConfig, match="parking_netns 'rel/path' must be a netns name or an absolute path"):
        LinuxBridgeDataplane(parking_netns="rel/path")
    dp = LinuxBridgeDataplane(parking_netns="cnl-never")
    try:
        with pytest.raises(InvalidConfig, match="has no port id"):
            dp.park(replace(parked(0), port_id=""))
    finally:
        dp.close()
    assert not os.path.exists(f"{NETNS_DIR}/cnl-never")


def test_an_absolute_parking_path_works(node: Netns, tmp_path: Any) -> None:
    path = str(tmp_path / "parking.netns")
    dp = LinuxBridgeDataplane(mtu=MTU, host_netns_fd=node.fd, parking_netns=path)
    try:
        dp.park(parked(0))
        assert dp.parked_ports() == {port_id(0)}
        assert BRQ in link_names(node)
    finally:
        dp.remove_parking()
        dp.close()
    assert not os.path.exists(path)
