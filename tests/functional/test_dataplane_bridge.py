"""Bridge mode specifics: concurrent first plugs, the bridge's MAC/MTU, gateways, teardown."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudnic.dataplane import BridgeDataplane, NetnsSafeExecutor
from cloudnic.dataplane import bridge as bridge_module
from cloudnic.dataplane.base import Plugged
from cloudnic.dataplane.bridge import BRIDGE_MAX_PORTS
from cloudnic.dataplane.names import derived_mac
from cloudnic.errors import DataplaneError, InvalidConfig
from tests.functional.netns_util import (
    Netns,
    addresses,
    close_netns,
    create_netns,
    fill_bridge,
    link,
    link_names,
    netns,
    ping,
    sh,
    unique,
)
from tests.functional.test_dataplane_modes import BRIDGE, MTU, attachment
from tests.functional.veth_gate import veth_gate

pytestmark = pytest.mark.functional


@pytest.fixture
def node() -> Iterator[Netns]:
    with netns("node") as n:
        yield n


@pytest.fixture
def sandboxes() -> Iterator[list[Netns]]:
    made: list[Netns] = []
    try:
        for _ in range(4):
            made.append(create_netns(unique("sb")))
        yield made
    finally:
        for ns in made:
            close_netns(ns)


@pytest.fixture
def dp(node: Netns) -> Iterator[BridgeDataplane]:
    d = BridgeDataplane(BRIDGE, mtu=MTU, host_netns_fd=node.fd)
    try:
        yield d
    finally:
        d.close()


def ports(node: Netns) -> set[str]:
    return {lk["ifname"] for lk in node.ip("link", "show", "master", BRIDGE)}


def test_concurrent_first_plugs_share_one_bridge(node: Netns, sandboxes: list[Netns],
                                                 dp: BridgeDataplane) -> None:
    atts = [attachment("bridge", i) for i in range(4)]
    ex = NetnsSafeExecutor(max_workers=4)
    try:
        futs = [ex.submit(dp.plug, sb.fd, att) for sb, att in zip(sandboxes, atts, strict=True)]
        plugged: list[Plugged] = [f.result(30) for f in futs]
    finally:
        ex.shutdown()
    assert ports(node) == {att.host_ifname for att in atts}
    assert [p.extra["bridge"] for p in plugged] == [BRIDGE] * 4
    assert addresses(node, BRIDGE) == {"10.77.0.1/24", "fd00:77::1/64"}
    assert ping(sandboxes[0], "10.77.0.13") and ping(sandboxes[3], "fd00:77::a")
    assert dp.host_objects() == {att.host_ifname for att in atts}


def test_bridge_keeps_its_mac_and_mtu_and_stays_after_unplug(node: Netns, sandboxes: list[Netns],
                                                            dp: BridgeDataplane) -> None:
    att = attachment("bridge", 0)
    plugged = dp.plug(sandboxes[0].fd, att)
    dp.unplug(sandboxes[0].fd, att, plugged)
    bridge = link(node, BRIDGE)
    assert bridge is not None, "unplug leaves the bridge"
    assert bridge["address"] == derived_mac("bridge:" + BRIDGE)
    assert bridge["mtu"] == MTU, "an empty bridge keeps the network MTU"
    assert ports(node) == set()


def test_remove_bridge_if_empty(node: Netns, sandboxes: list[Netns], dp: BridgeDataplane) -> None:
    att = attachment("bridge", 0)
    plugged = dp.plug(sandboxes[0].fd, att)
    assert dp.remove_bridge_if_empty() is False
    assert link(node, BRIDGE) is not None
    dp.unplug(sandboxes[0].fd, att, plugged)
    assert dp.remove_bridge_if_empty() is True
    assert link(node, BRIDGE) is None
    assert dp.remove_bridge_if_empty() is False


def test_plugs_make_their_veths_side_by_side(node: Netns, sandboxes: list[Netns], dp: BridgeDataplane,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge lock covers the bridge's lookup, not the veth's creation: two plugs are in
    create_veth at once (the kernel orders them), so one slow veth does not stall every ADD."""
    atts = [attachment("bridge", i) for i in range(2)]
    ex = NetnsSafeExecutor(max_workers=2)
    try:
        with veth_gate(monkeypatch, bridge_module) as gate:
            futs = [ex.submit(dp.plug, sb.fd, att) for sb, att in zip(sandboxes, atts, strict=False)]
            both = gate.arrived(2)
            gate.open()
            for f in futs:
                f.result(30)
    finally:
        ex.shutdown()
    assert both, "the second plug waited for the first one's veth"
    assert ports(node) == {att.host_ifname for att in atts}


