"""The sizes of a run: ``full`` (``make bench``, ~10 min on 2 cores) and ``quick`` (a smoke run)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    name: str
    samples: int              # sequential ADD/CHECK/DEL per plugin
    warmup: int               # unrecorded ADD+DEL per plugin first
    parallel_pods: int
    parallel_width: int
    parallel_rounds: int
    scale_levels: tuple[int, ...]
    scale_probes: int
    rss_at: tuple[int, ...]
    iperf_seconds: float
    iperf_rounds: int
    floor_pods: int
    neutron_samples: int

    @property
    def scale_top(self) -> int:
        return self.scale_levels[-1]


FULL = Sizes(name="full", samples=100, warmup=5, parallel_pods=100, parallel_width=10, parallel_rounds=9,
             scale_levels=(10, 1000), scale_probes=30, rss_at=(500, 1000), iperf_seconds=3, iperf_rounds=3,
             floor_pods=100, neutron_samples=30)
QUICK = Sizes(name="quick", samples=10, warmup=2, parallel_pods=20, parallel_width=10, parallel_rounds=1,
              scale_levels=(10, 60), scale_probes=5, rss_at=(50,), iperf_seconds=1, iperf_rounds=1,
              floor_pods=10, neutron_samples=5)

SCENARIOS = ("sequential", "parallel", "scale", "iperf", "floor", "neutron")
EXTRA = ("profile",)    # only when asked for with --only
