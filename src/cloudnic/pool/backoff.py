"""Exponential backoff with jitter for failed refills (one per pool key).

After the n-th consecutive failure the next attempt waits ``d * U(1 - jitter, 1]`` where
``d = min(cap, base * 2**(n-1))``: the delay doubles, never exceeds ``cap``, and the nodes
of a cluster whose provider came back at the same instant do not all retry together.
A success resets it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cloudnic.errors import InvalidConfig


@dataclass(frozen=True)
class BackoffPolicy:
    base_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.5      # fraction of the delay that is random, 0..1

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise InvalidConfig(f"pool backoff: need 0 < base_s <= cap_s, got base_s={self.base_s} "
                                f"cap_s={self.cap_s}")
        if not 0 <= self.jitter <= 1:
            raise InvalidConfig(f"pool backoff: jitter is a fraction between 0 and 1, not {self.jitter}")

    def ceiling(self, failures: int) -> float:
        """The largest delay after ``failures`` consecutive failures (0 for none)."""
        if failures <= 0:
            return 0.0
        return min(self.cap_s, self.base_s * 2.0 ** min(failures - 1, 62))

    def delay(self, failures: int, rng: random.Random) -> float:
        top = self.ceiling(failures)
        return top * (1.0 - self.jitter * rng.random())


class Backoff:
    """The retry state of one key. Not thread-safe: the manager guards it with its lock."""

    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.not_before = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.not_before

    def failed(self, now: float, rng: random.Random) -> float:
        """Record a failure at ``now``; returns the delay until the next attempt."""
        self.failures += 1
        wait = self.policy.delay(self.failures, rng)
        self.not_before = now + wait
        return wait

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0
