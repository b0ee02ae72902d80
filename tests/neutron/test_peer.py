"""Smoke tests of the Neutron test peers themselves (not of cloudnic's provider): when these fail, the set-up is
broken, not cloudnic."""

from __future__ import annotations

import json
import time
import urllib.request

import keystoneauth1.exceptions
import openstack.connection
import openstack.exceptions
import pytest
from peer import LAB_NETNS, PG_PORT, LabPod, NeutronPeer, Project, lab_pod, ping, sh, wait_until

pytestmark = pytest.mark.neutron

NODE = "cnn-node-1"
# what a client sees when the server is unreachable: keystoneauth's ConnectFailure (or DiscoveryFailure on a first call)
UNREACHABLE = (keystoneauth1.exceptions.ClientException, openstack.exceptions.SDKException)
OWNER_TAGS = ["cloudnic:cluster=cnn-cluster", f"cloudnic:node={NODE}"]


def _listeners(port: int, netns: str | None = None) -> set[str]:
    argv = (["ip", "netns", "exec", netns] if netns else []) + ["ss", "-Hltn", f"sport = :{port}"]
    return {line.split()[3].rsplit(":", 1)[0] for line in sh(argv).stdout.splitlines() if line.strip()}


# ---- the plain peer ------------------------------------------------------------------------------------------------


def test_peer_answers_on_loopback_only_with_the_extensions_cloudnic_needs(neutron: NeutronPeer) -> None:
    assert neutron.running()
    assert {
        "standard-attr-tag",
        "binding",
        "quotas",
        "net-mtu",
        "port-security",
        "security-group",
        "provider",
        "extra_dhcp_opt",
        "allowed-address-pairs",
    } <= neutron.extensions()
    assert _listeners(neutron.port) == {"127.0.0.1"}
    assert _listeners(PG_PORT) == {"127.0.0.1"}
    assert neutron.timings.get("total", 0) < 180, neutron.timings


def test_port_binds_to_a_fake_agent_host_with_vif_type_bridge(neutron: NeutronPeer, neutron_project: Project) -> None:
    neutron.fake_agent(NODE)
    neutron.fake_agent(NODE)  # idempotent
    net = neutron_project.network(
        cidr="10.77.1.0/24",
        dns_nameservers=["10.77.1.53"],
        host_routes=[{"destination": "10.99.0.0/16", "nexthop": "10.77.1.1"}],
    )
    port = neutron_project.net.create_port(
        network_id=net.network_id,
        project_id=net.project_id,
        name="cnn-pod-a",
        device_owner="compute:cloudnic",
        device_id="sandbox-1",
        binding_host_id=NODE,
        security_group_ids=[net.security_group_id],
        fixed_ips=[{"subnet_id": net.subnet_id, "ip_address": "10.77.1.50"}],
    )
    assert port.binding_vif_type == "bridge"
    assert port.binding_host_id == NODE
    assert port.status == "DOWN"  # no agent really plugs on the plain peer
    assert port.fixed_ips == [{"subnet_id": net.subnet_id, "ip_address": "10.77.1.50"}]
    assert port.mac_address and port.security_group_ids == [net.security_group_id]
    assert net.mtu == 1450  # vxlan under a 1500 physical MTU
    subnet = neutron_project.net.get_subnet(net.subnet_id)
    assert subnet.gateway_ip == "10.77.1.1" and subnet.dns_nameservers == ["10.77.1.53"]
    # the same IP again is a conflict (409), as a static-IP test needs
    with pytest.raises(openstack.exceptions.ConflictException, match=r"10\.77\.1\.50"):
        neutron_project.net.create_port(
            network_id=net.network_id,
            project_id=net.project_id,
            fixed_ips=[{"subnet_id": net.subnet_id, "ip_address": "10.77.1.50"}],
        )


