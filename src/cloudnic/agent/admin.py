"""Admin requests from the CLI: health, status, attachments, address use."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cloudnic import __version__

if TYPE_CHECKING:
    from cloudnic.agent.server import Server


async def handle(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    op = body.get("op")
    svc = server.service
    rt = svc.rt
    if op == "ping":
        return {"ok": True, "ready": svc.ready}
    if op == "status":
        health = await svc.run(rt.provider.health)
        usage = await svc.run(getattr(rt.provider, "usage", list))
        return {
            "ok": True, "version": __version__, "ready": svc.ready, "node": svc.cfg.node_name,
            "recheck_pending_s": round(max(0.0, svc.recheck_at - time.time()), 1) if svc.recheck_at else 0.0,
            "cluster_id": svc.cfg.cluster_id, "uptime_s": round(time.time() - server.started, 1),
            "requests_served": server.served, "inflight": server.inflight,
            "store": {"path": str(svc.cfg.db_path), "schema_version": rt.store.schema_version,
                      "attachments": await svc.run(rt.store.count_attachments),
                      "pending_journal": len(await svc.run(rt.store.journal_pending))},
            "provider": {"type": svc.cfg.provider, "healthy": health.ok, "detail": health.detail},
            "networks": [{"name": n.name, "mode": n.mode, "mtu": n.mtu} for n in svc.cfg.networks.values()],
            "usage": usage,
        }
    if op == "audit":
        from cloudnic.agent.audit import audit
        return await audit(svc, bool(body.get("fix")))
    if op == "ports":
        rows = await svc.run(rt.store.list_ports)
        return {"ok": True, "ports": [
            {"port_id": r.port_id, "provider": r.provider, "network_id": r.network_id, "state": r.state,
             "mac": r.mac, "ips": [ip for _subnet, ip in r.fixed_ips], "pool_key": r.pool_key,
             "attachment": r.attachment_key, "updated_at": r.updated_at} for r in rows]}
    if op == "pools":
        return {"ok": True, "pools": rt.pools.stats() if rt.pools is not None else []}
    if op == "metrics":
        return {"ok": True, "text": server.metrics.render()}
    if op == "attachments":
        recs = await svc.run(rt.store.list_attachments)
        out = []
        for r in recs:
            ips = [ip.get("address", "") for ip in r.result.get("ips", [])] if r.result else []
            ifaces = r.result.get("interfaces", []) if r.result else []
            mac = next((i.get("mac", "") for i in ifaces if i.get("sandbox")), "")
            out.append({"key": r.key, "network": r.network, "container_id": r.container_id, "ifname": r.ifname,
                        "netns": r.netns, "state": r.state, "port_id": r.port_id, "mode": r.mode,
                        "host_ifname": r.host_ifname, "ips": ips, "mac": mac, "pod_namespace": r.pod_namespace,
                        "pod_name": r.pod_name, "created_at": r.created_at})
        return {"ok": True, "attachments": out}
    return {"ok": False, "error": f"unknown admin op {op!r}; known: ping, status, attachments, ports, pools, "
                                  "metrics, audit"}
