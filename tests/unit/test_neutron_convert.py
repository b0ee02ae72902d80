"""Neutron JSON (as neutron-server Zed returns it) to the contract's values; ownership by name."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from cloudnic.errors import InvalidConfig, ProviderError
from cloudnic.providers.base import FixedIP, Route
from cloudnic.providers.neutron.convert import (
    decode_name,
    encode_name,
    name_prefix,
    network_from_json,
    owner_of,
    port_from_json,
)

PORT: dict[str, Any] = {
    "id": "ff04924d-f790-4ed2-936a-5628e2ea81d8", "name": "b0", "network_id": "26620086-236a-4aae-a1ba-a604148e877d",
    "tenant_id": "proj-a", "mac_address": "FA:16:3E:D2:F2:4F", "admin_state_up": True, "status": "DOWN",
    "device_id": "", "device_owner": "compute:cloudnic",
    "fixed_ips": [{"subnet_id": "357257f0-8331-4396-a0f5-ac389abffd89", "ip_address": "10.66.0.5"},
                  {"subnet_id": "v6", "ip_address": "fd00:66::5"}],
    "project_id": "proj-a", "binding:host_id": "node-1", "binding:vnic_type": "normal", "binding:profile": {},
    "port_security_enabled": True, "security_groups": ["800db04d-bbbe-4216-9f02-3049d532a189"],
    "binding:vif_type": "bridge", "binding:vif_details": {"port_filter": True}, "allowed_address_pairs": [],
    "extra_dhcp_opts": [], "description": "", "tags": ["cloudnic:cluster=c1", "cloudnic:node=node-1"],
    "created_at": "2026-11-24T08:16:57Z", "updated_at": "2026-11-24T08:16:57Z", "revision_number": 1,
}

NETWORK: dict[str, Any] = {
    "id": "n1", "name": "pods", "mtu": 1450, "status": "ACTIVE", "subnets": ["s2", "s1"],
    "provider:network_type": "vxlan", "provider:physical_network": None, "provider:segmentation_id": 1633,
}
SUBNETS = [
    {"id": "s1", "network_id": "n1", "name": "v4", "cidr": "10.66.0.0/24", "gateway_ip": "10.66.0.1", "ip_version": 4,
     "host_routes": [{"destination": "10.99.0.0/16", "nexthop": "10.66.0.254"}], "dns_nameservers": ["10.66.0.2"]},
    {"id": "s2", "network_id": "n1", "name": "v6", "cidr": "fd00:66::/64", "gateway_ip": None, "ip_version": 6,
     "host_routes": [], "dns_nameservers": []},
]


def test_port_fields() -> None:
    p = port_from_json(PORT)
    assert p.id == PORT["id"] and p.network_id == PORT["network_id"]
    assert p.mac == "fa:16:3e:d2:f2:4f"
    assert p.fixed_ips == (FixedIP("357257f0-8331-4396-a0f5-ac389abffd89", ipaddress.ip_address("10.66.0.5")),
                           FixedIP("v6", ipaddress.ip_address("fd00:66::5")))
    assert (p.status, p.device_owner, p.host_id, p.name) == ("DOWN", "compute:cloudnic", "node-1", "b0")
    assert p.security_groups == ("800db04d-bbbe-4216-9f02-3049d532a189",)
    assert p.tags == ("cloudnic:cluster=c1", "cloudnic:node=node-1")
    assert p.extra["binding:vif_type"] == "bridge" and p.extra["project_id"] == "proj-a"


def test_port_read_back_in_names_mode() -> None:
    raw = dict(PORT, name="cloudnic/c1/node-1/ns/pod", tags=[])
    p = port_from_json(raw, names_ownership=True)
    assert p.name == "ns/pod" and p.tags == ("cloudnic:cluster=c1", "cloudnic:node=node-1")
    assert owner_of(p.tags) == ("c1", "node-1")


def test_unreadable_port_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="cannot read"):
        port_from_json({"id": "x", "network_id": "n", "fixed_ips": [{"subnet_id": "s", "ip_address": "nope"}]})
    with pytest.raises(ProviderError):
        port_from_json({"name": "no id"})


def test_network_with_subnets_in_the_network_order() -> None:
    n = network_from_json(NETWORK, SUBNETS)
    assert (n.id, n.name, n.mtu, n.network_type, n.segmentation_id) == ("n1", "pods", 1450, "vxlan", 1633)
    assert [s.id for s in n.subnets] == ["s2", "s1"]
    v4 = n.subnets[1]
    assert v4.cidr == ipaddress.ip_network("10.66.0.0/24") and v4.gateway == ipaddress.ip_address("10.66.0.1")
    assert v4.host_routes == (Route("10.99.0.0/16", "10.66.0.254"),) and v4.dns_nameservers == ("10.66.0.2",)
    assert n.subnets[0].gateway is None and n.subnets[0].version == 6


def test_flat_network_has_no_segment() -> None:
    n = network_from_json(dict(NETWORK, **{"provider:network_type": "flat", "provider:segmentation_id": None,
                                           "mtu": 0}), [])
    assert (n.network_type, n.segmentation_id, n.mtu, n.subnets) == ("flat", None, None, ())


def test_name_encoding_round_trip() -> None:
    tags = ("cloudnic:cluster=c1", "cloudnic:node=node-1")
    assert encode_name("ns/pod", tags) == "cloudnic/c1/node-1/ns/pod"
    assert decode_name("cloudnic/c1/node-1/ns/pod") == ("ns/pod", tags)
    assert decode_name("cloudnic/c1/node-1/") == ("", tags)
    assert encode_name("plain", ()) == "plain"
    assert decode_name("plain") == ("plain", ())
    assert decode_name("cloudnic/only-one") == ("cloudnic/only-one", ())
    with pytest.raises(InvalidConfig, match="contain no '/'"):
        name_prefix("c/1", "n")
    with pytest.raises(InvalidConfig):
        name_prefix("c1", "")
