"""The state database: file creation, migrations, records, journal, transactions."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudnic.errors import InternalError, IOFailure, NotFound
from cloudnic.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AttachmentRecord,
    Migration,
    PortRecord,
    Store,
    attachment_key,
)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "state.db")
    try:
        yield s
    finally:
        s.close()


def att(key: str = "pods/c1/eth0", network: str = "pods", state: str = "assigned", **kw) -> AttachmentRecord:
    base: dict[str, Any] = dict(key=key, network=network, container_id=key.split("/")[1], ifname="eth0",
                netns="/var/run/netns/x", state=state, port_id="p1", mode="bridge", host_ifname="tap1",
                result={"cniVersion": "1.1.0", "ips": [{"address": "10.22.0.2/24"}]}, cni_version="1.1.0")
    base.update(kw)
    return AttachmentRecord(**base)


def errors_of_threads(work: Callable[[int], None], count: int) -> list[BaseException]:
    """Run ``work(n)`` on ``count`` threads at once; what they raised."""
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:     # reported to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def port(port_id: str = "p1", state: str = "pooled", **kw) -> PortRecord:
    base: dict[str, Any] = dict(port_id=port_id, provider="standalone", network_id="pods", state=state,
                mac="02:c1:00:00:00:01", fixed_ips=(("s4", "10.22.0.2"), ("s6", "fd00::2")))
    base.update(kw)
    return PortRecord(**base)


# ---- file, pragmas, migrations ----------------------------------------------------------


def test_creates_private_dir_and_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "cloudnic" / "state.db"
    with Store(path) as s:
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert s.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert s.execute("PRAGMA synchronous").fetchone()[0] == 1      # NORMAL
        assert s.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert s.schema_version == SCHEMA_VERSION == MIGRATIONS[-1].version
        assert s.integrity_check() == "ok"


def test_reopen_keeps_data_and_version(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as s:
        s.put_attachment(att())
        s.set_meta("cluster_id", "c-1")
    with Store(tmp_path / "s.db") as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.get_attachment("pods/c1/eth0") is not None
        assert s.get_meta("cluster_id") == "c-1"
        assert s.get_meta("missing", "dflt") == "dflt"


def test_new_migration_applies_on_open_and_keeps_data(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as s:
        s.put_port(port())
    v2 = Migration(SCHEMA_VERSION + 1, "add notes", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)",
                                                     "ALTER TABLE ports ADD COLUMN note TEXT NOT NULL DEFAULT ''"))
    with Store(tmp_path / "s.db", migrations=[*MIGRATIONS, v2]) as s:
        assert s.schema_version == SCHEMA_VERSION + 1
        s.execute("INSERT INTO notes (text) VALUES ('x')")
        assert s.get_port("p1") is not None


def test_failing_migration_is_rolled_back_whole(tmp_path: Path) -> None:
    Store(tmp_path / "s.db").close()
    bad = Migration(SCHEMA_VERSION + 1, "broken", ("CREATE TABLE half (x)", "THIS IS NOT SQL"))
    with pytest.raises(IOFailure):
        Store(tmp_path / "s.db", migrations=[*MIGRATIONS, bad])
    with Store(tmp_path / "s.db") as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as s:
        s.set_meta("schema_version", "99")
    with pytest.raises(InternalError) as exc:
        Store(tmp_path / "s.db")
    assert "99" in exc.value.msg and "downgrad" in exc.value.msg and str(tmp_path / "s.db") in exc.value.msg


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    with pytest.raises(InternalError):
        Store(tmp_path / "s.db", migrations=[*MIGRATIONS, Migration(5, "gap", ())])


def test_garbage_file_is_an_io_failure_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(IOFailure) as exc:
        Store(path)
    assert str(path) in exc.value.msg


def test_memory_database_works() -> None:
    with Store(":memory:") as s:
        s.put_port(port())
        assert [p.port_id for p in s.list_ports()] == ["p1"]


# ---- attachments, ports ----------------------------------------------------------------------


def test_attachment_upsert_get_list_count_delete(store: Store) -> None:
    first = store.put_attachment(att(state="creating"))
    assert first.created_at > 0 and first.updated_at >= first.created_at
    store.put_attachment(att("other/c2/eth0", network="other"))
    second = store.put_attachment(att(state="assigned", plugged={"host": "tap1", "bridge": "br0"}))
    assert second.created_at == first.created_at
    got = store.get_attachment("pods/c1/eth0")
    assert got == second
    assert got.state == "assigned" and got.plugged == {"host": "tap1", "bridge": "br0"}
    assert got.result["ips"][0]["address"] == "10.22.0.2/24"
    assert [a.key for a in store.list_attachments()] == ["pods/c1/eth0", "other/c2/eth0"]
    assert [a.key for a in store.list_attachments("other")] == ["other/c2/eth0"]
    assert store.count_attachments() == 2 and store.count_attachments("pods") == 1
    assert store.delete_attachment("pods/c1/eth0") is True
    assert store.delete_attachment("pods/c1/eth0") is False
    assert store.get_attachment("pods/c1/eth0") is None
    assert store.count_attachments("pods") == 0


def test_attachment_pod_fields_round_trip(store: Store) -> None:
    store.put_attachment(att(pod_namespace="shop", pod_name="web-0", pod_uid="u-1"))
    got = store.get_attachment("pods/c1/eth0")
    assert got is not None
    assert (got.pod_namespace, got.pod_name, got.pod_uid) == ("shop", "web-0", "u-1")


def test_attachment_key_helper() -> None:
    assert attachment_key("pods", "abc", "eth0") == "pods/abc/eth0"


def test_bad_states_are_refused() -> None:
    with pytest.raises(InternalError, match="state 'plugged'"):
        att(state="plugged")
    with pytest.raises(InternalError, match="state 'gone'"):
        port(state="gone")


def test_unserialisable_result_is_refused_and_nothing_written(store: Store) -> None:
    with pytest.raises(InternalError, match="result"):
        store.put_attachment(att(result={"x": object()}))
    assert store.count_attachments() == 0


def test_port_upsert_filters_delete(store: Store) -> None:
    store.put_port(port("p1", state="pooled", pool_key="k1"))
    store.put_port(port("p2", state="assigned", attachment_key="pods/c1/eth0", network_id="other"))
    store.put_port(port("p3", state="pooled", pool_key="k2", data={"sg": ["a"]}))
    assert [p.port_id for p in store.list_ports()] == ["p1", "p2", "p3"]
    assert [p.port_id for p in store.list_ports(state="pooled")] == ["p1", "p3"]
    assert [p.port_id for p in store.list_ports(network_id="other")] == ["p2"]
    assert [p.port_id for p in store.list_ports(state="pooled", pool_key="k2")] == ["p3"]
    p3 = store.get_port("p3")
    assert p3 is not None
    assert p3.fixed_ips == (("s4", "10.22.0.2"), ("s6", "fd00::2")) and p3.data == {"sg": ["a"]}
    created = p3.created_at
    store.put_port(port("p3", state="assigned", attachment_key="pods/c9/eth0"))
    again = store.get_port("p3")
    assert again is not None and again.state == "assigned" and again.created_at == created
    assert store.delete_port("p3") is True and store.delete_port("p3") is False
    assert store.get_port("p3") is None


# ---- journal ---------------------------------------------------------------------------------


def test_journal_lifecycle(store: Store) -> None:
    j1 = store.journal_begin("add", "pods/c1/eth0", {"port_id": None, "step": "port"})
    j2 = store.journal_begin("del", "pods/c2/eth0", {})
    updated = store.journal_update(j1, {"port_id": "p1", "host_ifname": "tap1"})
    assert updated.data == {"port_id": "p1", "step": "port", "host_ifname": "tap1"}
    pending = store.journal_pending()
    assert [(e.id, e.op, e.key) for e in pending] == [(j1, "add", "pods/c1/eth0"),
                                                      (j2, "del", "pods/c2/eth0")]
    assert pending[0].data == updated.data
    store.journal_end(j1)
    store.journal_end(j1)
    assert [e.id for e in store.journal_pending()] == [j2]
    with pytest.raises(NotFound, match=str(j1)):
        store.journal_update(j1, {"x": 1})


def test_journal_update_is_a_shallow_merge_of_any_json_value(store: Store) -> None:
    """One UPDATE with json_set: a value replaces the old one whole (no deep merge), None is
    stored as null (not a deletion), other keys stay; keys a JSON path cannot name plainly take
    the read-merge-write path with the same result."""
    jid = store.journal_begin("ADD", "k", {"nested": {"a": 1, "b": 2}, "keep": "x", "gone": "y"})
    got = store.journal_update(jid, {"nested": {"a": 9}, "gone": None, "n": 3, "l": [1, "2"]})
    want = {"nested": {"a": 9}, "keep": "x", "gone": None, "n": 3, "l": [1, "2"]}
    assert got.data == want and store.journal_get(jid).data == want
    odd = store.journal_update(jid, {'we"ird.key': "v", "keep": "z"})
    assert odd.data == {**want, 'we"ird.key': "v", "keep": "z"} == store.journal_get(jid).data
    assert store.journal_update(jid, {}).data == odd.data
    assert store.journal_update(jid, {"keep": "w"}).updated_at >= odd.updated_at


def test_writes_with_returning_race_no_commit_of_another_thread(store: Store) -> None:
    """An upsert or journal update with RETURNING is unfinished until its row is read; read
    outside the lock, another thread's COMMIT failed ("SQL statements in progress")."""
    def writer(n: int) -> None:
        for i in range(150):
            jid = store.journal_begin("ADD", f"k{n}-{i}", {})
            store.journal_update(jid, {"port_id": f"p{n}-{i}"})
            store.put_port(port(f"p{n}-{i}"))
            with store.transaction():
                store.put_attachment(att(f"pods/c{n}-{i}/eth0"))
                store.journal_end(jid)

    assert errors_of_threads(writer, 4) == []
    assert store.count_attachments() == 600 and store.journal_pending() == []


