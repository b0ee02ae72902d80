"""Order statistics of samples: median, p90, p99 and the count, as every figure reports them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not samples:
        return math.nan
    xs = sorted(samples)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    p50: float
    p90: float
    p99: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        return cls(percentile(samples, 50), percentile(samples, 90), percentile(samples, 99), len(samples))

    def flat(self, prefix: str, unit: str = "ms", digits: int = 2) -> dict[str, float | int | None]:
        """``{prefix}_p50_{unit}: ..., ..._p90_..., ..._p99_..., {prefix}_n: n}``; NaN becomes null."""
        def r(x: float) -> float | None:
            return None if math.isnan(x) else round(x, digits)
        return {f"{prefix}_p50_{unit}": r(self.p50), f"{prefix}_p90_{unit}": r(self.p90),
                f"{prefix}_p99_{unit}": r(self.p99), f"{prefix}_n": self.n}


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, digits)
