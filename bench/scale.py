"""Scenario 4 and 5b: ADD latency with few vs many attachments present; agent RSS at 500.

Each contestant gets a background population (``levels[-1]`` sandboxes, ADDed in
interleaved order as the population ramps up) and a set of probe sandboxes. At each
level every probe is ADDed (timed) and DELed again, so the population stays exactly
at the level while it is measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.latency import Samples, rotated
from bench.plugins import Plugin, Sandbox


@dataclass
class ScaleResult:
    probes: Samples = field(default_factory=Samples)       # verb "ADD@<level>"
    ramp: Samples = field(default_factory=Samples)         # verb "RAMP@<bucket start>"
    agent_rss: dict[int, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_scale(plugins: Sequence[Plugin], background: dict[str, list[Sandbox]],
              probes: dict[str, list[Sandbox]], levels: Sequence[int], rss_at: Sequence[int],
              agent_rss: Callable[[], dict[str, float]], bucket: int = 100,
              kernel_probe: Callable[[int], tuple[float, float]] | None = None) -> ScaleResult:
    """``kernel_probe(i)``: (add ms, del ms) of the bare kernel work (raw netlink, no plugin) on the
    same bridge, measured next to the plugins' probes at every level (label ``"kernel"``)."""
    res = ScaleResult()
    present = 0
    for level in levels:
        while present < level:
            for p in rotated(plugins, present):
                ex = p.call("ADD", background[p.label][present])
                res.ramp.add(p.label, f"RAMP@{present // bucket * bucket}", ex)
                if not ex.ok:
                    res.notes.append(f"{p.label} ADD #{present} failed: {ex.error()}")
            present += 1
            if present in rss_at:
                res.agent_rss[present] = agent_rss()
        for i, _ in enumerate(probes[plugins[0].label]):
            for p in rotated(plugins, i):
                sb = probes[p.label][i]
                res.probes.add(p.label, f"ADD@{level}", p.call("ADD", sb))
                res.probes.add(p.label, f"CHECK@{level}", p.call("CHECK", sb))
                res.probes.add(p.label, f"DEL@{level}", p.call("DEL", sb))
            if kernel_probe is not None:
                add_ms, del_ms = kernel_probe(i)
                res.probes.ms.setdefault(("kernel", f"ADD@{level}"), []).append(add_ms)
                res.probes.ms.setdefault(("kernel", f"DEL@{level}"), []).append(del_ms)
    return res


def teardown(plugins: Sequence[Plugin], background: dict[str, list[Sandbox]], count: int,
             samples: Samples) -> None:
    """DEL the background population again (timed too: DEL with many present)."""
    for i in reversed(range(count)):
        for p in rotated(plugins, i):
            samples.add(p.label, "DEL-teardown", p.call("DEL", background[p.label][i]))
