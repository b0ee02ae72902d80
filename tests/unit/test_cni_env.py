"""cloudnic.cni.env: the CNI_* environment."""

from __future__ import annotations

import pytest

from cloudnic.cni.env import Env, parse_cni_args, parse_env
from cloudnic.errors import InvalidEnvironment

CID = "4f1c2d3e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff"
BASE = {
    "CNI_CONTAINERID": CID,
    "CNI_NETNS": "/run/netns/cni-1",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


def env_for(command: str, **over: str | None) -> dict[str, str]:
    env = {"CNI_COMMAND": command, **BASE}
    for k, v in over.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def test_add_full() -> None:
    env = parse_env(
        env_for(
            "ADD",
            CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;"
            "K8S_POD_INFRA_CONTAINER_ID=" + CID,
        )
    )
    assert env == Env(
        command="ADD",
        container_id=CID,
        netns="/run/netns/cni-1",
        ifname="eth0",
        args={
            "IgnoreUnknown": "1",
            "K8S_POD_NAMESPACE": "shop",
            "K8S_POD_NAME": "web-0",
            "K8S_POD_UID": "u-1",
            "K8S_POD_INFRA_CONTAINER_ID": CID,
        },
        args_raw="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;"
        "K8S_POD_INFRA_CONTAINER_ID=" + CID,
        path="/opt/cni/bin",
    )


def test_del_without_netns_is_fine() -> None:
    env = parse_env(env_for("DEL", CNI_NETNS=None))
    assert (env.command, env.container_id, env.netns, env.ifname) == ("DEL", CID, "", "eth0")


def test_del_with_empty_netns_is_fine() -> None:
    assert parse_env(env_for("DEL", CNI_NETNS="")).netns == ""


@pytest.mark.parametrize("command", ["GC", "STATUS", "VERSION"])
def test_verbs_needing_nothing(command: str) -> None:
    env = parse_env({"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"})
    assert env.command == command
    assert env.path == "/opt/cni/bin"
    assert env.container_id == "" and env.ifname == ""


def test_status_passes_odd_values_through() -> None:
    env = parse_env({"CNI_COMMAND": "STATUS", "CNI_IFNAME": "a/b"})
    assert env.ifname == "a/b"


@pytest.mark.parametrize("ifname", ["eth0", "e", "net1", "a" * 15, "eth0.100", "vlan-1_x", "é" * 7])
def test_good_ifnames(ifname: str) -> None:
    assert parse_env(env_for("ADD", CNI_IFNAME=ifname)).ifname == ifname


@pytest.mark.parametrize("cid", ["a", "0", "A.b-c_d", "x" * 1024])
def test_good_container_ids(cid: str) -> None:
    assert parse_env(env_for("CHECK", CNI_CONTAINERID=cid)).container_id == cid


# (environment overrides, variable that must be named in the message)
BAD_ENV = [
    ({"CNI_COMMAND": None}, "CNI_COMMAND"),
    ({"CNI_COMMAND": ""}, "CNI_COMMAND"),
    ({"CNI_COMMAND": "add"}, "CNI_COMMAND"),
    ({"CNI_COMMAND": "UPDATE"}, "CNI_COMMAND"),
    ({"CNI_CONTAINERID": None}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": ""}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "-abc"}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "_abc"}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "abc def"}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "abc/def"}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "abc\n"}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "abcé"}, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "x" * 1025}, "CNI_CONTAINERID"),
    ({"CNI_NETNS": None}, "CNI_NETNS"),
    ({"CNI_NETNS": "run/netns/x"}, "CNI_NETNS"),
    ({"CNI_NETNS": "/run/netns/x\0y"}, "CNI_NETNS"),
    ({"CNI_IFNAME": None}, "CNI_IFNAME"),
    ({"CNI_IFNAME": ""}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "a" * 16}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "é" * 8}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "."}, "CNI_IFNAME"),
    ({"CNI_IFNAME": ".."}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth/0"}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth:0"}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth 0"}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth\t0"}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth\0"}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "eth\u00a00"}, "CNI_IFNAME"),
    ({"CNI_IFNAME": "\u00e0x"}, "CNI_IFNAME"),  # UTF-8 C3 A0: byte 0xA0 is a space to the kernel
    ({"CNI_IFNAME": "eth\udcff"}, "CNI_IFNAME"),
    ({"CNI_ARGS": "IgnoreUnknown"}, "CNI_ARGS"),
    ({"CNI_ARGS": "A=1;B"}, "CNI_ARGS"),
    ({"CNI_ARGS": "=1"}, "CNI_ARGS"),
]


@pytest.mark.parametrize(("over", "var"), BAD_ENV)
@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_bad_env(over: dict[str, str | None], var: str, command: str) -> None:
    with pytest.raises(InvalidEnvironment) as info:
        parse_env(env_for(command, **over))
    assert info.value.code == 4
    assert var in info.value.msg


@pytest.mark.parametrize(
    ("over", "var"),
    [
        ({"CNI_CONTAINERID": None}, "CNI_CONTAINERID"),
        ({"CNI_IFNAME": None}, "CNI_IFNAME"),
        ({"CNI_NETNS": "relative"}, "CNI_NETNS"),
        ({"CNI_IFNAME": "bad name"}, "CNI_IFNAME"),
    ],
)
def test_bad_env_del(over: dict[str, str | None], var: str) -> None:
    with pytest.raises(InvalidEnvironment) as info:
        parse_env(env_for("DEL", **over))
    assert var in info.value.msg


def test_bad_cni_args_on_gc() -> None:
    with pytest.raises(InvalidEnvironment, match="CNI_ARGS"):
        parse_env({"CNI_COMMAND": "GC", "CNI_ARGS": "novalue"})


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", {}),
        ("A=1", {"A": "1"}),
        ("A=1;B=2", {"A": "1", "B": "2"}),
        ("A=1;A=2", {"A": "2"}),
        ("A=;B=x", {"A": "", "B": "x"}),
        ("A=1;;B=2;", {"A": "1", "B": "2"}),
        ("TOKEN=a=b=", {"TOKEN": "a=b="}),
        ("IgnoreUnknown=1;IP=10.0.0.5,fd00::5", {"IgnoreUnknown": "1", "IP": "10.0.0.5,fd00::5"}),
        ("k8s_pod_name=x;K8S_POD_NAME=y", {"k8s_pod_name": "x", "K8S_POD_NAME": "y"}),
    ],
)
def test_parse_cni_args(raw: str, parsed: dict[str, str]) -> None:
    assert parse_cni_args(raw) == parsed


def test_env_is_frozen() -> None:
    env = parse_env(env_for("ADD", CNI_ARGS="A=1"))
    with pytest.raises(AttributeError):
        env.ifname = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        env.args["A"] = "2"  # type: ignore[index]
