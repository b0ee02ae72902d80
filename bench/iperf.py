"""Scenario 6: pod↔pod TCP throughput on one node with iperf3, per dataplane.

Two sandboxes per contestant, attached through the plugin itself; the server runs in
one (``-1``: it exits after one test, ``--idle-timeout`` when none comes), the client in
the other, both under ``nsenter`` so they reach only the pods' own addresses. Every run is bounded (``-t``, a hard
timeout, the server killed in any case).
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.plugins import Plugin, Sandbox

PORT = 5299


@dataclass
class IperfResult:
    gbps: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def pod_ipv4(p: Plugin, sb: Sandbox) -> str:
    res = p.results[sb.container_id]
    for ip in res.get("ips", []):
        addr = str(ip["address"]).split("/")[0]
        if ":" not in addr:
            return addr
    raise RuntimeError(f"{p.label}: no IPv4 address in the ADD result of {sb.netns}")


def nsenter(sb: Sandbox, *cmd: str) -> list[str]:
    return ["nsenter", f"--net={sb.netns_path}", *cmd]


def one_run(server: Sandbox, client: Sandbox, target: str, seconds: float) -> float:
    """Gbit/s received by the server in one ``seconds``-long TCP test."""
    # -1: exit after the one test; --idle-timeout: exit anyway when no client comes
    srv = subprocess.Popen(nsenter(server, "iperf3", "-s", "-1", "--idle-timeout", str(int(seconds) + 30),
                                   "-B", target, "-p", str(PORT)),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while srv.poll() is None and time.monotonic() < deadline:   # wait until it listens
            ss = subprocess.run(nsenter(server, "ss", "-Hltn", f"sport = :{PORT}"), capture_output=True,
                                text=True, timeout=5)
            if ss.stdout.strip():
                break
            time.sleep(0.02)
        if srv.poll() is not None:
            raise RuntimeError(f"iperf3 server in {server.netns} exited with {srv.returncode}")
        out = subprocess.run(nsenter(client, "iperf3", "-c", target, "-p", str(PORT), "-t", str(seconds),
                                     "-J", "--connect-timeout", "3000"),
                             capture_output=True, text=True, timeout=seconds + 20)
        data = json.loads(out.stdout or "{}")
        if out.returncode != 0 or "error" in data:
            raise RuntimeError(f"iperf3 client: {data.get('error') or out.stderr.strip()}")
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def veth_floor_pair(a: Sandbox, b: Sandbox, prefix: str = "10.219.0") -> str:
    """Wire two empty sandboxes with one bare veth pair (MTU 1500, no bridge, no plugin): the
    shortest pod-to-pod path one host has, a ceiling no dataplane can beat. The server's address."""
    subprocess.run(["ip", "link", "add", "cnbfv0", "netns", a.netns, "mtu", "1500", "type", "veth",
                    "peer", "name", "cnbfv1", "netns", b.netns, "mtu", "1500"], check=True, capture_output=True)
    for sb, ifname, host in ((a, "cnbfv0", 1), (b, "cnbfv1", 2)):
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{prefix}.{host}/24", "dev", ifname],
                    ["link", "set", ifname, "up"]):
            subprocess.run(["ip", "-n", sb.netns, *cmd], check=True, capture_output=True)
    return f"{prefix}.1"


def _given(pair: tuple[Sandbox, Sandbox, str]) -> tuple[Sandbox, Sandbox, str]:
    return pair


def _plugin_pair(p: Plugin, pair: tuple[Sandbox, Sandbox]) -> tuple[Sandbox, Sandbox, str]:
    return pair[0], pair[1], pod_ipv4(p, pair[0])


def run_iperf(plugins: Sequence[Plugin], pairs: dict[str, tuple[Sandbox, Sandbox]], seconds: float,
              rounds: int, wired: dict[str, tuple[Sandbox, Sandbox, str]] | None = None) -> IperfResult:
    """``wired``: label -> (server, client, server address) of pairs wired without a plugin (the
    floor), measured in the same rotation as the plugins."""
    res = IperfResult()
    attached: list[tuple[Plugin, Sandbox]] = []
    try:
        for p in plugins:
            for sb in pairs[p.label]:
                ex = p.call("ADD", sb)
                if not ex.ok:
                    res.errors.append(f"{p.label} ADD for iperf3: {ex.error()}")
                    continue
                attached.append((p, sb))
        ok = {p.label for p in plugins if all((p, sb) in attached for sb in pairs[p.label])}
        runs: list[tuple[str, Callable[[], tuple[Sandbox, Sandbox, str]]]] = [
            (p.label, functools.partial(_plugin_pair, p, pairs[p.label])) for p in plugins if p.label in ok]
        runs += [(label, functools.partial(_given, w)) for label, w in (wired or {}).items()]
        for r in range(rounds):
            k = r % len(runs) if runs else 0
            for label, pair in runs[k:] + runs[:k]:
                try:
                    server, client, target = pair()
                    res.gbps.setdefault(label, []).append(one_run(server, client, target, seconds))
                except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                    res.errors.append(f"{label} iperf3 round {r}: {e}")
    finally:
        for p, sb in reversed(attached):
            ex = p.call("DEL", sb)
            if not ex.ok:
                res.errors.append(f"{p.label} DEL after iperf3: {ex.error()}")
    return res
