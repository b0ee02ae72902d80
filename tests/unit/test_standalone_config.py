"""Validation of the standalone networks: every refusal names network, subnet and field."""

from __future__ import annotations

import ipaddress

import pytest

from cloudnic.errors import InvalidConfig
from cloudnic.providers.standalone import (
    NetworkConfig,
    SubnetAllocator,
    SubnetConfig,
    networks_from_config,
    validate_networks,
)


def net(*subnets: SubnetConfig, name: str = "pods", mtu: int | None = None) -> NetworkConfig:
    return NetworkConfig(name=name, subnets=subnets, mtu=mtu)


def refused(*networks: NetworkConfig) -> str:
    with pytest.raises(InvalidConfig) as exc:
        validate_networks(list(networks))
    assert exc.value.code == 7
    return exc.value.msg


def test_valid_dual_stack_network_passes() -> None:
    validate_networks([
        net(SubnetConfig("10.22.0.0/24", exclude=("10.22.0.10", "10.22.0.64/28", "10.22.0.200-10.22.0.210"),
                         routes=(("10.99.0.0/16", "10.22.0.1"), ("0.0.0.0/0", None)), dns=("10.22.0.1",)),
            SubnetConfig("fd00:22::/64", gateway="none", name="v6"), mtu=1400),
        net(SubnetConfig("10.23.0.0/30"), SubnetConfig("fd00:23::/126"), name="small"),
    ])


def test_subnet_ids_and_gateways() -> None:
    named = SubnetConfig("10.22.0.0/24", name="blue")
    assert named.id == "blue"
    assert SubnetConfig("fd00:0022:0::/64").id == "fd00:22::/64"
    assert SubnetConfig("10.22.0.0/24").gateway_ip == ipaddress.ip_address("10.22.0.1")
    gw = SubnetConfig("10.22.0.0/24", gateway="10.22.0.254").gateway_ip
    assert gw == ipaddress.ip_address("10.22.0.254")
    assert SubnetConfig("10.22.0.0/24", gateway="None").gateway_ip is None


@pytest.mark.parametrize(("subnet", "words"), [
    (SubnetConfig("10.22.0.300/24"), ["cidr", "not a valid CIDR"]),
    (SubnetConfig("10.22.0.5/24"), ["cidr", "host bits"]),
    (SubnetConfig("10.22.0.0/31"), ["cidr", "/30 or shorter"]),
    (SubnetConfig("10.22.0.0/32"), ["cidr", "no room"]),
    (SubnetConfig("fd00::/127"), ["cidr", "/126 or shorter"]),
    (SubnetConfig("10.22.0.0/24", gateway="10.23.0.1"), ["gateway", "outside the subnet 10.22.0.0/24"]),
    (SubnetConfig("10.22.0.0/24", gateway="fd00::1"), ["gateway", "outside"]),
    (SubnetConfig("10.22.0.0/24", gateway="gw"), ["gateway", "not an IP address"]),
    (SubnetConfig("10.22.0.0/24", gateway="10.22.0.255"), ["gateway", "broadcast"]),
    (SubnetConfig("10.22.0.0/24", gateway="10.22.0.0"), ["gateway", "network"]),
    (SubnetConfig("10.22.0.0/24", exclude=("10.23.0.5",)), ["exclude", "not inside the subnet"]),
    (SubnetConfig("10.22.0.0/24", exclude=("10.22.0.0/23",)), ["exclude", "not inside"]),
    (SubnetConfig("10.22.0.0/24", exclude=("10.22.0.9-10.22.0.3",)), ["exclude", "starts after it ends"]),
    (SubnetConfig("10.22.0.0/24", exclude=("10.22.0.250-10.22.1.3",)), ["exclude", "not inside"]),
    (SubnetConfig("10.22.0.0/24", exclude=("banana",)), ["exclude"]),
    (SubnetConfig("10.22.0.0/24", routes=(("10.0.0.0/8", "fd00::1"),)), ["routes", "mixes"]),
    (SubnetConfig("10.22.0.0/24", routes=(("nowhere", None),)), ["routes", "invalid"]),
    (SubnetConfig("10.22.0.0/24", dns=("ns1",)), ["dns", "'ns1'"]),
])
def test_bad_subnet_is_refused_naming_network_subnet_and_field(subnet: SubnetConfig,
                                                               words: list[str]) -> None:
    msg = refused(net(subnet))
    assert 'network "pods"' in msg and f'subnet "{subnet.id}"' in msg
    for w in words:
        assert w in msg


