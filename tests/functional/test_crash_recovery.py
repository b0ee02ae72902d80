"""SIGKILL the agent at every step of ADD and DEL, restart it, and check that nothing leaked:
no attachment record, no link, route or address left, the address free again, DEL idempotent."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudnic.crash import POINTS
from tests.support.agent import AgentHandle, agent_config, start_agent, stop_agent
from tests.support.cni import conf, ip_json, netns, run_cni, unique

pytestmark = pytest.mark.functional

NETWORKS = """
[networks.cbridge]
mode = "bridge"
bridge = "cnc-br0"
[[networks.cbridge.subnets]]
cidr = "10.95.0.0/24"
[[networks.cbridge.subnets]]
cidr = "fd00:95::/64"

[networks.crouted]
mode = "routed"
[[networks.crouted.subnets]]
cidr = "10.96.0.0/24"

[networks.cmacvlan]
mode = "macvlan"
parent = "cnc-mvp0"
[[networks.cmacvlan.subnets]]
cidr = "10.97.0.0/24"
"""
STATIC = {"cbridge": "10.95.0.42", "crouted": "10.96.0.42", "cmacvlan": "10.97.0.42"}


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    with netns(unique("cnc-node-")) as ns:
        subprocess.run(["ip", "-n", ns, "link", "add", "cnc-mvp0", "type", "veth", "peer", "name", "cnc-mvp1"],
                       check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "cnc-mvp0", "up"], check=True)
        yield ns


class Agent:
    """Start/stop the agent on one state dir, optionally armed to crash at a point."""

    def __init__(self, tmp: Path, node: str) -> None:
        self.tmp = tmp
        self.text = agent_config(tmp, NETWORKS, host_netns=f"/run/netns/{node}")
        self.handle: AgentHandle | None = None

    def start(self, crash_at: str = "") -> AgentHandle:
        old = os.environ.get("CLOUDNIC_CRASH_AT")
        os.environ["CLOUDNIC_CRASH_AT"] = crash_at
        try:
            self.handle = start_agent(self.tmp, self.text)
        finally:
            if old is None:
                del os.environ["CLOUDNIC_CRASH_AT"]
            else:
                os.environ["CLOUDNIC_CRASH_AT"] = old
        return self.handle

    def stop(self) -> None:
        if self.handle is not None:
            stop_agent(self.handle)
            self.handle = None


def host_links(node: str) -> set[str]:
    """Per-attachment host links (veth host ends are named cn + 11 hex digits)."""
    return {ln["ifname"] for ln in ip_json(node, "link", "show") if re.fullmatch(r"cn[0-9a-f]{11}", ln["ifname"])}


def sandbox_links(ns: str) -> set[str]:
    return {ln["ifname"] for ln in ip_json(ns, "link", "show")} - {"lo"}


@pytest.mark.parametrize("network", list(STATIC))
@pytest.mark.parametrize("point", POINTS)
def test_crash_at_every_point_leaks_nothing(node: str, tmp_path: Path, point: str, network: str) -> None:
    agent = Agent(tmp_path, node)
    with netns(unique("cnc-sb-")) as sb:
        path = f"/run/netns/{sb}"
        cid = unique("crash")
        args = f"IP={STATIC[network]}"
        try:
            if point.startswith(("add:", "plug:")):
                h = agent.start(point)
                r = run_cni("ADD", conf(network), socket=h.socket, container_id=cid, netns=path, args=args)
                assert r.code == 1 and r.json["code"] == 11, r.stdout      # the agent died mid-ADD
                assert h.proc.wait(10) == -9
                h = agent.start()
                assert h.admin({"op": "attachments"})["attachments"] == []
                assert h.admin({"op": "status"})["store"]["pending_journal"] == 0
                assert host_links(node) == set() and sandbox_links(sb) == set()
                # the runtime's DEL after the failed ADD succeeds; the address is free again
                assert run_cni("DEL", conf(network), socket=h.socket, container_id=cid, netns=path).code == 0
                again_cid = cid
            else:
                h = agent.start()
                r = run_cni("ADD", conf(network), socket=h.socket, container_id=cid, netns=path, args=args)
                assert r.code == 0, r.stdout
                agent.stop()
                h = agent.start(point)
                d = run_cni("DEL", conf(network), socket=h.socket, container_id=cid, netns=path)
                assert d.code == 1 and d.json["code"] == 11, d.stdout
                assert h.proc.wait(10) == -9
                h = agent.start()
                assert h.admin({"op": "attachments"})["attachments"] == []
                assert h.admin({"op": "status"})["store"]["pending_journal"] == 0
                assert host_links(node) == set() and sandbox_links(sb) == set()
                assert run_cni("DEL", conf(network), socket=h.socket, container_id=cid, netns=path).code == 0
                again_cid = unique("c")
            # the address is free again: a new ADD may take it
            again = run_cni("ADD", conf(network), socket=h.socket, container_id=again_cid, netns=path, args=args)
            assert again.code == 0, again.stdout
            assert run_cni("DEL", conf(network), socket=h.socket, container_id=again_cid, netns=path).code == 0
            assert all(u["used"] == 0 for u in h.admin({"op": "status"})["usage"])
            assert host_links(node) == set()
        finally:
            agent.stop()
        assert not ip_json(node, "route", "show", f"{STATIC[network]}/32")
