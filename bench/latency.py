"""Scenarios 1-3 and 5a: sequential ADD/CHECK/DEL, 10-way parallel, plugin peak RSS.

Every sample interleaves the contestants: sample i runs each plugin once, in an order
rotated by i, so drift (other load on the machine, caches) hits all of them alike.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench.plugins import Plugin, Sandbox
from bench.spawn import Exec, peak_rss_kb
from bench.stats import Summary


@dataclass
class Samples:
    """Wall times (ms) and peak RSS (kB) per plugin label and verb, plus failures."""

    ms: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    cpu_ms: dict[tuple[str, str], list[float]] = field(default_factory=dict)      # the exec'd plugin's
    agent_cpu_ms: dict[tuple[str, str], list[float]] = field(default_factory=dict)   # the agent's, per call
    rss_kb: dict[str, list[int]] = field(default_factory=dict)
    errors: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, label: str, verb: str, ex: Exec) -> None:
        if ex.ok:
            self.ms.setdefault((label, verb), []).append(ex.wall_ms)
            self.cpu_ms.setdefault((label, verb), []).append(ex.cpu_ms)
        else:
            self.errors.setdefault((label, verb), []).append(ex.error())

    def summary(self, label: str, verb: str) -> Summary:
        return Summary.of(self.ms.get((label, verb), []))

    def error_count(self) -> int:
        return sum(len(v) for v in self.errors.values())


def rotated(items: Sequence[Plugin], i: int) -> list[Plugin]:
    k = i % len(items)
    return list(items[k:]) + list(items[:k])


def warm_up(plugins: Sequence[Plugin], sandboxes: dict[str, list[Sandbox]], rounds: int) -> list[str]:
    """ADD+DEL a few times per plugin, unrecorded: first-use work (bridge creation, page
    cache of the binaries, the agent's lazy imports) is not what a warm node pays."""
    problems = []
    for r in range(rounds):
        for p in plugins:
            sb = sandboxes[p.label][r]
            for verb in ("ADD", "DEL"):
                ex = p.call(verb, sb)
                if not ex.ok:
                    problems.append(f"warm-up {p.label} {verb}: {ex.error()}")
    return problems


def sequential(plugins: Sequence[Plugin], sandboxes: dict[str, list[Sandbox]], n: int,
               samples: Samples, verbs: Sequence[str] = ("ADD", "CHECK", "DEL"),
               agent_cpu: Callable[[], float] | None = None) -> None:
    """ADD n sandboxes per plugin one by one, then CHECK them all, then DEL them all.

    ``agent_cpu()`` (cumulative CPU seconds of the agent) is read around every cloudnic call;
    the agent is idle in between, so the per-call deltas add up to its CPU per request."""
    for verb in verbs:
        for i in range(n):
            for p in rotated(plugins, i):
                metered = agent_cpu is not None and p.exe.endswith("/cloudnic")
                c0 = agent_cpu() if metered and agent_cpu else 0.0
                ex = p.call(verb, sandboxes[p.label][i])
                if metered and agent_cpu and ex.ok:
                    samples.agent_cpu_ms.setdefault((p.label, verb), []).append((agent_cpu() - c0) * 1000.0)
                samples.add(p.label, verb, ex)


def peak_rss(plugins: Sequence[Plugin], sandboxes: dict[str, list[Sandbox]], rounds: int,
             samples: Samples) -> None:
    """ADD, CHECK, DEL under GNU time (untimed); ``samples.rss_kb[label]`` gets every call's peak.
    The key ``"time-floor"`` holds /bin/true measured the same way (a dynamic libc program), for scale."""
    for _ in range(3):
        _, kb = peak_rss_kb("/bin/true", {}, b"")
        samples.rss_kb.setdefault("time-floor", []).append(kb)
    for i in range(rounds):
        for verb in ("ADD", "CHECK", "DEL"):
            for p in rotated(plugins, i):
                ex, kb = p.call_rss(verb, sandboxes[p.label][i])
                if ex.ok:
                    samples.rss_kb.setdefault(p.label, []).append(kb)
                else:
                    samples.errors.setdefault((p.label, f"{verb}-rss"), []).append(ex.error())


@dataclass(frozen=True)
class Throughput:
    label: str
    verb: str
    pods: int
    seconds: float
    errors: tuple[str, ...]
    busy_cores: float = 0.0        # the machine's mean busy CPUs during the round (/proc/stat)
    agent_cpu_ms: float = 0.0      # the agent's CPU per call during the round (cloudnic only)
    runner_cpu_ms: float = 0.0     # this runner's own CPU per call (spawning, reaping): the harness's share

    @property
    def per_s(self) -> float:
        return self.pods / self.seconds if self.seconds > 0 else 0.0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    total = float(sum(vals[:8]))        # user nice system idle iowait irq softirq steal
    return total - vals[3] - vals[4], total


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def parallel_round(p: Plugin, sbs: Sequence[Sandbox], verb: str, width: int,
                   samples: Samples | None = None, agent_cpu: Callable[[], float] | None = None) -> Throughput:
    """``verb`` for every sandbox with ``width`` calls in flight; wall time of the whole batch, how
    busy the machine was meanwhile and (``agent_cpu``: the agent's cumulative CPU s) the agent's CPU per call."""
    metered = agent_cpu is not None and p.exe.endswith("/cloudnic")
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix=f"bench-{p.label}") as pool:
        a0 = agent_cpu() if metered and agent_cpu else 0.0
        r0 = _self_cpu()
        b0, j0 = machine_cpu()
        t0 = time.perf_counter()
        results = list(pool.map(lambda sb: p.call(verb, sb, settle=False), sbs))
        dt = time.perf_counter() - t0
        b1, j1 = machine_cpu()
        r1 = _self_cpu()
        a1 = agent_cpu() if metered and agent_cpu else 0.0
    p.settle_now(f"{verb}-parallel")            # untimed, before the next contestant's round
    ncpu = os.cpu_count() or 1
    busy = ncpu * (b1 - b0) / (j1 - j0) if j1 > j0 else 0.0
    if samples is not None:
        for ex in results:
            samples.add(p.label, f"{verb}-parallel", ex)
    errors = tuple(ex.error() for ex in results if not ex.ok)
    return Throughput(p.label, verb, len(sbs), dt, errors, busy_cores=busy,
                      runner_cpu_ms=(r1 - r0) * 1000.0 / len(sbs) if sbs else 0.0,
                      agent_cpu_ms=(a1 - a0) * 1000.0 / len(sbs) if metered and sbs else 0.0)


def parallel(plugins: Sequence[Plugin], sandboxes: dict[str, list[Sandbox]], n: int, width: int,
             rounds: int, samples: Samples, agent_cpu: Callable[[], float] | None = None) -> list[Throughput]:
    """``rounds`` x (ADD n, DEL n) per plugin, the plugins' order alternating per round."""
    out = []
    for r in range(rounds):
        for p in rotated(plugins, r):
            sbs = sandboxes[p.label][:n]
            out.append(parallel_round(p, sbs, "ADD", width, samples, agent_cpu))
            out.append(parallel_round(p, sbs, "DEL", width, samples, agent_cpu))
    return out
