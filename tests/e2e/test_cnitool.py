"""cnitool (libcni 1.1, Debian's source package) → the cloudnic shim → the agent.

For every spec version both sides support: ADD gives a result of that version whose address,
MAC and routes are what the kernel shows inside the netns; CHECK (≥ 0.4.0) passes, then fails
once the address is removed by hand; DEL removes the interface and the host side, and a second
DEL succeeds.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from e2e_peers import Cnitool
from e2e_util import (
    RESULTS_DIR,
    addresses,
    bridge_ports,
    default_gateway,
    host_link_by_index,
    in_subnet,
    link,
    netns,
    network,
    peer_ifindex,
    ping,
    run,
)

pytestmark = pytest.mark.e2e

NET, BRIDGE, SUBNET, GATEWAY = network("tool")
VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]


def write_conf(tool: Cnitool, version: str, **plugin: Any) -> None:
    tool.write(
        {"cniVersion": version, "name": NET, "plugins": [{"type": "cloudnic", "network": NET, **plugin}]}
    )


def sandbox_interface(result: dict[str, Any], netns_name: str) -> tuple[int, dict[str, Any]]:
    for index, iface in enumerate(result.get("interfaces", [])):
        if iface.get("sandbox") == f"/run/netns/{netns_name}":
            return index, iface
    raise AssertionError(f"no interface with sandbox /run/netns/{netns_name} in {json.dumps(result)}")


def assert_result_matches_kernel(result: dict[str, Any], version: str, ns: str, ifname: str = "eth0") -> str:
    """The ADD result has the shape of ``version`` and says what the kernel shows; return the address."""
    assert result["cniVersion"] == version, json.dumps(result)
    index, iface = sandbox_interface(result, ns)
    assert iface["name"] == ifname
    ips = result["ips"]
    assert len(ips) == 1, json.dumps(result)
    address = ips[0]["address"]
    assert in_subnet(address, SUBNET), address
    assert ipaddress.ip_interface(address).network == ipaddress.ip_network(SUBNET)
    assert ips[0]["interface"] == index
    assert ips[0].get("gateway") == GATEWAY
    if version == "1.0.0":
        assert "version" not in ips[0]  # removed in 1.0.0
    else:
        assert ips[0]["version"] == "4"

    kernel = link(ifname, ns)
    assert kernel is not None, f"{ifname} missing in {ns}"
    assert kernel["address"] == iface["mac"].lower()
    assert "UP" in kernel["flags"]
    assert addresses(ifname, ns) == [address]
    assert default_gateway(ns) == GATEWAY

    host = host_link_by_index(peer_ifindex(ifname, ns))
    assert host is not None and host.get("master") == BRIDGE, host
    host_ifaces = [i for i in result["interfaces"] if not i.get("sandbox")]
    assert host["ifname"] in [i["name"] for i in host_ifaces], "the host veth is not in the result"
    return str(address)


@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del(cnitool: Cnitool, version: str) -> None:
    write_conf(cnitool, version)
    with netns("tool") as ns:
        ports_before = set(bridge_ports(BRIDGE))
        result = cnitool.add(NET, ns)
        try:
            address = assert_result_matches_kernel(result, version, ns)
            if version >= "0.4.0":
                cnitool("check", NET, ns)
                run(["ip", "-n", ns, "addr", "del", address, "dev", "eth0"])
                bad = cnitool("check", NET, ns, check=False)
                assert bad.returncode != 0, "CHECK passed although the address was removed"
                assert address.split("/")[0] in bad.stderr, bad.stderr
        finally:
            cnitool("del", NET, ns)
        assert link("eth0", ns) is None
        assert set(bridge_ports(BRIDGE)) <= ports_before, "the host veth is still on the bridge"
        assert not list(RESULTS_DIR.glob(f"{NET}-{Cnitool.container_id(ns)}-*"))
        cnitool("del", NET, ns)  # a second DEL succeeds


def test_two_namespaces_ping_and_address_reuse(cnitool: Cnitool) -> None:
    write_conf(cnitool, "1.0.0")
    with netns("ta") as a, netns("tb") as b:
        addr_a = cnitool.add(NET, a)["ips"][0]["address"]
        addr_b = cnitool.add(NET, b)["ips"][0]["address"]
        try:
            assert addr_a != addr_b
            assert ping(a, addr_b.split("/")[0]), f"{a} cannot ping {addr_b}"
            assert ping(b, addr_a.split("/")[0]), f"{b} cannot ping {addr_a}"
        finally:
            cnitool("del", NET, a)
        # a's address is free again: a static request for it succeeds in a third netns
        with netns("tc") as c:
            ip_a = addr_a.split("/")[0]
            try:
                got = cnitool.add(NET, c, cni_args=f"IgnoreUnknown=1;IP={ip_a}")["ips"][0]["address"]
                assert got == addr_a
                assert ping(c, addr_b.split("/")[0])
            finally:
                cnitool("del", NET, c)
        cnitool("del", NET, b)


def test_static_ip_in_use_is_refused_and_kept(cnitool: Cnitool) -> None:
    write_conf(cnitool, "1.0.0")
    with netns("sa") as a, netns("sb") as b:
        addr = cnitool.add(NET, a)["ips"][0]["address"]
        try:
            ip = addr.split("/")[0]
            clash = cnitool("add", NET, b, cni_args=f"IgnoreUnknown=1;IP={ip}", check=False)
            assert clash.returncode != 0, clash.stdout
            assert ip in clash.stderr, clash.stderr
            assert link("eth0", b) is None, "a failed ADD left eth0 behind"
            cnitool("del", NET, b)  # the runtime's DEL after a failed ADD must not free a's address
            cnitool("check", NET, a)
            again = cnitool("add", NET, b, cni_args=f"IgnoreUnknown=1;IP={ip}", check=False)
            assert again.returncode != 0, "the address was handed out twice"
            cnitool("del", NET, b)
        finally:
            cnitool("del", NET, a)


def test_other_ifname(cnitool: Cnitool) -> None:
    write_conf(cnitool, "1.0.0")
    with netns("if") as ns:
        result = cnitool.add(NET, ns, ifname="net1")
        try:
            assert_result_matches_kernel(result, "1.0.0", ns, ifname="net1")
            cnitool("check", NET, ns, ifname="net1")
        finally:
            cnitool("del", NET, ns, ifname="net1")
        assert link("net1", ns) is None


def test_unknown_network_is_a_clear_error(cnitool: Cnitool) -> None:
    cnitool.write(
        {"cniVersion": "1.0.0", "name": NET, "plugins": [{"type": "cloudnic", "network": "cne-nope"}]}
    )
    with netns("un") as ns:
        proc = cnitool("add", NET, ns, check=False)
        assert proc.returncode != 0
        assert "cne-nope" in proc.stderr, proc.stderr
        assert link("eth0", ns) is None
        cnitool("del", NET, ns)
