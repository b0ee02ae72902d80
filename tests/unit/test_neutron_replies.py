"""IaaS replies with missing or wrong-typed fields: each is a ProviderError naming the field, never a
KeyError/TypeError/AttributeError escaping into the agent (issue 5 item 3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cloudnic.errors import ProviderError
from cloudnic.providers.neutron.convert import network_from_json, port_from_json, subnet_from_json

PORT: dict[str, Any] = {
    "id": "p1", "network_id": "n1", "mac_address": "fa:16:3e:00:00:01", "name": "ns/pod", "status": "DOWN",
    "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.66.0.5"}], "security_groups": ["sg1"],
    "tags": ["cloudnic:cluster=c1", "cloudnic:node=n1"], "device_owner": "compute:cloudnic",
    "binding:host_id": "n1", "description": "",
}
SUBNET: dict[str, Any] = {
    "id": "s1", "network_id": "n1", "cidr": "10.66.0.0/24", "gateway_ip": "10.66.0.1", "name": "v4",
    "host_routes": [{"destination": "10.99.0.0/16", "nexthop": "10.66.0.254"}], "dns_nameservers": ["10.66.0.2"],
}
NETWORK: dict[str, Any] = {"id": "n1", "name": "pods", "mtu": 1450, "subnets": ["s1"],
                           "provider:network_type": "vlan", "provider:segmentation_id": 100}
MISSING = object()


def edit(base: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = dict(base)
    if value is MISSING:
        out.pop(key)
    else:
        out[key] = value
    return out


# (reply key, bad value, text the message must contain)
PORT_CASES = [
    ("id", MISSING, '"id"'), ("id", None, '"id"'), ("id", 5, '"id"'), ("id", "", '"id"'), ("id", ["p1"], '"id"'),
    ("network_id", MISSING, '"network_id"'), ("network_id", {"id": "n1"}, '"network_id"'),
    ("mac_address", 5, '"mac_address"'), ("mac_address", ["fa:16:3e:00:00:01"], '"mac_address"'),
    ("name", 5, '"name"'), ("status", {"s": 1}, '"status"'), ("device_owner", 1, '"device_owner"'),
    ("binding:host_id", [], '"binding:host_id"'), ("description", 5, '"description"'),
    ("fixed_ips", "10.66.0.5", '"fixed_ips"'), ("fixed_ips", {"subnet_id": "s1"}, '"fixed_ips"'),
    ("fixed_ips", 5, '"fixed_ips"'), ("fixed_ips", ["10.66.0.5"], '"fixed_ips[0]"'),
    ("fixed_ips", [None], '"fixed_ips[0]"'), ("fixed_ips", [{"ip_address": "10.66.0.5"}], "fixed_ips[0].subnet_id"),
    ("fixed_ips", [{"subnet_id": 5, "ip_address": "10.66.0.5"}], "fixed_ips[0].subnet_id"),
    ("fixed_ips", [{"subnet_id": "s1"}], "fixed_ips[0].ip_address"),
    ("fixed_ips", [{"subnet_id": "s1", "ip_address": "nope"}], "fixed_ips[0].ip_address"),
    ("fixed_ips", [{"subnet_id": "s1", "ip_address": 167772165}], "fixed_ips[0].ip_address"),
    ("fixed_ips", [{"subnet_id": "s1", "ip_address": "10.66.0.5"}, {"subnet_id": "s2", "ip_address": None}],
     "fixed_ips[1].ip_address"),
    ("security_groups", "sg1", '"security_groups"'), ("security_groups", [5], "security_groups[0]"),
    ("security_groups", [{"id": "sg1"}], "security_groups[0]"),
    ("tags", "cloudnic:cluster=c1", '"tags"'), ("tags", [None], "tags[0]"), ("tags", {"a": 1}, '"tags"'),
]

SUBNET_CASES = [
    ("id", MISSING, '"id"'), ("id", 7, '"id"'), ("network_id", MISSING, '"network_id"'),
    ("network_id", None, '"network_id"'), ("cidr", MISSING, '"cidr"'), ("cidr", None, '"cidr"'),
    ("cidr", "10.66.0.0/33", '"cidr"'), ("cidr", "banana", '"cidr"'), ("cidr", 24, '"cidr"'),
    ("cidr", ["10.66.0.0/24"], '"cidr"'), ("gateway_ip", "nope", '"gateway_ip"'), ("gateway_ip", 5, '"gateway_ip"'),
    ("gateway_ip", ["10.66.0.1"], '"gateway_ip"'), ("name", 5, '"name"'),
    ("host_routes", "10.99.0.0/16", '"host_routes"'), ("host_routes", [5], "host_routes[0]"),
    ("host_routes", [{"nexthop": "10.66.0.254"}], "host_routes[0].destination"),
    ("host_routes", [{"destination": 5}], "host_routes[0].destination"),
    ("host_routes", [{"destination": "10.99.0.0/16", "nexthop": 5}], "host_routes[0].nexthop"),
    ("dns_nameservers", "10.66.0.2", '"dns_nameservers"'), ("dns_nameservers", [None], "dns_nameservers[0]"),
]

NETWORK_CASES = [
    ("id", MISSING, '"id"'), ("id", 1, '"id"'), ("id", "", '"id"'), ("name", 5, '"name"'),
    ("mtu", "1450", '"mtu"'), ("mtu", -1, '"mtu"'), ("mtu", 1450.5, '"mtu"'), ("mtu", True, '"mtu"'),
    ("mtu", [1450], '"mtu"'), ("subnets", "s1", '"subnets"'), ("subnets", [5], "subnets[0]"),
    ("provider:network_type", 5, '"provider:network_type"'),
    ("provider:segmentation_id", "100", '"provider:segmentation_id"'),
    ("provider:segmentation_id", -5, '"provider:segmentation_id"'),
    ("provider:segmentation_id", {"id": 100}, '"provider:segmentation_id"'),
]


def _raises(fn: Callable[[], object], names: str) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        fn()
    err = info.value
    assert names in f"{err.msg} {err.details}", f"{err.msg!r} does not name {names!r}"
    assert "cannot read" in err.msg or "not a JSON object" in err.msg or "array" in err.msg, err.msg
    return err


def test_the_good_replies_read() -> None:
    assert port_from_json(PORT).fixed_ips[0].subnet_id == "s1"
    assert subnet_from_json(SUBNET).gateway is not None
    assert network_from_json(NETWORK, [SUBNET]).segmentation_id == 100


@pytest.mark.parametrize(("key", "value", "names"), PORT_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(PORT_CASES)])
def test_bad_port(key: str, value: Any, names: str) -> None:
    err = _raises(lambda: port_from_json(edit(PORT, key, value)), names)
    if key != "id":
        assert "p1" in err.details, "details name the port"
    _raises(lambda: port_from_json(edit(PORT, key, value), names_ownership=True), names)


@pytest.mark.parametrize(("key", "value", "names"), SUBNET_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SUBNET_CASES)])
def test_bad_subnet(key: str, value: Any, names: str) -> None:
    _raises(lambda: subnet_from_json(edit(SUBNET, key, value)), names)
    _raises(lambda: network_from_json(NETWORK, [edit(SUBNET, key, value)]), names)


@pytest.mark.parametrize(("key", "value", "names"), NETWORK_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(NETWORK_CASES)])
def test_bad_network(key: str, value: Any, names: str) -> None:
    _raises(lambda: network_from_json(edit(NETWORK, key, value), [SUBNET]), names)


@pytest.mark.parametrize("reply", [None, [], "port", 5, ["id", "p1"], b"{}"], ids=repr)
def test_not_an_object(reply: Any) -> None:
    for fn in (port_from_json, subnet_from_json, lambda d: network_from_json(d, [])):
        with pytest.raises(ProviderError, match="not a JSON object"):
            fn(reply)


@pytest.mark.parametrize("subnets", ["s1", 5, {"subnets": []}, None], ids=repr)
def test_subnet_list_not_an_array(subnets: Any) -> None:
    with pytest.raises(ProviderError, match="subnets"):
        network_from_json(NETWORK, subnets)


def test_subnet_list_item_not_an_object() -> None:
    _raises(lambda: network_from_json(NETWORK, ["s1"]), "not a JSON object")
