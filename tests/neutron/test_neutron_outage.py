"""neutron-server stopped for 60 s while pods come and go (issue 5, item 2), through the real shim, the real agent
and the real neutron-server: the scenario is tests/neutron/outage.py (bench/torture runs the same function)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from outage import SHIM_TIMEOUT_S, outage_agent, run_outage
from peer import NeutronPeer, Project

from cloudnic.providers.neutron.lookup import STALE_RETRY_S

pytestmark = [pytest.mark.neutron, pytest.mark.slow]


def test_sixty_seconds_without_neutron_server(neutron: NeutronPeer, neutron_project: Project, tmp_path: Path) -> None:
    net = neutron_project.network(cidr="10.77.40.0/24")
    with outage_agent(neutron, neutron_project, tmp_path, net, min_ready=3) as agent:
        f = run_outage(agent, neutron, neutron_project, outage_s=60, log=print)
        log = agent.log_text()
    print(f)
    assert f.outage_s >= 60
    # the warm pool keeps serving
    assert f.pool_hits_ok == f.pool_target == 3 and f.pool_hits_failed == 0, f.hit_errors
    # misses fail fast with "try again later", naming Neutron and where it is
    assert f.misses >= 5 and f.misses_code11 == f.misses, f.miss_messages
    assert f.miss_max_ms < SHIM_TIMEOUT_S * 1000 / 3, f.miss_max_ms
    assert all("Neutron" in m and neutron.endpoint in m for m in f.miss_messages), f.miss_messages
    assert f.miss_dels_failed == 0
    # STATUS says the plugin cannot serve ADDs once the pool is dry
    assert f.status_reported_down and set(f.status_codes) == {50}, f.status_codes
    # and everything comes back by itself: a cold ADD, STATUS, the pool at its target; nothing leaked
    assert f.recovered_s is not None
    assert f.dels_failed_at_end == 0 and f.ports_leaked == 0 and not f.errors, f
    assert "cloudnic-agent serving" in log and log.count("cloudnic-agent serving") == 1  # never restarted


def test_agent_restarted_during_an_outage_serves_its_pool(neutron: NeutronPeer, neutron_project: Project,
                                                          tmp_path: Path) -> None:
    """The pools and pool-served ADDs need the network's facts (subnets, gateway, MTU); they come from the store's
    catalog when the agent starts while neutron-server is down. Misses fail with 11; the server back, they work."""
    import sqlite3

    from outage import NODE, agent_toml, conf, pool_ready

    from tests.support.agent import agent_config, start_agent, stop_agent
    from tests.support.cni import netns, run_cni
    from tests.support.cni import unique as uniq

    net = neutron_project.network(cidr="10.77.41.0/24", dns_nameservers=["10.77.41.53"])
    neutron.fake_agent(NODE)

    def catalog_stamp(state: Path) -> float:
        with sqlite3.connect(state / "state.db") as db:
            rows = db.execute("SELECT updated_at FROM catalog WHERE ref = ?", (net.network_id,)).fetchall()
        return float(rows[0][0]) if rows else 0.0

    def add(agent_socket: str, cid: str, sb: str) -> Any:
        return run_cni("ADD", conf(), socket=agent_socket, container_id=cid, netns=f"/run/netns/{sb}")

    with netns(uniq("cnn-onode-")) as node:
        text = agent_config(tmp_path, agent_toml(neutron.endpoint, neutron_project, net, min_ready=2,
                                                 extra_provider="cache_ttl_s = 1"),
                            host_netns=f"/run/netns/{node}").replace('node_name = "test-node"', f'node_name = "{NODE}"')
        agent = start_agent(tmp_path, text, timeout=120)
        sandboxes = [uniq("cnn-osb-") for _ in range(4)]
        for sb in sandboxes:
            run(["ip", "netns", "add", sb])
        try:
            wait_for(lambda: pool_ready(agent)[0] == 2, 60)
            pooled = {p.id for p in neutron_project.ports()}
            first_stamp = catalog_stamp(agent.state_dir)
            assert first_stamp > 0, "the network's facts were not written to the store's catalog"
            assert stop_agent(agent, keep_parking=True) == 0
            neutron.stop()
            agent = start_agent(tmp_path, text, timeout=120)      # starts although Neutron is unreachable
            assert pool_ready(agent) == (2, 2)
            for i in range(2):                                     # pool hits, with the subnet's facts
                r = add(agent.socket, f"rs{i}", sandboxes[i])
                assert r.code == 0, r.stdout + agent.log_text()[-3000:]
                assert r.json["dns"]["nameservers"] == ["10.77.41.53"]
                assert r.json["ips"][0]["gateway"] == "10.77.41.1"
            served = {a["port_id"] for a in agent.admin({"op": "attachments"})["attachments"]}
            assert served == pooled
            miss = add(agent.socket, "rs2", sandboxes[2])
            assert miss.code == 1 and miss.json["code"] == 11, miss.stdout
            assert neutron.endpoint in miss.json["msg"] and "Neutron" in miss.json["msg"]
            assert run_cni("DEL", conf(), socket=agent.socket, container_id="rs2",
                           netns=f"/run/netns/{sandboxes[2]}").code == 0
            neutron.start()
            time.sleep(1.5)                                       # past cache_ttl_s: the next lookup asks Neutron
            ok = wait_for(lambda: add(agent.socket, "rs3", sandboxes[3]).code == 0, 60, interval=1.0)
            assert ok, agent.log_text()[-3000:]
            # the stale facts are served for STALE_RETRY_S after a failed refresh; the next ADD
            # after that asks Neutron again and refreshes the catalog
            time.sleep(STALE_RETRY_S + 0.5)
            again = add(agent.socket, "rs4", sandboxes[2])
            assert again.code == 0, again.stdout
            assert run_cni("DEL", conf(), socket=agent.socket, container_id="rs4",
                           netns=f"/run/netns/{sandboxes[2]}").code == 0
            assert catalog_stamp(agent.state_dir) > first_stamp   # refreshed once Neutron answered
            assert wait_for(lambda: pool_ready(agent)[0] == 2, 120)
            for i, sb in enumerate(sandboxes):
                assert run_cni("DEL", conf(), socket=agent.socket, container_id=f"rs{i}",
                               netns=f"/run/netns/{sb}").code == 0
            audit = agent.admin({"op": "audit"})
            assert audit["findings"] == [], audit
        finally:
            if not neutron.running():
                neutron.start()
            stop_agent(agent)
            for sb in sandboxes:
                run(["ip", "netns", "del", sb], check=False)


def run(argv: list[str], check: bool = True) -> None:
    subprocess.run(argv, check=check, capture_output=True)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
