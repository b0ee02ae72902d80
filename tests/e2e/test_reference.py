"""Harness sanity: the same callers with the reference bridge + host-local plugins, no cloudnic.

When one of these fails, the e2e set-up (cnitool, podman, containerd, images) is broken, not
cloudnic; when these pass and the cloudnic tests fail, look at the shim or the agent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_chain import chain_conf, exercise_chain, exercise_tuning_mac
from e2e_peers import Cnitool, Containerd, E2EEnv, Podman, conflist, nsenter_ip
from e2e_util import addresses, in_subnet, netns, ping, run

pytestmark = pytest.mark.e2e

BRIDGE = "cne-br-ref"
SUBNET = "10.237.9.0/24"


@pytest.fixture(scope="module")
def ref_bridge() -> Iterator[str]:
    # a fixed MAC: otherwise the bridge's MAC follows its lowest port MAC and the reference bridge
    # plugin's CHECK of an earlier attachment fails once more ports join
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    try:
        run(["ip", "link", "set", BRIDGE, "address", "02:00:0a:ed:09:01", "up"])
        yield BRIDGE
    finally:
        run(["ip", "link", "delete", "dev", BRIDGE], check=False)


def ref_conf(name: str, ipam_dir: Path) -> dict[str, Any]:
    # isGateway false: the bridge plugin would otherwise switch on net.ipv4.ip_forward host-wide
    return conflist(
        name,
        [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": False,
                "ipMasq": False,
                "ipam": {"type": "host-local", "dataDir": str(ipam_dir), "ranges": [[{"subnet": SUBNET}]]},
            }
        ],
    )


def test_reference_cnitool_add_check_del(e2e: E2EEnv, ref_bridge: str, tmp_path: Path) -> None:
    (tmp_path / "net.d").mkdir()
    tool = Cnitool(e2e, tmp_path / "net.d", {})
    tool.write(ref_conf("cne-ref", tmp_path / "ipam"))
    with netns("ra") as a, netns("rb") as b:
        ra = tool.add("cne-ref", a)
        rb = tool.add("cne-ref", b)
        try:
            assert ra["cniVersion"] == "1.0.0"
            assert in_subnet(ra["ips"][0]["address"], SUBNET)
            assert ra["ips"][0]["address"] in addresses("eth0", a)
            assert ping(a, rb["ips"][0]["address"].split("/")[0])
            tool("check", "cne-ref", a)
        finally:
            tool("del", "cne-ref", a)
            tool("del", "cne-ref", b)
        tool("del", "cne-ref", a)  # DEL twice


def test_reference_podman_ping_and_static_ip(e2e: E2EEnv, ref_bridge: str, tmp_path: Path) -> None:
    podman = Podman(e2e, {})
    try:
        net = podman.add_network(ref_conf("cne-ref-pod", tmp_path / "ipam"))
        c1, _ = podman.run_container("r1", net)
        c2, _ = podman.run_container("r2", net, "--ip", "10.237.9.77")
        assert in_subnet(podman.ip_of(c1, net), SUBNET)
        assert podman.ip_of(c2, net) == "10.237.9.77"
        assert podman.addresses(c2) == ["10.237.9.77/24"]
        podman.exec(c1, "ping", "-c1", "-W2", "10.237.9.77")
        # the address moves to a new container (a new MAC); c1 still has the old MAC in its
        # neighbour table (REACHABLE for up to ~45 s), so the new holder pings c1 first
        podman("rm", "-f", "-t", "0", c2)
        c3, _ = podman.run_container("r3", net, "--ip", "10.237.9.77")
        podman.exec(c3, "ping", "-c1", "-W2", podman.ip_of(c1, net))
    finally:
        podman.close()


def test_reference_containerd_pod(e2e: E2EEnv, ref_bridge: str, tmp_path: Path) -> None:
    conf = ref_conf("cne-ref-cri", tmp_path / "ipam")
    conf["plugins"].append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": False})
    ctd = Containerd(e2e, conf, {})
    try:
        ctd.start()
        sid = ctd.run_pod("rp", port_mappings=[(80, 18937)])
        ip = ctd.pod_ip(sid)
        assert in_subnet(ip, SUBNET)
        links = nsenter_ip(ctd.pod_netns(sid), "addr", "show", "eth0")
        assert any(a["local"] == ip for a in links[0]["addr_info"]), json.dumps(links)
        ctd.stop_pod(sid)
        ctd.remove_pod(sid)
    finally:
        ctd.close()


def test_reference_chain_portmap_bandwidth_tuning(e2e: E2EEnv, ref_bridge: str, tmp_path: Path) -> None:
    (tmp_path / "net.d").mkdir()
    tool = Cnitool(e2e, tmp_path / "net.d", {})
    first = ref_conf("x", tmp_path / "ipam")["plugins"][0]
    tool.write(chain_conf("cne-ref-chain", first))
    with netns("rc") as ns:
        exercise_chain(tool, "cne-ref-chain", ns, host_port=18938)


def test_reference_chain_tuning_mac_then_check(e2e: E2EEnv, ref_bridge: str, tmp_path: Path) -> None:
    (tmp_path / "net.d").mkdir()
    tool = Cnitool(e2e, tmp_path / "net.d", {})
    with netns("rm") as ns:
        exercise_tuning_mac(tool, "cne-ref-mac", ref_conf("x", tmp_path / "ipam")["plugins"][0], ns)
