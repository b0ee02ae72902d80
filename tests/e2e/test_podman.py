"""podman 4.3 with the CNI backend → the cloudnic shim → the agent.

podman validates the conflist with VERSION, passes the container name in CNI_ARGS and a static
address as ``IP=``, converts and checks the result (it rejects interfaces without a MAC) and
runs DEL on ``podman rm``. Containers on one cloudnic network reach each other over L2.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from e2e_peers import Podman, attachments, conflist
from e2e_util import bridge_ports, in_subnet, network, wait_for

pytestmark = pytest.mark.e2e

NET, BRIDGE, SUBNET, GATEWAY = network("pod")
STATIC = str(ipaddress.ip_network(SUBNET)[50])


@pytest.fixture(params=["1.0.0"])
def net(podman: Podman, agent: Any, request: pytest.FixtureRequest) -> str:
    # the socket in the config: podman's cleanup process (which runs DEL) scrubs the environment
    plugin = {"type": "cloudnic", "network": NET, "agentSocket": agent.socket}
    return podman.add_network(conflist(NET, [plugin], request.param))


@pytest.mark.parametrize("net", ["0.4.0", "1.0.0"], indirect=True)  # podman network create writes 0.4.0
def test_two_containers_ping_each_other(podman: Podman, net: str) -> None:
    c1, _ = podman.run_container("c1", net)
    c2, _ = podman.run_container("c2", net)
    ip1, ip2 = podman.ip_of(c1, net), podman.ip_of(c2, net)
    assert in_subnet(ip1, SUBNET) and in_subnet(ip2, SUBNET) and ip1 != ip2
    assert podman.addresses(c1) == [f"{ip1}/24"]
    podman.exec(c1, "ping", "-c1", "-W2", ip2)
    podman.exec(c2, "ping", "-c1", "-W2", ip1)
    gw = podman.exec(c1, "ip", "-4", "route", "show", "default").stdout
    assert f"via {GATEWAY}" in gw, gw


def test_static_ip_is_honoured_and_released_by_rm(podman: Podman, net: str) -> None:
    c1, _ = podman.run_container("s1", net, "--ip", STATIC)
    assert podman.ip_of(c1, net) == STATIC
    assert podman.addresses(c1) == [f"{STATIC}/24"]

    # while c1 holds it, the address is refused to another container, and podman's DEL after
    # that failed ADD must not take it away from c1
    c2, proc = podman.run_container("s2", net, "--ip", STATIC, check=False)
    assert proc.returncode != 0, f"{STATIC} was handed out twice"
    assert STATIC in proc.stderr, proc.stderr
    podman("rm", "-f", "-t", "0", c2, check=False)
    c3, _ = podman.run_container("s3", net)
    podman.exec(c3, "ping", "-c1", "-W2", STATIC)

    podman("rm", "-f", "-t", "0", c1)
    c4, _ = podman.run_container("s4", net, "--ip", STATIC)
    assert podman.ip_of(c4, net) == STATIC
    # c3 still has c1's MAC for STATIC in its neighbour table: the new holder pings first
    podman.exec(c4, "ping", "-c1", "-W2", podman.ip_of(c3, net))


def test_rm_removes_the_host_side(podman: Podman, net: str) -> None:
    before = set(bridge_ports(BRIDGE))
    c1, _ = podman.run_container("h1", net)
    assert len(set(bridge_ports(BRIDGE)) - before) == 1
    podman("rm", "-f", "-t", "0", c1)
    assert set(bridge_ports(BRIDGE)) <= before


def test_kill_releases_the_address_through_podman_cleanup(podman: Podman, net: str, agent: Any) -> None:
    """After ``podman kill`` the DEL comes from ``podman container cleanup`` started by conmon."""
    address = str(ipaddress.ip_network(SUBNET)[60])
    c1, _ = podman.run_container("k1", net, "--ip", address)
    assert [a["pod_name"] for a in attachments(agent, holding=address)] == [c1]
    podman("kill", c1)
    wait_for(
        f"the agent to release {address} after podman kill", lambda: not attachments(agent, holding=address)
    )
    c2, _ = podman.run_container("k2", net, "--ip", address)
    assert podman.ip_of(c2, net) == address


def test_mac_address_is_honoured(podman: Podman, net: str, agent: Any) -> None:
    mac = "02:00:0a:ed:03:33"  # podman sends it as CNI_ARGS MAC=
    c1, _ = podman.run_container("m1", net, "--mac-address", mac)
    assert podman.exec(c1, "cat", "/sys/class/net/eth0/address").stdout.strip() == mac
    assert [a["mac"] for a in attachments(agent) if a["pod_name"] == c1] == [mac]
