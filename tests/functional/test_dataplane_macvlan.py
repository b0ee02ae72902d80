"""Macvlan mode specifics: the parent, the host shim, MTU limits, modes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cloudnic.dataplane import MacvlanDataplane
from cloudnic.dataplane.names import shim_ifname_for
from cloudnic.errors import DataplaneError, InvalidConfig
from tests.functional.netns_util import (
    Netns,
    add_veth,
    addresses,
    close_netns,
    create_netns,
    link,
    link_names,
    netns,
    ping,
    unique,
)
from tests.functional.test_dataplane_modes import MTU, PARENT, attachment

pytestmark = pytest.mark.functional
SHIM = shim_ifname_for(PARENT)


@pytest.fixture
def node() -> Iterator[Netns]:
    with netns("node") as n:
        add_veth(n, PARENT, "cnd-par0p", mtu=1500)
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


def make(node: Netns, **kw: Any) -> MacvlanDataplane:
    return MacvlanDataplane(PARENT, mtu=MTU, host_netns_fd=node.fd, **kw)


def test_a_missing_parent_is_named(node: Netns, sandboxes: list[Netns]) -> None:
    dp = MacvlanDataplane("cnd-nope0", mtu=MTU, host_netns_fd=node.fd)
    try:
        with pytest.raises(InvalidConfig, match="macvlan parent 'cnd-nope0' does not exist in the host"):
            dp.plug(sandboxes[0].fd, attachment("macvlan", 0))
        assert link_names(sandboxes[0]) == {"lo"}
    finally:
        dp.close()


def test_the_shim_is_shared_and_removable(node: Netns, sandboxes: list[Netns]) -> None:
    dp = make(node)
    try:
        atts = [attachment("macvlan", i) for i in range(2)]
        plugged = [dp.plug(sb.fd, att) for sb, att in zip(sandboxes, atts, strict=True)]
        assert [n for n in link_names(node) if n.startswith("cnm-")] == [SHIM]
        assert addresses(node, SHIM) == {"10.77.0.1/24", "fd00:77::1/64"}
        assert plugged[0].extra == {"parent": PARENT, "shim": SHIM}
        assert ping(node, "10.77.0.11") and ping(node, "fd00:77::a")
        assert dp.host_objects() == set()
        dp.unplug(sandboxes[0].fd, atts[0], plugged[0])
        assert link(node, SHIM) is not None, "unplug leaves the shared shim"
        assert dp.remove_shim() is True
        assert link(node, SHIM) is None
        assert dp.remove_shim() is False
    finally:
        dp.close()


def test_without_shim_pods_still_talk_to_each_other(node: Netns, sandboxes: list[Netns]) -> None:
    dp = make(node, host_shim=False)
    try:
        atts = [attachment("macvlan", i) for i in range(2)]
        plugged = [dp.plug(sb.fd, att) for sb, att in zip(sandboxes, atts, strict=True)]
        assert link(node, SHIM) is None
        assert ping(sandboxes[0], "10.77.0.11") and ping(sandboxes[1], "fd00:77::a")
        dp.check(sandboxes[0].fd, atts[0], plugged[0])
    finally:
        dp.close()


def test_private_mode_isolates_pods(node: Netns, sandboxes: list[Netns]) -> None:
    dp = make(node, macvlan_mode="private", host_shim=False)
    try:
        for i, sb in enumerate(sandboxes):
            dp.plug(sb.fd, attachment("macvlan", i, "v4"))
        assert not ping(sandboxes[0], "10.77.0.11")
    finally:
        dp.close()


def test_an_mtu_above_the_parent_fails_cleanly(node: Netns, sandboxes: list[Netns]) -> None:
    dp = make(node)
    try:
        with pytest.raises(DataplaneError, match=f"the MTU must not exceed {PARENT}'s \\(1500\\)"):
            dp.plug(sandboxes[0].fd, attachment("macvlan", 0, mtu=9000))
        assert link_names(sandboxes[0]) == {"lo"}
        assert link(node, SHIM) is None
    finally:
        dp.close()
