"""Deferred veth deletion (``deferred_delete``): DEL buries the host end, a reaper deletes the group.

What a user would notice: right after DEL the pod's address is unreachable, the node has no
route/neighbour to it, the same attachment can be plugged again at once (same host name,
same address, even the same sandbox and ifname), and soon nothing is left at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cloudnic.dataplane import Dataplane, make_dataplane
from cloudnic.dataplane.graveyard import GRAVE_PREFIX
from cloudnic.dataplane.veth import VethDataplane
from tests.functional.netns_util import Netns, link_names, netns, ping
from tests.functional.test_dataplane_modes import BRIDGE, MTU, attachment

pytestmark = pytest.mark.functional


def graves(ns: Netns) -> set[str]:
    return {n for n in link_names(ns) if n.startswith(GRAVE_PREFIX)}


def wait_until(cond: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(params=["bridge", "routed"])
def setup(request: pytest.FixtureRequest) -> Iterator[tuple[str, Netns, Netns, Dataplane]]:
    mode = request.param
    with netns("gyn") as node, netns("gys") as sb:
        settings: dict[str, object] = {"host_netns_fd": node.fd, "mtu": MTU, "deferred_delete": True}
        if mode == "bridge":
            settings["bridge"] = BRIDGE
        dp = make_dataplane(mode, **settings)
        try:
            yield mode, node, sb, dp
        finally:
            dp.close()


def test_del_detaches_at_once_and_the_reaper_deletes_soon(setup: tuple[str, Netns, Netns, Dataplane]) -> None:
    mode, node, sb, dp = setup
    att = attachment(mode, 3, "v4")
    plugged = dp.plug(sb.fd, att)
    pod = str(att.addresses[0].ip)
    assert ping(node, pod)
    dp.unplug(sb.fd, att, plugged)
    assert plugged.host_ifname not in link_names(node)
    if mode == "routed":   # no route and no neighbour entry to the pod are left on the node
        assert node.ip("route", "show", "table", "main", pod) == []
        assert all(n.get("dst") != pod for n in node.ip("neigh", "show"))
    else:
        assert node.ip("link", "show", "master", BRIDGE) == []
    assert not ping(node, pod)
    assert wait_until(lambda: not graves(node) and "eth0" not in link_names(sb)), "the reaper deletes the pair"


def test_readd_of_the_same_attachment_right_after_del(setup: tuple[str, Netns, Netns, Dataplane]) -> None:
    mode, node, sb, dp = setup
    dp._graveyard._reap_after_s = 60        # type: ignore[attr-defined]  # the reaper must not win the race
    att = attachment(mode, 4, "v4")
    dp.unplug(sb.fd, att, dp.plug(sb.fd, att))
    assert graves(node) and "eth0" in link_names(sb), "buried, not reaped yet"
    again = dp.plug(sb.fd, att)               # eth0 in the sandbox is the buried peer: reaped, then retried
    dp.check(sb.fd, att, again)
    assert ping(sb, "169.254.1.1" if mode == "routed" else "10.77.0.1")
    assert graves(node) == set()


def test_reap_now_and_close_leave_nothing(setup: tuple[str, Netns, Netns, Dataplane]) -> None:
    mode, node, sb, dp = setup
    assert isinstance(dp, VethDataplane)
    with netns("gyt") as other:
        for i, ns in ((5, sb), (6, other)):
            att = attachment(mode, i, "v4")
            dp.unplug(ns.fd, att, dp.plug(ns.fd, att))
        dp.reap_now()
        assert graves(node) == set() and link_names(sb) == {"lo"} and link_names(other) == {"lo"}
    att = attachment(mode, 7, "v4")
    dp.unplug(sb.fd, att, dp.plug(sb.fd, att))
    dp.close()
    assert graves(node) == set() and link_names(sb) == {"lo"}


def test_linuxbridge_buries_its_tap_and_readds_at_once(tmp_path: Path) -> None:
    with netns("gyl") as node, netns("gym") as sb:
        dp = make_dataplane("linuxbridge", host_netns_fd=node.fd, mtu=MTU, deferred_delete=True,
                            parking_netns=str(tmp_path / "parking"))
        try:
            att = replace(attachment("linuxbridge", 8, "v4"), port_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                          network_id="9a8b7c6d-5e4f-3a2b-1c0d-e9f8a7b6c5d4")
            plugged = dp.plug(sb.fd, att)
            bridge = plugged.extra["bridge"]
            dp.unplug(sb.fd, att, plugged)
            assert plugged.host_ifname not in link_names(node)
            assert node.ip("link", "show", "master", bridge) == []
            again = dp.plug(sb.fd, att)
            dp.check(sb.fd, att, again)
        finally:
            dp.close()
        assert graves(node) == set()
