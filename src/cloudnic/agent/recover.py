"""Crash recovery at start: finish or undo what the journal says was under way, then
reconcile the provider's ports owned by this node with the store."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

from cloudnic.agent import convert
from cloudnic.agent.service import Service, open_netns
from cloudnic.dataplane.base import Attachment
from cloudnic.errors import CNIError, TryAgainLater
from cloudnic.pool.records import REFILL_OP
from cloudnic.store import JournalEntry, Store

log = logging.getLogger("cloudnic.recover")


def _undo_add(svc: Service, entry: JournalEntry) -> None:
    """An ADD that never committed: remove its links and its port."""
    rt = svc.rt
    data = entry.data
    rec = rt.store.get_attachment(entry.key)
    if rec is not None and rec.state == "assigned":
        rt.store.journal_end(entry.id)      # committed after all (cannot happen: same transaction)
        return
    network = data.get("network", "")
    ifname = entry.key.rsplit("/", 1)[-1]
    fd = open_netns(data.get("netns", ""))
    try:
        if network in svc.cfg.networks:
            att = Attachment(key=entry.key, ifname=ifname, mac=data.get("mac", ""), mtu=0, addresses=(),
                             host_ifname=data.get("host_ifname", ""), port_id=data.get("port_id", ""),
                             network_id=data.get("provider_network_id", network))
            if rec is not None and rec.plugged:
                att = convert.attachment_from_dict(rec.plugged["attachment"])
            rt.dataplane(network).unplug(fd, att, None)
    finally:
        if fd is not None:
            os.close(fd)
    port_id = data.get("port_id")
    if port_id:
        rt.provider.delete_ports([port_id])
    # a pool hit records its port "assigned" to the key before the journal learns the port
    # id (a kill at add:port-created): nothing was plugged, so the port goes back to its pool
    repooled = [] if port_id else [
        row for row in rt.store.list_ports(state="assigned")
        if row.attachment_key == entry.key and row.pool_key and (rec is None or rec.port_id != row.port_id)]
    with rt.store.transaction():
        if port_id:
            rt.store.delete_port(port_id)
        for row in repooled:
            rt.store.put_port(replace(row, state="pooled", attachment_key="", updated_at=time.time()))
        if rec is not None:
            rt.store.delete_attachment(entry.key)
        rt.store.journal_end(entry.id)
    log.info("recovered: undid an unfinished ADD", extra={
        "key": entry.key, "port": port_id, "repooled": [r.port_id for r in repooled]})


def _finish_del(svc: Service, entry: JournalEntry) -> None:
    rt = svc.rt
    rec = rt.store.get_attachment(entry.key)
    if rec is None:
        port_id = entry.data.get("port_id")
        if port_id:
            rt.provider.delete_ports([port_id])
            rt.store.delete_port(port_id)
        rt.store.journal_end(entry.id)
        return
    fd = open_netns(rec.netns)
    try:
        svc.release_sync(replace(rec, state="releasing"), fd, entry.id)
    finally:
        if fd is not None:
            os.close(fd)
    log.info("recovered: finished an interrupted DEL", extra={"key": entry.key})


def reconcile_ports(svc: Service) -> int:
    """Delete provider ports owned by this node that the store does not know (leaks)."""
    rt = svc.rt
    known = {p.port_id for p in rt.store.list_ports()}
    try:
        owned = rt.provider.list_owned_ports(svc.cfg.cluster_id, svc.cfg.node_name)
    except TryAgainLater as e:      # the provider is unreachable: start anyway, the periodic audit checks later
        log.warning("cannot list the provider's ports at start; leaked ports are looked for by the periodic audit",
                    extra={"error": str(e)})
        return 0
    leaked = [p.id for p in owned if p.id not in known]
    if leaked:
        rt.provider.delete_ports(leaked)
        log.warning("deleted provider ports unknown to the store", extra={"ports": leaked})
    return len(leaked)


def recover(svc: Service) -> dict[str, float]:
    """Run at start, before the socket accepts requests: the journal, then the pools
    (rebuilt from the store and the provider), then the provider's leaked ports."""
    # links a crashed agent had buried but not yet deleted (deferred delete) go first
    report: dict[str, float] = {"graveyards_reaped": sum(dp.reap_now() for dp in svc.rt.dataplanes().values())}
    in_flight = in_flight_until(svc)
    report.update(recover_journal(svc))
    pools = svc.rt.start_pools()
    report["pool_keys"] = int(pools.get("keys", 0))
    report["leaked_ports_deleted"] = reconcile_ports(svc)
    recheck_at = plan_recheck(svc.rt.store, in_flight, time.time())
    if recheck_at:
        report["recheck_at"] = recheck_at
    return report


RECHECK_MARGIN_S = 2.0
RECHECK_META = "recheck_at"      # store meta: the post-recovery recheck still owed (wall time; 0 none)


def plan_recheck(store: Store, in_flight: float, now: float) -> float:
    """The post-recovery recheck this start owes, persisted until it has run; 0 for none.

    Owed: one for the creates in flight at this kill (``in_flight``), and one an earlier start
    scheduled but never ran (killed again before it). One whose time has passed is settled by
    the reconcile this start has just done, so only a future one is kept."""
    stored = float(store.get_meta(RECHECK_META) or 0.0)
    due = max(in_flight, stored)
    if due <= now:
        if stored:
            store.set_meta(RECHECK_META, "0")
        return 0.0
    store.set_meta(RECHECK_META, repr(due))
    return due


def recheck_done(store: Store) -> None:
    store.set_meta(RECHECK_META, "0")


def in_flight_until(svc: Service) -> float:
    """When a port create the previous agent may have had in flight is settled for sure.

    A SIGKILLed agent can leave a create request (an ADD's port, a pool refill's bulk) in
    the provider's hands: the server may commit that port *after* this start listed the
    node's ports, and the journal never learned its id. Such a request cannot outlive
    its own client timeout (a slower server is the ordinary timed-out create, which the
    periodic audit covers), so one more reconcile after that instant finds its port.
    0 when nothing was in flight or the provider makes no remote calls."""
    timeout = float(getattr(getattr(svc.rt.provider, "settings", None), "timeout_s", 0.0) or 0.0)
    if timeout <= 0:
        return 0.0
    starts = [e.created_at for e in svc.rt.store.journal_pending()
              if e.op == REFILL_OP or (e.op == "ADD" and not e.data.get("port_id"))]
    return max(starts) + timeout + RECHECK_MARGIN_S if starts else 0.0


def recover_journal(svc: Service) -> dict[str, int]:
    undone = finished = failed = 0
    for entry in svc.rt.store.journal_pending():
        if entry.op not in ("ADD", "DEL"):     # the pools' own entries: pool.rebuild() ends them
            continue
        try:
            if entry.op == "ADD":
                _undo_add(svc, entry)
                undone += 1
            else:
                _finish_del(svc, entry)
                finished += 1
        except CNIError as e:
            failed += 1
            log.error("recovery step failed; will retry at the next start",
                      extra={"key": entry.key, "op": entry.op, "error": str(e)})
    return {"adds_undone": undone, "dels_finished": finished, "failed": failed}
