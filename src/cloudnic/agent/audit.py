"""`cloudnic audit`: compare the store, the kernel and the provider; `--fix` repairs.

Three views of one truth: attachments and ports in the store, host links in the node's
network namespace, and the ports the provider says this node owns. Repairs run with the
service gate held exclusive, so no ADD or DEL is half-way while they look.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from cloudnic.agent.recover import recheck_done
from cloudnic.agent.service import Service, open_netns
from cloudnic.dataplane.base import Attachment
from cloudnic.errors import CNIError, TryAgainLater

log = logging.getLogger("cloudnic.audit")


@dataclass(frozen=True)
class Finding:
    kind: str          # orphan-link | missing-link | leaked-port | missing-port | stale-port-row
    subject: str       # the link name, port id or attachment key
    detail: str
    repair: str        # what --fix does ("" = reported only)
    fixed: bool = False


def _views(svc: Service) -> tuple[list[Any], list[Any], list[Any], dict[str, str]]:
    rt = svc.rt
    atts = rt.store.list_attachments()
    rows = rt.store.list_ports()
    owned = rt.provider.list_owned_ports(svc.cfg.cluster_id, svc.cfg.node_name)
    links: dict[str, str] = {}
    for name, dp in rt.dataplanes().items():
        for link in dp.host_objects():
            links.setdefault(link, name)
    return atts, rows, owned, links


def audit_sync(svc: Service, fix: bool) -> dict[str, Any]:
    rt = svc.rt
    atts, rows, owned, links = _views(svc)
    findings: list[Finding] = []
    expected_links = {a.host_ifname: a for a in atts if a.host_ifname}
    owned_ids = {p.id for p in owned}
    row_ids = {r.port_id for r in rows}
    journal_ports = {e.data.get("port_id") for e in rt.store.journal_pending()}

    for link, network in sorted(links.items()):
        if link not in expected_links:
            f = Finding("orphan-link", link, f"host link of network {network!r} with no attachment record",
                        "delete the link")
            if fix:
                att = Attachment(key=f"audit/{link}", ifname="", mac="", mtu=0, addresses=(), host_ifname=link)
                f = _try(f, lambda att=att, network=network: rt.dataplane(network).unplug(None, att, None))
            findings.append(f)
    for link, rec in sorted(expected_links.items()):
        if link not in links and rec.mode != "macvlan":
            findings.append(Finding("missing-link", rec.key, f"host link {link} is gone; the pod has no network",
                                    ""))
    for port in owned:
        if port.id not in row_ids and port.id not in journal_ports:
            f = Finding("leaked-port", port.id, f"provider port {port.name or port.id} ({port.mac}) owned by this "
                        "node is unknown to the store", "delete the port at the provider")
            if fix:
                f = _try(f, lambda pid=port.id: rt.provider.delete_ports([pid]))
            findings.append(f)
    atts_by_key = {a.key: a for a in atts}
    for row in rows:
        if row.port_id not in owned_ids and rt.provider.get_port(row.port_id) is None:
            rec = atts_by_key.get(row.attachment_key)
            f = Finding("missing-port", row.port_id, f"port of {row.attachment_key or 'no attachment'} no longer "
                        "exists at the provider", "release the attachment and its records")
            if fix:
                f = _try(f, lambda rec=rec, row=row: _release(svc, rec, row.port_id))
            findings.append(f)
        elif row.state == "assigned" and row.attachment_key not in atts_by_key:
            f = Finding("stale-port-row", row.port_id, f"assigned to {row.attachment_key!r}, which has no record",
                        "delete the port and its row")
            if fix:
                f = _try(f, lambda pid=row.port_id: (rt.provider.delete_ports([pid]), rt.store.delete_port(pid)))
            findings.append(f)
    return {
        "ok": True,
        "views": {"store_attachments": len(atts), "store_ports": len(rows), "kernel_links": len(links),
                  "provider_ports": len(owned)},
        "findings": [asdict(f) for f in findings],
        "fixed": fix,
    }


def _release(svc: Service, rec: Any, port_id: str) -> None:
    if rec is None:
        svc.rt.store.delete_port(port_id)
        return
    fd = open_netns(rec.netns)
    try:
        svc.release_sync(rec, fd, None)
    finally:
        if fd is not None:
            os.close(fd)


def _try(f: Finding, action: Any) -> Finding:
    try:
        action()
    except CNIError as e:
        log.warning("audit repair failed", extra={"kind": f.kind, "subject": f.subject, "error": str(e)})
        return Finding(f.kind, f.subject, f"{f.detail}; repair failed: {e}", f.repair, False)
    log.info("audit repaired", extra={"kind": f.kind, "subject": f.subject})
    return Finding(f.kind, f.subject, f.detail, f.repair, True)


SWEEP_WAIT_S = 60.0


async def audit(svc: Service, fix: bool) -> dict[str, Any]:
    if not fix:
        return await svc.run(audit_sync, svc, False)
    async with svc.gate.exclusive():      # no CNI verb runs: an ADD's new port is not mistaken for a leak
        # nor a pool refill's: the ports of a bulk create in flight are unknown to the store too
        mgr = svc.rt.pools.manager if svc.rt.pools is not None else None
        if mgr is not None:
            deadline = time.monotonic() + SWEEP_WAIT_S
            while not mgr.begin_sweep():
                if time.monotonic() >= deadline:
                    raise TryAgainLater(f"a pool refill has been under way for {SWEEP_WAIT_S:.0f} s; "
                                        "repairs wait for it: run the audit again later")
                await asyncio.sleep(0.1)
        try:
            return await svc.run(audit_sync, svc, True)
        finally:
            if mgr is not None:
                mgr.end_sweep()


async def periodic(svc: Service, interval_s: float) -> None:
    """Reconcile the three views every ``interval_s`` and repair drift (logged)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            report = await audit(svc, fix=True)
        except CNIError as e:      # the provider may be down: try again next round
            log.warning("periodic reconcile failed", extra={"error": str(e)})
            continue
        except Exception:
            log.exception("periodic reconcile crashed")
            continue
        if report["findings"]:
            log.warning("periodic reconcile repaired drift", extra={"findings": report["findings"]})


async def recheck(svc: Service) -> None:
    """The one extra reconcile recovery asked for (``recover.in_flight_until``): a create the
    killed agent had in flight may have committed after the start's own reconcile."""
    await asyncio.sleep(max(0.0, svc.recheck_at - time.time()))
    for attempt in range(5):
        try:
            report = await audit(svc, fix=True)
        except CNIError as e:          # provider down: the periodic reconcile takes over after a few tries
            log.warning("post-recovery recheck failed", extra={"error": str(e), "attempt": attempt + 1})
            await asyncio.sleep(5.0)
            continue
        log.info("post-recovery recheck done", extra={"findings": report["findings"]})
        break
    await svc.run(recheck_done, svc.rt.store)     # after 5 failures the periodic reconcile takes over
    svc.recheck_at = 0.0
