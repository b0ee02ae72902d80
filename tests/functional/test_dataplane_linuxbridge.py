"""Linuxbridge mode: Neutron's tap<port[:11]> / brq<net[:11]> naming, plugged for real.

A "node" netns plays the host. Everything made here is named cnl-… (netns) or derived
from the fake port/network ids below, and goes away with the netns.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cloudnic.dataplane import LinuxBridgeDataplane, NetnsSafeExecutor, bridge_name, make_dataplane, tap_name
from cloudnic.dataplane import linuxbridge as linuxbridge_module
from cloudnic.dataplane.base import Attachment, IPInterface, RouteSpec
from cloudnic.dataplane.bridge import BRIDGE_MAX_PORTS
from cloudnic.dataplane.names import derived_mac
from cloudnic.errors import CheckFailed, DataplaneError, InvalidConfig
from tests.functional.netns_util import (
    Netns,
    addresses,
    all_addresses,
    close_netns,
    create_netns,
    fill_bridge,
    is_up,
    link,
    link_kind,
    link_names,
    ping,
    routes,
    sh,
    unique,
)
from tests.functional.veth_gate import veth_gate

pytestmark = pytest.mark.functional

MTU = 1450
NET = "5e1d2c3b-aaaa-4bbb-8ccc-0000000000a1"
NET2 = "6f2e3d4c-bbbb-4ccc-8ddd-0000000000b2"
BRQ = bridge_name(NET)
GW4, GW6 = ipaddress.ip_address("10.71.0.1"), ipaddress.ip_address("fd00:71::1")


def port_id(i: int) -> str:
    return f"{i:08x}-1234-4abc-9def-0123456789ab"


def attachment(i: int, family: str = "dual", **over: Any) -> Attachment:
    addrs: list[IPInterface] = []
    gws: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    if family in ("v4", "dual"):
        addrs.append(ipaddress.ip_interface(f"10.71.0.{10 + i}/24"))
        gws.append(GW4)
    if family in ("v6", "dual"):
        addrs.append(ipaddress.ip_interface(f"fd00:71::{10 + i:x}/64"))
        gws.append(GW6)
    att = Attachment(key=f"pods/ctr{i}/eth0", ifname="eth0", mac=f"fa:16:3e:71:00:{i:02x}", mtu=MTU,
                     addresses=tuple(addrs), gateways=tuple(gws), host_ifname="cn-ignored",
                     port_id=port_id(i), network_id=NET)
    return replace(att, **over)


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
        for _ in range(3):
            made.append(create_netns(unique("sb", "cnl-")))
        yield made
    finally:
        for ns in made:
            close_netns(ns)


@pytest.fixture
def dp(node: Netns) -> Iterator[LinuxBridgeDataplane]:
    d = LinuxBridgeDataplane(mtu=MTU, host_netns_fd=node.fd, parking_netns=unique("park", "cnl-"))
    try:
        yield d
    finally:
        d.remove_parking()
        d.close()


def bridge_ports(node: Netns, bridge: str = BRQ) -> set[str]:
    return {lk["ifname"] for lk in node.ip("link", "show", "master", bridge)}


@pytest.mark.parametrize("family", ["v4", "v6", "dual"])
def test_plug_uses_neutron_names_enslaves_the_tap_and_configures_the_sandbox(
        family: str, node: Netns, sandboxes: list[Netns], dp: LinuxBridgeDataplane) -> None:
    att = attachment(1, family)
    plugged = dp.plug(sandboxes[0].fd, att)
    tap = "tap" + port_id(1)[:11]
    assert tap == "tap00000001-12" and BRQ == "brq5e1d2c3b-aa"
    assert (plugged.host_ifname, plugged.sandbox_ifname, plugged.extra["bridge"]) == (tap, "eth0", BRQ)
    host_end = link(node, tap)
    assert host_end is not None and link_kind(host_end) == "veth" and is_up(host_end)
    assert host_end["master"] == BRQ and host_end["mtu"] == MTU
    assert host_end["address"] == derived_mac("host:" + tap) == plugged.host_mac
    bridge = link(node, BRQ)
    assert bridge is not None and link_kind(bridge) == "bridge" and is_up(bridge) and bridge["mtu"] == MTU
    assert all_addresses(node, BRQ) == set(), "no gateway (and no IPv6 link-local) on the bridge"
    assert bridge["linkinfo"]["info_data"]["forward_delay"] == 0
    assert bridge["linkinfo"]["info_data"]["stp_state"] == 0
    pod = link(sandboxes[0], "eth0")
    assert pod is not None and is_up(pod) and pod["address"] == att.mac and pod["mtu"] == MTU
    assert addresses(sandboxes[0], "eth0") == {a.with_prefixlen for a in att.addresses}
    if family in ("v4", "dual"):
        assert routes(sandboxes[0], "eth0", 4) == {("default", "10.71.0.1"), ("10.71.0.0/24", None)}
    if family in ("v6", "dual"):
        assert ("default", "fd00:71::1") in routes(sandboxes[0], "eth0", 6)
    dp.check(sandboxes[0].fd, att, plugged)
    assert dp.host_objects() == {tap}
    dp.unplug(sandboxes[0].fd, att, plugged)
    assert link(node, tap) is None and link_names(sandboxes[0]) == {"lo"}
    assert link(node, BRQ) is not None, "the bridge is the Neutron agent's to remove"
    dp.unplug(sandboxes[0].fd, att, plugged)            # idempotent
    dp.unplug(None, att, None)


def test_two_pods_talk_through_brq_and_check_names_what_breaks(node: Netns, sandboxes: list[Netns],
                                                               dp: LinuxBridgeDataplane) -> None:
    a, b = attachment(1), attachment(2)
    pa, pb = dp.plug(sandboxes[0].fd, a), dp.plug(sandboxes[1].fd, b)
    assert bridge_ports(node) == {tap_name(a.port_id), tap_name(b.port_id)}
    assert ping(sandboxes[0], "10.71.0.12") and ping(sandboxes[1], "fd00:71::b")
    sh("ip", "-n", node.name, "link", "set", pb.host_ifname, "nomaster")
    with pytest.raises(CheckFailed, match=f"{pb.host_ifname} in the host netns is not enslaved to bridge {BRQ}"):
        dp.check(sandboxes[1].fd, b, pb)
    sh("ip", "-n", sandboxes[0].name, "addr", "del", "10.71.0.11/24", "dev", "eth0")
    with pytest.raises(CheckFailed, match=r"eth0 in the sandbox lacks address 10\.71\.0\.11/24"):
        dp.check(sandboxes[0].fd, a, pa)


def test_a_bridge_the_agent_made_first_is_used_as_it_is(node: Netns, sandboxes: list[Netns],
                                                         dp: LinuxBridgeDataplane) -> None:
    sh("ip", "-n", node.name, "link", "add", BRQ, "mtu", "1500", "type", "bridge")
    sh("ip", "-n", node.name, "link", "set", BRQ, "up")
    before = link(node, BRQ)
    plugged = dp.plug(sandboxes[0].fd, attachment(1))
    after = link(node, BRQ)
    assert before is not None and after is not None and after["ifindex"] == before["ifindex"]
    assert bridge_ports(node) == {plugged.host_ifname}


def test_without_enslave_the_tap_is_left_for_the_agent(node: Netns, sandboxes: list[Netns]) -> None:
    dp = make_dataplane("linuxbridge", mtu=MTU, host_netns_fd=node.fd, enslave=False,
                        parking_netns=unique("park", "cnl-"))
    try:
        att = attachment(3, "v4", network_id="")
        plugged = dp.plug(sandboxes[0].fd, att)
        host_end = link(node, plugged.host_ifname)
        assert host_end is not None and "master" not in host_end
        assert link(node, BRQ) is None, "no bridge made"
        assert plugged.extra["bridge"] == ""
        dp.check(sandboxes[0].fd, att, plugged)
        dp.unplug(sandboxes[0].fd, att, plugged)
        assert link(node, plugged.host_ifname) is None
    finally:
        dp.close()


def test_a_gateway_outside_the_subnet_and_on_link_host_routes(node: Netns, sandboxes: list[Netns],
                                                              dp: LinuxBridgeDataplane) -> None:
    att = attachment(4, "v4", gateways=(ipaddress.ip_address("10.99.0.1"),),
                     routes=(RouteSpec("10.80.0.0/16", "0.0.0.0"), RouteSpec("10.81.0.0/16", "10.71.0.254")))
    plugged = dp.plug(sandboxes[0].fd, att)
    assert routes(sandboxes[0], "eth0", 4) == {("10.99.0.1", None), ("default", "10.99.0.1"),
                                               ("10.71.0.0/24", None), ("10.80.0.0/16", None),
                                               ("10.81.0.0/16", "10.71.0.254")}
    assert plugged.routes[0] == RouteSpec("10.99.0.1/32", None, scope_link=True)
    dp.check(sandboxes[0].fd, att, plugged)


def test_a_failed_plug_leaves_nothing_not_even_the_bridge_it_made(node: Netns, sandboxes: list[Netns],
                                                                  dp: LinuxBridgeDataplane) -> None:
    before = link_names(node)
    # the route's gateway is not reachable on-link: the kernel refuses it after the veth exists
    att = attachment(5, "v4", routes=(RouteSpec("10.82.0.0/16", "192.168.250.1"),))
    with pytest.raises(DataplaneError, match=r"adding route 10\.82\.0\.0/16 via 192\.168\.250\.1 dev eth0"):
        dp.plug(sandboxes[0].fd, att)
    assert link_names(node) == before
    assert link_names(sandboxes[0]) == {"lo"}


def test_bad_attachments_are_refused_before_any_change(node: Netns, sandboxes: list[Netns],
                                                       dp: LinuxBridgeDataplane) -> None:
    before = link_names(node)
    with pytest.raises(InvalidConfig, match="has no port id; the linuxbridge dataplane names the host end"):
        dp.plug(sandboxes[0].fd, attachment(6, port_id=""))
    with pytest.raises(InvalidConfig, match="has no network id"):
        dp.plug(sandboxes[0].fd, attachment(6, network_id=""))
    sh("ip", "-n", sandboxes[0].name, "link", "add", "eth0", "type", "veth", "peer", "name", "x0")
    with pytest.raises(InvalidConfig, match="CNI_IFNAME 'eth0' already exists"):
        dp.plug(sandboxes[0].fd, attachment(6))
    assert link_names(node) == before


def test_a_foreign_link_named_like_the_bridge_is_refused(node: Netns, sandboxes: list[Netns],
                                                         dp: LinuxBridgeDataplane) -> None:
    sh("ip", "-n", node.name, "link", "add", BRQ, "type", "veth", "peer", "name", "cnl-x0")
    with pytest.raises(InvalidConfig, match=f"{BRQ} exists in the host netns but is a veth link"):
        dp.plug(sandboxes[0].fd, attachment(7))
    assert link_names(sandboxes[0]) == {"lo"}


def test_networks_get_their_own_bridges_and_remove_bridge_if_empty(node: Netns, sandboxes: list[Netns],
                                                                    dp: LinuxBridgeDataplane) -> None:
    a, b = attachment(8), attachment(9, network_id=NET2)
    pa, pb = dp.plug(sandboxes[0].fd, a), dp.plug(sandboxes[1].fd, b)
    assert bridge_ports(node, BRQ) == {pa.host_ifname}
    assert bridge_ports(node, bridge_name(NET2)) == {pb.host_ifname}
    assert not ping(sandboxes[0], "10.71.0.19"), "different networks are different L2 segments"
    assert dp.remove_bridge_if_empty(NET) is False
    dp.unplug(sandboxes[0].fd, a, pa)
    assert dp.remove_bridge_if_empty(NET) is True
    assert link(node, BRQ) is None and link(node, bridge_name(NET2)) is not None


def test_an_empty_brq_with_a_plug_in_flight_is_not_removed(node: Netns, sandboxes: list[Netns],
                                                           dp: LinuxBridgeDataplane,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock is not held across the tap's creation; the plug counts as in flight instead."""
    first, second = attachment(1), attachment(2)
    dp.unplug(sandboxes[0].fd, first, dp.plug(sandboxes[0].fd, first))     # brq… exists, empty
    ex = NetnsSafeExecutor(max_workers=1)
    try:
        with veth_gate(monkeypatch, linuxbridge_module) as gate:
            fut = ex.submit(dp.plug, sandboxes[1].fd, second)
            assert gate.arrived(1)
            removed = dp.remove_bridge_if_empty(NET)
            gate.open()
            plugged = fut.result(30)
    finally:
        ex.shutdown()
    assert removed is False, "brq… was removed under a plug that had just found it"
    assert bridge_ports(node, BRQ) == {plugged.host_ifname}
    assert dp.remove_bridge_if_empty(NET) is False


def test_a_full_brq_is_a_clear_error(node: Netns, sandboxes: list[Netns], dp: LinuxBridgeDataplane,
                                     tmp_path: Path) -> None:
    first = attachment(3)
    dp.unplug(sandboxes[0].fd, first, dp.plug(sandboxes[0].fd, first))        # brq… exists, empty
    fill_bridge(node, BRQ, BRIDGE_MAX_PORTS, tmp_path)
    with pytest.raises(DataplaneError, match=f"bridge {BRQ} has 1023 ports, the kernel's limit"):
        dp.plug(sandboxes[1].fd, attachment(4))
    assert link_names(sandboxes[1]) == {"lo"}, "nothing is left in the sandbox"
    assert link(node, tap_name(port_id(4))) is None
