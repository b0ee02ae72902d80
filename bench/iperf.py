"""Scenario 6: pod↔pod TCP throughput on one node with iperf3, per dataplane.

Two sandboxes per contestant, attached through the plugin itself; the server runs in
one (``-1``: it exits after one test, ``--idle-timeout`` when none comes), the client in
the other, both under ``nsenter`` so they reach only the pods' own addresses. Every run is bounded (``-t``, a hard
timeout, the server killed in any case).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.latency import rotated
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


def run_iperf(plugins: Sequence[Plugin], pairs: dict[str, tuple[Sandbox, Sandbox]], seconds: float,
              rounds: int) -> IperfResult:
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
        for r in range(rounds):
            for p in rotated(plugins, r):
                if p.label not in ok:
                    continue
                a, b = pairs[p.label]
                try:
                    res.gbps.setdefault(p.label, []).append(one_run(a, b, pod_ipv4(p, a), seconds))
                except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                    res.errors.append(f"{p.label} iperf3 round {r}: {e}")
    finally:
        for p, sb in reversed(attached):
            ex = p.call("DEL", sb)
            if not ex.ok:
                res.errors.append(f"{p.label} DEL after iperf3: {ex.error()}")
    return res