def test_atomic_is_a_transaction_alone_and_the_enclosing_one_inside(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.journal_begin("ADD", "k1", {})
            raise RuntimeError("boom")
    assert store.journal_pending() == []          # alone: rolled back
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.journal_begin("ADD", "k2", {})
            with store.atomic():
                store.journal_begin("ADD", "k3", {})
            raise RuntimeError("boom")
    assert store.journal_pending() == []          # inside: part of the enclosing transaction
    with store.transaction():
        with store.atomic():
            store.journal_begin("ADD", "k4", {})
    assert [e.key for e in store.journal_pending()] == ["k4"]


def test_journal_ids_are_not_reused(store: Store) -> None:
    j1 = store.journal_begin("add", "k", {})
    store.journal_end(j1)
    assert store.journal_begin("add", "k", {}) > j1


# ---- transactions ------------------------------------------------------------------------------


def test_commit_attachment_and_end_journal_atomically(store: Store) -> None:
    jid = store.journal_begin("add", "pods/c1/eth0", {})
    with pytest.raises(RuntimeError), store.transaction():
        store.put_attachment(att())
        store.journal_end(jid)
        raise RuntimeError("crash between the two")
    assert store.get_attachment("pods/c1/eth0") is None
    assert [e.id for e in store.journal_pending()] == [jid]
    with store.transaction():
        store.put_attachment(att())
        store.journal_end(jid)
    assert store.get_attachment("pods/c1/eth0") is not None and store.journal_pending() == []


def test_save_writes_port_attachment_and_journal_end_together(store: Store) -> None:
    jid = store.journal_begin("add", "pods/c1/eth0", {})
    first = store.put_port(port("p1", state="pooled", data={"pool": 1}))
    store.save(port=port("p1", state="assigned", attachment_key="pods/c1/eth0"), attachment=att(port_id="p1"),
               journal_end=jid)
    row, rec = store.get_port("p1"), store.get_attachment("pods/c1/eth0")
    assert row is not None and rec is not None
    assert (row.state, row.attachment_key, row.created_at) == ("assigned", "pods/c1/eth0", first.created_at)
    assert rec.port_id == "p1" and rec.created_at > 0 and store.journal_pending() == []


def test_save_is_all_or_nothing_and_serialises_before_writing(store: Store) -> None:
    jid = store.journal_begin("add", "pods/c1/eth0", {})
    with pytest.raises(InternalError, match="result"):
        store.save(port=port("p1"), attachment=att(result={"x": object()}), journal_end=jid)
    assert store.get_port("p1") is None and [e.id for e in store.journal_pending()] == [jid]
    with pytest.raises(RuntimeError), store.transaction():
        store.save(port=port("p2"), attachment=att(port_id="p2"))
        raise RuntimeError("after the save, in the same transaction")
    assert store.get_port("p2") is None and store.get_attachment("pods/c1/eth0") is None, \
        "inside a transaction, save is that transaction"


def test_set_attachment_state_changes_the_state_alone(store: Store) -> None:
    before = store.put_attachment(att(plugged={"host": "tap1"}))
    assert store.set_attachment_state("pods/c1/eth0", "releasing") is True
    after = store.get_attachment("pods/c1/eth0")
    assert after is not None and after.state == "releasing" and after.updated_at >= before.updated_at
    assert (after.result, after.plugged, after.created_at) == (before.result, before.plugged, before.created_at)
    assert store.set_attachment_state("pods/none/eth0", "releasing") is False
    with pytest.raises(InternalError, match="constraint"):
        store.set_attachment_state("pods/c1/eth0", "nonsense")


def test_nested_transaction_rollback(store: Store) -> None:
    with store.transaction():
        store.put_port(port("outer"))
        with pytest.raises(ValueError), store.transaction():
            store.put_port(port("inner"))
            raise ValueError("inner fails")
        store.put_port(port("after"))
        assert store.in_transaction
    assert not store.in_transaction
    assert [p.port_id for p in store.list_ports()] == ["outer", "after"]

    with pytest.raises(ValueError), store.transaction():
        store.put_port(port("x1"))
        with store.transaction():
            store.put_port(port("x2"))
        raise ValueError("outer fails after inner committed its savepoint")
    assert [p.port_id for p in store.list_ports()] == ["outer", "after"]


def test_commit_and_rollback_hooks(store: Store) -> None:
    seen: list[str] = []
    with store.transaction():
        store.on_commit(lambda: seen.append("commit-1"))
        with pytest.raises(KeyError), store.transaction():
            store.on_rollback(lambda: seen.append("undo-inner"))
            store.on_commit(lambda: seen.append("never"))
            raise KeyError("x")
        with store.transaction():
            store.on_commit(lambda: seen.append("commit-2"))
            store.on_rollback(lambda: seen.append("never-undone"))
        assert seen == ["undo-inner"]
    assert seen == ["undo-inner", "commit-1", "commit-2"]
    seen.clear()
    with pytest.raises(KeyError), store.transaction():
        with store.transaction():
            store.on_rollback(lambda: seen.append("undo-a"))
        store.on_rollback(lambda: seen.append("undo-b"))
        raise KeyError("y")
    assert seen == ["undo-b", "undo-a"]
    store.on_commit(lambda: seen.append("now"))
    assert seen[-1] == "now"


def test_threads_share_one_store(store: Store) -> None:
    def work(n: int) -> None:
        for i in range(25):
            with store.transaction():
                jid = store.journal_begin("add", f"t{n}/{i}", {})
                store.put_port(port(f"t{n}-{i}"))
                store.journal_end(jid)

    assert errors_of_threads(work, 8) == []
    assert len(store.list_ports()) == 200 and store.journal_pending() == []
    assert store.integrity_check() == "ok"


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    s.close()
    s.close()
    with pytest.raises(InternalError, match="closed"):
        s.list_ports()


def test_background_checkpoints_keep_the_wal_from_growing(tmp_path: Path) -> None:
    """With checkpoints on their own thread, no COMMIT checkpoints (autocheckpoint off) and
    the WAL is still copied back: after a burst of writes and one interval, a writer
    restarts the WAL from its start instead of growing it."""
    s = Store(tmp_path / "state.db")
    try:
        s.checkpoint_in_background(interval_s=0.05)
        s.checkpoint_in_background(interval_s=0.05)            # idempotent
        assert s.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        wal = tmp_path / "state.db-wal"
        for i in range(400):
            s.put_port(port(f"p{i}", data={"pad": "x" * 2000}))
        size = wal.stat().st_size
        assert size > 400 * 2000                               # no COMMIT checkpointed meanwhile
        cp = s._checkpointer
        assert cp is not None
        deadline = time.monotonic() + 10
        while cp.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cp.runs >= 2
        for i in range(400):
            s.put_port(port(f"q{i}", data={"pad": "y" * 2000}))
        assert wal.stat().st_size <= size * 1.2                # reused from the start, not appended
    finally:
        s.close()
    assert not (tmp_path / "state.db-wal").exists() or (tmp_path / "state.db-wal").stat().st_size == 0
    again = Store(tmp_path / "state.db")
    try:
        assert len(again.list_ports()) == 800
    finally:
        again.close()
