"""cloudnic's linuxbridge dataplane against the real neutron-linuxbridge-agent (the ``neutron_lab`` peer).

Everything the agent must see happens inside the lab netns (``neutron_lab.netns``), which plays the node: the
dataplane is built with ``host_netns_fd`` on it, so its ``tap…`` / ``brq…`` links are made there. The pods are
netns ``cnl-…`` of their own; the parking netns is ``cnl-lpark-…``. Proven here, by Neutron itself:

* pods plugged by ``LinuxBridgeDataplane.plug`` on a flat and on a vxlan network get ACTIVE ports, and the agent
  adds its physical / vxlan interface to the bridge cloudnic made;
* a security group allowing only TCP blocks their ping; an ICMP rule lets it through (Neutron's iptables, applied
  to our taps);
* a parked (pre-plugged) port is ACTIVE before ``plug_parked`` and stays ACTIVE through it, through
  ``return_to_park``, and goes DOWN only when unparked.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from peer import NeutronPeer, Project, ScratchNet, sh, wait_until

from cloudnic.dataplane import LinuxBridgeDataplane, bridge_name, park_attachment, tap_name
from cloudnic.dataplane.base import Attachment
from tests.functional.netns_util import Netns, close_netns, create_netns, link, ping, unique

pytestmark = pytest.mark.neutron


@pytest.fixture
def lab_dp(neutron_lab: NeutronPeer) -> Iterator[LinuxBridgeDataplane]:
    """The dataplane with the lab netns as its host; its parking netns is removed afterwards."""
    fd = os.open(f"/run/netns/{neutron_lab.netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        dp = LinuxBridgeDataplane(mtu=1500, host_netns_fd=fd, parking_netns=unique("lpark", "cnl-"))
    finally:
        os.close(fd)
    try:
        yield dp
    finally:
        dp.remove_parking()
        dp.close()


@pytest.fixture
def pods() -> Iterator[list[Netns]]:
    made: list[Netns] = []
    try:
        for _ in range(2):
            made.append(create_netns(unique("lpod", "cnl-")))
        yield made
    finally:
        for ns in made:
            close_netns(ns)


def make_ports(project: Project, net: ScratchNet, agent_host: str, n: int) -> list[Any]:
    return [
        project.net.create_port(
            network_id=net.network_id,
            project_id=net.project_id,
            name=unique(f"lbp{i}"),
            device_owner="compute:cloudnic",
            device_id=f"cnl-sandbox-{i}",
            binding_host_id=agent_host,
            security_group_ids=[net.security_group_id],
        )
        for i in range(n)
    ]


def attachment_for(port: Any, net: ScratchNet, key: str) -> Attachment:
    """What the agent would build from the port and its subnet (convert.build_attachment's job)."""
    fixed = port.fixed_ips[0]
    prefix = ipaddress.ip_network(net.cidr).prefixlen
    gateways = (ipaddress.ip_address(net.gateway_ip),) if net.gateway_ip else ()
    return Attachment(
        key=key,
        ifname="eth0",
        mac=port.mac_address,
        mtu=net.mtu,
        addresses=(ipaddress.ip_interface(f"{fixed['ip_address']}/{prefix}"),),
        gateways=gateways,
        port_id=port.id,
        network_id=net.network_id,
    )


def bridge_members(peer: NeutronPeer, bridge: str) -> set[str]:
    out = sh(["ip", "-j", "-n", str(peer.netns), "link", "show", "master", bridge]).stdout
    return {lk["ifname"] for lk in json.loads(out or "[]")}


def status(project: Project, port_id: str) -> str:
    return str(project.net.get_port(port_id).status)


def ping_within(src: Netns, address: str, seconds: float) -> bool:
    return bool(wait_until(lambda: ping(src, address), seconds, interval=0.5))


@pytest.mark.parametrize("network_type", ["flat", "vxlan"])
def test_pods_plugged_by_cloudnic_go_active_and_neutron_enforces_their_security_group(
    neutron_lab: NeutronPeer, lab_project: Project, lab_dp: LinuxBridgeDataplane, pods: list[Netns], network_type: str
) -> None:
    assert neutron_lab.agent_host
    net = lab_project.network(
        cidr="10.79.1.0/24",
        network_type=network_type,
        sg_rules=[{"protocol": "tcp", "port_range_min": 8080, "port_range_max": 8080}],
    )
    ports = make_ports(lab_project, net, neutron_lab.agent_host, 2)
    atts = [attachment_for(p, net, f"lab/ctr{i}/eth0") for i, p in enumerate(ports)]
    plugged = [lab_dp.plug(pod.fd, att) for pod, att in zip(pods, atts, strict=True)]
    try:
        for p in ports:
            seconds = neutron_lab.wait_port_status(p.id, "ACTIVE", timeout=90)
            print(f"{network_type}: port {p.id[:8]} ACTIVE {seconds:.1f} s after cloudnic plugged it")
        segment = lab_project.net.get_network(net.network_id).provider_segmentation_id
        uplink = "cnn-phys0" if network_type == "flat" else f"vxlan-{segment}"
        members = bridge_members(neutron_lab, bridge_name(net.network_id))
        assert {tap_name(p.id) for p in ports} | {uplink} <= members, members
        pod0 = link(pods[0], "eth0")
        assert pod0 is not None and pod0["address"] == ports[0].mac_address and pod0["mtu"] == net.mtu
        for pod, att, pl in zip(pods, atts, plugged, strict=True):
            lab_dp.check(pod.fd, att, pl)
        peer_ip = ports[1].fixed_ips[0]["ip_address"]
        assert not ping_within(pods[0], peer_ip, 4), "ping passed a security group that allows only tcp/8080"
        lab_project.add_rule(net.security_group_id, protocol="icmp")
        started = time.monotonic()
        assert ping_within(pods[0], peer_ip, 30), "ping still blocked 30 s after an ICMP ingress rule was added"
        print(f"{network_type}: ping passes {time.monotonic() - started:.1f} s after the ICMP rule")
    finally:
        for pod, att, pl in zip(pods, atts, plugged, strict=True):
            lab_dp.unplug(pod.fd, att, pl)
    for p in ports:
        neutron_lab.wait_port_status(p.id, "DOWN", timeout=60)


def test_a_parked_port_is_active_before_plug_parked_and_stays_active(
    neutron_lab: NeutronPeer, lab_project: Project, lab_dp: LinuxBridgeDataplane, pods: list[Netns]
) -> None:
    assert neutron_lab.agent_host
    net = lab_project.network(cidr="10.79.2.0/24", network_type="vxlan")  # its SG allows all IPv4 ingress
    ref, pooled = make_ports(lab_project, net, neutron_lab.agent_host, 2)
    ref_att, pooled_att = attachment_for(ref, net, "lab/ref/eth0"), attachment_for(pooled, net, "lab/pool/eth0")
    ref_plugged = lab_dp.plug(pods[0].fd, ref_att)
    lab_dp.park(park_attachment(pooled.id, net.network_id, pooled.mac_address, net.mtu))
    try:
        assert lab_dp.parked_ports() == {pooled.id}
        seconds = neutron_lab.wait_port_status(pooled.id, "ACTIVE", timeout=90)
        print(f"parked port ACTIVE {seconds:.1f} s after park (no sandbox yet)")
        neutron_lab.wait_port_status(ref.id, "ACTIVE", timeout=90)
        assert status(lab_project, pooled.id) == "ACTIVE", "ACTIVE before any sandbox asked for it"
        started = time.monotonic()
        plugged = lab_dp.plug_parked(pods[1].fd, pooled_att)
        print(f"plug_parked: {(time.monotonic() - started) * 1000:.1f} ms")
        assert status(lab_project, pooled.id) == "ACTIVE"
        assert ping_within(pods[1], ref.fixed_ips[0]["ip_address"], 10), "the pooled pod reaches its neighbour"
        lab_dp.check(pods[1].fd, pooled_att, plugged)
        lab_dp.return_to_park(pods[1].fd, pooled_att, plugged)
        assert lab_dp.parked_ports() == {pooled.id}
        # back in the pool the port stays ACTIVE: the tap never left the bridge
        samples = []
        for _ in range(6):
            time.sleep(0.5)
            samples.append(status(lab_project, pooled.id))
        assert samples == ["ACTIVE"] * 6, samples
        lab_dp.unpark(park_attachment(pooled.id, net.network_id, pooled.mac_address, net.mtu))
        assert link(Netns(str(neutron_lab.netns), -1), tap_name(pooled.id)) is None
        neutron_lab.wait_port_status(pooled.id, "DOWN", timeout=60)
    finally:
        with contextlib.suppress(Exception):
            lab_dp.unpark(park_attachment(pooled.id, net.network_id, pooled.mac_address, net.mtu))
        lab_dp.unplug(pods[0].fd, ref_att, ref_plugged)
