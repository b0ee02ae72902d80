"""The post-recovery recheck survives a second kill: it is kept in the store until it has run."""

from __future__ import annotations

from pathlib import Path

from cloudnic.agent.recover import RECHECK_META, plan_recheck, recheck_done
from cloudnic.store import Store


def test_an_owed_recheck_is_persisted_and_owed_again_after_another_kill(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    try:
        assert plan_recheck(store, 0.0, now=1000.0) == 0.0                 # nothing in flight, nothing owed
        assert plan_recheck(store, 1030.0, now=1000.0) == 1030.0           # creates in flight until 1030
        assert float(store.get_meta(RECHECK_META) or 0) == 1030.0
        # killed again at 1010, before the recheck ran: the journal no longer shows the create,
        # but the store still owes the recheck
        assert plan_recheck(store, 0.0, now=1010.0) == 1030.0
        # a later in-flight create extends it; an earlier one does not shorten it
        assert plan_recheck(store, 1050.0, now=1012.0) == 1050.0
        assert plan_recheck(store, 1020.0, now=1014.0) == 1050.0
        recheck_done(store)
        assert plan_recheck(store, 0.0, now=1016.0) == 0.0
    finally:
        store.close()


def test_an_overdue_recheck_is_settled_by_the_start_reconcile(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    try:
        assert plan_recheck(store, 1030.0, now=1000.0) == 1030.0
        # the agent stays down past 1030: the reconcile this start ran came after the deadline
        assert plan_recheck(store, 0.0, now=2000.0) == 0.0
        assert float(store.get_meta(RECHECK_META) or 0) == 0.0
    finally:
        store.close()
