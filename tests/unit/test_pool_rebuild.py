"""Pools after a restart: reload from the store, reconcile with the provider's owned ports,
adopt or delete strays, recover interrupted refills from the journal."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudnic.pool import REFILL_OP, PoolKey, PoolManager, PoolPolicy, pool_port_name
from cloudnic.providers.base import FixedIP, Port, PortSpec
from cloudnic.store import AttachmentRecord, Store
from tests.unit.test_pool_fakes import (
    BLUE,
    CLUSTER,
    DEFAULT,
    NODE,
    OWNER_TAGS,
    RED,
    FakeParker,
    FakeProvider,
    make_manager,
    open_store,
    spec_for,
)

POLICY = PoolPolicy(min_ready=3, max_idle=4, batch=3)
POOL_NAME = pool_port_name(CLUSTER, NODE)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from open_store(tmp_path)


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


def restart(provider: FakeProvider, tmp_path: Path, parker: FakeParker | None = None,
            policies: dict[PoolKey, PoolPolicy] | None = None) -> tuple[PoolManager, Store]:
    """A new manager on the same store file (the agent restarted)."""
    store = Store(tmp_path / "state.db")
    return make_manager(provider, store, policies=policies or {BLUE: POLICY, RED: POLICY},
                        parker=parker or FakeParker()), store


def stray(provider: FakeProvider, n: int, *, sgs: tuple[str, ...] = ("sg-blue",), name: str = POOL_NAME,
          tags: tuple[str, ...] = OWNER_TAGS, subnet: str = "s1") -> Port:
    return provider.add_foreign(Port(
        id=f"stray-{n}", network_id="net-1", mac=f"02:aa:00:00:00:{n:02x}",
        fixed_ips=(FixedIP(subnet, ipaddress.ip_address(f"10.9.0.{n}")),), name=name, status="ACTIVE",
        security_groups=sgs, tags=tags, host_id=NODE))


def ready(mgr: PoolManager, key: PoolKey) -> int:
    return next((s["ready"] for s in mgr.stats() if s["key"] == key.label), 0)


def test_restart_reloads_the_pool_and_reparks_without_leaks_or_duplicates(tmp_path: Path,
                                                                          provider: FakeProvider) -> None:
    first, store = restart(provider, tmp_path)
    first.prewarm([BLUE])
    taken = first.acquire(BLUE, attachment_key="pods/c1/eth0")
    assert taken is not None
    store.close()
    parker = FakeParker()
    mgr, store = restart(provider, tmp_path, parker)
    try:
        creates = provider.calls["create_ports"]
        report = mgr.rebuild([BLUE])
        assert (report.loaded, report.kept, report.adopted, report.deleted, report.dropped) == (2, 2, 0, 0, 0)
        assert report.provider_error == ""
        assert parker.parked == set(provider.ports) - {taken.id}
        assert len(provider.ports) == 3 and provider.calls["create_ports"] == creates
        before = provider.total_calls()
        got = {p.id for p in (mgr.acquire(BLUE), mgr.acquire(BLUE)) if p is not None}
        assert len(got) == 2 and taken.id not in got and provider.total_calls() == before
        assert mgr.rebuild([BLUE]).loaded == 0                 # a second rebuild duplicates nothing
    finally:
        store.close()


def test_a_pooled_row_whose_port_is_gone_is_dropped_and_unparked(tmp_path: Path, provider: FakeProvider) -> None:
    first, store = restart(provider, tmp_path)
    first.prewarm([BLUE])
    store.close()
    gone = sorted(provider.ports)[0]
    provider.ports.pop(gone)
    parker = FakeParker()
    mgr, store = restart(provider, tmp_path, parker)
    try:
        report = mgr.rebuild([BLUE])
        assert report.dropped == 1 and report.kept == 2
        assert store.get_port(gone) is None and gone not in parker.parked
        assert ready(mgr, BLUE) == 2
    finally:
        store.close()


def test_owned_strays_are_adopted_until_the_pool_is_full_then_deleted(tmp_path: Path,
                                                                     provider: FakeProvider) -> None:
    first, store = restart(provider, tmp_path)
    first.prewarm([BLUE])                                 # 3 ready, max_idle 4
    store.close()
    for n in (1, 2):
        stray(provider, n)
    stray(provider, 3, sgs=("sg-unknown",))               # no key with these groups
    stray(provider, 4, tags=("cloudnic:cluster=c1", "cloudnic:node=other"))   # another node's: untouched
    mgr, store = restart(provider, tmp_path)
    try:
        report = mgr.rebuild([BLUE])
        assert report.adopted == 1 and report.deleted == 2
        assert ready(mgr, BLUE) == 4
        assert "stray-4" in provider.ports and "stray-3" not in provider.ports
        adopted = {"stray-1", "stray-2"} & {r.port_id for r in store.list_ports(state="pooled")}
        assert len(adopted) == 1 and len({"stray-1", "stray-2"} & set(provider.ports)) == 1
    finally:
        store.close()


def test_strays_for_an_unknown_key_are_deleted(tmp_path: Path, provider: FakeProvider) -> None:
    stray(provider, 1, sgs=("sg-red",))
    mgr, store = restart(provider, tmp_path, policies={BLUE: POLICY})
    try:
        report = mgr.rebuild([BLUE])
        assert report.deleted == 1 and provider.ports == {}
    finally:
        store.close()


def test_ports_of_live_attachments_and_open_adds_are_left_alone(tmp_path: Path, provider: FakeProvider) -> None:
    stray(provider, 1, name="shop/web-1")
    stray(provider, 2, name="shop/web-2")
    _, store = restart(provider, tmp_path)
    store.put_attachment(AttachmentRecord(
        key="pods/c1/eth0", network="pods", container_id="c1", ifname="eth0", netns="/x", state="assigned",
        port_id="stray-1", mode="bridge", host_ifname="tap1", result={}, cni_version="1.1.0"))
    store.journal_begin("ADD", "pods/c2/eth0", {"port_id": "stray-2"})
    store.close()
    mgr, store = restart(provider, tmp_path)
    try:
        report = mgr.rebuild([BLUE])
        assert report.adopted == 0 and report.deleted == 0
        assert {"stray-1", "stray-2"} <= set(provider.ports)
        assert [e.op for e in store.journal_pending()] == ["ADD"]
    finally:
        store.close()


def test_an_interrupted_refill_is_recovered_from_the_journal(tmp_path: Path, provider: FakeProvider) -> None:
    """The agent died between the bulk create and recording its ports: the intent is in the
    journal, the ports are at the provider and nowhere else."""
    first, store = restart(provider, tmp_path, policies={DEFAULT: POLICY})
    spec = first.refill_spec(DEFAULT)
    store.journal_begin(REFILL_OP, DEFAULT.encode(), {"count": 3})
    provider.create_ports(spec, 3)
    store.close()
    mgr, store = restart(provider, tmp_path, policies={DEFAULT: POLICY})
    try:
        report = mgr.rebuild([DEFAULT])
        assert report.adopted == 3 and report.deleted == 0 and report.refills_resolved == 1
        assert store.journal_pending() == []
        assert ready(mgr, DEFAULT) == 3
        assert {r.port_id for r in store.list_ports(state="pooled")} == set(provider.ports)
        mgr.maintain()
        assert provider.calls["create_ports"] == 1             # full already: no second create
    finally:
        store.close()


def test_a_lost_create_reply_is_reconciled_without_leak_or_duplicate(store: Store, provider: FakeProvider) -> None:
    mgr = make_manager(provider, store, policies={BLUE: POLICY})
    provider.lose_create_reply = True
    assert mgr.refill(BLUE) == 0                                    # timed out, but 3 ports exist
    assert len(provider.ports) == 3 and [e.op for e in store.journal_pending()] == [REFILL_OP]
    assert mgr.needs_reconcile
    provider.lose_create_reply = False
    stray(provider, 9, name="shop/web-9")                # an on-demand ADD under way: not the pool's
    mgr.maintain()
    assert store.journal_pending() == [] and not mgr.needs_reconcile
    assert ready(mgr, BLUE) == 3
    assert provider.create_counts == [3]                 # adopted, not re-created
    assert "stray-9" in provider.ports and store.get_port("stray-9") is None


def test_rebuild_with_the_provider_down_serves_from_the_store(tmp_path: Path, provider: FakeProvider) -> None:
    first, store = restart(provider, tmp_path)
    first.prewarm([BLUE])
    store.close()
    gone = sorted(provider.ports)[-1]         # the newest: hits are served oldest first
    provider.ports.pop(gone)
    provider.down = True
    mgr, store = restart(provider, tmp_path)
    try:
        report = mgr.rebuild([BLUE])
        assert report.loaded == 3 and report.provider_error and mgr.needs_reconcile
        assert mgr.acquire(BLUE) is not None                    # hits work during the outage
        provider.down = False
        mgr.clock.advance(120)  # type: ignore[attr-defined]
        mgr.maintain()
        assert not mgr.needs_reconcile
        assert store.get_port(gone) is None
        assert {r.port_id for r in store.list_ports()} == set(provider.ports)
    finally:
        store.close()


def test_deleting_rows_are_finished_at_rebuild(tmp_path: Path, provider: FakeProvider) -> None:
    first, store = restart(provider, tmp_path, policies={BLUE: PoolPolicy(min_ready=2, max_idle=2, batch=2)})
    first.prewarm([BLUE])
    extra = provider.create_ports(PortSpec(network_id="net-1", subnet_ids=("s1",), tags=OWNER_TAGS), 1)[0]
    provider.down = True
    assert first.release(extra, BLUE) == "deleting"
    provider.down = False
    store.close()
    mgr, store = restart(provider, tmp_path, policies={BLUE: PoolPolicy(min_ready=2, max_idle=2, batch=2)})
    try:
        report = mgr.rebuild([BLUE])
        assert report.deletes_retried == 1
        assert extra.id not in provider.ports and store.get_port(extra.id) is None
    finally:
        store.close()


def test_rebuild_learns_group_ids_so_named_groups_match(tmp_path: Path, provider: FakeProvider) -> None:
    """Keys may name groups ("default"); the provider reports ids. Ports seen for a key teach
    the pool the ids, so strays with those ids are adopted and releases need no update."""
    key = PoolKey("net-1", "s1", ("default",))

    def spec(k: PoolKey) -> PortSpec:
        return PortSpec(network_id=k.network_id, subnet_ids=("s1",), security_groups=("sg-0001",))

    store = Store(tmp_path / "state.db")
    try:
        mgr = make_manager(provider, store, policies={key: PoolPolicy(min_ready=1, max_idle=3, batch=1)}, spec=spec)
        mgr.prewarm([key])
        stray(provider, 1, sgs=("sg-0001",))
        mgr.needs_reconcile = True
        mgr.maintain()
        assert ready(mgr, key) == 2
        port = mgr.acquire(key)
        assert port is not None
        before = provider.calls["update_port"]
        assert mgr.release(port, key) == "pooled" and provider.calls["update_port"] == before
    finally:
        store.close()


def test_reconcile_does_not_run_during_a_refill(store: Store, provider: FakeProvider) -> None:
    import threading

    mgr = make_manager(provider, store, policies={BLUE: POLICY})
    provider.create_gate = threading.Event()
    t = threading.Thread(target=mgr.refill, args=(BLUE,))
    t.start()
    deadline = time.monotonic() + 5
    while provider.calls["create_ports"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not mgr.begin_sweep()
    provider.create_gate.set()
    t.join(5)
    assert mgr.begin_sweep()
    mgr.end_sweep()
    assert spec_for(BLUE).network_id == "net-1"


def test_a_reconcile_against_a_down_provider_backs_off(tmp_path: Path, provider: FakeProvider) -> None:
    provider.down = True
    mgr, store = restart(provider, tmp_path)
    try:
        assert mgr.rebuild([BLUE]).provider_error
        assert provider.calls["list_owned_ports"] == 1
        for _ in range(5):
            mgr.maintain()
        assert provider.calls["list_owned_ports"] == 1           # not once per round
        mgr.clock.advance(2)  # type: ignore[attr-defined]
        mgr.maintain()
        assert provider.calls["list_owned_ports"] == 2
        provider.down = False
        mgr.clock.advance(120)  # type: ignore[attr-defined]
        mgr.maintain()
        assert not mgr.needs_reconcile and provider.calls["list_owned_ports"] == 3
    finally:
        store.close()


def test_a_store_failure_after_the_create_is_adopted_later(store: Store, provider: FakeProvider,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudnic.errors import IOFailure

    mgr = make_manager(provider, store, policies={BLUE: POLICY})

    def broken(rec: object) -> None:
        raise IOFailure("state database: disk full")

    with monkeypatch.context() as m:
        m.setattr(store, "put_port", broken)
        assert mgr.refill(BLUE) == 0
    assert len(provider.ports) == 3 and mgr.needs_reconcile
    assert [e.op for e in store.journal_pending()] == [REFILL_OP]
    mgr.clock.advance(120)  # type: ignore[attr-defined]
    mgr.maintain()
    assert ready(mgr, BLUE) == 3 and provider.create_counts == [3]
    assert {r.port_id for r in store.list_ports(state="pooled")} == set(provider.ports)
    assert store.journal_pending() == []
