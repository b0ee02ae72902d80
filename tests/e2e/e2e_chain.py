"""The chained-plugin scenario shared by test_chaining.py (cloudnic first) and test_reference.py
(the reference bridge first): <first> → portmap → bandwidth → tuning, driven by cnitool.

It proves the first plugin's result flows as prevResult through the chain: portmap DNATs to the
address it reported, bandwidth finds the host veth it listed, tuning applies a sysctl to the
interface it named; CHECK runs every plugin; DEL removes all of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from e2e_peers import Cnitool
from e2e_util import host_link_by_index, host_links, link, nat_rules, peer_ifindex, qdiscs, run

TUNED_SYSCTL = "net.ipv4.conf.eth0.arp_ignore"
INGRESS_RATE = 8_000_000  # bits/s
EGRESS_RATE = 4_000_000


def chain_conf(name: str, first: Mapping[str, Any], version: str = "1.0.0") -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": name,
        "plugins": [
            dict(first),
            # Debian 12's portmap (plugins 1.1.1) has only the iptables backend (iptables-nft here);
            # newer ones read "backend". No SNAT: it would need route_localnet and a MASQUERADE chain.
            {"type": "portmap", "backend": "iptables", "snat": False, "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
            {"type": "tuning", "sysctl": {TUNED_SYSCTL: "1"}},
        ],
    }


def cap_args(host_port: int) -> dict[str, Any]:
    return {
        "portMappings": [
            {"hostPort": host_port, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}
        ],
        "bandwidth": {
            "ingressRate": INGRESS_RATE,
            "ingressBurst": 400_000,
            "egressRate": EGRESS_RATE,
            "egressBurst": 400_000,
        },
    }


def netns_sysctl(ns: str, key: str) -> str:
    return run(["ip", "netns", "exec", ns, "cat", "/proc/sys/" + key.replace(".", "/")]).stdout.strip()


def portmap_rules(host_port: int) -> list[str]:
    return [r for r in nat_rules().splitlines() if f"--dport {host_port}" in r]


def exercise_chain(tool: Cnitool, network: str, ns: str, host_port: int) -> None:
    caps = cap_args(host_port)
    conf_path = tool.conf_dir / f"{network}.conflist"
    ifbs_before = {n for n in host_links("") if n.startswith("bwp")}
    result = tool.add(network, ns, cap_args=caps)
    host_veth = ""
    try:
        # the final result still carries the first plugin's interfaces and address
        address = result["ips"][0]["address"].split("/")[0]
        host = host_link_by_index(peer_ifindex("eth0", ns))
        assert host is not None
        host_veth = host["ifname"]
        assert host_veth in [i["name"] for i in result["interfaces"]], json.dumps(result)

        # tuning: the sysctl is set inside the netns
        assert netns_sysctl(ns, TUNED_SYSCTL) == "1"

        # bandwidth: tbf on the host veth (ingress shaping) and an ifb device for egress
        kinds = {q["kind"] for q in qdiscs(host_veth)}
        assert "tbf" in kinds, f"no tbf qdisc on {host_veth}: {qdiscs(host_veth)}"
        new_ifbs = {n for n in host_links("") if n.startswith("bwp")} - ifbs_before
        assert len(new_ifbs) == 1, f"bandwidth made no ifb device for egress: {new_ifbs}"
        assert "tbf" in {q["kind"] for q in qdiscs(new_ifbs.pop())}

        # portmap: a DNAT rule from 127.0.0.1:<host_port> to <address>:80
        rules = portmap_rules(host_port)
        assert any(f"--to-destination {address}:80" in r for r in rules), "\n".join(rules) or nat_rules()

        # CHECK of every plugin but portmap: Debian's portmap 1.1.1 also checks an IPv6 DNAT chain it
        # never made for an IPv4-only result and always fails (containernetworking/plugins#819).
        # libcni takes prevResult from its cache, so CHECK with a conflist of the same name works.
        full = json.loads(conf_path.read_text())
        conf_path.write_text(
            json.dumps(dict(full, plugins=[p for p in full["plugins"] if p["type"] != "portmap"]))
        )
        try:
            tool("check", network, ns, cap_args=caps)
        finally:
            conf_path.write_text(json.dumps(full))
    finally:
        tool("del", network, ns, cap_args=caps)

    assert link("eth0", ns) is None
    assert link(host_veth) is None, f"host veth {host_veth} is left after DEL"
    assert not portmap_rules(host_port), "portmap rules are left after DEL"
    assert {n for n in host_links("") if n.startswith("bwp")} == ifbs_before, "the ifb device is left"
    tool("del", network, ns, cap_args=caps)  # DEL twice


TUNED_MAC = "02:00:0a:ed:00:42"


def exercise_tuning_mac(tool: Cnitool, network: str, first: Mapping[str, Any], ns: str) -> None:
    """tuning rewrites the MAC: the final result carries it, and CHECK (which gets the final result
    as prevResult) must accept it: the first plugin checks against prevResult, not its own ADD."""
    tool.write(
        {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [dict(first), {"type": "tuning", "mac": TUNED_MAC}],
        }
    )
    result = tool.add(network, ns)
    try:
        kernel = link("eth0", ns)
        assert kernel is not None and kernel["address"] == TUNED_MAC
        sandbox = [i for i in result["interfaces"] if i.get("sandbox")]
        assert [i["mac"] for i in sandbox] == [TUNED_MAC], json.dumps(result)
        tool("check", network, ns)
    finally:
        tool("del", network, ns)
    assert link("eth0", ns) is None
