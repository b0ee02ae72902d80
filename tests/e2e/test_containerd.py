"""containerd 1.6 CRI (driven like a kubelet over gRPC) → the cloudnic shim → the agent.

containerd's go-cni passes K8S_POD_* in CNI_ARGS, the pod's annotations through the
``io.kubernetes.cri.pod-annotations`` capability and port mappings with PascalCase keys, and
runs DEL twice (StopPodSandbox, then RemovePodSandbox).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from e2e_peers import Containerd, attachments, nsenter_ip
from e2e_util import in_subnet, network

pytestmark = pytest.mark.e2e

NET, BRIDGE, SUBNET, GATEWAY = network("cri")
STATIC = str(ipaddress.ip_network(SUBNET)[77])


def of_pod(agent: Any, sid: str) -> list[dict[str, Any]]:
    return [a for a in attachments(agent) if a.get("container_id") == sid]


def test_pod_gets_an_address(containerd: Containerd, agent: Any) -> None:
    sid = containerd.run_pod("p1", port_mappings=[(80, 18951)])
    ip = containerd.pod_ip(sid)
    assert in_subnet(ip, SUBNET), ip
    links = nsenter_ip(containerd.pod_netns(sid), "addr", "show", "eth0")
    assert [a["local"] for a in links[0]["addr_info"] if a["family"] == "inet"] == [ip]
    routes = nsenter_ip(containerd.pod_netns(sid), "-4", "route", "show", "default")
    assert routes and routes[0]["gateway"] == GATEWAY
    # K8S_POD_NAMESPACE / K8S_POD_NAME from go-cni's CNI_ARGS reached the agent
    name = containerd.status(sid).status.metadata.name
    assert [(a["pod_namespace"], a["pod_name"], a["ips"]) for a in of_pod(agent, sid)] == [
        ("cne-ns", name, [f"{ip}/24"])
    ]
    containerd.stop_pod(sid)
    containerd.remove_pod(sid)


def test_annotation_requests_the_address_and_double_del_releases_it(
    containerd: Containerd, agent: Any
) -> None:
    sid = containerd.run_pod("p2", annotations={"cloudnic.io/ip": STATIC})
    assert containerd.pod_ip(sid) == STATIC

    containerd.stop_pod(sid)  # DEL
    containerd.remove_pod(sid)  # DEL again
    assert not of_pod(agent, sid), "the attachment survived Stop + Remove"
    assert not attachments(agent, holding=STATIC), f"{STATIC} is still held"

    # the address is free again: a new pod asking for it gets it
    sid2 = containerd.run_pod("p3", annotations={"cloudnic.io/ip": STATIC})
    assert containerd.pod_ip(sid2) == STATIC
    containerd.stop_pod(sid2)
    containerd.remove_pod(sid2)


def test_annotation_for_a_held_address_fails_the_pod(containerd: Containerd, agent: Any) -> None:
    import grpc

    sid = containerd.run_pod("p4", annotations={"cloudnic.io/ip": STATIC})
    with pytest.raises(grpc.RpcError) as info:
        containerd.run_pod("p5", annotations={"cloudnic.io/ip": STATIC})
    assert STATIC in str(info.value.details()), info.value.details()
    assert containerd.pod_ip(sid) == STATIC
    assert [a["container_id"] for a in attachments(agent, holding=STATIC)] == [sid]
    containerd.stop_pod(sid)
    containerd.remove_pod(sid)
