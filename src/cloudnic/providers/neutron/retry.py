"""Client-side pacing for one IaaS API: a token bucket and bounded, jittered backoff.

Both take their clock, sleep and randomness as arguments so the unit tests can drive
them without waiting.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; thread-safe.

    ``acquire`` takes one token, sleeping until one is available, and returns False
    (taking nothing) when that would take longer than ``max_wait`` seconds.
    """

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket: rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def acquire(self, max_wait: float) -> bool:
        with self._lock:
            now = self._clock()
            self._refill(now)
            wait = 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate
            if wait > max_wait:
                return False
            # Reserve the token now (the balance may go negative) so callers queue fairly.
            self._tokens -= 1.0
        if wait > 0:
            self._sleep(wait)
        return True

    def available(self) -> float:
        with self._lock:
            self._refill(self._clock())
            return self._tokens


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with "equal jitter": attempt ``n`` (0-based) waits a random time in
    ``[d/2, d]`` where ``d = min(cap, base * 2**n)``; ``retries`` delays at most."""

    base: float = 0.2
    cap: float = 5.0
    retries: int = 3

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        d = min(self.cap, self.base * (2 ** max(0, attempt)))
        r = (rng or random).random()
        return d / 2 + r * d / 2

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        for attempt in range(self.retries):
            yield self.delay(attempt, rng)

    def worst_case(self) -> float:
        """The most time all the delays together can take."""
        return sum(min(self.cap, self.base * 2**n) for n in range(self.retries))
