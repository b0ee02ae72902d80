"""The neutron client's pacing: token bucket, bounded jittered backoff, call statistics."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudnic.providers.neutron.retry import Backoff, TokenBucket
from cloudnic.providers.neutron.stats import LATENCY_BUCKETS_S, CallStats


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def bucket(rate: float, burst: int) -> tuple[TokenBucket, FakeTime]:
    t = FakeTime()
    return TokenBucket(rate, burst, clock=t.clock, sleep=t.sleep), t


def test_burst_is_served_without_waiting_then_callers_wait_one_interval_each() -> None:
    b, t = bucket(rate=10, burst=3)
    assert all(b.acquire(max_wait=0) for _ in range(3))
    assert t.slept == []
    assert not b.acquire(max_wait=0.05)          # the next token is 0.1 s away
    assert b.acquire(max_wait=1)
    assert t.slept == [pytest.approx(0.1)]
    assert b.acquire(max_wait=1)
    assert t.slept[-1] == pytest.approx(0.1)


def test_tokens_refill_at_the_rate_and_never_beyond_the_burst() -> None:
    b, t = bucket(rate=2, burst=4)
    for _ in range(4):
        b.acquire(0)
    t.now += 1.0
    assert b.available() == pytest.approx(2.0)
    t.now += 60
    assert b.available() == pytest.approx(4.0)


def test_refusal_takes_nothing() -> None:
    b, _ = bucket(rate=1, burst=1)
    assert b.acquire(0)
    before = b.available()
    assert not b.acquire(max_wait=0.5)
    assert b.available() == pytest.approx(before)


def test_sustained_rate_is_respected_over_many_calls() -> None:
    b, t = bucket(rate=20, burst=5)
    start = t.now
    for _ in range(105):
        assert b.acquire(max_wait=10)
    assert t.now - start == pytest.approx(100 / 20, rel=1e-6)   # 5 from the burst, 100 paced


def test_concurrent_callers_never_exceed_burst_plus_rate() -> None:
    import time

    b = TokenBucket(rate=1000, burst=50)
    started = time.monotonic()
    got: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            ok = b.acquire(max_wait=0)
            with lock:
                got.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - started
    assert len(got) == 160
    assert 50 <= sum(got) <= 50 + 1000 * elapsed + 1    # the burst at least, never more than burst + rate


def test_bad_bucket_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)


@given(base=st.floats(0.001, 2), cap=st.floats(0.001, 30), retries=st.integers(0, 10), seed=st.integers(0, 2**32))
def test_backoff_delays_are_bounded_jittered_and_counted(base: float, cap: float, retries: int, seed: int) -> None:
    b = Backoff(base=base, cap=cap, retries=retries)
    delays = list(b.delays(random.Random(seed)))
    assert len(delays) == retries
    for n, d in enumerate(delays):
        step = min(cap, base * 2**n)
        assert step / 2 - 1e-12 <= d <= step + 1e-12
        assert d <= cap + 1e-12
    assert sum(delays) <= b.worst_case() + 1e-9


def test_backoff_grows_exponentially_until_the_cap_and_jitter_spreads() -> None:
    b = Backoff(base=0.1, cap=1.0, retries=6)
    rng = random.Random(7)
    samples = [[b.delay(n, rng) for _ in range(200)] for n in range(6)]
    for n, xs in enumerate(samples):
        step = min(1.0, 0.1 * 2**n)
        assert min(xs) >= step / 2 and max(xs) <= step
        assert max(xs) - min(xs) > step / 4            # really jittered
    assert max(samples[5]) <= 1.0
    assert b.worst_case() == pytest.approx(0.1 + 0.2 + 0.4 + 0.8 + 1.0 + 1.0)


def test_call_stats_histogram_counts_and_errors() -> None:
    s = CallStats()
    s.record("create_ports", 0.003)
    s.record("create_ports", 0.2, retries=2)
    s.record("create_ports", 99.0, error="OverQuota")
    s.record("get_port", 0.01, error="refused")
    snap = s.snapshot()
    cp = snap["create_ports"]
    assert (cp.count, cp.errors, cp.retries) == (3, 1, 2)
    assert cp.sum_s == pytest.approx(99.203)
    bounds = dict(cp.buckets)
    assert bounds[0.005] == 1 and bounds[0.25] == 2 and bounds[30.0] == 2 and bounds[float("inf")] == 3
    assert [b for b, _ in cp.buckets] == [*LATENCY_BUCKETS_S, float("inf")]
    counts = [n for _, n in cp.buckets]
    assert counts == sorted(counts)                    # cumulative
    assert cp.errors_by_kind == (("OverQuota", 1),)
    assert snap["get_port"].errors_by_kind == (("refused", 1),)
    assert dict(snap["get_port"].buckets)[0.01] == 1   # an upper bound is inclusive
    s.reset()
    assert s.snapshot() == {}
