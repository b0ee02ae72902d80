"""Bad input through the real executable: the exact CNI code, a message naming the field,
nothing but one JSON object on stdout, and neither the store nor the kernel changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentHandle
from tests.support.cni import conf, kernel_snapshot, netns, run_cni, sh, unique

pytestmark = pytest.mark.functional


@dataclass
class Case:
    id: str
    code: int
    names: str                      # text the message (msg or details) must contain
    conf: Any = None                # dict | bytes | None (default conf)
    env: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    command: str = "ADD"
    args: str = ""


def rc(**extra: Any) -> dict[str, Any]:
    return conf("fbridge", runtimeConfig=extra)


def ann(annotations: dict[str, str]) -> dict[str, Any]:
    return rc(**{"io.kubernetes.cri.pod-annotations": annotations})


CASES = [
    # -- decoding
    Case("malformed-json", 6, "JSON", conf=b'{"cniVersion": "1.0.0", "name": '),
    Case("non-utf8", 6, "UTF-8", conf=b'{"name": "\xff\xfe"}'),
    Case("json-array", 6, "object", conf=b"[1, 2]"),
    Case("empty-stdin", 6, "config", conf=b""),
    Case("deep-nesting", 6, "nest", conf=b'{"a":' * 200 + b"1" + b"}" * 200),
    # -- config fields
    Case("missing-name", 7, "name", conf={"cniVersion": "1.0.0", "type": "cloudnic"}),
    Case("name-not-string", 7, "name", conf={"cniVersion": "1.0.0", "type": "cloudnic", "name": 5}),
    Case("name-bad-chars", 7, "name", conf={"cniVersion": "1.0.0", "type": "cloudnic", "name": "bad name!"}),
    Case("missing-type", 7, "type", conf={"cniVersion": "1.0.0", "name": "fbridge"}),
    Case("unsupported-version", 1, "cniVersion", conf=conf("fbridge", "0.2.0")),
    Case("future-version", 1, "cniVersion", conf=conf("fbridge", "2.0.0")),
    Case("version-not-string", 7, "cniVersion", conf=conf("fbridge", 1)),  # type: ignore[arg-type]
    Case("cniVersions-none-supported", 1, "cniVersions",
         conf=dict(conf("fbridge"), cniVersions=["0.1.0", "9.9.9"])),
    Case("cniVersions-not-list", 7, "cniVersions", conf=dict(conf("fbridge"), cniVersions="1.0.0")),
    Case("ipam-given", 2, "ipam", conf=dict(conf("fbridge"), ipam={"type": "host-local"})),
    Case("network-not-string", 7, "network", conf=dict(conf("fbridge"), network=["x"])),
    Case("unknown-network", 102, "nope", conf=dict(conf("fbridge"), network="nope")),
    Case("mtu-too-small", 7, "mtu", conf=dict(conf("fbridge"), mtu=10)),
    Case("mtu-not-int", 7, "mtu", conf=dict(conf("fbridge"), mtu="1500")),
    Case("securityGroups-not-list", 7, "securityGroups", conf=dict(conf("fbridge"), securityGroups="sg1")),
    Case("runtimeConfig-not-object", 7, "runtimeConfig", conf=dict(conf("fbridge"), runtimeConfig=[1])),
    Case("args-not-object", 7, "args", conf=dict(conf("fbridge"), args="x")),
    # -- runtimeConfig capabilities and annotations
    Case("rc-ips-not-list", 7, "ips", conf=rc(ips="10.91.0.20")),
    Case("rc-ips-bad", 7, "ips", conf=rc(ips=["10.91.0.300"])),
    Case("rc-ips-two-v4", 7, "ips", conf=rc(ips=["10.91.0.20", "10.91.0.21"])),
    Case("rc-mac-bad", 7, "mac", conf=rc(mac="02:zz:00:00:00:01")),
    Case("rc-mac-multicast", 7, "mac", conf=rc(mac="01:00:5e:00:00:01")),
    Case("ann-ip-bad", 7, "cloudnic.io/ip", conf=ann({"cloudnic.io/ip": "10.91.0.300"})),
    Case("ann-skynet-ip-bad", 7, "skynet/ip", conf=ann({"skynet/ip": "banana"})),
    Case("ann-calico-not-json", 7, "ipAddrs", conf=ann({"cni.projectcalico.org/ipAddrs": "[10.91.0.5"})),
    Case("ann-unknown-subnet", 102, "10.55.0.0/24", conf=ann({"cloudnic.io/subnet": "10.55.0.0/24"})),
    Case("ann-unknown-network", 102, "ghost", conf=ann({"cloudnic.io/network": "ghost"})),
    Case("args-cni-ips-bad", 7, "ips", conf=dict(conf("fbridge"), args={"cni": {"ips": ["x.y"]}})),
    # -- CNI_ARGS
    Case("cni-args-malformed", 4, "CNI_ARGS", args="IgnoreUnknown=1;garbage"),
    Case("cni-args-ip-bad", 4, "IP", args="IP=10.91.0.999"),
    Case("cni-args-mac-bad", 4, "MAC", args="MAC=nope"),
    Case("ip-outside-network", 100, "10.200.0.5", args="IP=10.200.0.5"),
    Case("ip-network-address", 100, "10.91.0.0", args="IP=10.91.0.0"),
    Case("ip-broadcast", 100, "10.91.0.255", args="IP=10.91.0.255"),
    Case("ip-gateway", 100, "10.91.0.1", args="IP=10.91.0.1"),
    Case("ip-excluded", 100, "10.91.0.5", args="IP=10.91.0.5"),
    Case("ip6-outside", 100, "fd00:99::5", args="IP=fd00:99::5"),
    Case("ip-taken", 100, "10.91.0.250", args="IP=10.91.0.250"),
    Case("mac-taken", 100, "02:aa:00:00:00:fa", args="MAC=02:aa:00:00:00:fa"),
    # -- environment
    Case("missing-containerid", 4, "CNI_CONTAINERID", drop=("CNI_CONTAINERID",)),
    Case("bad-containerid", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "a/b"}),
    Case("missing-ifname", 4, "CNI_IFNAME", drop=("CNI_IFNAME",)),
    Case("long-ifname", 4, "CNI_IFNAME", env={"CNI_IFNAME": "a" * 16}),
    Case("ifname-slash", 4, "CNI_IFNAME", env={"CNI_IFNAME": "et/h0"}),
    Case("missing-netns", 4, "CNI_NETNS", drop=("CNI_NETNS",)),
    Case("netns-does-not-exist", 4, "CNI_NETNS", env={"CNI_NETNS": "/run/netns/cnf-no-such-ns"}),
    Case("netns-regular-file", 4, "CNI_NETNS", env={"CNI_NETNS": "/etc/hostname"}),
    Case("netns-relative", 4, "CNI_NETNS", env={"CNI_NETNS": "run/netns/x"}),
    Case("netns-is-the-host", 4, "node's own", env={"CNI_NETNS": "/proc/self/ns/net"}),
    Case("netns-is-the-host-del", 4, "node's own", env={"CNI_NETNS": "/proc/self/ns/net"}, command="DEL"),
    Case("unknown-command", 4, "CNI_COMMAND", command="FROB"),
    Case("missing-command", 4, "CNI_COMMAND", drop=("CNI_COMMAND",)),
    Case("ifname-exists", 7, "CNI_IFNAME", env={"CNI_IFNAME": "dummy0"}),
    # -- other verbs
    Case("check-no-attachment", 3, "ADD it first", command="CHECK"),
    Case("check-bad-prevresult", 7, "prevResult", command="CHECK",
         conf=dict(conf("fbridge"), prevResult={"ips": [{"address": "not-an-ip"}]})),
    Case("gc-old-version", 1, "1.1.0", command="GC", conf=conf("fbridge", "1.0.0")),
    Case("status-old-version", 1, "1.1.0", command="STATUS", conf=conf("fbridge", "0.4.0")),
]


@pytest.fixture(scope="module")
def holder(agent: AgentHandle) -> Iterator[str]:
    """A live attachment holding 10.91.0.250 and MAC 02:aa:00:00:00:fa."""
    with netns(unique("cnf-hold-")) as ns:
        r = run_cni("ADD", conf("fbridge"), socket=agent.socket, container_id="holder",
                    netns=f"/run/netns/{ns}", args="IP=10.91.0.250;MAC=02:aa:00:00:00:fa")
        assert r.code == 0, r.stdout
        yield ns
        run_cni("DEL", conf("fbridge"), socket=agent.socket, container_id="holder", netns=f"/run/netns/{ns}")


def node_of(agent: AgentHandle) -> str:
    return agent.config_path.read_text().split('host_netns = "/run/netns/')[1].split('"')[0]


def test_case_count() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(agent: AgentHandle, holder: str, sandbox: str, case: Case, tmp_path: Path) -> None:
    sh("ip", "-n", sandbox, "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1")
    node = node_of(agent)
    before = (agent.admin({"op": "attachments"})["attachments"], agent.admin({"op": "status"})["usage"],
              kernel_snapshot(node), kernel_snapshot(sandbox))
    env = dict(case.env)
    r = run_cni(case.command, case.conf if case.conf is not None else conf("fbridge"), socket=agent.socket,
                container_id="badinput", netns=f"/run/netns/{sandbox}", args=case.args, extra_env=env,
                drop_env=case.drop)
    assert r.code == 1, f"{case.id}: expected failure, got {r.stdout!r}"
    obj = json.loads(r.stdout)           # exactly one JSON object, nothing else
    assert set(obj) <= {"cniVersion", "code", "msg", "details"}, obj
    assert obj["code"] == case.code, f"{case.id}: {obj}"
    assert case.names.lower() in (obj["msg"] + " " + obj.get("details", "")).lower(), f"{case.id}: {obj}"
    assert "Traceback" not in r.stdout + r.stderr
    after = (agent.admin({"op": "attachments"})["attachments"], agent.admin({"op": "status"})["usage"],
             kernel_snapshot(node), kernel_snapshot(sandbox))
    assert after == before, f"{case.id}: store or kernel changed"