def test_overlapping_subnets_are_refused_within_and_across_networks() -> None:
    msg = refused(net(SubnetConfig("10.22.0.0/24"), SubnetConfig("10.22.0.128/25")))
    assert "10.22.0.128/25 overlaps 10.22.0.0/24" in msg
    msg = refused(net(SubnetConfig("10.22.0.0/16")), net(SubnetConfig("10.22.5.0/24"), name="other"))
    assert 'network "other"' in msg and "overlaps 10.22.0.0/16" in msg


def test_duplicate_names_are_refused() -> None:
    assert "declared twice" in refused(net(SubnetConfig("10.22.0.0/24")), net(SubnetConfig("10.23.0.0/24")))
    msg = refused(net(SubnetConfig("10.22.0.0/24", name="a"), SubnetConfig("10.23.0.0/24", name="a")))
    assert 'subnet id "a"' in msg
    assert "empty 'name'" in refused(net(SubnetConfig("10.22.0.0/24"), name=""))


def test_network_without_subnet_or_with_bad_mtu_is_refused() -> None:
    assert "no subnet" in refused(net())
    assert "'mtu'" in refused(net(SubnetConfig("10.22.0.0/24"), mtu=20))
    assert "1280" in refused(net(SubnetConfig("fd00::/64"), mtu=1200))


def test_networks_from_config_builds_and_validates() -> None:
    nets = networks_from_config([
        {"name": "pods", "mtu": 1450, "subnets": [
            {"cidr": "10.22.0.0/24", "exclude": ["10.22.0.2"],
             "routes": [{"dst": "10.9.0.0/16", "gw": "10.22.0.1"}], "dns": ["10.22.0.1"]},
            {"cidr": "fd00:22::/64", "gateway": "none", "name": "v6", "routes": [["::/0"]]},
        ]},
    ])
    assert nets == [NetworkConfig("pods", (
        SubnetConfig("10.22.0.0/24", exclude=("10.22.0.2",), routes=(("10.9.0.0/16", "10.22.0.1"),),
                     dns=("10.22.0.1",)),
        SubnetConfig("fd00:22::/64", gateway="none", name="v6", routes=(("::/0", None),)),
    ), mtu=1450)]


@pytest.mark.parametrize(("raw", "words"), [
    ({"name": "x"}, ["must be a list"]),
    ([{"name": "pods", "subnets": [], "colour": "red"}], ["networks[0]", "unknown key", "colour"]),
    ([{"name": "pods", "subnets": [{"cidr": "10.0.0.0/24", "gw": "10.0.0.1"}]}],
     ["networks[0] (\"pods\").subnets[0]", "'gw'"]),
    ([{"name": "pods", "subnets": [{"cidr": 10}]}], ["'cidr' must be a string"]),
    ([{"name": "pods", "subnets": [{"cidr": "10.0.0.0/24", "exclude": "10.0.0.5"}]}], ["exclude", "list"]),
    ([{"name": "pods", "subnets": [{"cidr": "10.0.0.0/24"}], "mtu": "1500"}], ["'mtu' must be an integer"]),
    ([{"name": "pods", "subnets": [{"cidr": "10.0.0.0/33"}]}], ['subnet "10.0.0.0/33"', "cidr"]),
])
def test_networks_from_config_refuses_bad_shapes(raw: object, words: list[str]) -> None:
    with pytest.raises(InvalidConfig) as exc:
        networks_from_config(raw)
    for w in words:
        assert w in exc.value.msg


def test_allocator_counts_usable_addresses_and_skips_reserved_blocks() -> None:
    a = SubnetAllocator("pods", SubnetConfig("10.22.0.0/24", exclude=("10.22.0.2-10.22.0.200",)))
    assert a.usable_total == 256 - 2 - 1 - 199
    assert a.address(a.next_free() or 0) == ipaddress.ip_address("10.22.0.201")
    v6 = SubnetAllocator("pods", SubnetConfig("fd00::/126"))
    assert v6.usable_total == 2 and v6.address(v6.next_free() or 0) == ipaddress.ip_address("fd00::2")
    assert v6.reserved_reason(0) == "the subnet-router anycast address"
    big = SubnetAllocator("pods", SubnetConfig("fd00::/64", gateway="none"))
    assert big.usable_total == 2**64 - 1 and big.next_free() == 1
