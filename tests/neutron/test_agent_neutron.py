"""The real executable and agent with the neutron provider against a real neutron-server:
ports with the right fields and tags, the sandbox matching the port, pools that spare Neutron."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peer import NeutronPeer, Project, ScratchNet, is_refill

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.agent import AgentHandle, agent_config, start_agent, stop_agent  # noqa: E402
from tests.support.cni import ip_json, netns, run_cni, sh  # noqa: E402
from tests.support.cni import unique as uniq  # noqa: E402

pytestmark = pytest.mark.neutron

NODE = "cnn-node-host"


def agent_toml(peer_url: str, project: Project, net: ScratchNet, pool: str = "", port_ready: str = "plugged",
               extra_net: str = "") -> str:
    return f"""
[provider]
type = "neutron"
auth_type = "noauth"
endpoint = "{peer_url}"
project_id = "{project.id}"
port_ready = "{port_ready}"
timeout_s = 20

[networks.npods]
mode = "linuxbridge"
neutron_network = "{net.network_id}"
security_groups = ["{net.security_group_id}"]
{extra_net}
{pool}
"""


@pytest.fixture
def node() -> Iterator[str]:
    with netns(uniq("cnn-node-")) as ns:
        yield ns


def start(tmp: Path, node: str, text: str) -> AgentHandle:
    """Start an agent; a restart on the same ``tmp`` reuses its config (and parking netns)."""
    path = tmp / "agent.toml"
    if path.exists():
        return start_agent(tmp, path.read_text(), timeout=90)
    cfg = agent_config(tmp, text, host_netns=f"/run/netns/{node}").replace('node_name = "test-node"',
                                                                          f'node_name = "{NODE}"')
    return start_agent(tmp, cfg, timeout=90)


def conf(version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": "npods", "type": "cloudnic", "network": "npods", **extra}


def test_add_check_del_with_a_neutron_port(neutron: NeutronPeer, neutron_project: Project, node: str,
                                           tmp_path: Path) -> None:
    neutron.fake_agent(NODE)
    net = neutron_project.network(cidr="10.77.3.0/24", dns_nameservers=["10.77.3.53"],
                                  host_routes=[{"destination": "10.200.0.0/16", "nexthop": "10.77.3.254"}])
    agent = start(tmp_path, node, agent_toml(neutron.counting_endpoint.url, neutron_project, net))
    try:
        with netns(uniq("cnn-sb-")) as sb:
            r = run_cni("ADD", conf(), socket=agent.socket, container_id="c1", netns=f"/run/netns/{sb}",
                        args="K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1")
            assert r.code == 0, r.stdout + agent.log_text()[-3000:]
            res = r.json
            ports = neutron_project.ports()
            assert len(ports) == 1
            port = ports[0]
            assert port.device_owner == "compute:cloudnic" and port.binding_host_id == NODE
            assert port.name == "cloudnic/shop/web-1"
            assert {"cloudnic:cluster=test", f"cloudnic:node={NODE}"} <= set(port.tags)
            assert port.security_group_ids == [net.security_group_id]
            ip = port.fixed_ips[0]["ip_address"]
            # the sandbox carries the port: MAC, IP with the subnet's prefix, routes, MTU
            link = ip_json(sb, "addr", "show", "dev", "eth0")[0]
            assert link["address"] == port.mac_address and link["mtu"] == net.mtu
            assert any(a["local"] == ip and a["prefixlen"] == 24 for a in link["addr_info"])
            routes = {(r.get("dst"), r.get("gateway")) for r in ip_json(sb, "route", "show")}
            assert ("default", "10.77.3.1") in routes and ("10.200.0.0/16", "10.77.3.254") in routes
            assert res["ips"][0]["address"] == f"{ip}/24" and res["dns"]["nameservers"] == ["10.77.3.53"]
            # the host side with the Neutron linuxbridge agent's names
            tap, brq = f"tap{port.id[:11]}", f"brq{net.network_id[:11]}"
            assert ip_json(node, "link", "show", "dev", tap)[0]["master"] == brq
            chk = run_cni("CHECK", dict(conf(), prevResult=res), socket=agent.socket, container_id="c1",
                          netns=f"/run/netns/{sb}")
            assert chk.code == 0, chk.stdout
            for _ in range(2):
                d = run_cni("DEL", conf(), socket=agent.socket, container_id="c1", netns=f"/run/netns/{sb}")
                assert d.code == 0, d.stdout
            assert neutron_project.ports() == []
            assert not any(ln["ifname"] == tap for ln in ip_json(node, "link", "show"))
    finally:
        stop_agent(agent)


def test_annotations_choose_subnet_ip_and_security_groups(neutron: NeutronPeer, neutron_project: Project,
                                                          node: str, tmp_path: Path) -> None:
    neutron.fake_agent(NODE)
    net = neutron_project.network(cidr="10.77.4.0/24")
    second = neutron_project.net.create_subnet(network_id=net.network_id, ip_version=4, cidr="10.77.5.0/24",
                                               name="second", project_id=neutron_project.id, enable_dhcp=False)
    web = neutron_project.security_group("web", [{"protocol": "tcp", "port_range_min": 80, "port_range_max": 80}])
    agent = start(tmp_path, node, agent_toml(neutron.counting_endpoint.url, neutron_project, net))
    try:
        with netns(uniq("cnn-sb-")) as sb:
            ann = {"skynet/subnet_id": second.id, "cloudnic.io/security-groups": web.id}
            r = run_cni("ADD", conf(runtimeConfig={"io.kubernetes.cri.pod-annotations": ann}), socket=agent.socket,
                        container_id="c2", netns=f"/run/netns/{sb}")
            assert r.code == 0, r.stdout
            port = neutron_project.ports()[0]
            assert port.fixed_ips[0]["subnet_id"] == second.id and port.security_group_ids == [web.id]
            assert run_cni("DEL", conf(), socket=agent.socket, container_id="c2", netns=f"/run/netns/{sb}").code == 0
            ann = {"cloudnic.io/ip": "10.77.4.77"}
            r = run_cni("ADD", conf(runtimeConfig={"io.kubernetes.cri.pod-annotations": ann}), socket=agent.socket,
                        container_id="c3", netns=f"/run/netns/{sb}")
            assert r.code == 0, r.stdout
            assert neutron_project.ports()[0].fixed_ips[0]["ip_address"] == "10.77.4.77"
            # a static IP held by a live pod is refused, naming the holder, and nothing leaks
            with netns(uniq("cnn-sb-")) as sb2:
                taken = run_cni("ADD", conf(runtimeConfig={"io.kubernetes.cri.pod-annotations": ann}),
                                socket=agent.socket, container_id="c4", netns=f"/run/netns/{sb2}")
                assert taken.code == 1 and taken.json["code"] == 100, taken.stdout
                assert "10.77.4.77" in taken.json["msg"]
                assert len(neutron_project.ports()) == 1
            assert run_cni("DEL", conf(), socket=agent.socket, container_id="c3", netns=f"/run/netns/{sb}").code == 0
            assert neutron_project.ports() == []
    finally:
        stop_agent(agent)


def test_errors_missing_network_and_stopped_server(neutron: NeutronPeer, neutron_project: Project, node: str,
                                                   tmp_path: Path) -> None:
    neutron.fake_agent(NODE)
    net = neutron_project.network(cidr="10.77.6.0/24")
    agent = start(tmp_path, node, agent_toml(neutron.counting_endpoint.url, neutron_project, net))
    try:
        with netns(uniq("cnn-sb-")) as sb:
            ann = {"cloudnic.io/network": "00000000-0000-0000-0000-000000000000"}
            r = run_cni("ADD", conf(runtimeConfig={"io.kubernetes.cri.pod-annotations": ann}), socket=agent.socket,
                        container_id="e1", netns=f"/run/netns/{sb}")
            assert r.code == 1 and r.json["code"] == 102, r.stdout
            neutron.counting_endpoint.down()
            t0 = time.monotonic()
            r = run_cni("ADD", conf(), socket=agent.socket, container_id="e2", netns=f"/run/netns/{sb}")
            assert r.code == 1 and r.json["code"] == 11, r.stdout
            assert time.monotonic() - t0 < 30
            st = run_cni("STATUS", conf("1.1.0"), socket=agent.socket)
            assert st.code == 1 and st.json["code"] == 50, st.stdout
            neutron.counting_endpoint.up()
            assert neutron_project.ports() == []
            assert "eth0" not in {ln["ifname"] for ln in ip_json(sb, "link", "show")}
            assert run_cni("STATUS", conf("1.1.0"), socket=agent.socket).code == 0
    finally:
        stop_agent(agent)


def test_pool_serves_adds_without_neutron_calls(neutron: NeutronPeer, neutron_project: Project, node: str,
                                                tmp_path: Path) -> None:
    neutron.fake_agent(NODE)
    net = neutron_project.network(cidr="10.77.7.0/24")
    pool = "[networks.npods.pool]\nmin_ready = 3\nmax_idle = 3\nbatch = 3\n"
    counter = neutron.counting_endpoint
    agent = start(tmp_path, node, agent_toml(counter.url, neutron_project, net, pool=pool))
    try:
        stats = agent.admin({"op": "pools"})["pools"]
        assert stats[0]["ready"] == 3 and stats[0]["refills"] == 1, stats
        assert counter.counts().get("POST /v2.0/ports", 0) == 1             # pre-warm: one bulk POST
        pooled = {p.id for p in neutron_project.ports()}
        assert len(pooled) == 3
        # parked: each pooled port's tap is already in the Neutron bridge
        taps = {ln["ifname"] for ln in ip_json(node, "link", "show")}
        assert {f"tap{pid[:11]}" for pid in pooled} <= taps
        counter.reset()
        names = [uniq("cnn-sb-") for _ in range(3)]
        for n in names:
            sh("ip", "netns", "add", n)
        try:
            for i, n in enumerate(names):
                r = run_cni("ADD", conf(), socket=agent.socket, container_id=f"p{i}", netns=f"/run/netns/{n}")
                assert r.code == 0, r.stdout
            served = {a["port_id"] for a in agent.admin({"op": "attachments"})["attachments"]}
            assert served == pooled
            # the ADDs made no Neutron call: the only traffic is the pool's own background refill
            # (an address-availability check, one bulk POST, a tag PUT per port where the server
            # cannot tag in the POST)
            calls = counter.counts()
            assert all(is_refill(k) for k in calls), calls
            assert calls.get("POST /v2.0/ports", 0) <= 1, calls
            for i, n in enumerate(names):
                assert run_cni("DEL", conf(), socket=agent.socket, container_id=f"p{i}",
                               netns=f"/run/netns/{n}").code == 0
        finally:
            for n in names:
                sh("ip", "netns", "del", n, check=False)
        # restart: the pool is rebuilt from Neutron by tags; the store and Neutron agree
        assert stop_agent(agent, keep_parking=True) == 0   # parked ports survive a restart
        agent = start(tmp_path, node, agent_toml(counter.url, neutron_project, net, pool=pool))
        audit = agent.admin({"op": "audit"})
        assert audit["findings"] == [], json.dumps(audit, indent=1)
        assert audit["views"]["provider_ports"] == audit["views"]["store_ports"] == len(neutron_project.ports())
    finally:
        stop_agent(agent)


def test_metrics_count_every_neutron_call(neutron: NeutronPeer, neutron_project: Project, node: str,
                                         tmp_path: Path) -> None:
    neutron.fake_agent(NODE)
    net = neutron_project.network(cidr="10.77.10.0/24")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = agent_toml(neutron.counting_endpoint.url, neutron_project, net)
    cfg = agent_config(tmp_path, text, host_netns=f"/run/netns/{node}").replace(
        'node_name = "test-node"', f'node_name = "{NODE}"\nmetrics_listen = "127.0.0.1:{port}"')
    agent = start_agent(tmp_path, cfg, timeout=90)
    try:
        with netns(uniq("cnn-sb-")) as sb:
            assert run_cni("ADD", conf(), socket=agent.socket, container_id="m1", netns=f"/run/netns/{sb}").code == 0
            assert run_cni("DEL", conf(), socket=agent.socket, container_id="m1", netns=f"/run/netns/{sb}").code == 0
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in page.splitlines()
                   if line and not line.startswith("#")}
        creates = [v for k, v in samples.items() if k.startswith("cloudnic_provider_calls_total") and "create" in k]
        assert creates and sum(creates) >= 1, page
        assert any(k.startswith("cloudnic_provider_call_seconds_bucket") for k in samples)
        assert page.count("# TYPE cloudnic_provider_call_seconds histogram") == 1
    finally:
        stop_agent(agent)


def test_static_ip_held_by_a_leaked_port_of_this_node_is_reclaimed(neutron: NeutronPeer, neutron_project: Project,
                                                                     node: str, tmp_path: Path) -> None:
    neutron.fake_agent(NODE)
    net = neutron_project.network(cidr="10.77.11.0/24")
    conn = neutron.conn().network
    # a port this node's agent made and then lost track of (a crash before the journal knew it)
    leaked = conn.create_port(network_id=net.network_id, project_id=neutron_project.id,
                              fixed_ips=[{"subnet_id": net.subnet_id, "ip_address": "10.77.11.50"}])
    conn.set_tags(leaked, ["cloudnic:cluster=test", f"cloudnic:node={NODE}"])
    # and one another owner holds
    foreign = conn.create_port(network_id=net.network_id, project_id=neutron_project.id,
                               fixed_ips=[{"subnet_id": net.subnet_id, "ip_address": "10.77.11.51"}])
    agent = start(tmp_path, node, agent_toml(neutron.counting_endpoint.url, neutron_project, net))
    try:
        assert conn.find_port(leaked.id) is None          # the start-up reconcile deleted the first leak
        # make another one while the agent runs
        leaked2 = conn.create_port(network_id=net.network_id, project_id=neutron_project.id,
                                   fixed_ips=[{"subnet_id": net.subnet_id, "ip_address": "10.77.11.52"}])
        conn.set_tags(leaked2, ["cloudnic:cluster=test", f"cloudnic:node={NODE}"])
        with netns(uniq("cnn-sb-")) as sb:
            ok = run_cni("ADD", conf(), socket=agent.socket, container_id="s1", netns=f"/run/netns/{sb}",
                         args="IP=10.77.11.52")
            assert ok.code == 0, ok.stdout
            assert conn.find_port(leaked2.id) is None                      # the stale port was reclaimed
            refused = run_cni("ADD", conf(), socket=agent.socket, container_id="s2", netns=f"/run/netns/{sb}",
                              ifname="eth1", args="IP=10.77.11.51")
            assert refused.code == 1 and refused.json["code"] == 100 and foreign.id in refused.json["msg"]
            assert conn.find_port(foreign.id) is not None                  # never another owner's port
            assert run_cni("DEL", conf(), socket=agent.socket, container_id="s1", netns=f"/run/netns/{sb}").code == 0
    finally:
        stop_agent(agent)


def test_cold_add_is_one_post_and_a_refill_of_50_is_one_bulk_post(neutron: NeutronPeer, neutron_project: Project,
                                                                  node: str, tmp_path: Path) -> None:
    """With tag-ports-during-bulk-creation (the peer enables it) the ownership tags ride in the create: a cold ADD is
    one POST /v2.0/ports and a pool refill of 50 is one bulk POST, with no PUT .../tags per port."""
    assert "tag-ports-during-bulk-creation" in neutron.extensions()
    neutron.fake_agent(NODE)
    net = neutron_project.network(cidr="10.77.12.0/24")
    counter = neutron.counting_endpoint
    agent = start(tmp_path / "cold", node, agent_toml(counter.url, neutron_project, net))
    try:
        with netns(uniq("cnn-sb-")) as sb:
            counter.reset()
            r = run_cni("ADD", conf(), socket=agent.socket, container_id="c1", netns=f"/run/netns/{sb}")
            assert r.code == 0, r.stdout
            calls = counter.counts()
            assert calls.get("POST /v2.0/ports") == 1, calls
            assert not [k for k in calls if not k.startswith(("GET ", "POST /v2.0/ports"))], calls   # no PUT
            port = neutron_project.ports()[0]
            assert {"cloudnic:cluster=test", f"cloudnic:node={NODE}"} <= set(port.tags)
            assert run_cni("DEL", conf(), socket=agent.socket, container_id="c1", netns=f"/run/netns/{sb}").code == 0
    finally:
        stop_agent(agent)
    pool = "[networks.npods.pool]\nmin_ready = 50\nmax_idle = 50\nbatch = 50\n"
    counter.reset()
    agent = start(tmp_path / "warm", node, agent_toml(counter.url, neutron_project, net, pool=pool))
    try:
        stats = agent.admin({"op": "pools"})["pools"]
        assert stats[0]["ready"] == 50 and stats[0]["refills"] == 1, stats
        calls = counter.counts()
        assert calls.get("POST /v2.0/ports") == 1, calls
        assert not [k for k in calls if k.startswith("PUT ") or k.endswith("/tags")], calls
        assert sum(calls.values()) < 12, calls        # lookups and one list: nothing per port
        owned = neutron_project.ports()
        assert len(owned) == 50 and all({"cloudnic:cluster=test", f"cloudnic:node={NODE}"} <= set(p.tags)
                                        for p in owned)
    finally:
        stop_agent(agent)
