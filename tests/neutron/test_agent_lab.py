"""The whole agent, through the real executable, with the real neutron-linuxbridge-agent.

The lab netns plays the node (the agent's ``host_netns``): its taps and bridges are made
there, where Neutron's agent watches. Proven by Neutron itself:

* ``port_ready = "active"``: a pool miss answers only once Neutron reports the port ACTIVE;
* with a warm pool, the ports are ACTIVE before any pod exists (parked), an ADD is served
  from the pool without a Neutron request, and two pods ping each other through it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_counter import HttpCounter
from peer import NeutronPeer, Project, is_refill, wait_until

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.agent import AgentHandle, agent_config, start_agent, stop_agent  # noqa: E402
from tests.support.cni import netns, ping, run_cni, unique  # noqa: E402

pytestmark = pytest.mark.neutron


@pytest.fixture
def counter(neutron_lab: NeutronPeer) -> Iterator[HttpCounter]:
    """A counting proxy on the host's loopback into the lab netns: the agent runs on the host."""
    proxy = HttpCounter(neutron_lab.endpoint, upstream_netns=neutron_lab.netns).start()
    try:
        yield proxy
    finally:
        proxy.close()


def lab_agent(peer: NeutronPeer, project: Project, endpoint: str, network_id: str, sg: str, tmp: Path,
              extra: str = "", pool: str = "") -> AgentHandle:
    assert peer.netns and peer.agent_host
    text = f"""
[provider]
type = "neutron"
auth_type = "noauth"
endpoint = "{endpoint}"
project_id = "{project.id}"
timeout_s = 30
{extra}

[networks.lab]
mode = "linuxbridge"
neutron_network = "{network_id}"
security_groups = ["{sg}"]
{pool}
"""
    cfg = agent_config(tmp, text, host_netns=f"/run/netns/{peer.netns}").replace(
        'node_name = "test-node"', f'node_name = "{peer.agent_host}"')
    return start_agent(tmp, cfg, timeout=120)


def conf() -> dict[str, object]:
    return {"cniVersion": "1.0.0", "name": "lab", "type": "cloudnic", "network": "lab"}


def test_pool_miss_waits_for_active(neutron_lab: NeutronPeer, lab_project: Project, counter: HttpCounter,
                                    tmp_path: Path) -> None:
    net = lab_project.network(cidr="10.78.1.0/24", network_type="vxlan")
    agent = lab_agent(neutron_lab, lab_project, counter.url, net.network_id, net.security_group_id, tmp_path,
                      extra='port_ready = "active"\nactive_timeout_s = 60')
    try:
        with netns(unique("cnn-lp-")) as pod:
            r = run_cni("ADD", conf(), socket=agent.socket, container_id="a1", netns=f"/run/netns/{pod}",
                        timeout=120)
            assert r.code == 0, r.stdout + agent.log_text()[-2000:]
            port = lab_project.ports()[0]
            assert port.status == "ACTIVE"             # answered only once Neutron made it ACTIVE
            assert run_cni("DEL", conf(), socket=agent.socket, container_id="a1",
                           netns=f"/run/netns/{pod}").code == 0
    finally:
        stop_agent(agent)


def test_parked_pool_ports_are_active_and_pods_ping(neutron_lab: NeutronPeer, lab_project: Project,
                                                    counter: HttpCounter, tmp_path: Path) -> None:
    net = lab_project.network(cidr="10.78.2.0/24", network_type="vxlan")
    agent = lab_agent(neutron_lab, lab_project, counter.url, net.network_id, net.security_group_id, tmp_path,
                      pool="[networks.lab.pool]\nmin_ready = 2\nmax_idle = 4\nbatch = 2\n")
    conn = neutron_lab.conn().network
    try:
        pooled = [p.id for p in lab_project.ports()]
        assert len(pooled) == 2
        # parked: Neutron's agent saw their taps and made them ACTIVE with no pod around
        for pid in pooled:
            assert wait_until(lambda pid=pid: conn.get_port(pid).status == "ACTIVE", 60), pid
        counter.reset()
        with netns(unique("cnn-lp-")) as a, netns(unique("cnn-lp-")) as b:
            ra = run_cni("ADD", conf(), socket=agent.socket, container_id="p1", netns=f"/run/netns/{a}")
            rb = run_cni("ADD", conf(), socket=agent.socket, container_id="p2", netns=f"/run/netns/{b}")
            assert ra.code == 0 and rb.code == 0, ra.stdout + rb.stdout
            served = {x["port_id"] for x in agent.admin({"op": "attachments"})["attachments"]}
            assert served == set(pooled)
            assert all(is_refill(k) for k in counter.counts()), counter.counts()
            ip_b = rb.json["ips"][0]["address"].split("/")[0]
            assert wait_until(lambda: ping(a, ip_b), 30), "pods on pooled ports cannot ping"
            for pid in pooled:
                assert conn.get_port(pid).status == "ACTIVE"
            for cid, ns in (("p1", a), ("p2", b)):
                assert run_cni("DEL", conf(), socket=agent.socket, container_id=cid,
                               netns=f"/run/netns/{ns}").code == 0
    finally:
        stop_agent(agent)
