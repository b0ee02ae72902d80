"""cloudnic-agent: the node daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from cloudnic import __version__
from cloudnic.agent import log as agentlog
from cloudnic.agent.audit import periodic, recheck
from cloudnic.agent.config import AgentConfig, load_config
from cloudnic.agent.metrics import Metrics, MetricsServer, provider_call_samples, samples_from_stats
from cloudnic.agent.recover import recover
from cloudnic.agent.runtime import Runtime
from cloudnic.agent.server import Server
from cloudnic.agent.service import Service
from cloudnic.errors import CNIError

log = logging.getLogger("cloudnic.agent")


async def run(cfg: AgentConfig) -> int:
    rt = Runtime(cfg)
    svc = Service(cfg, rt)
    metrics = Metrics()
    metrics.gauge("cloudnic_ready", lambda: 1.0 if svc.ready else 0.0)
    metrics.gauge("cloudnic_attachments", lambda: float(rt.store.count_attachments()))
    metrics.gauge("cloudnic_journal_pending", lambda: float(len(rt.store.journal_pending())))
    metrics.source(lambda: samples_from_stats("cloudnic_network_addresses", getattr(
        rt.provider, "usage", list)(), ("network", "subnet"), {"used": "gauge", "free": "gauge", "total": "gauge"}))
    metrics.source(lambda: samples_from_stats("cloudnic_pool", rt.pools.stats() if rt.pools else [], ("key",), {
        "ready": "gauge", "target": "gauge", "hits": "counter", "misses": "counter", "rekeys": "counter",
        "refills": "counter", "refill_errors": "counter", "deleted": "counter"}))
    metrics.source(lambda: provider_call_samples(rt.provider))
    server = Server(svc, cfg.socket, cfg.max_request_bytes, metrics, threads=cfg.workers)
    http = MetricsServer(metrics, cfg.metrics_listen, lambda: svc.ready) if cfg.metrics_listen else None
    reconciler: asyncio.Future[None] | None = None
    rechecker: asyncio.Future[None] | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        report = await svc.run(recover, svc)
        log.info("recovery done", extra=report)
        server.bind()
        if http is not None:
            await http.start()
        svc.ready = True
        if cfg.reconcile_interval_s > 0:
            reconciler = asyncio.ensure_future(periodic(svc, cfg.reconcile_interval_s))
        if report.get("recheck_at"):
            svc.recheck_at = float(report["recheck_at"])
            rechecker = asyncio.ensure_future(recheck(svc))
        log.info("cloudnic-agent serving", extra={"socket": cfg.socket, "version": __version__,
                                                   "networks": list(cfg.networks), "node": cfg.node_name})
        await server.serve(stop)
        log.info("shutting down")
        await server.drain(timeout=cfg.request_timeout_s)
    finally:
        for task in (reconciler, rechecker):
            if task is not None:
                task.cancel()
        if http is not None:
            await http.stop()
        server.close()
        rt.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cloudnic-agent", description="cloudnic node agent")
    p.add_argument("--config", default="/etc/cloudnic/agent.toml", help="agent config file (TOML)")
    p.add_argument("--state-dir", help="override agent.state_dir (store, logs)")
    p.add_argument("--socket", help="override agent.socket")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--check-config", action="store_true", help="validate the config and exit")
    p.add_argument("--version", action="version", version=f"cloudnic-agent {__version__}")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, state_dir=args.state_dir, socket_path=args.socket)
    except CNIError as e:
        print(f"cloudnic-agent: {e}", file=sys.stderr)
        return 2
    agentlog.setup(args.log_level or cfg.log_level, cfg.log_file)
    if args.check_config:
        if cfg.provider == "neutron":       # the provider's own keys and its secret files
            from cloudnic.providers.neutron import settings_from_table
            try:
                settings_from_table(cfg.provider_settings)
            except CNIError as e:
                print(f"cloudnic-agent: {e}", file=sys.stderr)
                return 2
        print(f"config ok: {len(cfg.networks)} network(s), provider {cfg.provider}")
        return 0
    try:
        return asyncio.run(run(cfg))
    except CNIError as e:
        log.error("cannot start", extra={"error": str(e)})
        print(f"cloudnic-agent: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
