"""Rebuilding the pools after a restart and reconciling them with the provider.

``rebuild`` (at start, before the agent serves) first reloads every ``pooled`` store row
into memory and re-parks it, with no provider call, so that pool hits work even when the
provider is down. Then ``reconcile`` compares the store with the provider's ports owned
by this node (``list_owned_ports``, i.e. by tags, or names without the tag extension):

* a ``pooled`` row whose port still exists is kept (refreshed from the provider);
* a ``pooled`` row whose port is gone is dropped (and its parked host side removed);
* a ``deleting`` row is deleted again, or dropped when the port is already gone;
* an owned port the store does not know and nothing references (no attachment, no
  journal entry) is adopted into its pool: the key of an interrupted ``POOL_REFILL``
  first, else a known key with the same network, subnet and security groups. It is
  deleted when that pool is full or no key fits;
* open ``POOL_REFILL`` intents (a crash or a timeout during a bulk create) are ended:
  whatever that create made has just been adopted or deleted.

After start (``startup=False``, run by ``maintain`` after an uncertain refill) only
unknown ports carrying the pool's own name are considered, because an on-demand port of
an ADD under way is also unknown to the store for a moment. A reconcile never overlaps
a refill (``begin_sweep``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cloudnic.errors import CNIError
from cloudnic.providers.base import Port
from cloudnic.store import JournalEntry, PortRecord

from .key import PoolKey
from .records import REFILL_OP, port_fits, port_from_record, record_for

if TYPE_CHECKING:
    from .manager import PoolManager

log = logging.getLogger("cloudnic.pool")


@dataclass
class RebuildReport:
    loaded: int = 0             # pooled rows loaded from the store into memory (re-parked)
    kept: int = 0               # pooled rows whose port the provider still has
    dropped: int = 0            # pooled or deleting rows whose port is gone
    adopted: int = 0            # owned ports unknown to the store, taken into a pool
    deleted: int = 0            # owned ports unknown to the store, deleted (pool full / no key)
    deletes_retried: int = 0    # deleting rows deleted again
    refills_resolved: int = 0   # interrupted POOL_REFILL intents ended
    park_errors: int = 0        # pooled ports that could not be parked (deleted instead)
    provider_error: str = ""    # the provider could not be asked: reconcile retried by maintain

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rebuild(mgr: PoolManager, keys: Iterable[PoolKey] = ()) -> RebuildReport:
    report = RebuildReport()
    with mgr.lock:
        for key in keys:
            mgr.state(key)
        known = {pid for st in mgr.states() for pid in st.ids()}
    unparkable: dict[str, list[Port]] = {}
    for row in mgr.store.list_ports(state="pooled"):
        if not row.pool_key or row.port_id in known:
            continue
        key = PoolKey.decode(row.pool_key)
        port = port_from_record(row)
        try:
            mgr.parker.park(port)
        except CNIError as e:
            log.warning("cannot re-park a pooled port; deleting it", extra={"port": port.id, "error": str(e)})
            report.park_errors += 1
            unparkable.setdefault(row.pool_key, []).append(port)
            continue
        with mgr.lock:
            st = mgr.state(key)
            st.ready.append(mgr.ready_entry(port, row.provider, mgr.policy(key)))
            mgr.learn_sgs(st, [port])
        report.loaded += 1
    for pool_key, ports in unparkable.items():
        mgr.delete_ports(ports, pool_key)
    reconcile(mgr, startup=True, report=report)
    log.info("pools rebuilt", extra=report.as_dict())
    return report


def reconcile(mgr: PoolManager, *, startup: bool, report: RebuildReport | None = None) -> RebuildReport:
    report = report if report is not None else RebuildReport()
    if not mgr.begin_sweep():
        mgr.needs_reconcile = True
        return report
    try:
        try:
            owned = {p.id: p for p in mgr.provider.list_owned_ports(mgr.cluster_id, mgr.node)}
        except CNIError as e:
            report.provider_error = str(e)
            with mgr.lock:
                mgr.needs_reconcile = True
                mgr.reconcile_backoff.failed(mgr.clock(), mgr.rng)
            log.warning("cannot list this node's ports; pools serve from the store until the provider answers",
                        extra={"error": str(e)})
            return report
        pending = [e for e in mgr.store.journal_pending() if e.op == REFILL_OP]
        rows = mgr.store.list_ports()
        _check_rows(mgr, rows, owned, startup, report)
        referenced = _referenced(mgr, rows)
        unknown = [p for p in owned.values() if p.id not in referenced]
        if not startup:
            unknown = [p for p in unknown if p.name == mgr.port_name]
        _adopt_or_delete(mgr, unknown, _refill_keys(pending), report)
        for entry in pending:
            mgr.store.journal_end(entry.id)
            report.refills_resolved += 1
        with mgr.lock:
            mgr.needs_reconcile = False
            mgr.reconcile_backoff.succeeded()
        return report
    finally:
        mgr.end_sweep()


def _check_rows(mgr: PoolManager, rows: list[PortRecord], owned: dict[str, Port], startup: bool,
                report: RebuildReport) -> None:
    retry: list[PortRecord] = []
    for row in rows:
        if not row.pool_key or row.state not in ("pooled", "deleting"):
            continue
        port = owned.get(row.port_id)
        if row.state == "deleting":
            if port is None:
                mgr.store.delete_port(row.port_id)
                report.dropped += 1
            else:
                retry.append(row)
            continue
        if port is None:
            _drop(mgr, row)
            report.dropped += 1
            continue
        report.kept += 1
        if startup:
            with mgr.lock:
                for st in mgr.states():
                    for entry in st.ready:
                        if entry.port.id == port.id:
                            entry.port = port
            mgr.store.put_port(record_for(port, provider=row.provider, state="pooled", pool_key=row.pool_key))
    if retry:
        report.deletes_retried += mgr.retry_deletions()


def _drop(mgr: PoolManager, row: PortRecord) -> None:
    """A pooled row whose port is gone at the provider: forget it and its parked host side."""
    with mgr.lock:
        for st in mgr.states():
            st.take(row.port_id)
    try:
        mgr.parker.unpark(port_from_record(row))
    except CNIError as e:
        log.warning("cannot unpark a vanished pooled port", extra={"port": row.port_id, "error": str(e)})
    mgr.store.delete_port(row.port_id)
    log.warning("pooled port no longer exists at the provider; dropped", extra={"port": row.port_id})


def _referenced(mgr: PoolManager, rows: list[PortRecord]) -> set[str]:
    """Port ids the agent knows: store rows, attachments, and every journal entry's data."""
    ids = {r.port_id for r in rows}
    ids.update(a.port_id for a in mgr.store.list_attachments() if a.port_id)
    for entry in mgr.store.journal_pending():
        pid = entry.data.get("port_id")
        if isinstance(pid, str) and pid:
            ids.add(pid)
        more = entry.data.get("port_ids")
        if isinstance(more, list):
            ids.update(str(x) for x in more)
    return ids


