"""`cloudnic audit` finds drift between the store and the kernel, and `--fix` repairs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.agent import running_agent
from tests.support.cni import conf, ip_json, netns, run_cni, sh, unique

pytestmark = pytest.mark.functional

NETWORKS = """
[networks.anet]
mode = "bridge"
bridge = "cna-br0"
[[networks.anet.subnets]]
cidr = "10.99.0.0/24"
"""


def cli(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudnic.cli.main", "--socket", sock, *args],
                          capture_output=True, text=True)


def test_audit_reports_and_fixes_drift(tmp_path: Path) -> None:
    with netns(unique("cna-node-")) as node, running_agent(tmp_path, NETWORKS, host_netns=f"/run/netns/{node}") \
            as agent, netns(unique("cna-sb-")) as sb1, netns(unique("cna-sb-")) as sb2:
        a = run_cni("ADD", conf("anet"), socket=agent.socket, container_id="keep", netns=f"/run/netns/{sb1}")
        b = run_cni("ADD", conf("anet"), socket=agent.socket, container_id="broken", netns=f"/run/netns/{sb2}")
        assert a.code == 0 and b.code == 0
        clean = cli(agent.socket, "audit")
        assert clean.returncode == 0 and "no drift" in clean.stdout, clean.stdout + clean.stderr
        # drift 1: a host link nobody owns (an agent from before a store loss, say)
        sh("ip", "-n", node, "link", "add", "cn0123456789a", "type", "veth", "peer", "name", "cna-peer0")
        sh("ip", "-n", node, "link", "set", "cn0123456789a", "master", "cna-br0")
        # drift 2: the host end of a live attachment deleted by hand
        broken_host = next(i["name"] for i in b.json["interfaces"] if not i.get("sandbox"))
        sh("ip", "-n", node, "link", "del", broken_host)
        rep = cli(agent.socket, "audit", "--json")
        assert rep.returncode == 1
        found = {(f["kind"], f["subject"]) for f in json.loads(rep.stdout)["findings"]}
        assert ("orphan-link", "cn0123456789a") in found
        assert ("missing-link", "anet/broken/eth0") in found
        assert len(found) == 2, found
        fixed = json.loads(cli(agent.socket, "audit", "--fix", "--json").stdout)
        by = {f["subject"]: f for f in fixed["findings"]}
        assert by["cn0123456789a"]["fixed"] is True
        assert "cn0123456789a" not in {ln["ifname"] for ln in ip_json(node, "link", "show")}
        # a missing link is reported, never "repaired" by deleting a live pod's record
        assert by["anet/broken/eth0"]["repair"] == "" and by["anet/broken/eth0"]["fixed"] is False
        again = json.loads(cli(agent.socket, "audit", "--json").stdout)
        assert {f["kind"] for f in again["findings"]} == {"missing-link"}
        # the runtime's DEL of the broken pod clears the rest
        assert run_cni("DEL", conf("anet"), socket=agent.socket, container_id="broken",
                       netns=f"/run/netns/{sb2}").code == 0
        assert cli(agent.socket, "audit").returncode == 0
        assert run_cni("DEL", conf("anet"), socket=agent.socket, container_id="keep",
                       netns=f"/run/netns/{sb1}").code == 0


def test_periodic_reconcile_removes_an_orphan_link(tmp_path: Path) -> None:
    with netns(unique("cna-node-")) as node, running_agent(tmp_path, NETWORKS, host_netns=f"/run/netns/{node}",
                                                             extra_agent="reconcile_interval_s = 0.5") as agent:
        sh("ip", "-n", node, "link", "add", "cn00000000abc", "type", "veth", "peer", "name", "cna-peer1")
        sh("ip", "-n", node, "link", "add", "cna-br0", "type", "bridge")
        sh("ip", "-n", node, "link", "set", "cn00000000abc", "master", "cna-br0")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "cn00000000abc" in {ln["ifname"] for ln in ip_json(node, "link", "show")}:
            time.sleep(0.2)
        assert "cn00000000abc" not in {ln["ifname"] for ln in ip_json(node, "link", "show")}
        assert "periodic reconcile repaired drift" in agent.log_text()
