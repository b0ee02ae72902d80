"""Attachment validation and route planning of the dataplanes (pure, no root)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

import pytest

from cloudnic.dataplane.base import Attachment, RouteSpec
from cloudnic.dataplane.names import (
    derived_mac,
    host_ifname_for,
    ifname_problem,
    normalize_mac,
    shim_ifname_for,
)
from cloudnic.dataplane.routed import host_gateway_interface, pod_interfaces
from cloudnic.dataplane.spec import prepare, routed_routes, subnet_routes
from cloudnic.errors import InvalidConfig

ip = ipaddress.ip_address
iface = ipaddress.ip_interface

DUAL = Attachment(
    key="net/c1/eth0", ifname="eth0", mac="02:00:00:00:00:01", mtu=1450,
    addresses=(iface("10.22.0.5/24"), iface("fd00:22::5/64")),
    gateways=(ip("10.22.0.1"), ip("fd00:22::1")),
)


def test_host_ifname_is_cn_and_eleven_hex_chars_and_stable() -> None:
    name = host_ifname_for("net/c1/eth0")
    assert name == host_ifname_for("net/c1/eth0")
    assert name.startswith("cn") and len(name) == 13 and int(name[2:], 16) >= 0
    assert name != host_ifname_for("net/c2/eth0")


def test_derived_mac_is_unicast_locally_administered_and_stable() -> None:
    mac = derived_mac("bridge:br0")
    first = int(mac[:2], 16)
    assert mac == derived_mac("bridge:br0") and mac != derived_mac("bridge:br1")
    assert first & 1 == 0 and first & 2 == 2
    assert normalize_mac(mac, "x") == mac


def test_shim_name_fits_ifnamsiz() -> None:
    assert len(shim_ifname_for("a-very-long-parent-name")) == 15
    assert ifname_problem(shim_ifname_for("eth0")) is None


@pytest.mark.parametrize(("name", "problem"), [
    ("", "empty"), ("a" * 16, "longer than 15"), ("eth/0", "'/'"), ("eth 0", "' '"), ("..", "'.'"),
])
def test_bad_ifnames_are_explained(name: str, problem: str) -> None:
    assert problem in (ifname_problem(name) or "")


@pytest.mark.parametrize("mac", ["02:00:00:00:00", "zz:00:00:00:00:01", "01:00:5e:00:00:01",
                                 "00:00:00:00:00:00"])
def test_bad_macs_are_refused(mac: str) -> None:
    with pytest.raises(InvalidConfig, match="MAC"):
        normalize_mac(mac, "MAC of eth0")


def test_mac_is_normalized() -> None:
    assert normalize_mac("02-AB-00-00-00-01", "m") == "02:ab:00:00:00:01"


def test_prepare_normalizes_and_defaults() -> None:
    spec = prepare(replace(DUAL, mtu=0, mac="02:AB:00:00:00:01"), 1400, host_end=True, gateway_in_subnet=True)
    assert spec.mtu == 1400
    assert spec.mac == "02:ab:00:00:00:01"
    assert spec.host_ifname == host_ifname_for("net/c1/eth0")
    assert spec.families == (4, 6)
    assert spec.gateways == {4: ip("10.22.0.1"), 6: ip("fd00:22::1")}


@pytest.mark.parametrize(("change", "message"), [
    ({"ifname": "a" * 16}, "CNI_IFNAME"),
    ({"host_ifname": "x/y"}, "host interface name"),
    ({"mac": "nope"}, "MAC of eth0"),
    ({"mtu": 1000}, "IPv6 needs at least 1280"),
    ({"mtu": 70000}, "MTU 70000"),
    ({"gateways": (ip("10.22.0.1"), ip("10.22.0.2"))}, "two IPv4 gateways"),
    ({"gateways": (ip("10.99.0.1"),)}, "outside its subnet 10.22.0.0/24"),
    ({"gateways": (ip("10.22.0.5"),)}, "own address"),
    ({"gateways": (ip("224.0.0.1"),)}, "not a unicast"),
    ({"addresses": (iface("10.22.0.5/24"),), "gateways": (ip("fd00:22::1"),)}, "no IPv6 address"),
    ({"addresses": (iface("10.22.0.5/24"), iface("10.22.0.5/24"))}, "repeat"),
    ({"addresses": (iface("0.0.0.0/0"),), "gateways": ()}, "not a unicast"),
    ({"routes": (RouteSpec("10.50.0.0/33"),)}, "not a CIDR"),
    ({"routes": (RouteSpec("10.50.0.0/16", gw="fd00::1"),)}, "IPv6 gateway"),
    ({"routes": (RouteSpec("10.50.0.0/16", gw="10.22.0.9", scope_link=True),)}, "on-link"),
    ({"addresses": (iface("10.22.0.5/24"),), "gateways": (), "routes": (RouteSpec("fd00:50::/64"),)},
     "has no IPv6 address"),
])
def test_prepare_names_the_bad_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message.replace("(", r"\(")):
        prepare(replace(DUAL, **change), 1500, host_end=True, gateway_in_subnet=True)


def test_routed_mode_accepts_a_gateway_outside_the_subnet() -> None:
    att = replace(DUAL, gateways=(ip("10.99.0.1"),))
    assert prepare(att, 1500, host_end=True, gateway_in_subnet=False).gateways == {4: ip("10.99.0.1")}


def test_subnet_routes_default_per_gateway_then_extras_deduplicated() -> None:
    att = replace(DUAL, routes=(RouteSpec("10.50.0.0/16"), RouteSpec("10.60.0.0/16", gw="10.22.0.254"),
                                RouteSpec("0.0.0.0/0", gw="10.22.0.9"),
                                RouteSpec("fd00:70::/64", scope_link=True)))
    routes = subnet_routes(prepare(att, 1500, host_end=True, gateway_in_subnet=True))
    assert routes == (
        RouteSpec("0.0.0.0/0", "10.22.0.1"),
        RouteSpec("::/0", "fd00:22::1"),
        RouteSpec("10.50.0.0/16", "10.22.0.1"),
        RouteSpec("10.60.0.0/16", "10.22.0.254"),
        RouteSpec("fd00:70::/64", None, scope_link=True),
    )


def test_subnet_routes_without_gateway_are_on_link() -> None:
    att = replace(DUAL, gateways=(), routes=(RouteSpec("10.50.0.0/16"),))
    assert subnet_routes(prepare(att, 1500, host_end=True, gateway_in_subnet=True)) == (
        RouteSpec("10.50.0.0/16", None, scope_link=True),)


def test_routed_routes_go_via_the_link_local_gateway() -> None:
    att = replace(DUAL, routes=(RouteSpec("10.60.0.0/16", gw="10.22.0.254"),))
    gws = {4: ip("169.254.1.1"), 6: ip("fe80::1")}
    routes = routed_routes(prepare(att, 1500, host_end=True, gateway_in_subnet=False), gws)
    assert routes == (
        RouteSpec("169.254.1.1/32", None, scope_link=True),
        RouteSpec("0.0.0.0/0", "169.254.1.1"),
        RouteSpec("fe80::1/128", None, scope_link=True),
        RouteSpec("::/0", "fe80::1"),
        RouteSpec("10.60.0.0/16", "169.254.1.1"),
    )


def test_routed_addresses_and_host_gateway_prefixes() -> None:
    assert pod_interfaces(DUAL.addresses) == (iface("10.22.0.5/32"), iface("fd00:22::5/128"))
    assert host_gateway_interface(ip("169.254.1.1")) == iface("169.254.1.1/32")
    assert host_gateway_interface(ip("fe80::1")) == iface("fe80::1/64")
    assert host_gateway_interface(ip("fd00::1")) == iface("fd00::1/128")
