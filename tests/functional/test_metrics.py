"""The agent's Prometheus endpoint and health check, read over real HTTP on loopback."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.agent import running_agent
from tests.support.cni import conf, netns, run_cni, unique

pytestmark = pytest.mark.functional

NETWORKS = """
[networks.mnet]
mode = "bridge"
bridge = "cnm-br0"
[[networks.mnet.subnets]]
cidr = "10.98.0.0/24"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_and_healthz(tmp_path: Path) -> None:
    port = free_port()
    with netns(unique("cnm-node-")) as node, running_agent(
            tmp_path, NETWORKS, host_netns=f"/run/netns/{node}",
            extra_agent=f'metrics_listen = "127.0.0.1:{port}"') as agent, netns(unique("cnm-sb-")) as sb:
        cid = unique("m")
        assert run_cni("ADD", conf("mnet"), socket=agent.socket, container_id=cid, netns=f"/run/netns/{sb}").code == 0
        bad = run_cni("ADD", conf("mnet"), socket=agent.socket, container_id=unique("m"), netns=f"/run/netns/{sb}",
                      args="IP=10.1.1.1")
        assert bad.code == 1
        base = f"http://127.0.0.1:{port}"
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert 'cloudnic_requests_total{code="0",verb="ADD"} 1' in text
        assert 'cloudnic_requests_total{code="100",verb="ADD"} 1' in text
        assert "cloudnic_attachments 1.0" in text and "cloudnic_ready 1.0" in text
        assert 'cloudnic_network_addresses_used{network="mnet",subnet="10.98.0.0/24"} 1.0' in text
        assert 'cloudnic_request_duration_ms_count{verb="ADD"} 2' in text
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/nope", timeout=5)
        assert e.value.code == 404
        assert agent.admin({"op": "metrics"})["text"].startswith("# HELP cloudnic_requests_total")
        assert run_cni("DEL", conf("mnet"), socket=agent.socket, container_id=cid, netns=f"/run/netns/{sb}").code == 0


def test_metrics_port_in_use_is_a_clear_startup_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError) as e, running_agent(tmp_path, NETWORKS,
                                                             extra_agent=f'metrics_listen = "127.0.0.1:{port}"'):
            pass
        assert f"agent.metrics_listen 127.0.0.1:{port}: cannot listen" in str(e.value)
