"""Routed mode specifics: forwarding, custom gateways, extra routes, refused gateways."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from cloudnic.dataplane import RoutedDataplane
from cloudnic.dataplane.base import RouteSpec
from cloudnic.errors import InvalidConfig
from tests.functional.netns_util import (
    Netns,
    close_netns,
    create_netns,
    link_names,
    neighbours,
    netns,
    ping,
    routes,
    unique,
)
from tests.functional.test_dataplane_modes import MTU, attachment

pytestmark = pytest.mark.functional


@pytest.fixture
def node() -> Iterator[Netns]:
    with netns("node") as n:
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


def forwarding(node: Netns) -> tuple[str, str]:
    return (node.exec("sysctl", "-n", "net.ipv4.ip_forward").strip(),
            node.exec("sysctl", "-n", "net.ipv6.conf.all.forwarding").strip())


def test_forwarding_is_enabled_per_family_used(node: Netns, sandboxes: list[Netns]) -> None:
    dp = RoutedDataplane(mtu=MTU, host_netns_fd=node.fd)
    try:
        assert forwarding(node) == ("0", "0")
        dp.plug(sandboxes[0].fd, attachment("routed", 0, "v4"))
        assert forwarding(node) == ("1", "0")
        dp.plug(sandboxes[1].fd, attachment("routed", 1, "v6"))
        assert forwarding(node) == ("1", "1")
    finally:
        dp.close()


def test_without_forwarding_the_node_still_reaches_its_pod(node: Netns, sandboxes: list[Netns]) -> None:
    dp = RoutedDataplane(mtu=MTU, host_netns_fd=node.fd, enable_forwarding=False)
    try:
        att = attachment("routed", 0)
        plugged = dp.plug(sandboxes[0].fd, att)
        assert forwarding(node) == ("0", "0")
        assert ping(node, "10.77.0.10") and ping(sandboxes[0], "169.254.1.1")
        dp.check(sandboxes[0].fd, att, plugged)
    finally:
        dp.close()


def test_custom_gateways_and_extra_routes(node: Netns, sandboxes: list[Netns]) -> None:
    dp = RoutedDataplane(mtu=MTU, host_netns_fd=node.fd, gateway_v4="169.254.7.7", gateway_v6="fe80::7")
    try:
        att = attachment("routed", 0, routes=(RouteSpec("10.200.0.0/16", gw="10.77.0.254"),
                                              RouteSpec("fd00:200::/64")))
        plugged = dp.plug(sandboxes[0].fd, att)
        assert [str(g) for g in plugged.gateways] == ["169.254.7.7", "fe80::7"]
        assert ("10.200.0.0/16", "169.254.7.7") in routes(sandboxes[0], "eth0", 4)
        assert ("fd00:200::/64", "fe80::7") in routes(sandboxes[0], "eth0", 6)
        assert neighbours(sandboxes[0], "eth0")["169.254.7.7"] == (plugged.host_mac, ["PERMANENT"])
        assert ping(sandboxes[0], "169.254.7.7") and ping(sandboxes[0], "fe80::7%eth0")
        dp.check(sandboxes[0].fd, att, plugged)
    finally:
        dp.close()


def test_a_pod_address_equal_to_the_gateway_is_refused(node: Netns, sandboxes: list[Netns]) -> None:
    dp = RoutedDataplane(mtu=MTU, host_netns_fd=node.fd, gateway_v4="10.77.0.10")
    try:
        with pytest.raises(InvalidConfig, match=r"address 10\.77\.0\.10 of eth0 is the routed gateway"):
            dp.plug(sandboxes[0].fd, attachment("routed", 0))
        assert link_names(node) == {"lo"}
        assert link_names(sandboxes[0]) == {"lo"}
    finally:
        dp.close()


def test_host_objects_are_the_host_ends(node: Netns, sandboxes: list[Netns]) -> None:
    dp = RoutedDataplane(mtu=MTU, host_netns_fd=node.fd)
    try:
        atts = [attachment("routed", i) for i in range(2)]
        for sb, att in zip(sandboxes, atts, strict=True):
            dp.plug(sb.fd, att)
        assert dp.host_objects() == {att.host_ifname for att in atts}
        assert ipaddress.ip_address("10.77.0.11") in {ipaddress.ip_address(a.split("/")[0]) for a, _ in
                                                      routes(node, atts[1].host_ifname, 4)}
    finally:
        dp.close()