def _refill_keys(pending: list[JournalEntry]) -> set[PoolKey]:
    keys = set()
    for entry in pending:
        try:
            keys.add(PoolKey.decode(entry.key))
        except CNIError:
            log.warning("POOL_REFILL intent with an unreadable key", extra={"key": entry.key, "id": entry.id})
    return keys


def match_key(mgr: PoolManager, port: Port, refill_keys: set[PoolKey]) -> PoolKey | None:
    """The pool an unknown owned port belongs to, or None.

    Security groups must be exactly the key's (as the provider spells them once learned).
    A key without explicit groups (the provider's default) only takes ports that an
    interrupted refill of that very key created (pool name), because the default
    group's id is unknown until a port of it has been seen."""
    sgs = tuple(sorted(port.security_groups))
    with mgr.lock:
        learned = {st.key: st.sg_ids for st in mgr.states()}
    best: tuple[tuple[bool, bool], PoolKey] | None = None
    for key in set(learned) | refill_keys:
        if not port_fits(port, key):
            continue
        ids = learned.get(key)
        if ids is not None or key.security_groups:
            if sgs != (ids if ids is not None else key.security_groups):
                continue
        elif key not in refill_keys or port.name != mgr.port_name:
            continue
        rank = (key in refill_keys, key.subnet_id is not None)
        if best is None or rank > best[0]:
            best = (rank, key)
    return None if best is None else best[1]


def _adopt_or_delete(mgr: PoolManager, ports: list[Port], refill_keys: set[PoolKey],
                     report: RebuildReport) -> None:
    doomed: list[Port] = []
    provider = mgr.provider_name()
    for port in ports:
        key = match_key(mgr, port, refill_keys)
        policy = mgr.policy(key) if key is not None else None
        if key is None or policy is None:
            doomed.append(port)
            continue
        with mgr.lock:
            st = mgr.state(key)
            room = policy.enabled and st.occupancy < policy.max_idle
            if room:
                st.returning += 1
        if not room:
            doomed.append(port)
            continue
        try:
            mgr.parker.park(port)
            mgr.store.put_port(record_for(port, provider=provider, state="pooled", pool_key=key.encode()))
        except CNIError as e:
            log.warning("cannot adopt an owned port; deleting it", extra={"port": port.id, "error": str(e)})
            report.park_errors += 1
            doomed.append(port)
            with mgr.lock:
                st.returning -= 1
            continue
        with mgr.lock:
            st.returning -= 1
            st.ready.append(mgr.ready_entry(port, provider, policy))
            mgr.learn_sgs(st, [port])
        report.adopted += 1
        log.info("adopted an owned port into its pool", extra={"port": port.id, "key": key.label})
    if doomed and mgr.delete_ports(doomed, ""):
        report.deleted += len(doomed)
        log.info("deleted owned ports unknown to the store", extra={"ports": [p.id for p in doomed]})
