"""podman (CNI backend) → the cloudnic shim → the agent with the neutron provider: two containers
get Neutron ports, their addresses, and ping each other over the Neutron linuxbridge naming."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peer import NeutronPeer, Project

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from e2e_peers import E2EEnv, Podman, conflist  # noqa: E402

from tests.support.agent import running_agent  # noqa: E402

pytestmark = pytest.mark.neutron

E2E_DIR = Path(os.environ.get("CLOUDNIC_E2E_DIR", "/var/tmp/cloudnic-e2e"))
NODE = "test-node"   # the node name tests.support.agent gives every test agent


@pytest.fixture(scope="module")
def e2e_env() -> E2EEnv:
    env = dict(os.environ, CLOUDNIC_E2E_DIR=str(E2E_DIR))
    proc = subprocess.run([str(REPO / "scripts" / "e2e-setup.sh")], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return E2EEnv.load(E2E_DIR / "env.json")


@pytest.fixture
def podman(e2e_env: E2EEnv) -> Iterator[Podman]:
    driver = Podman(e2e_env, {})
    try:
        yield driver
    finally:
        driver.close()


def test_podman_containers_on_neutron_ports_ping_each_other(neutron: NeutronPeer, neutron_project: Project,
                                                            podman: Podman, tmp_path: Path) -> None:
    neutron.fake_agent(NODE)
    net = neutron_project.network(cidr="10.77.9.0/24")
    brq = f"brq{net.network_id[:11]}"
    networks = f"""
[provider]
type = "neutron"
auth_type = "noauth"
endpoint = "{neutron.endpoint}"
project_id = "{neutron_project.id}"

[networks.cnn-pod]
mode = "linuxbridge"
neutron_network = "{net.network_id}"
security_groups = ["{net.security_group_id}"]
"""
    try:
        with running_agent(tmp_path, networks) as agent:
            plugin: dict[str, Any] = {"type": "cloudnic", "network": "cnn-pod", "agentSocket": agent.socket}
            name = podman.add_network(conflist("cnn-pod", [plugin]))
            c1, _ = podman.run_container("cnn-c1", name)
            c2, _ = podman.run_container("cnn-c2", name)
            ip1, ip2 = podman.ip_of(c1, name), podman.ip_of(c2, name)
            ports = {p.fixed_ips[0]["ip_address"]: p for p in neutron_project.ports()}
            assert set(ports) == {ip1, ip2}, (ports, ip1, ip2)
            for port in ports.values():
                assert port.device_owner == "compute:cloudnic" and port.name.startswith("cloudnic/")
            podman.exec(c1, "ping", "-c1", "-W2", ip2)
            podman.exec(c2, "ping", "-c1", "-W2", ip1)
            mac1 = podman.exec(c1, "cat", "/sys/class/net/eth0/address").stdout.strip()
            assert mac1 == ports[ip1].mac_address
            podman("rm", "-f", "-t", "0", c1, c2)
            assert neutron_project.ports() == []          # podman rm → DEL → the ports are deleted
    finally:
        subprocess.run(["ip", "link", "del", brq], capture_output=True)
