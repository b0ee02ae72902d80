"""cloudnic.cni.hints: merging the request's sources into Hints."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from cloudnic.cni.config import parse_netconf
from cloudnic.cni.env import parse_env
from cloudnic.cni.hints import Hints, parse_mac, resolve_hints
from cloudnic.errors import CNIError, InvalidConfig, InvalidEnvironment

ANN = "io.kubernetes.cri.pod-annotations"
CID = "c0ffee"


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def hints(conf_over: dict[str, Any] | None = None, cni_args: str = "", command: str = "ADD") -> Hints:
    conf = {"cniVersion": "1.1.0", "name": "tenant-a", "type": "cloudnic", **(conf_over or {})}
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": CID,
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": cni_args,
    }
    return resolve_hints(parse_netconf(json.dumps(conf).encode(), command), parse_env(env))


def rc(**entries: Any) -> dict[str, Any]:
    return {"runtimeConfig": entries}


def pod_annotations(mapping: dict[str, Any]) -> dict[str, Any]:
    return {"runtimeConfig": {ANN: mapping}}


def test_nothing_asked() -> None:
    h = hints()
    assert h == Hints(network="tenant-a", network_source='config "network"')
    assert h.ips == () and h.ips_source == "" and h.mac is None and h.mac_source == ""


def test_kubernetes_cni_args() -> None:
    h = hints(
        cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;"
        "K8S_POD_INFRA_CONTAINER_ID=abc"
    )
    assert (h.pod_namespace, h.pod_name, h.pod_uid, h.pod_infra_container_id) == (
        "shop",
        "web-0",
        "u-1",
        "abc",
    )


def test_podman_ip_mac_from_cni_args() -> None:
    h = hints(cni_args="IgnoreUnknown=1;K8S_POD_NAME=nb-c2;MAC=02:42:0A:FB:08:32;IP=10.251.8.50")
    assert h.ips == (ip("10.251.8.50"),) and h.ips_source == 'CNI_ARGS "IP"'
    assert h.mac == "02:42:0a:fb:08:32" and h.mac_source == 'CNI_ARGS "MAC"'
    assert h.pod_namespace is None and h.pod_name == "nb-c2"


def test_dual_stack_cni_args() -> None:
    assert hints(cni_args="IP=10.0.0.5, fd00::5").ips == (ip("10.0.0.5"), ip("fd00::5"))


def test_runtime_config_ips_and_mac_win() -> None:
    h = hints(
        {
            "runtimeConfig": {
                "ips": ["10.0.0.7/24", "fd00::7/64"],
                "mac": "0a-00-00-00-00-07",
                ANN: {"cloudnic.io/ip": "10.0.0.8"},
            },
            "args": {"cni": {"ips": ["10.0.0.9"], "mac": "02:00:00:00:00:09"}},
        },
        cni_args="IP=10.0.0.10;MAC=02:00:00:00:00:0a",
    )
    assert h.ips == (ip("10.0.0.7"), ip("fd00::7")) and h.ips_source == 'runtimeConfig "ips"'
    assert h.mac == "0a:00:00:00:00:07" and h.mac_source == 'runtimeConfig "mac"'


def test_pascal_case_runtime_config_from_containerd() -> None:
    h = hints(
        {
            "runtimeConfig": {
                "PortMappings": [
                    {"HostPort": 18081, "ContainerPort": 80, "Protocol": "tcp", "HostIP": "127.0.0.1"}
                ],
                "IPs": ["10.0.0.7"],
                "Mac": "02:00:00:00:00:07",
                "IO.Kubernetes.CRI.Pod-Annotations": {"cloudnic.io/subnet": "sub-1"},
            }
        }
    )
    assert h.ips == (ip("10.0.0.7"),) and h.mac == "02:00:00:00:00:07"
    assert h.port_mappings == (
        {"HostPort": 18081, "ContainerPort": 80, "Protocol": "tcp", "HostIP": "127.0.0.1"},
    )
    assert h.subnet == "sub-1"


def test_camel_case_port_mappings_from_podman() -> None:
    pm = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]
    assert hints(rc(portMappings=pm, aliases={"n": ["a"]})).port_mappings == tuple(pm)


def test_annotations_win_over_args_and_conf() -> None:
    h = hints(
        {
            "network": "conf-net",
            "subnet": "conf-sub",
            "securityGroups": ["conf-sg"],
            "runtimeConfig": {
                ANN: {
                    "cloudnic.io/ip": "10.0.0.5,fd00::5",
                    "cloudnic.io/subnet": "sub-a",
                    "cloudnic.io/network": "net-a",
                    "cloudnic.io/security-groups": "web, db ,web",
                    "Cloudnic.io/network": "ignored: annotation names are case-sensitive",
                }
            },
            "args": {"cni": {"ips": ["10.0.0.9"]}},
        },
        cni_args="IP=10.0.0.10",
    )
    assert h.ips == (ip("10.0.0.5"), ip("fd00::5")) and h.ips_source == 'annotation "cloudnic.io/ip"'
    assert (h.network, h.network_source) == ("net-a", 'annotation "cloudnic.io/network"')
    assert (h.subnet, h.subnet_source) == ("sub-a", 'annotation "cloudnic.io/subnet"')
    assert h.security_groups == ("web", "db")
    assert h.security_groups_source == 'annotation "cloudnic.io/security-groups"'
    assert h.annotations["Cloudnic.io/network"].startswith("ignored")


def test_seed_annotations() -> None:
    h = hints(
        pod_annotations(
            {
                "skynet/ip": "10.1.0.5",
                "skynet/subnet_id": "sub-seed",
                "skynet/network_id": "net-seed",
                "skynet/security_group_ids": "sg-1,sg-2",
            }
        )
    )
    assert h.ips == (ip("10.1.0.5"),) and h.ips_source == 'annotation "skynet/ip"'
    assert (h.subnet, h.network, h.security_groups) == ("sub-seed", "net-seed", ("sg-1", "sg-2"))


def test_cloudnic_annotations_beat_seed_annotations() -> None:
    h = hints(
        pod_annotations(
            {
                "skynet/ip": "10.1.0.5",
                "cloudnic.io/ip": "10.2.0.5",
                "skynet/subnet_id": "s1",
                "cloudnic.io/subnet": "s2",
                "cni.projectcalico.org/ipAddrs": '["10.3.0.5"]',
            }
        )
    )
    assert h.ips == (ip("10.2.0.5"),) and h.subnet == "s2"


def test_calico_annotation() -> None:
    h = hints(pod_annotations({"cni.projectcalico.org/ipAddrs": '["10.3.0.5", "fd00::3:5"]'}))
    assert h.ips == (ip("10.3.0.5"), ip("fd00::3:5"))
    assert h.ips_source == 'annotation "cni.projectcalico.org/ipAddrs"'


def test_args_cni_then_cni_args() -> None:
    h = hints(
        {"args": {"cni": {"ips": ["fd00::9"], "labels": [{"key": "a", "value": "b"}]}}},
        cni_args="IP=10.0.0.10;MAC=02:00:00:00:00:0a",
    )
    assert h.ips == (ip("fd00::9"),) and h.ips_source == "args.cni.ips"
    assert h.mac == "02:00:00:00:00:0a" and h.mac_source == 'CNI_ARGS "MAC"'


def test_empty_sources_fall_through() -> None:
    h = hints(
        {
            "subnet": "conf-sub",
            "securityGroups": ["sg"],
            "runtimeConfig": {
                "ips": [],
                ANN: {"cloudnic.io/ip": "", "cloudnic.io/subnet": " ", "cloudnic.io/security-groups": " , "},
            },
            "args": {"cni": {"ips": []}},
        },
        cni_args="IP=;MAC=",
    )
    assert h.ips == () and h.ips_source == "" and h.mac is None
    assert (h.subnet, h.subnet_source) == ("conf-sub", 'config "subnet"')
    assert (h.security_groups, h.security_groups_source) == (("sg",), 'config "securityGroups"')


@pytest.mark.parametrize(
    ("text", "norm"),
    [
        ("02:42:0A:fb:08:32", "02:42:0a:fb:08:32"),
        ("02-42-0a-fb-08-32", "02:42:0a:fb:08:32"),
        ("0242.0afb.0832", "02:42:0a:fb:08:32"),
        (" 0a:00:00:00:00:01 ", "0a:00:00:00:00:01"),
    ],
)
def test_mac_forms(text: str, norm: str) -> None:
    assert parse_mac(text, "x") == norm


# (config overrides, CNI_ARGS, exception class, exact source the message must name)
BAD: list[tuple[dict[str, Any], str, type[CNIError], str]] = [
    (rc(ips="10.0.0.5"), "", InvalidConfig, 'runtimeConfig "ips"'),
    (rc(ips=[5]), "", InvalidConfig, 'runtimeConfig "ips"[0]'),
    (rc(ips=["10.0.0.300"]), "", InvalidConfig, 'runtimeConfig "ips"[0]: "10.0.0.300" is not an IP address'),
    (rc(ips=["10.0.0.5/33"]), "", InvalidConfig, 'runtimeConfig "ips"[0]'),
    (rc(ips=["10.0.0.5/"]), "", InvalidConfig, 'runtimeConfig "ips"[0]'),
    (rc(ips=["10.0.0.5", "10.0.0.6"]), "", InvalidConfig, 'runtimeConfig "ips"'),
    (rc(ips=["fd00::1", "fd00::1"]), "", InvalidConfig, "listed twice"),
    (rc(ips=["0.0.0.0"]), "", InvalidConfig, 'runtimeConfig "ips"[0]'),
    (rc(ips=["127.0.0.1"]), "", InvalidConfig, 'runtimeConfig "ips"[0]'),
    (rc(ips=["224.0.0.1"]), "", InvalidConfig, 'runtimeConfig "ips"[0]'),
    (rc(ips=["fe80::1%eth0"]), "", InvalidConfig, 'runtimeConfig "ips"[0]'),
    (rc(ips=["010.0.0.1"]), "", InvalidConfig, 'runtimeConfig "ips"[0]'),
    (rc(mac=7), "", InvalidConfig, 'runtimeConfig "mac"'),
    (
        rc(mac="01:00:5e:00:00:01"),
        "",
        InvalidConfig,
        'runtimeConfig "mac": "01:00:5e:00:00:01" is a multicast',
    ),
    (rc(mac="00:00:00:00:00:00"), "", InvalidConfig, 'runtimeConfig "mac"'),
    (rc(mac="02:00:00:00:00"), "", InvalidConfig, 'runtimeConfig "mac"'),
    (rc(mac="02:00:00:00:00:0g"), "", InvalidConfig, 'runtimeConfig "mac"'),
    (rc(mac="02:00:00:00:00:00:00:01"), "", InvalidConfig, 'runtimeConfig "mac"'),
    (rc(mac="02:00-00:00:00:01"), "", InvalidConfig, 'runtimeConfig "mac"'),
    (rc(portMappings={"hostPort": 1}), "", InvalidConfig, 'runtimeConfig "portMappings"'),
    (rc(portMappings=[1]), "", InvalidConfig, 'runtimeConfig "portMappings"'),
    ({"runtimeConfig": {ANN: ["x"]}}, "", InvalidConfig, f'runtimeConfig "{ANN}"'),
    (
        pod_annotations({"cloudnic.io/ip": "10.0.0.300"}),
        "",
        InvalidConfig,
        'annotation "cloudnic.io/ip": "10.0.0.300" is not an IP address',
    ),
    (
        pod_annotations({"cloudnic.io/ip": "10.0.0.5,10.0.0.6"}),
        "",
        InvalidConfig,
        'annotation "cloudnic.io/ip"',
    ),
    (pod_annotations({"cloudnic.io/ip": "fd00::5/129"}), "", InvalidConfig, 'annotation "cloudnic.io/ip"'),
    (pod_annotations({"skynet/ip": "x"}), "", InvalidConfig, 'annotation "skynet/ip"'),
    (
        pod_annotations({"cloudnic.io/ip": "10.0.0.5", "skynet/ip": "bad"}),
        "",
        InvalidConfig,
        'annotation "skynet/ip"',
    ),
    (
        pod_annotations({"cni.projectcalico.org/ipAddrs": "10.0.0.5"}),
        "",
        InvalidConfig,
        'annotation "cni.projectcalico.org/ipAddrs"',
    ),
    (
        pod_annotations({"cni.projectcalico.org/ipAddrs": '{"a":1}'}),
        "",
        InvalidConfig,
        'annotation "cni.projectcalico.org/ipAddrs"',
    ),
    (
        pod_annotations({"cni.projectcalico.org/ipAddrs": "[1]"}),
        "",
        InvalidConfig,
        'annotation "cni.projectcalico.org/ipAddrs"[0]',
    ),
    (pod_annotations({"cloudnic.io/subnet": 5}), "", InvalidConfig, 'annotation "cloudnic.io/subnet"'),
    (pod_annotations({"other/thing": None}), "", InvalidConfig, 'annotation "other/thing"'),
    ({"args": {"cni": "x"}}, "", InvalidConfig, "args.cni"),
    ({"args": {"cni": {"ips": "10.0.0.5"}}}, "", InvalidConfig, "args.cni.ips"),
    ({"args": {"cni": {"ips": ["nope"]}}}, "", InvalidConfig, "args.cni.ips[0]"),
    ({"args": {"cni": {"mac": "ff:ff:ff:ff:ff:ff"}}}, "", InvalidConfig, "args.cni.mac"),
    ({"args": {"cni": {"mac": ["02:00:00:00:00:01"]}}}, "", InvalidConfig, "args.cni.mac"),
    ({}, "IP=10.0.0.300", InvalidEnvironment, 'CNI_ARGS "IP": "10.0.0.300" is not an IP address'),
    ({}, "IP=10.0.0.5,10.0.0.6", InvalidEnvironment, 'CNI_ARGS "IP"'),
    ({}, "IP=::", InvalidEnvironment, 'CNI_ARGS "IP"'),
    ({}, "MAC=zz", InvalidEnvironment, 'CNI_ARGS "MAC"'),
    ({}, "MAC=03:00:00:00:00:01", InvalidEnvironment, 'CNI_ARGS "MAC"'),
    (rc(ips=["10.0.0.5"]), "MAC=bad", InvalidEnvironment, 'CNI_ARGS "MAC"'),  # unused sources still checked
]


@pytest.mark.parametrize(("conf", "cni_args", "exc", "needle"), BAD)
def test_bad_hints(conf: dict[str, Any], cni_args: str, exc: type[CNIError], needle: str) -> None:
    with pytest.raises(exc) as info:
        hints(conf, cni_args)
    assert type(info.value) is exc
    assert info.value.code == exc.code
    assert needle in info.value.msg


def test_hints_are_frozen() -> None:
    h = hints(pod_annotations({"a": "b"}))
    with pytest.raises(AttributeError):
        h.mac = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        h.annotations["a"] = "c"  # type: ignore[index]
