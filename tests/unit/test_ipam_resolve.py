"""Request resolution: precedence, subnet-wins-over-network, and refusals that name the source."""

from __future__ import annotations

import ipaddress

import pytest

from cloudnic.errors import AddressUnavailable, NotFound
from cloudnic.ipam.resolve import Defaults, Request, build_port_spec, choose_network
from cloudnic.providers.base import Network, Subnet


def _net(name: str, *cidrs: str) -> Network:
    subs = tuple(Subnet(id=c, network_id=name, cidr=ipaddress.ip_network(c),
                        gateway=next(ipaddress.ip_network(c).hosts())) for c in cidrs)
    return Network(id=name, name=name, subnets=subs)


class Cat:
    def __init__(self, *nets: Network) -> None:
        self.nets = {n.name: n for n in nets}

    def get(self, name: str) -> Network:
        if name not in self.nets:
            raise NotFound(f"network {name!r} not found")
        return self.nets[name]

    def all(self) -> list[Network]:
        return list(self.nets.values())


CAT = Cat(_net("a", "10.1.0.0/24", "10.1.1.0/24", "fd00:1::/64"), _net("b", "10.2.0.0/24"))


def test_defaults_then_namespace_then_request() -> None:
    net, sub = choose_network(Request(), Defaults(network="a"), CAT)
    assert net.name == "a" and sub is None
    net, sub = choose_network(Request(pod_namespace="shop"),
                              Defaults(network="a", namespace_network="b"), CAT)
    assert net.name == "b"
    net, sub = choose_network(Request(network="a", network_source="annotation"),
                              Defaults(network="a", namespace_network="b"), CAT)
    assert net.name == "a"
    net, sub = choose_network(Request(), Defaults(network="a", namespace_subnet="10.1.1.0/24"), CAT)
    assert sub is not None and str(sub.cidr) == "10.1.1.0/24"


def test_subnet_wins_over_network() -> None:
    net, sub = choose_network(Request(subnet="10.2.0.0/24", subnet_source="annotation"),
                              Defaults(network="a"), CAT)
    assert net.name == "b" and sub is not None and str(sub.cidr) == "10.2.0.0/24"


def test_unknown_network_and_subnet_name_their_source() -> None:
    with pytest.raises(NotFound, match=r"ghost.*annotation"):
        choose_network(Request(network="ghost", network_source="annotation"), Defaults(network="a"), CAT)
    with pytest.raises(NotFound, match=r"10.9.0.0/24.*annotation"):
        choose_network(Request(subnet="10.9.0.0/24", subnet_source="annotation"), Defaults(network="a"), CAT)


def test_port_spec_fixed_ip_and_tags() -> None:
    net = CAT.get("a")
    req = Request(ips=(ipaddress.ip_address("10.1.0.7"),), ips_source="CNI_ARGS IP", pod_namespace="ns",
                  pod_name="p", mac="02:00:00:00:00:01")
    spec = build_port_spec(req, Defaults(network="a", security_groups=("sg",)), net, None, node="n1",
                           cluster_id="c1")
    assert spec.fixed_ips == (ipaddress.ip_address("10.1.0.7"),) and spec.subnet_ids == ()
    assert spec.name == "cloudnic/ns/p" and spec.security_groups == ("sg",)
    assert spec.tags == ("cloudnic:cluster=c1", "cloudnic:node=n1") and spec.host_id == "n1"


def test_port_spec_refuses_ip_outside() -> None:
    net = CAT.get("a")
    with pytest.raises(AddressUnavailable, match=r"10.3.0.1.*CNI_ARGS IP"):
        build_port_spec(Request(ips=(ipaddress.ip_address("10.3.0.1"),), ips_source="CNI_ARGS IP"),
                        Defaults(network="a"), net, None, node="n", cluster_id="c")
    sub = net.subnets[0]
    with pytest.raises(AddressUnavailable, match=r"outside subnet 10.1.0.0/24"):
        build_port_spec(Request(ips=(ipaddress.ip_address("10.1.1.5"),), ips_source="x"),
                        Defaults(network="a"), net, sub, node="n", cluster_id="c")
