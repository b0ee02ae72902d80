"""cloudnic.cni.config: decoding and validating the network configuration."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloudnic.cni.config import MAX_DEPTH, NetConf, ci_get, parse_netconf
from cloudnic.errors import CNIError, DecodeFailure, IncompatibleVersion, InvalidConfig, UnsupportedField

BASE: dict[str, Any] = {"cniVersion": "1.0.0", "name": "tenant-a", "type": "cloudnic"}


def parse(conf: dict[str, Any], command: str = "ADD") -> NetConf:
    return parse_netconf(json.dumps(conf).encode(), command)


def with_(**over: Any) -> dict[str, Any]:
    return {**BASE, **over}


def test_minimal() -> None:
    conf = parse(BASE)
    assert conf.cni_version == "1.0.0"
    assert (conf.name, conf.type, conf.network) == ("tenant-a", "cloudnic", "tenant-a")
    assert conf.subnet is None and conf.mtu is None and conf.prev_result is None
    assert conf.security_groups == () and conf.valid_attachments is None
    assert dict(conf.runtime_config) == {} and dict(conf.args) == {}


def test_full_and_unknown_keys_kept() -> None:
    data = with_(
        cniVersions=["1.0.0", "1.1.0"],
        network="net-uuid",
        subnet="10.0.3.0/26",
        securityGroups=["default", "web", "default"],
        mtu=1450,
        args={"cni": {"ips": ["10.0.0.5"]}},
        prevResult={"cniVersion": "1.1.0", "ips": []},
        dns={"nameservers": ["10.0.0.2"]},
        vendorThing={"x": [1, 2]},
        **{"cni.dev/valid-attachments": [{"containerID": "abc", "ifname": "eth0"}]},
    )
    conf = parse(data, "GC")
    assert conf.cni_version == "1.1.0"
    assert conf.network == "net-uuid"
    assert conf.subnet == "10.0.3.0/26"
    assert conf.security_groups == ("default", "web")
    assert conf.mtu == 1450
    assert conf.args["cni"] == {"ips": ["10.0.0.5"]}
    assert conf.prev_result == {"cniVersion": "1.1.0", "ips": []}
    assert conf.valid_attachments == (("abc", "eth0"),)
    assert conf.raw["vendorThing"] == {"x": [1, 2]}
    assert conf.raw["dns"] == {"nameservers": ["10.0.0.2"]}
    assert dict(conf.raw) == data


def test_nulls_mean_absent() -> None:
    conf = parse(
        with_(
            network=None,
            subnet=None,
            securityGroups=None,
            mtu=None,
            runtimeConfig=None,
            args=None,
            prevResult=None,
            ipam=None,
        )
    )
    assert conf.network == "tenant-a" and conf.subnet is None and conf.runtime_config == {}


def test_runtime_config_keys_lowered_values_untouched() -> None:
    rc = {
        "PortMappings": [{"HostPort": 18081, "ContainerPort": 80, "Protocol": "tcp", "HostIP": "127.0.0.1"}],
        "io.kubernetes.cri.pod-annotations": {"Cloudnic.IO/IP": "x", "cloudnic.io/ip": "10.0.0.5"},
        "Bandwidth": {"IngressRate": 1000000},
        "MAC": "02:00:00:00:00:01",
    }
    conf = parse(with_(runtimeConfig=rc))
    assert set(conf.runtime_config) == {
        "portmappings",
        "io.kubernetes.cri.pod-annotations",
        "bandwidth",
        "mac",
    }
    assert conf.runtime_config["portmappings"] == rc["PortMappings"]
    # annotation names are case-sensitive: kept exactly
    assert conf.runtime_config["io.kubernetes.cri.pod-annotations"] == rc["io.kubernetes.cri.pod-annotations"]
    assert ci_get(conf.runtime_config["portmappings"][0], "hostPort") == 18081
    assert ci_get(conf.runtime_config["bandwidth"], "ingressRate") == 1000000


def test_ci_get() -> None:
    m = {"HostPort": 1, "hostport": 2, "Protocol": "tcp"}
    assert ci_get(m, "hostport") == 2  # exact match preferred
    assert ci_get(m, "HOSTPORT") in (1, 2)
    assert ci_get(m, "protocol") == "tcp"
    assert ci_get(m, "missing", "d") == "d"
    assert ci_get({}, "x") is None


def test_version_passes_on_anything_but_bad_json() -> None:
    assert parse_netconf(b'{"cniVersion":"0.4.0"}', "VERSION").cni_version == "0.4.0"
    assert parse_netconf(b"", "VERSION").cni_version == "1.1.0"
    assert parse_netconf(b'{"cniVersion":"7.0.0","mtu":"x","ipam":{}}', "VERSION").cni_version == "1.1.0"
    with pytest.raises(DecodeFailure):
        parse_netconf(b"{", "VERSION")


def test_depth_limit() -> None:
    ok = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert parse_netconf(f'{{"cniVersion":"1.0.0","name":"n","type":"t","x":{ok}}}'.encode(), "ADD")
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    with pytest.raises(DecodeFailure, match="deeper than 64"):
        parse_netconf(f'{{"cniVersion":"1.0.0","name":"n","type":"t","x":{deep}}}'.encode(), "ADD")
    with pytest.raises(DecodeFailure, match="deeper than 64"):
        parse_netconf(b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "ADD")


def test_many_shallow_brackets_are_fine() -> None:
    items = ",".join(['{"a":[1]}'] * 500)
    conf = parse_netconf(f'{{"cniVersion":"1.0.0","name":"n","type":"t","x":[{items}]}}'.encode(), "ADD")
    assert len(conf.raw["x"]) == 500


def test_size_limit() -> None:
    with pytest.raises(DecodeFailure, match="bytes"):
        parse_netconf(json.dumps(with_(pad="x" * 200)).encode(), "ADD", max_bytes=100)


def test_decode_error_names_position() -> None:
    with pytest.raises(DecodeFailure) as info:
        parse_netconf(b'{"cniVersion": "1.0.0",\n "name": }', "ADD")
    assert "line 2 column 10" in info.value.msg


def test_non_utf8_names_offset() -> None:
    with pytest.raises(DecodeFailure) as info:
        parse_netconf(b'{"name": "\xff"}', "ADD")
    assert "offset 10" in info.value.msg


# (raw stdin bytes, exception class, text the message must contain)
BAD_BYTES: list[tuple[bytes, type[CNIError], str]] = [
    (b"", DecodeFailure, "not valid JSON"),
    (b"   ", DecodeFailure, "not valid JSON"),
    (b"{", DecodeFailure, "not valid JSON"),
    (b"[]", DecodeFailure, "must be a JSON object"),
    (b'"x"', DecodeFailure, "must be a JSON object"),
    (b"null", DecodeFailure, "must be a JSON object"),
    (b"\xef\xbb\xbf{}", DecodeFailure, "not valid JSON"),
    (b'{"a": NaN}', DecodeFailure, "NaN"),
    (b'{"a": -Infinity}', DecodeFailure, "Infinity"),
    (b'{"a": 1' + b"0" * 5000 + b"}", DecodeFailure, "not valid JSON"),
    (b"\xfe\xff\x00{\x00}", DecodeFailure, "not UTF-8"),
    (b'{"a": "\xc3"}', DecodeFailure, "not UTF-8"),
]


@pytest.mark.parametrize(("data", "exc", "needle"), BAD_BYTES)
def test_bad_bytes(data: bytes, exc: type[CNIError], needle: str) -> None:
    with pytest.raises(exc) as info:
        parse_netconf(data, "ADD")
    assert info.value.code == exc.code
    assert needle in info.value.msg


_MISSING = object()

# (overrides of a valid config, exception class, key the message must name)
BAD_CONF: list[tuple[dict[str, Any], type[CNIError], str]] = [
    ({"cniVersion": _MISSING}, IncompatibleVersion, '"cniVersion"'),
    ({"cniVersion": "0.2.0"}, IncompatibleVersion, '"cniVersion"'),
    ({"cniVersion": 1.0}, InvalidConfig, '"cniVersion"'),
    ({"cniVersions": "1.1.0"}, InvalidConfig, '"cniVersions"'),
    ({"name": _MISSING}, InvalidConfig, '"name"'),
    ({"name": ""}, InvalidConfig, '"name"'),
    ({"name": 5}, InvalidConfig, '"name"'),
    ({"name": "-net"}, InvalidConfig, '"name"'),
    ({"name": "my net"}, InvalidConfig, '"name"'),
    ({"name": "net/1"}, InvalidConfig, '"name"'),
    ({"name": "net\n"}, InvalidConfig, '"name"'),
    ({"type": _MISSING}, InvalidConfig, '"type"'),
    ({"type": ""}, InvalidConfig, '"type"'),
    ({"type": ["cloudnic"]}, InvalidConfig, '"type"'),
    ({"ipam": {"type": "host-local"}}, UnsupportedField, '"ipam" ({"type":"host-local"})'),
    ({"ipam": {}}, UnsupportedField, '"ipam"'),
    ({"ipam": "dhcp"}, UnsupportedField, '"ipam" ("dhcp")'),
    ({"network": 3}, InvalidConfig, '"network"'),
    ({"network": ""}, InvalidConfig, '"network"'),
    ({"subnet": ["10.0.0.0/24"]}, InvalidConfig, '"subnet"'),
    ({"subnet": ""}, InvalidConfig, '"subnet"'),
    ({"securityGroups": "default"}, InvalidConfig, '"securityGroups"'),
    ({"securityGroups": ["a", 1]}, InvalidConfig, '"securityGroups"[1]'),
    ({"securityGroups": [""]}, InvalidConfig, '"securityGroups"[0]'),
    ({"mtu": "1500"}, InvalidConfig, '"mtu"'),
    ({"mtu": 1500.0}, InvalidConfig, '"mtu"'),
    ({"mtu": True}, InvalidConfig, '"mtu"'),
    ({"mtu": 67}, InvalidConfig, '"mtu"'),
    ({"mtu": 65536}, InvalidConfig, '"mtu"'),
    ({"runtimeConfig": []}, InvalidConfig, '"runtimeConfig"'),
    ({"runtimeConfig": {"mac": "x", "MAC": "y"}}, InvalidConfig, '"runtimeConfig"'),
    ({"args": "K=V"}, InvalidConfig, '"args"'),
    ({"prevResult": []}, InvalidConfig, '"prevResult"'),
    ({"cni.dev/valid-attachments": {}}, InvalidConfig, '"cni.dev/valid-attachments"'),
    ({"cni.dev/valid-attachments": ["abc"]}, InvalidConfig, '"cni.dev/valid-attachments"[0]'),
    ({"cni.dev/valid-attachments": [{"ifname": "eth0"}]}, InvalidConfig, "[0].containerID"),
    ({"cni.dev/valid-attachments": [{"containerID": "a", "ifname": 0}]}, InvalidConfig, "[0].ifname"),
]


@pytest.mark.parametrize(("over", "exc", "needle"), BAD_CONF)
def test_bad_conf(over: dict[str, Any], exc: type[CNIError], needle: str) -> None:
    conf = {k: v for k, v in with_(**over).items() if v is not _MISSING}
    with pytest.raises(exc) as info:
        parse(conf)
    assert info.value.code == exc.code
    assert needle in info.value.msg


def test_ipam_message_says_what_to_do() -> None:
    with pytest.raises(UnsupportedField) as info:
        parse(with_(ipam={"type": "host-local"}))
    assert info.value.code == 2
    assert "cloudnic does its own IPAM" in info.value.msg


def test_huge_value_is_truncated_in_message() -> None:
    with pytest.raises(InvalidConfig) as info:
        parse(with_(network=["x" * 10_000]))
    assert len(info.value.msg) < 300


def test_netconf_is_frozen() -> None:
    conf = parse(with_(runtimeConfig={"a": 1}))
    with pytest.raises(AttributeError):
        conf.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        conf.runtime_config["a"] = 2  # type: ignore[index]


def test_netconf_direct_construction_defaults_network() -> None:
    assert NetConf(cni_version="1.1.0", name="n", type="cloudnic").network == "n"
    assert NetConf(cni_version="1.1.0", name="n", type="cloudnic", network="x").network == "x"