def test_an_empty_bridge_with_a_plug_in_flight_is_not_removed(node: Netns, sandboxes: list[Netns],
                                                              dp: BridgeDataplane,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = attachment("bridge", 0), attachment("bridge", 1)
    dp.unplug(sandboxes[0].fd, first, dp.plug(sandboxes[0].fd, first))     # the bridge exists, empty
    ex = NetnsSafeExecutor(max_workers=1)
    try:
        with veth_gate(monkeypatch, bridge_module) as gate:
            fut = ex.submit(dp.plug, sandboxes[1].fd, second)
            assert gate.arrived(1)
            removed = dp.remove_bridge_if_empty()
            gate.open()
            fut.result(30)
    finally:
        ex.shutdown()
    assert removed is False, "the bridge was removed under a plug that had just found it"
    assert ports(node) == {second.host_ifname}
    assert ping(sandboxes[1], "10.77.0.1")


def test_without_gateway_on_bridge_the_bridge_has_no_address(node: Netns, sandboxes: list[Netns]) -> None:
    dp = BridgeDataplane(BRIDGE, mtu=MTU, gateway_on_bridge=False, host_netns_fd=node.fd)
    try:
        atts = [attachment("bridge", i) for i in range(2)]
        plugged = [dp.plug(sb.fd, att) for sb, att in zip(sandboxes, atts, strict=False)]
        assert addresses(node, BRIDGE) == set()
        assert ping(sandboxes[0], "10.77.0.11") and ping(sandboxes[0], "fd00:77::b")
        dp.check(sandboxes[0].fd, atts[0], plugged[0])
    finally:
        dp.close()


def test_a_link_of_another_kind_under_the_bridge_name_is_refused(node: Netns, sandboxes: list[Netns],
                                                                 dp: BridgeDataplane) -> None:
    sh("ip", "-n", node.name, "link", "add", BRIDGE, "type", "veth", "peer", "name", "cnd-x0")
    before = link_names(node)
    with pytest.raises(InvalidConfig, match=f"{BRIDGE} exists in the host netns but is a veth link"):
        dp.plug(sandboxes[0].fd, attachment("bridge", 0))
    assert link_names(node) == before
    assert link_names(sandboxes[0]) == {"lo"}


def test_a_failed_plug_keeps_the_shared_bridge_and_its_pods(node: Netns, sandboxes: list[Netns],
                                                            dp: BridgeDataplane) -> None:
    good = attachment("bridge", 0)
    plugged = dp.plug(sandboxes[0].fd, good)
    bad = attachment("bridge", 1, gateways=(ipaddress.ip_address("10.77.0.255"),))
    with pytest.raises(DataplaneError, match=r"10\.77\.0\.255"):
        dp.plug(sandboxes[1].fd, bad)
    assert ports(node) == {good.host_ifname}
    assert "10.77.0.1/24" in addresses(node, BRIDGE)
    dp.check(sandboxes[0].fd, good, plugged)
    assert ping(sandboxes[0], "10.77.0.1")


def test_a_full_bridge_is_a_clear_error(node: Netns, sandboxes: list[Netns], dp: BridgeDataplane,
                                       tmp_path: Path) -> None:
    """The kernel takes at most 1023 ports on one bridge (EXFULL beyond)."""
    dp.unplug(sandboxes[0].fd, attachment("bridge", 0), dp.plug(sandboxes[0].fd, attachment("bridge", 0)))
    fill_bridge(node, BRIDGE, BRIDGE_MAX_PORTS, tmp_path)
    assert len(ports(node)) == BRIDGE_MAX_PORTS
    with pytest.raises(DataplaneError, match=f"bridge {BRIDGE} has 1023 ports, the kernel's limit"):
        dp.plug(sandboxes[1].fd, attachment("bridge", 1))
    assert link_names(sandboxes[1]) == {"lo"}, "nothing is left in the sandbox"
    assert attachment("bridge", 1).host_ifname not in ports(node)