def test_tags_arrive_in_one_post_and_filter_ports(neutron: NeutronPeer, neutron_project: Project) -> None:
    """The peer enables ML2's tag_ports_during_bulk_creation: "tags" in a create body (single or bulk) are kept, so a
    port is owned from the moment it exists, with one call and no PUT .../tags."""
    assert "tag-ports-during-bulk-creation" in neutron.extensions()
    net = neutron_project.network(cidr="10.77.2.0/24")
    api = neutron_project.net
    counter = neutron.counting_endpoint
    counter.reset()
    bulk = [{"network_id": net.network_id, "project_id": net.project_id, "name": f"cnn-bulk-{i}", "tags": OWNER_TAGS}
            for i in range(3)]
    bulk[2] = dict(bulk[2], tags=[])
    resp = api.post("/ports", json={"ports": bulk})
    assert resp.status_code == 201, resp.text
    created = [port["id"] for port in resp.json()["ports"]]
    assert [sorted(port["tags"]) for port in resp.json()["ports"]] == [sorted(OWNER_TAGS)] * 2 + [[]]
    # one port through the counting proxy: exactly one request on the wire, and the tags are there
    body = {"port": {"network_id": net.network_id, "project_id": net.project_id, "tags": OWNER_TAGS}}
    req = urllib.request.Request(f"{counter.url}/v2.0/ports", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as reply:
        single = json.load(reply)["port"]
    assert sorted(single["tags"]) == sorted(OWNER_TAGS)
    assert counter.counts() == {"POST /v2.0/ports": 1}
    created.append(single["id"])
    found = {port.id for port in api.ports(tags=",".join(OWNER_TAGS))}
    assert found == {created[0], created[1], created[3]}
    assert {port.id for port in api.ports(tags=OWNER_TAGS[0], project_id=net.project_id)} == found
    assert {port.id for port in api.ports(not_tags=OWNER_TAGS[0], network_id=net.network_id)} == {created[2]}
    # a PUT .../tags still works (servers without the extension need it; the provider's fallback uses it)
    assert api.put(f"/ports/{created[2]}/tags", json={"tags": OWNER_TAGS}).status_code == 200
    assert len({port.id for port in api.ports(tags=",".join(OWNER_TAGS))}) == 4


def test_quota_can_be_lowered_per_project(neutron_project: Project) -> None:
    net = neutron_project.network(cidr="10.77.3.0/24")
    assert neutron_project.set_quota(port=1)["port"] == 1
    neutron_project.net.create_port(network_id=net.network_id, project_id=net.project_id)
    with pytest.raises(openstack.exceptions.ConflictException, match=r"[Qq]uota"):
        neutron_project.net.create_port(network_id=net.network_id, project_id=net.project_id)


def test_project_cleanup_removes_everything(neutron: NeutronPeer) -> None:
    api = neutron.conn().network
    with neutron.project("cleanup") as project:
        net = project.network(cidr="10.77.4.0/24", network_type="flat")
        api.create_port(network_id=net.network_id)  # a port of another project on the project's network
        api.create_port(network_id=net.network_id, project_id=project.id)
        project.set_quota(port=5)
    assert api.find_network(net.network_id) is None
    assert list(api.ports(network_id=net.network_id)) == []
    # listing a project's security groups makes Neutron create its "default" group again: only that one is left
    assert {sg.name for sg in api.security_groups(project_id=project.id)} <= {"default"}
    assert neutron.get(f"/v2.0/quotas/{project.id}")["quota"]["port"] == 10000


def _counting_conn(neutron: NeutronPeer, timeout: float = 60) -> openstack.connection.Connection:
    return openstack.connection.Connection(
        auth_type="none", network_endpoint_override=neutron.counting_endpoint.url, api_timeout=timeout
    )


def test_counter_counts_requests_by_method_and_path(neutron: NeutronPeer, neutron_project: Project) -> None:
    net = neutron_project.network(cidr="10.77.5.0/24")
    counter = neutron.counting_endpoint
    assert counter.total() == 0  # set-up through conn() does not go through the counter
    api = _counting_conn(neutron).network
    list(api.networks(name="warm-up"))
    assert counter.counts() == {"GET /": 1, "GET /v2.0/networks": 1}  # openstacksdk discovers versions once
    counter.reset()
    list(api.ports(network_id=net.network_id))
    resp = api.post("/ports", json={"ports": [{"network_id": net.network_id, "project_id": net.project_id}] * 4})
    assert resp.status_code == 201 and len(resp.json()["ports"]) == 4
    api.delete_port(resp.json()["ports"][0]["id"])
    counts = counter.counts()
    assert counts["GET /v2.0/ports"] == 1
    assert counts["POST /v2.0/ports"] == 1
    assert counts[f"DELETE /v2.0/ports/{resp.json()['ports'][0]['id']}"] == 1
    assert counter.total() == 3 and counter.total("DELETE") == 1 and counter.total(prefix="/v2.0/ports") == 3
    counter.reset()
    assert counter.counts() == {} and counter.total() == 0


def test_counter_faults_down_slow_fail(neutron: NeutronPeer) -> None:
    counter = neutron.counting_endpoint
    api = _counting_conn(neutron, timeout=5).network
    assert list(api.networks(name="nothing-by-this-name")) == []
    counter.down()
    assert counter.mode == "down"
    with pytest.raises(UNREACHABLE):
        list(api.networks(name="x"))
    assert counter.counts() == {"GET /": 1, "GET /v2.0/networks": 1}  # the refused one is not counted
    counter.up()
    list(api.networks(name="x"))
    counter.slow(1.5)
    started = time.monotonic()
    list(api.networks(name="x"))
    assert time.monotonic() - started >= 1.5
    counter.fail(503)
    resp = api.get("/networks", raise_exc=False)
    assert resp.status_code == 503 and "fault injected" in resp.text
    counter.up()
    started = time.monotonic()
    list(api.networks(name="x"))
    assert time.monotonic() - started < 1.5 and counter.mode == "up"


def test_server_outage_and_restart_keep_the_database(neutron: NeutronPeer, neutron_project: Project) -> None:
    net = neutron_project.network(cidr="10.77.6.0/24")
    neutron.stop()
    assert not neutron.running()
    with pytest.raises(UNREACHABLE):
        neutron.conn(timeout=5).network.get_network(net.network_id)
    started = time.monotonic()
    neutron.start()
    print(f"neutron-server restart: {time.monotonic() - started:.1f} s")
    assert neutron.conn().network.get_network(net.network_id).name == net.network_name


# ---- the agent lab ---------------------------------------------------------------------------------------------------


def test_lab_agent_is_alive_with_physnet1_and_vxlan(neutron_lab: NeutronPeer) -> None:
    assert neutron_lab.netns == LAB_NETNS and neutron_lab.agent_host
    assert neutron_lab.agent_alive()
    agent = neutron_lab.get(f"/v2.0/agents?host={neutron_lab.agent_host}")["agents"][0]
    assert agent["configurations"]["interface_mappings"] == {"physnet1": "cnn-phys0"}
    assert agent["configurations"]["tunnel_types"] == ["vxlan"]
    assert agent["configurations"]["l2_population"] is True
    # the code under test reaches the server and the counter from inside the lab netns
    for url in (neutron_lab.endpoint, neutron_lab.counting_endpoint.url):
        code = sh(
            [
                *neutron_lab.exec_prefix,
                "curl",
                "-m",
                "5",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"{url}/v2.0/networks",
            ]
        ).stdout
        assert code == "200", url
    assert neutron_lab.counting_endpoint.counts() == {"GET /v2.0/networks": 1}
    assert _listeners(neutron_lab.port, neutron_lab.netns) == {"127.0.0.1"}
    assert neutron_lab.timings.get("total", 0) < 120, neutron_lab.timings


def _bridge_members(neutron_lab: NeutronPeer, bridge: str) -> set[str]:
    out = sh(["ip", "-j", "-n", str(neutron_lab.netns), "link", "show", "master", bridge]).stdout
    return {link["ifname"] for link in json.loads(out or "[]")}


def test_lab_port_goes_active_once_its_tap_is_plugged(neutron_lab: NeutronPeer, lab_project: Project) -> None:
    net = lab_project.network(cidr="10.78.1.0/24")
    port = lab_project.net.create_port(
        network_id=net.network_id,
        project_id=net.project_id,
        device_owner="compute:cloudnic",
        device_id="sb-1",
        binding_host_id=neutron_lab.agent_host,
        security_group_ids=[net.security_group_id],
    )
    assert port.binding_vif_type == "bridge" and port.status == "DOWN"
    network = lab_project.net.get_network(net.network_id)
    with lab_pod(neutron_lab, port, network) as pod:
        seconds = neutron_lab.wait_port_status(port.id, "ACTIVE", timeout=60)
        print(f"port ACTIVE {seconds:.1f} s after its tap appeared")
        members = _bridge_members(neutron_lab, pod.bridge)
        assert pod.tap in members and f"vxlan-{network.provider_segmentation_id}" in members
    # unplugged: the agent notices the tap is gone and the port goes DOWN again
    neutron_lab.wait_port_status(port.id, "DOWN", timeout=60)


@pytest.mark.parametrize("network_type", ["flat", "vxlan"])
def test_lab_security_group_blocks_ping_until_an_icmp_rule(
    neutron_lab: NeutronPeer, lab_project: Project, network_type: str
) -> None:
    net = lab_project.network(
        cidr="10.78.2.0/24",
        network_type=network_type,
        sg_rules=[{"protocol": "tcp", "port_range_min": 8080, "port_range_max": 8080}],
    )
    network = lab_project.net.get_network(net.network_id)
    ports = [
        lab_project.net.create_port(
            network_id=net.network_id,
            project_id=net.project_id,
            device_owner="compute:cloudnic",
            device_id=f"sb-{i}",
            binding_host_id=neutron_lab.agent_host,
            security_group_ids=[net.security_group_id],
        )
        for i in range(2)
    ]
    with lab_pod(neutron_lab, ports[0], network) as pod_a, lab_pod(neutron_lab, ports[1], network) as pod_b:
        for port in ports:
            neutron_lab.wait_port_status(port.id, "ACTIVE", timeout=60)
        assert not _ping_within(pod_a, pod_b, 4), "ping passed a security group that allows only tcp/8080"
        lab_project.add_rule(net.security_group_id, protocol="icmp")
        started = time.monotonic()
        assert _ping_within(pod_a, pod_b, 30), "ping still blocked 30 s after an ICMP ingress rule was added"
        print(f"{network_type}: ping passes {time.monotonic() - started:.1f} s after the ICMP rule")


def _ping_within(src: LabPod, dst: LabPod, seconds: float) -> bool:
    return bool(wait_until(lambda: ping(src, dst.ip), seconds, interval=0.5))
