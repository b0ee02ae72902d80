"""Per-operation metrics for every Neutron call: count, errors, retries and a latency
histogram (cumulative buckets, Prometheus style) the agent can export."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

LATENCY_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class OpStats:
    """One operation's counters. ``buckets`` pairs each upper bound (seconds) with the
    number of calls at or below it; the last bound is ``inf`` (== ``count``)."""

    count: int
    errors: int
    retries: int
    sum_s: float
    buckets: tuple[tuple[float, int], ...]
    errors_by_kind: tuple[tuple[str, int], ...] = ()


class _Op:
    __slots__ = ("count", "errors", "kinds", "per_bucket", "retries", "sum_s")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.retries = 0
        self.sum_s = 0.0
        self.per_bucket = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.kinds: dict[str, int] = {}


class CallStats:
    """Thread-safe counters keyed by operation name (``create_ports``, ``get_port`` ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[str, _Op] = {}

    def record(self, op: str, seconds: float, *, error: str | None = None, retries: int = 0) -> None:
        """One finished call (all its attempts); ``error`` names the failure kind, if any."""
        with self._lock:
            st = self._ops.setdefault(op, _Op())
            st.count += 1
            st.retries += retries
            st.sum_s += seconds
            st.per_bucket[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
            if error:
                st.errors += 1
                st.kinds[error] = st.kinds.get(error, 0) + 1

    def snapshot(self) -> dict[str, OpStats]:
        with self._lock:
            out: dict[str, OpStats] = {}
            for op, st in sorted(self._ops.items()):
                acc = 0
                buckets = []
                for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), st.per_bucket, strict=True):
                    acc += n
                    buckets.append((bound, acc))
                out[op] = OpStats(count=st.count, errors=st.errors, retries=st.retries, sum_s=st.sum_s,
                                  buckets=tuple(buckets), errors_by_kind=tuple(sorted(st.kinds.items())))
            return out

    def reset(self) -> None:
        with self._lock:
            self._ops.clear()
