"""Warm pools: keys and policies, hits with no provider call, bulk refill, re-key, release
and trim, jitter, backoff, thread safety, the driver."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from cloudnic.errors import InternalError, InvalidConfig
from cloudnic.pool import Backoff, BackoffPolicy, PoolKey, PoolPolicy, pool_port_name
from cloudnic.providers.base import PortSpec
from cloudnic.store import Store
from tests.unit.test_pool_fakes import (
    BLUE,
    CLUSTER,
    DEFAULT,
    GREEN_OTHER_SUBNET,
    NODE,
    OWNER_TAGS,
    RED,
    Clock,
    FakeParker,
    FakeProvider,
    make_manager,
    open_store,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from open_store(tmp_path)


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def parker() -> FakeParker:
    return FakeParker()


def pooled_ids(store: Store, key: PoolKey) -> set[str]:
    return {r.port_id for r in store.list_ports(state="pooled", pool_key=key.encode())}


# ---- key and policy ---------------------------------------------------------------------


def test_key_sorts_groups_and_round_trips_through_the_store_form() -> None:
    key = PoolKey("net/with,odd:chars", "sub", ("b", "a", "b"))
    assert key.security_groups == ("a", "b")
    assert key == PoolKey("net/with,odd:chars", "sub", ("a", "b"))
    assert PoolKey.decode(key.encode()) == key
    assert PoolKey("n", "", ()).subnet_id is None
    assert PoolKey("n").label == "n/*[default]"
    assert BLUE.label == "net-1/s1[sg-blue]"
    assert hash(PoolKey("n", None, ("x", "y"))) == hash(PoolKey("n", None, ("y", "x")))


def test_key_refuses_garbage() -> None:
    with pytest.raises(InvalidConfig, match="network_id"):
        PoolKey("")
    with pytest.raises(InternalError, match="not a stored pool key"):
        PoolKey.decode("net-1/s1")


@pytest.mark.parametrize("kw, field", [
    ({"min_ready": -1}, "min_ready"), ({"batch": 0}, "batch"), ({"min_ready": 5, "max_idle": 4}, "max_idle"),
    ({"jitter": -1.0}, "jitter"), ({"idle_ttl_s": "x"}, "idle_ttl_s"), ({"max_idle": True}, "max_idle"),
])
def test_policy_names_the_bad_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfig, match=f"pool.{field}"):
        PoolPolicy(**kw)  # type: ignore[arg-type]


def test_refill_count_is_a_batch_below_min_ready_never_past_max_idle() -> None:
    pol = PoolPolicy(min_ready=4, max_idle=10, batch=8)
    assert [pol.refill_count(n) for n in (0, 3, 4, 9)] == [8, 7, 0, 0]
    assert PoolPolicy(min_ready=10, max_idle=10, batch=4).refill_count(0) == 4
    assert PoolPolicy().refill_count(0) == 0


# ---- backoff ------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    pol = BackoffPolicy(base_s=1.0, cap_s=30.0, jitter=0.5)
    assert [pol.ceiling(n) for n in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    rng = random.Random(1)
    for n in range(1, 10):
        for _ in range(200):
            d = pol.delay(n, rng)
            assert pol.ceiling(n) * 0.5 <= d <= pol.ceiling(n)
    b = Backoff(pol)
    assert b.ready(0.0)
    wait = b.failed(100.0, rng)
    assert not b.ready(100.0) and b.ready(100.0 + wait)
    b.succeeded()
    assert b.failures == 0 and b.ready(0.0)
    with pytest.raises(InvalidConfig):
        BackoffPolicy(jitter=2.0)


# ---- refill -------------------------------------------------------------------------------


def test_prewarm_creates_a_batch_in_one_bulk_call_parked_and_recorded(store: Store, provider: FakeProvider,
                                                                      parker: FakeParker) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=4, max_idle=16, batch=8)},
                       parker=parker)
    stats = mgr.prewarm([BLUE])
    assert provider.calls["create_ports"] == 1 and provider.create_counts == [8]
    assert stats[0]["ready"] == 8 and stats[0]["target"] == 4 and stats[0]["refills"] == 1
    assert parker.parked == set(provider.ports) and len(parker.parked) == 8
    assert pooled_ids(store, BLUE) == set(provider.ports)
    for port in provider.ports.values():
        assert port.host_id == NODE
        assert set(OWNER_TAGS) <= set(port.tags)
        assert port.name == pool_port_name(CLUSTER, NODE)
        assert port.security_groups == ("sg-blue",)
    assert store.journal_pending() == []


def test_refill_with_a_small_batch_takes_several_calls_of_one_batch_each(store: Store,
                                                                         provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=10, max_idle=12, batch=4)})
    mgr.prewarm([BLUE])
    assert provider.create_counts == [4, 4, 4]
    assert mgr.stats()[0]["ready"] == 12


def test_only_one_refill_per_key_is_in_flight(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=2, max_idle=4, batch=4)})
    provider.create_gate = threading.Event()
    first = threading.Thread(target=mgr.refill, args=(BLUE,))
    first.start()
    deadline = time.monotonic() + 5
    while provider.calls["create_ports"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mgr.stats()[0]["in_flight"] == 4
    assert mgr.refill(BLUE) == 0                        # returns at once, no second call
    assert mgr.maintain()["refilled"] == 0
    assert mgr.acquire(BLUE) is None                    # acquire never waits for the refill
    provider.create_gate.set()
    first.join(5)
    assert provider.calls["create_ports"] == 1
    assert mgr.stats()[0]["ready"] == 4 and mgr.stats()[0]["in_flight"] == 0


def test_a_spec_with_a_fixed_ip_is_refused_for_a_pool(store: Store, provider: FakeProvider) -> None:
    import ipaddress

    def spec(key: PoolKey) -> PortSpec:
        return PortSpec(network_id=key.network_id, fixed_ips=(ipaddress.ip_address("10.0.0.9"),))

    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=1, max_idle=1)}, spec=spec)
    assert mgr.refill(BLUE) == 0
    st = mgr.stats()[0]
    assert st["refill_errors"] == 1 and "fixed IP" in st["last_error"]
    assert provider.calls["create_ports"] == 0 and store.journal_pending() == []


def test_a_port_that_cannot_be_parked_is_deleted_not_pooled(store: Store, provider: FakeProvider,
                                                            parker: FakeParker) -> None:
    parker.fail_for = {"port-0002"}
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=3, max_idle=3, batch=3)},
                       parker=parker)
    assert mgr.refill(BLUE) == 2
    assert "port-0002" not in provider.ports and store.get_port("port-0002") is None
    assert pooled_ids(store, BLUE) == {"port-0001", "port-0003"}


# ---- acquire ------------------------------------------------------------------------------


def test_hits_make_no_provider_call_and_record_assigned(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=3, max_idle=3, batch=3)})
    mgr.prewarm([BLUE])
    before = provider.total_calls()
    got = [mgr.acquire(BLUE, attachment_key=f"pods/c{i}/eth0") for i in range(3)]
    assert provider.total_calls() == before
    assert len({p.id for p in got if p is not None}) == 3
    for i, port in enumerate(got):
        assert port is not None
        row = store.get_port(port.id)
        assert row is not None and row.state == "assigned" and row.attachment_key == f"pods/c{i}/eth0"
        assert row.pool_key == BLUE.encode()
    assert mgr.acquire(BLUE) is None
    st = mgr.stats()[0]
    assert (st["hits"], st["misses"], st["ready"]) == (3, 1, 0)


def test_hits_are_served_oldest_first(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=2, max_idle=4, batch=2)})
    mgr.prewarm([BLUE])
    first = mgr.acquire(BLUE)
    assert first is not None and first.id == "port-0001"


def test_acquire_works_from_the_pool_while_the_provider_is_down(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=2, max_idle=2, batch=2)})
    mgr.prewarm([BLUE])
    provider.down = True
    assert mgr.acquire(BLUE) is not None and mgr.acquire(BLUE) is not None
    assert mgr.acquire(BLUE) is None


def test_twenty_threads_share_ten_ports_without_a_double_hand_out(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=10, max_idle=10, batch=10)})
    mgr.prewarm([BLUE])
    before = provider.total_calls()
    barrier = threading.Barrier(20)
    results: list[str | None] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        port = mgr.acquire(BLUE, attachment_key=f"pods/c{i}/eth0")
        with lock:
            results.append(None if port is None else port.id)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    ids = [r for r in results if r is not None]
    assert len(results) == 20
    assert len(ids) == 10 and len(set(ids)) == 10
    assert results.count(None) == 10
    assert provider.total_calls() == before
    assert {r.port_id for r in store.list_ports(state="assigned")} == set(ids)
    st = mgr.stats()[0]
    assert (st["hits"], st["misses"]) == (10, 10)


# ---- re-key -------------------------------------------------------------------------------


def test_an_empty_pool_rekeys_a_port_of_the_same_subnet_with_one_update(store: Store,
                                                                        provider: FakeProvider) -> None:
    pol = PoolPolicy(min_ready=0, max_idle=4, batch=2)
    mgr = make_manager(provider, store, policies={BLUE: replace(pol, min_ready=2), RED: pol})
    mgr.prewarm([BLUE, RED])
    before = dict(provider.calls)
    port = mgr.acquire(RED, attachment_key="pods/r/eth0")
    assert port is not None and port.security_groups == ("sg-red",)
    assert provider.calls["update_port"] == before.get("update_port", 0) + 1
    assert provider.calls["create_ports"] == before["create_ports"]
    assert provider.ports[port.id].security_groups == ("sg-red",)
    row = store.get_port(port.id)
    assert row is not None and row.state == "assigned" and row.pool_key == RED.encode()
    stats = {s["key"]: s for s in mgr.stats()}
    assert stats[RED.label]["rekeys"] == 1 and stats[RED.label]["hits"] == 0
    assert stats[BLUE.label]["ready"] == 1


def test_no_rekey_across_subnets_or_into_the_default_group(store: Store, provider: FakeProvider) -> None:
    pol = PoolPolicy(min_ready=2, max_idle=4, batch=2)
    mgr = make_manager(provider, store, policies={BLUE: pol})
    mgr.prewarm([BLUE])
    before = provider.total_calls()
    assert mgr.acquire(GREEN_OTHER_SUBNET) is None
    assert mgr.acquire(DEFAULT) is None          # "default groups" cannot be set by an update
    assert provider.total_calls() == before
    assert mgr.stats()[0]["ready"] == 2


def test_a_failed_rekey_is_a_miss_and_the_port_stays_in_its_pool(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=1, max_idle=1, batch=1)})
    mgr.prewarm([BLUE])
    provider.down = True
    assert mgr.acquire(RED) is None
    stats = {s["key"]: s for s in mgr.stats()}
    assert stats[RED.label]["misses"] == 1 and stats[RED.label]["rekey_errors"] == 1
    assert stats[BLUE.label]["ready"] == 1
    provider.down = False
    assert mgr.acquire(BLUE) is not None


# ---- release ------------------------------------------------------------------------------


def test_release_returns_a_pool_port_with_no_provider_call(store: Store, provider: FakeProvider,
                                                          parker: FakeParker) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=2, max_idle=2, batch=2)},
                       parker=parker)
    mgr.prewarm([BLUE])
    port = mgr.acquire(BLUE)
    assert port is not None
    parker.unpark(port)                  # the caller plugged it into a sandbox, then unplugged it
    before = provider.total_calls()
    assert mgr.release(port, BLUE) == "pooled"
    assert provider.total_calls() == before
    assert port.id in parker.parked and port.id in pooled_ids(store, BLUE)
    again = mgr.acquire(BLUE)
    assert again is not None


def test_release_scrubs_a_pod_named_port_with_one_update(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=0, max_idle=2, batch=1)})
    port = provider.create_ports(PortSpec(network_id="net-1", subnet_ids=("s1",), security_groups=("sg-x",),
                                          name="shop/web-1", tags=OWNER_TAGS), 1)[0]
    before = provider.calls["update_port"]
    assert mgr.release(port, BLUE) == "pooled"
    assert provider.calls["update_port"] == before + 1
    fresh = provider.ports[port.id]
    assert fresh.name == pool_port_name(CLUSTER, NODE) and fresh.security_groups == ("sg-blue",)


def test_release_above_max_idle_deletes_the_port(store: Store, provider: FakeProvider,
                                                 parker: FakeParker) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=2, max_idle=2, batch=2)},
                       parker=parker)
    mgr.prewarm([BLUE])
    extra = provider.create_ports(PortSpec(network_id="net-1", subnet_ids=("s1",), security_groups=("sg-blue",),
                                           name=pool_port_name(CLUSTER, NODE), tags=OWNER_TAGS), 1)[0]
    assert mgr.release(extra, BLUE) == "deleted"
    assert extra.id not in provider.ports and store.get_port(extra.id) is None
    assert mgr.stats()[0]["deleted"] == 1 and mgr.stats()[0]["ready"] == 2


def test_release_of_a_key_without_pool_or_a_foreign_port_deletes_it(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=0, max_idle=2)})
    a = provider.create_ports(PortSpec(network_id="net-1", subnet_ids=("s1",)), 1)[0]
    assert mgr.release(a, RED) == "deleted"
    b = provider.create_ports(PortSpec(network_id="net-2", subnet_ids=("s1",)), 1)[0]
    assert mgr.release(b, BLUE) == "deleted"
    assert provider.ports == {}


def test_a_delete_while_the_provider_is_down_is_finished_later(store: Store, provider: FakeProvider) -> None:
    clock = Clock()
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=0, max_idle=0)}, clock=clock)
    port = provider.create_ports(PortSpec(network_id="net-1", subnet_ids=("s1",)), 1)[0]
    provider.down = True
    assert mgr.release(port, BLUE) == "deleting"
    row = store.get_port(port.id)
    assert row is not None and row.state == "deleting"
    assert mgr.maintain()["deleted_retry"] == 0            # backing off
    provider.down = False
    clock.advance(120)
    assert mgr.maintain()["deleted_retry"] == 1
    assert port.id not in provider.ports and store.get_port(port.id) is None


# ---- trim ---------------------------------------------------------------------------------


def test_trim_deletes_the_oldest_excess_after_its_jitter(store: Store, provider: FakeProvider) -> None:
    clock = Clock()
    policies = {BLUE: PoolPolicy(min_ready=4, max_idle=4, batch=4, jitter=10.0)}
    mgr = make_manager(provider, store, policies=policies, clock=clock)
    mgr.prewarm([BLUE])
    clock.advance(1)
    mgr.prewarm([])
    port_ids = sorted(provider.ports)
    policies[BLUE] = PoolPolicy(min_ready=1, max_idle=1, batch=1, jitter=10.0)   # config shrank
    deleted_at = None
    for step in range(0, 30):
        mgr.trim()
        if len(provider.ports) == 1:
            deleted_at = step * 0.5
            break
        clock.advance(0.5)
    assert deleted_at is not None and deleted_at <= 10.0 + 0.5
    assert list(provider.ports) == [port_ids[-1]]           # the oldest three went first
    assert provider.calls["delete_ports"] == 1               # in one call


def test_trim_jitter_spreads_nodes_within_its_bound(store: Store, provider: FakeProvider) -> None:
    times = []
    for seed in range(25):
        clock = Clock()
        policies = {BLUE: PoolPolicy(min_ready=0, max_idle=2, batch=2, jitter=8.0)}
        mgr = make_manager(FakeProvider(), store, policies=policies, clock=clock, seed=seed)
        with mgr.lock:
            st = mgr.state(BLUE)
        from cloudnic.pool.reclaim import due

        for _ in range(4):
            st.ready.append(mgr.ready_entry(
                provider.create_ports(PortSpec(network_id="net-1"), 1)[0], "fake", policies[BLUE]))
        t = 0.0
        while not due(st, policies[BLUE], clock.now, mgr.rng.uniform):
            clock.advance(0.25)
            t += 0.25
            assert t <= 8.0, "a trim waited longer than its jitter"
        times.append(t)
    assert min(times) < 3.0 and max(times) > 5.0           # spread, not all at once


def test_idle_ports_beyond_min_ready_expire_after_their_ttl(store: Store, provider: FakeProvider) -> None:
    clock = Clock()
    mgr = make_manager(provider, store, clock=clock, policies={
        BLUE: PoolPolicy(min_ready=2, max_idle=6, batch=6, idle_ttl_s=60.0, jitter=5.0)})
    mgr.prewarm([BLUE])
    assert len(provider.ports) == 6
    clock.advance(59)
    assert mgr.trim() == 0
    clock.advance(7)
    assert mgr.trim() == 4
    assert len(provider.ports) == 2 and mgr.stats()[0]["ready"] == 2


# ---- backoff on failure -------------------------------------------------------------------


def test_a_failing_refill_backs_off_exponentially_and_never_blocks_acquire(store: Store,
                                                                          provider: FakeProvider) -> None:
    clock = Clock()
    mgr = make_manager(provider, store, clock=clock, policies={BLUE: PoolPolicy(min_ready=2, max_idle=4, batch=2)})
    mgr.prewarm([BLUE])
    assert mgr.acquire(BLUE) and mgr.acquire(BLUE)
    provider.down = True
    waits = []
    for _ in range(5):
        calls = provider.calls["create_ports"]
        mgr.maintain()
        assert provider.calls["create_ports"] == calls + 1
        st = mgr.stats()[0]
        waits.append(st["backoff_s"])
        mgr.maintain()                                        # still backing off: no call
        assert provider.calls["create_ports"] == calls + 1
        t0 = time.monotonic()
        assert mgr.acquire(BLUE) is None
        assert time.monotonic() - t0 < 0.5
        clock.advance(st["backoff_s"] + 0.01)
    assert mgr.stats()[0]["refill_errors"] == 5
    for n, w in enumerate(waits, start=1):
        assert BackoffPolicy().ceiling(n) * 0.5 <= w <= BackoffPolicy().ceiling(n)
    assert waits[-1] > waits[0]
    provider.down = False
    mgr.maintain()
    st = mgr.stats()[0]
    assert st["ready"] == 2 and st["backoff_s"] == 0
    # the failed creates left their intents open (a timeout may create after all); the
    # reconcile that runs once the provider answers closes them
    assert store.journal_pending() == []
    assert len(provider.ports) == 4


# ---- driver and stats ---------------------------------------------------------------------


def test_the_driver_refills_soon_after_a_pool_runs_low(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=2, max_idle=3, batch=2)})
    mgr.prewarm([BLUE])
    with ThreadPoolExecutor(2) as pool:
        mgr.start(pool, interval_s=30.0)
        try:
            assert mgr.acquire(BLUE) and mgr.acquire(BLUE)
            deadline = time.monotonic() + 5
            while mgr.stats()[0]["ready"] < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert mgr.stats()[0]["ready"] == 2        # long before the 30 s interval
        finally:
            mgr.stop(5)
    assert not any(t.name == "cloudnic-pool" for t in threading.enumerate())


def test_the_driver_sleeps_between_rounds(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=3, max_idle=3, batch=1)})
    rounds = []
    real = mgr.maintain

    def counting(submit=None):  # type: ignore[no-untyped-def]
        rounds.append(time.monotonic())
        return real(submit)

    mgr.maintain = counting  # type: ignore[method-assign]
    mgr.watch([BLUE])
    mgr.start(None, interval_s=30.0)
    try:
        time.sleep(0.3)
        assert len(rounds) == 3              # batches of 1: each refill that leaves a gap kicks
        assert mgr.stats()[0]["ready"] == 3
    finally:
        mgr.stop(5)


def test_stats_report_every_counter(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: PoolPolicy(min_ready=1, max_idle=2, batch=1)})
    mgr.prewarm([BLUE])
    (st,) = mgr.stats()
    assert {"key", "ready", "target", "in_flight", "hits", "misses", "rekeys", "refills", "refill_errors",
            "deleted"} <= set(st)
    assert st["key"] == BLUE.label and st["ready"] == 1 and st["target"] == 1
