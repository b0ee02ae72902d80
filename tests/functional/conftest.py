"""Fixtures for functional tests: a node netns that plays the host, and a real agent in it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import SHIM, AgentHandle, running_agent
from tests.support.cni import netns, ns_exec, sh, unique

REPO = Path(__file__).resolve().parents[2]

NETWORKS = """
[networks.fbridge]
mode = "bridge"
bridge = "cnf-br0"
mtu = 1400
[[networks.fbridge.subnets]]
cidr = "10.91.0.0/24"
gateway = "10.91.0.1"
exclude = ["10.91.0.2-10.91.0.9"]
dns = ["10.91.0.53"]
[[networks.fbridge.subnets]]
cidr = "fd00:91::/64"
gateway = "fd00:91::1"

[networks.frouted]
mode = "routed"
mtu = 1450
[[networks.frouted.subnets]]
cidr = "10.92.0.0/24"
[[networks.frouted.subnets]]
cidr = "fd00:92::/64"

[networks.fmacvlan]
mode = "macvlan"
parent = "cnf-mvp0"
mtu = 1500
[[networks.fmacvlan.subnets]]
cidr = "10.93.0.0/24"
gateway = "10.93.0.1"

[networks.ftiny]
mode = "bridge"
bridge = "cnf-br1"
[[networks.ftiny.subnets]]
cidr = "10.94.0.0/30"
gateway = "10.94.0.1"
"""


@pytest.fixture(scope="session")
def shim() -> str:
    if not SHIM.exists():
        subprocess.run(["make", "-C", str(REPO / "shim")], check=True, capture_output=True)
    return str(SHIM)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A network namespace playing the node: the agent plumbs into it, never into the real host."""
    with netns(unique("cnf-node-")) as ns:
        # the macvlan parent: a veth pair (this kernel has no dummy module)
        sh("ip", "-n", ns, "link", "add", "cnf-mvp0", "type", "veth", "peer", "name", "cnf-mvp1")
        sh("ip", "-n", ns, "link", "set", "cnf-mvp1", "up")
        sh("ip", "-n", ns, "link", "set", "cnf-mvp0", "up")
        yield ns


@pytest.fixture(scope="module")
def agent(node: str, shim: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHandle]:
    tmp = tmp_path_factory.mktemp("agent")
    with running_agent(tmp, NETWORKS, host_netns=f"/run/netns/{node}") as handle:
        yield handle


@pytest.fixture
def sandbox() -> Iterator[str]:
    with netns(unique("cnf-sb-")) as ns:
        yield ns


@pytest.fixture
def sandboxes() -> Iterator[list[str]]:
    names: list[str] = []
    try:
        for _ in range(4):
            names.append(unique("cnf-sb-"))
            sh("ip", "netns", "add", names[-1])
            ns_exec(names[-1], "ip", "link", "set", "lo", "up")
        yield names
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
