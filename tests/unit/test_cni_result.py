"""cloudnic.cni.result: conversion to every spec version and prevResult parsing."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from cloudnic.cni.result import DNS, Interface, IPConfig, Result, Route, parse_result
from cloudnic.cni.version import SUPPORTED
from cloudnic.errors import IncompatibleVersion, InvalidConfig

FULL = Result(
    interfaces=(
        Interface(name="tap1234", mac="fa:16:3e:00:00:01", mtu=1450),
        Interface(
            name="eth0",
            mac="fa:16:3e:00:00:02",
            mtu=1450,
            sandbox="/run/netns/cni-1",
            socket_path="/run/vhost.sock",
            pci_id="0000:00:04.0",
        ),
    ),
    ips=(
        IPConfig(ipaddress.ip_interface("10.0.3.5/26"), ipaddress.ip_address("10.0.3.1"), 1),
        IPConfig(ipaddress.ip_interface("fd00:3::5/64"), ipaddress.ip_address("fd00:3::1"), 1),
    ),
    routes=(
        Route(dst="0.0.0.0/0", gw="10.0.3.1", mtu=1400, advmss=1360, priority=10, table=0, scope=0),
        Route(dst="::/0", gw="fd00:3::1"),
        Route(dst="169.254.169.254/32"),
    ),
    dns=DNS(nameservers=("10.0.0.2",), domain="cluster.local", search=("shop.svc",), options=("ndots:5",)),
)

DNS_DICT = {
    "nameservers": ["10.0.0.2"],
    "domain": "cluster.local",
    "search": ["shop.svc"],
    "options": ["ndots:5"],
}
GOLDEN_11 = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "tap1234", "mac": "fa:16:3e:00:00:01", "mtu": 1450},
        {
            "name": "eth0",
            "mac": "fa:16:3e:00:00:02",
            "mtu": 1450,
            "sandbox": "/run/netns/cni-1",
            "socketPath": "/run/vhost.sock",
            "pciID": "0000:00:04.0",
        },
    ],
    "ips": [
        {"interface": 1, "address": "10.0.3.5/26", "gateway": "10.0.3.1"},
        {"interface": 1, "address": "fd00:3::5/64", "gateway": "fd00:3::1"},
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0",
            "gw": "10.0.3.1",
            "mtu": 1400,
            "advmss": 1360,
            "priority": 10,
            "table": 0,
            "scope": 0,
        },
        {"dst": "::/0", "gw": "fd00:3::1"},
        {"dst": "169.254.169.254/32"},
    ],
    "dns": DNS_DICT,
}
GOLDEN_10 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "tap1234", "mac": "fa:16:3e:00:00:01"},
        {"name": "eth0", "mac": "fa:16:3e:00:00:02", "sandbox": "/run/netns/cni-1"},
    ],
    "ips": GOLDEN_11["ips"],
    "routes": [
        {"dst": "0.0.0.0/0", "gw": "10.0.3.1"},
        {"dst": "::/0", "gw": "fd00:3::1"},
        {"dst": "169.254.169.254/32"},
    ],
    "dns": DNS_DICT,
}


def golden_0x(v: str) -> dict[str, Any]:
    return {
        **GOLDEN_10,
        "cniVersion": v,
        "ips": [
            {"version": "4", "interface": 1, "address": "10.0.3.5/26", "gateway": "10.0.3.1"},
            {"version": "6", "interface": 1, "address": "fd00:3::5/64", "gateway": "fd00:3::1"},
        ],
    }


GOLDEN = {"1.1.0": GOLDEN_11, "1.0.0": GOLDEN_10, **{v: golden_0x(v) for v in ("0.4.0", "0.3.1", "0.3.0")}}


@pytest.mark.parametrize("v", SUPPORTED)
def test_golden(v: str) -> None:
    assert FULL.to_dict(v) == GOLDEN[v]
    assert json.loads(FULL.to_json(v)) == GOLDEN[v]


@pytest.mark.parametrize("v", SUPPORTED)
def test_empty_result_like_go(v: str) -> None:
    assert Result().to_dict(v) == {"cniVersion": v, "dns": {}}


@pytest.mark.parametrize("v", SUPPORTED)
def test_ipam_style_result_has_no_interface_index(v: str) -> None:
    r = Result(ips=(IPConfig(ipaddress.ip_interface("10.0.0.5/24")),))
    ip = r.to_dict(v)["ips"][0]
    assert "interface" not in ip and "gateway" not in ip and ip["address"] == "10.0.0.5/24"


def test_zero_mtu_omitted_but_zero_table_kept() -> None:
    r = Result(interfaces=(Interface("eth0", mtu=0),), routes=(Route("10.0.0.0/8", table=0, mtu=0),))
    d = r.to_dict("1.1.0")
    assert d["interfaces"] == [{"name": "eth0"}]
    assert d["routes"] == [{"dst": "10.0.0.0/8", "table": 0}]


def test_to_json_compact_bytes() -> None:
    out = Result().to_json("1.0.0")
    assert out == b'{"cniVersion":"1.0.0","dns":{}}'


@pytest.mark.parametrize("v", ["0.2.0", "2.0.0", ""])
def test_unsupported_version(v: str) -> None:
    with pytest.raises(IncompatibleVersion):
        FULL.to_dict(v)


WITHOUT_11_FIELDS = Result(
    interfaces=(Interface("eth0", "fa:16:3e:00:00:02", sandbox="/run/netns/x"),),
    ips=(
        IPConfig(ipaddress.ip_interface("10.0.3.5/26"), ipaddress.ip_address("10.0.3.1"), 0),
        IPConfig(ipaddress.ip_interface("fd00::5/64")),
    ),
    routes=(Route("0.0.0.0/0", "10.0.3.1"),),
    dns=DNS(nameservers=("10.0.0.2",)),
)


@pytest.mark.parametrize("v", SUPPORTED)
def test_round_trip(v: str) -> None:
    assert parse_result(FULL.to_dict(v)).to_dict(v) == FULL.to_dict(v)
    assert parse_result(WITHOUT_11_FIELDS.to_dict(v)) == WITHOUT_11_FIELDS
    assert parse_result(json.loads(WITHOUT_11_FIELDS.to_json(v))) == WITHOUT_11_FIELDS


def test_round_trip_full_11_is_identity() -> None:
    assert parse_result(FULL.to_dict("1.1.0")) == FULL


@pytest.mark.parametrize("v", SUPPORTED)
def test_convert_between_versions(v: str) -> None:
    """A prevResult in one version re-emitted in another, as a chained plugin would."""
    assert parse_result(GOLDEN["1.1.0"]).to_dict(v) == GOLDEN[v]
    assert parse_result(golden_0x("0.3.1")).to_dict(v) == Result(
        interfaces=tuple(Interface(i.name, i.mac, sandbox=i.sandbox) for i in FULL.interfaces),
        ips=FULL.ips,
        routes=tuple(Route(r.dst, r.gw) for r in FULL.routes),
        dns=FULL.dns,
    ).to_dict(v)


def test_parse_ignores_unknown_keys_and_nulls() -> None:
    r = parse_result(
        {
            "cniVersion": "1.0.0",
            "interfaces": None,
            "ips": [{"address": "10.0.0.5/24", "gateway": None, "x": 1}],
            "dns": None,
            "vendor": {},
        }
    )
    assert r == Result(ips=(IPConfig(ipaddress.ip_interface("10.0.0.5/24")),))


BAD_RESULTS: list[tuple[Any, str]] = [
    ([], "prevResult must be an object"),
    ({"cniVersion": "0.2.0"}, "prevResult.cniVersion"),
    ({"cniVersion": 1}, "prevResult.cniVersion"),
    ({"interfaces": {}}, "prevResult.interfaces"),
    ({"interfaces": ["eth0"]}, "prevResult.interfaces[0]"),
    ({"interfaces": [{"name": 1}]}, "prevResult.interfaces[0].name"),
    ({"interfaces": [{"name": "eth0", "mtu": "1500"}]}, "prevResult.interfaces[0].mtu"),
    ({"interfaces": [{"name": "eth0", "mtu": -1}]}, "prevResult.interfaces[0].mtu"),
    ({"ips": [{}]}, "prevResult.ips[0].address"),
    ({"ips": [{"address": "10.0.0.5"}]}, "prevResult.ips[0].address"),
    ({"ips": [{"address": "10.0.0.500/24"}]}, "prevResult.ips[0].address"),
    ({"ips": [{"address": "10.0.0.5/24", "gateway": "x"}]}, "prevResult.ips[0].gateway"),
    ({"ips": [{"address": "10.0.0.5/24", "interface": 0}]}, "prevResult.ips[0].interface"),
    ({"ips": [{"address": "10.0.0.5/24", "interface": True}]}, "prevResult.ips[0].interface"),
    ({"ips": [{"address": "10.0.0.5/24", "version": "6"}]}, "prevResult.ips[0].version"),
    ({"routes": [{}]}, "prevResult.routes[0].dst"),
    ({"routes": [{"dst": "default"}]}, "prevResult.routes[0].dst"),
    ({"routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.x"}]}, "prevResult.routes[0].gw"),
    ({"routes": [{"dst": "0.0.0.0/0", "table": "main"}]}, "prevResult.routes[0].table"),
    ({"dns": []}, "prevResult.dns"),
    ({"dns": {"nameservers": "10.0.0.2"}}, "prevResult.dns.nameservers"),
    ({"dns": {"search": [1]}}, "prevResult.dns.search[0]"),
    ({"dns": {"domain": 1}}, "prevResult.dns.domain"),
]


@pytest.mark.parametrize(("obj", "needle"), BAD_RESULTS)
def test_parse_rejects(obj: Any, needle: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        parse_result(obj)
    assert info.value.code == 7
    assert needle in info.value.msg
