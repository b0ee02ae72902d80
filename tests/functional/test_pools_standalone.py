"""Warm pools through the real executable with the standalone provider: pre-warm at start, hits
without provider calls, refill, release back to the pool, rebuild after a restart, no leaks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.agent import agent_config, start_agent, stop_agent
from tests.support.cni import conf, netns, run_cni, unique

pytestmark = pytest.mark.functional

NETWORKS = """
[networks.pnet]
mode = "bridge"
bridge = "cnp-br0"
[[networks.pnet.subnets]]
cidr = "10.88.0.0/24"
[networks.pnet.pool]
min_ready = 3
max_idle = 4
batch = 3
"""


def pool(agent) -> dict:
    pools = agent.admin({"op": "pools"})["pools"]
    assert len(pools) == 1, pools
    return pools[0]


def wait_for(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def used(agent) -> int:
    return sum(u["used"] for u in agent.admin({"op": "status"})["usage"])


def test_pool_lifecycle(tmp_path: Path) -> None:
    with netns(unique("cnp-node-")) as node, netns(unique("cnp-sb-")) as sb, netns(unique("cnp-sb-")) as sb2:
        text = agent_config(tmp_path, NETWORKS, host_netns=f"/run/netns/{node}")
        agent = start_agent(tmp_path, text)
        try:
            p = pool(agent)
            assert p["ready"] == 3 and p["target"] == 3 and p["refills"] == 1, p      # pre-warmed, one call
            cli = subprocess.run([sys.executable, "-m", "cloudnic.cli.main", "--socket", agent.socket, "ports"],
                                 capture_output=True, text=True, check=True).stdout
            assert cli.count("pooled") == 3 and "10.88.0." in cli, cli
            assert used(agent) == 3                                                   # pooled ports hold addresses
            cid = unique("p")
            r = run_cni("ADD", conf("pnet"), socket=agent.socket, container_id=cid, netns=f"/run/netns/{sb}")
            assert r.code == 0, r.stdout
            p = pool(agent)
            assert p["hits"] == 1 and p["misses"] == 0
            # topped up in one bulk call of up to `batch`, never beyond max_idle
            assert wait_for(lambda: pool(agent)["ready"] >= 3), pool(agent)
            p = pool(agent)
            assert p["refills"] == 2 and p["ready"] <= 4
            assert used(agent) == p["ready"] + 1
            # a static IP is never served from the pool
            cid2 = unique("p")
            r2 = run_cni("ADD", conf("pnet"), socket=agent.socket, container_id=cid2, netns=f"/run/netns/{sb2}",
                         args="IP=10.88.0.200")
            assert r2.code == 0 and "10.88.0.200/24" in r2.stdout
            assert pool(agent)["hits"] == 1
            assert run_cni("DEL", conf("pnet"), socket=agent.socket, container_id=cid2,
                           netns=f"/run/netns/{sb2}").code == 0
            # DEL gives the pooled port back, or deletes it when the pool already holds max_idle
            before = pool(agent)["ready"]
            assert run_cni("DEL", conf("pnet"), socket=agent.socket, container_id=cid,
                           netns=f"/run/netns/{sb}").code == 0
            assert pool(agent)["ready"] == min(before + 1, 4)
            assert used(agent) == pool(agent)["ready"]
            # restart: the pool is rebuilt from the store and the provider, nothing leaks or doubles
            assert stop_agent(agent) == 0
            agent = start_agent(tmp_path, text)
            ready = pool(agent)["ready"]
            assert ready == min(before + 1, 4) and used(agent) == ready
            audit = agent.admin({"op": "audit"})
            assert audit["findings"] == [], audit
            assert audit["views"]["provider_ports"] == audit["views"]["store_ports"] == ready
            # a pooled port serves a new sandbox after the restart
            r3 = run_cni("ADD", conf("pnet"), socket=agent.socket, container_id=cid, netns=f"/run/netns/{sb}")
            assert r3.code == 0 and pool(agent)["hits"] == 1
            assert run_cni("DEL", conf("pnet"), socket=agent.socket, container_id=cid,
                           netns=f"/run/netns/{sb}").code == 0
        finally:
            stop_agent(agent)
