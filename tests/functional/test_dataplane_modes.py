"""Every dataplane mode x {v4, v6, dual}: plug, kernel state, ping, check, break it, unplug.

A "node" netns plays the host (``host_netns_fd``), so nothing touches the real host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from cloudnic.dataplane import make_dataplane
from cloudnic.dataplane.base import Attachment, Dataplane, IPInterface, Plugged
from cloudnic.dataplane.names import derived_mac, host_ifname_for, shim_ifname_for
from cloudnic.errors import CheckFailed, CNIError, DataplaneError, InvalidConfig
from tests.functional.netns_util import (
    Netns,
    add_veth,
    addresses,
    all_addresses,
    close_netns,
    create_netns,
    is_up,
    link,
    link_kind,
    link_names,
    neighbours,
    netns,
    ping,
    remove_netns,
    routes,
    sh,
    unique,
)

pytestmark = pytest.mark.functional

MODES = ("bridge", "routed", "macvlan")
FAMILIES = ("v4", "v6", "dual")
MTU = 1400
BRIDGE = "cnd-br0"
PARENT = "cnd-par0"
GW4, GW6 = ipaddress.ip_address("10.77.0.1"), ipaddress.ip_address("fd00:77::1")
ROUTED_GW = {4: "169.254.1.1", 6: "fe80::1"}
SHIM = shim_ifname_for(PARENT)


def attachment(mode: str, i: int, family: str = "dual", **over: Any) -> Attachment:
    addrs: list[IPInterface] = []
    gws: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    if family in ("v4", "dual"):
        addrs.append(ipaddress.ip_interface(f"10.77.0.{10 + i}/24"))
        gws.append(GW4)
    if family in ("v6", "dual"):
        addrs.append(ipaddress.ip_interface(f"fd00:77::{10 + i:x}/64"))
        gws.append(GW6)
    key = f"{mode}/ctr{i}/eth0"
    att = Attachment(key=key, ifname="eth0", mac=f"02:77:00:00:00:{i:02x}", mtu=MTU, addresses=tuple(addrs),
                     gateways=tuple(gws), host_ifname=host_ifname_for(key))
    return replace(att, **over)


def make(mode: str, node: Netns, **over: object) -> Dataplane:
    settings: dict[str, object] = {"host_netns_fd": node.fd, "mtu": MTU}
    if mode == "bridge":
        settings["bridge"] = BRIDGE
    if mode == "macvlan":
        settings["parent"] = PARENT
    settings.update(over)
    return make_dataplane(mode, **settings)


def sandbox_addresses(mode: str, att: Attachment) -> set[str]:
    if mode == "routed":
        return {f"{a.ip}/{a.max_prefixlen}" for a in att.addresses}
    return {a.with_prefixlen for a in att.addresses}


def gateway_of(mode: str, version: int) -> str:
    return ROUTED_GW[version] if mode == "routed" else str(GW4 if version == 4 else GW6)


def ping_target(addr: str) -> str:
    return f"{addr}%eth0" if addr.startswith("fe80:") else addr


@pytest.fixture
def node() -> Iterator[Netns]:
    with netns("node") as n:
        add_veth(n, PARENT, "cnd-par0p")
        yield n


@pytest.fixture
def sandboxes() -> Iterator[list[Netns]]:
    made: list[Netns] = []
    try:
        for _ in range(2):
            made.append(create_netns(unique("sb")))
        yield made
    finally:
        for ns in made:
            close_netns(ns)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def dp(mode: str, node: Netns) -> Iterator[Dataplane]:
    d = make(mode, node)
    try:
        yield d
    finally:
        d.close()


# ---- kernel state ---------------------------------------------------------------------------


def assert_sandbox(mode: str, sb: Netns, att: Attachment, plugged: Plugged) -> None:
    info = link(sb, "eth0")
    assert info is not None, "eth0 missing in the sandbox"
    assert link_kind(info) == ("macvlan" if mode == "macvlan" else "veth")
    assert is_up(info)
    assert info["address"] == att.mac
    assert info["mtu"] == MTU
    assert is_up(link(sb, "lo") or {})
    assert addresses(sb, "eth0") == sandbox_addresses(mode, att)
    for version in {a.version for a in att.addresses}:
        gw = gateway_of(mode, version)
        have = routes(sb, "eth0", version)
        assert ("default", gw) in have
        if mode == "routed":
            assert (gw, None) in have
            assert neighbours(sb, "eth0")[gw] == (plugged.host_mac, ["PERMANENT"])
    assert {str(g) for g in plugged.gateways} == {gateway_of(mode, a.version) for a in att.addresses}


def assert_node(mode: str, node: Netns, att: Attachment, plugged: Plugged) -> None:
    versions = {a.version for a in att.addresses}
    if mode == "bridge":
        host = link(node, att.host_ifname)
        bridge = link(node, BRIDGE)
        assert host is not None and bridge is not None
        assert host.get("master") == BRIDGE and is_up(host) and host["mtu"] == MTU
        assert is_up(bridge) and bridge["address"] == derived_mac("bridge:" + BRIDGE) and bridge["mtu"] == MTU
        want = {f"{g}/{64 if g.version == 6 else 24}" for g in att.gateways}
        assert want <= addresses(node, BRIDGE)
    elif mode == "routed":
        host = link(node, att.host_ifname)
        assert host is not None and is_up(host) and host["address"] == plugged.host_mac
        assert {"169.254.1.1/32" if v == 4 else "fe80::1/64" for v in versions} <= \
            all_addresses(node, att.host_ifname)
        for a in att.addresses:
            assert (str(a.ip), None) in routes(node, att.host_ifname, a.version)
            assert neighbours(node, att.host_ifname)[str(a.ip)] == (att.mac, ["PERMANENT"])
        sysctls = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}
        for v in versions:
            assert node.exec("sysctl", "-n", sysctls[v]).strip() == "1"
    else:
        shim = link(node, shim_ifname_for(PARENT))
        assert shim is not None and is_up(shim) and link_kind(shim) == "macvlan"
        want = {f"{g}/{64 if g.version == 6 else 24}" for g in att.gateways}
        assert want <= addresses(node, shim_ifname_for(PARENT))
        assert att.host_ifname not in link_names(node)


@pytest.mark.parametrize("family", FAMILIES)
def test_plug_two_pods_then_ping_check_and_unplug(mode: str, family: str, node: Netns,
                                                  sandboxes: list[Netns], dp: Dataplane) -> None:
    atts = [attachment(mode, i, family) for i in range(2)]
    plugged = [dp.plug(sb.fd, att) for sb, att in zip(sandboxes, atts, strict=True)]
    for sb, att, p in zip(sandboxes, atts, plugged, strict=True):
        assert (p.sandbox_ifname, p.sandbox_mac, p.mtu) == ("eth0", att.mac, MTU)
        assert_sandbox(mode, sb, att, p)
        assert_node(mode, node, att, p)
        dp.check(sb.fd, att, p)
    a0 = sandboxes[0]
    for addr in atts[1].addresses:
        assert ping(a0, str(addr.ip)), f"pod -> pod {addr.ip}"
        assert ping(a0, ping_target(gateway_of(mode, addr.version))), "pod -> gateway"
        assert ping(node, str(addr.ip)), f"node -> pod {addr.ip}"
    for sb, att, p in zip(sandboxes, atts, plugged, strict=True):
        dp.unplug(sb.fd, att, p)
        dp.unplug(sb.fd, att, p)
        assert link_names(sb) == {"lo"}
        assert att.host_ifname not in link_names(node)
    if mode == "routed":
        node_routes = sh("ip", "-n", node.name, "-4", "route") + sh("ip", "-n", node.name, "-6", "route")
        assert all(str(a.ip) not in node_routes for att in atts for a in att.addresses)


# ---- check names what broke -----------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    modes: tuple[str, ...]
    act: Callable[[Netns, Netns, Attachment], object]
    says: Callable[[Attachment], str]


def _ip(ns: Netns, *args: str) -> str:
    return sh("ip", "-n", ns.name, *args)


def _addr0(mode: str, att: Attachment) -> str:
    a = att.addresses[0]
    return f"{a.ip}/32" if mode == "routed" else a.with_prefixlen


BREAKS: dict[str, Break] = {
    "address": Break(MODES, lambda node, sb, att: None, lambda att: "lacks address"),
    "down": Break(MODES, lambda node, sb, att: _ip(sb, "link", "set", "eth0", "down"),
                  lambda att: "eth0 in the sandbox is down"),
    "mac": Break(MODES, lambda node, sb, att: _ip(sb, "link", "set", "eth0", "address", "02:77:00:00:00:99"),
                 lambda att: f"eth0 in the sandbox has MAC 02:77:00:00:00:99, expected {att.mac}"),
    "mtu": Break(MODES, lambda node, sb, att: _ip(sb, "link", "set", "eth0", "mtu", "1300"),
                 lambda att: "eth0 in the sandbox has MTU 1300, expected 1400"),
    "route": Break(MODES, lambda node, sb, att: _ip(sb, "route", "del", "default"),
                   lambda att: "eth0 in the sandbox lacks route 0.0.0.0/0 via"),
    "missing": Break(MODES, lambda node, sb, att: _ip(sb, "link", "del", "eth0"),
                     lambda att: "eth0 in the sandbox is missing"),
    "nomaster": Break(
        ("bridge",), lambda node, sb, att: _ip(node, "link", "set", att.host_ifname, "nomaster"),
        lambda att: f"{att.host_ifname} in the host netns is not enslaved to bridge {BRIDGE}"),
    "bridge-gateway": Break(
        ("bridge",), lambda node, sb, att: _ip(node, "addr", "del", "10.77.0.1/24", "dev", BRIDGE),
        lambda att: f"{BRIDGE} in the host netns lacks address 10.77.0.1/24"),
    "host-route": Break(
        ("routed",), lambda node, sb, att: _ip(node, "route", "del", "10.77.0.10/32"),
        lambda att: f"{att.host_ifname} in the host netns lacks route 10.77.0.10/32 (on-link)"),
    "gateway-neighbour": Break(
        ("routed",), lambda node, sb, att: _ip(sb, "neigh", "del", "169.254.1.1", "dev", "eth0"),
        lambda att: "eth0 in the sandbox lacks the permanent neighbour entry 169.254.1.1"),
    "forwarding": Break(
        ("routed",), lambda node, sb, att: node.exec("sysctl", "-w", "net.ipv4.ip_forward=0"),
        lambda att: "forwarding is off in the host netns (net/ipv4/ip_forward = 0)"),
    "shim-address": Break(
        ("macvlan",), lambda node, sb, att: _ip(node, "addr", "del", "10.77.0.1/24", "dev", SHIM),
        lambda att: f"{SHIM} in the host netns lacks address 10.77.0.1/24"),
    "parent-down": Break(("macvlan",), lambda node, sb, att: _ip(node, "link", "set", PARENT, "down"),
                         lambda att: f"{PARENT} in the host netns is down"),
}


@pytest.mark.parametrize(("mode", "what"), [(m, w) for w, b in BREAKS.items() for m in b.modes])
def test_check_names_what_differs(mode: str, what: str, node: Netns, sandboxes: list[Netns],
                                  dp: Dataplane) -> None:
    brk = BREAKS[what]
    sb = sandboxes[0]
    att = attachment(mode, 0)
    plugged = dp.plug(sb.fd, att)
    dp.check(sb.fd, att, plugged)
    if what == "address":
        _ip(sb, "addr", "del", _addr0(mode, att), "dev", "eth0")
        expected = f"eth0 in the sandbox lacks address {_addr0(mode, att)}"
    else:
        brk.act(node, sb, att)
        expected = brk.says(att)
    with pytest.raises(CheckFailed) as err:
        dp.check(sb.fd, att, plugged)
    assert expected in str(err.value)
    assert err.value.code == 105
    dp.unplug(sb.fd, att, plugged)
    assert link_names(sb) == {"lo"}


# ---- unplug -----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_record", [True, False])
def test_unplug_with_the_netns_name_gone_removes_the_host_side(mode: str, with_record: bool, node: Netns,
                                                             sandboxes: list[Netns], dp: Dataplane) -> None:
    sb = sandboxes[0]
    att = attachment(mode, 0)
    plugged = dp.plug(sb.fd, att)
    remove_netns(sb.name)            # the runtime deleted the netns; only our fd keeps it alive
    dp.unplug(None, att, plugged if with_record else None)
    dp.unplug(None, att, plugged if with_record else None)
    assert att.host_ifname not in link_names(node)
    if mode == "routed":
        assert "10.77.0.10" not in sh("ip", "-n", node.name, "route")


def test_unplug_after_the_netns_is_destroyed(mode: str, node: Netns, dp: Dataplane) -> None:
    sb = create_netns(unique("sb"))
    try:
        att = attachment(mode, 0)
        plugged = dp.plug(sb.fd, att)
    finally:
        close_netns(sb)
    dp.unplug(None, att, plugged)
    assert att.host_ifname not in link_names(node)


# ---- failures leave nothing behind --------------------------------------------------------------


def test_existing_ifname_fails_cleanly_and_del_spares_the_foreign_link(mode: str, node: Netns,
                                                                      sandboxes: list[Netns],
                                                                      dp: Dataplane) -> None:
    sb = sandboxes[0]
    _ip(sb, "link", "add", "eth0", "address", "02:99:00:00:00:01", "type", "veth", "peer", "name", "other0")
    node_before, sb_before = link_names(node), link_names(sb)
    att = attachment(mode, 0)
    with pytest.raises(InvalidConfig, match="CNI_IFNAME 'eth0' already exists in the sandbox") as err:
        dp.plug(sb.fd, att)
    assert err.value.code == 7
    assert link_names(node) == node_before
    assert link_names(sb) == sb_before
    dp.unplug(sb.fd, att, None)      # the runtime's DEL after the failed ADD
    foreign = link(sb, "eth0")
    assert foreign is not None and foreign["address"] == "02:99:00:00:00:01"


def test_failure_midway_leaves_nothing_behind(mode: str, node: Netns, sandboxes: list[Netns],
                                              dp: Dataplane) -> None:
    sb = sandboxes[0]
    node_before = link_names(node)
    if mode == "routed":
        # the address is already routed to another attachment: the host route fails after the veth exists
        first = attachment(mode, 0)
        plugged = dp.plug(sandboxes[1].fd, first)
        node_before = link_names(node)
        att = attachment(mode, 1, addresses=first.addresses)
        expect = "adding route 10.77.0.10/32 dev"
    else:
        # the subnet broadcast as gateway: the kernel refuses the default route after the link is set up
        att = attachment(mode, 0, gateways=(ipaddress.ip_address("10.77.0.255"),))
        expect = "adding route 0.0.0.0/0 via 10.77.0.255 dev eth0 in the sandbox"
    with pytest.raises(DataplaneError, match=expect):
        dp.plug(sb.fd, att)
    assert link_names(sb) == {"lo"}
    assert link_names(node) == node_before
    if mode == "routed":
        assert ping(sandboxes[1], "169.254.1.1"), "the first pod keeps working"
        dp.check(sandboxes[1].fd, first, plugged)
    else:
        assert "10.77.0.255" not in sh("ip", "-n", node.name, "addr")


def test_errors_are_cloudnic_errors_for_a_bad_sandbox_fd(mode: str, dp: Dataplane) -> None:
    with pytest.raises(CNIError, match="not an open network namespace"):
        dp.plug(999_999, attachment(mode, 0))
