"""The operator's CLI: `cloudnic status | attachments | demo`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from cloudnic.agent import wire

DEFAULT_SOCKET = os.environ.get("CLOUDNIC_AGENT_SOCKET", "/run/cloudnic/agent.sock")


def _call(sock: str, op: str, **args: Any) -> dict[str, Any]:
    try:
        reply = wire.admin_call(sock, {"op": op, **args}, 60.0)
    except (OSError, ValueError, wire.WireError) as e:
        raise SystemExit(f"cloudnic: cannot reach cloudnic-agent at {sock}: {e}") from None
    if not reply.get("ok"):
        raise SystemExit(f"cloudnic: agent refused {op}: {reply.get('error')}")
    return reply


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*[str(c) for c in r]) for r in rows]
    return "\n".join(lines)


def _age(ts: float) -> str:
    s = max(0, int(time.time() - ts))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


def cmd_status(args: argparse.Namespace) -> int:
    st = _call(args.socket, "status")
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"agent      cloudnic-agent {st['version']} on node {st['node']} (cluster {st['cluster_id']}), "
          f"{'ready' if st['ready'] else 'NOT READY'}, up {st['uptime_s']}s, "
          f"{st['requests_served']} requests served, {st['inflight']} in flight")
    s = st["store"]
    print(f"store      {s['path']} (schema v{s['schema_version']}): {s['attachments']} attachment(s), "
          f"{s['pending_journal']} unfinished journal entr{'y' if s['pending_journal'] == 1 else 'ies'}")
    p = st["provider"]
    print(f"provider   {p['type']}: {'healthy' if p['healthy'] else 'UNHEALTHY'}"
          f"{' - ' + p['detail'] if p['detail'] else ''}")
    modes = {n["name"]: n["mode"] for n in st["networks"]}
    rows = [[u["network"], modes.get(u["network"], ""), u.get("subnet", ""), str(u["cidr"]), str(u["used"]),
             str(u["free"]), str(u["total"])] for u in st["usage"]]
    print()
    print(table(rows, ["NETWORK", "MODE", "SUBNET", "CIDR", "USED", "FREE", "USABLE"]))
    return 0


def cmd_attachments(args: argparse.Namespace) -> int:
    atts = _call(args.socket, "attachments")["attachments"]
    if args.json:
        print(json.dumps(atts, indent=2))
        return 0
    rows = [[a["container_id"][:12], a["netns"], a["ifname"], ",".join(a["ips"]), a["mac"], a["port_id"][:13],
             a["network"], a["state"], _age(a["created_at"])] for a in atts]
    print(table(rows, ["CONTAINER", "NETNS", "IFNAME", "IP", "MAC", "PORT", "NETWORK", "STATE", "AGE"]))
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    ports = _call(args.socket, "ports")["ports"]
    if args.json:
        print(json.dumps(ports, indent=2))
        return 0
    rows = [[p["port_id"], p["state"], ",".join(p["ips"]), p["mac"], p["network_id"][:13],
             p["attachment"] or "-", _age(p["updated_at"])] for p in ports]
    print(table(rows, ["PORT", "STATE", "IP", "MAC", "NETWORK", "ATTACHMENT", "SINCE"]))
    return 0


def cmd_pools(args: argparse.Namespace) -> int:
    pools = _call(args.socket, "pools")["pools"]
    if args.json:
        print(json.dumps(pools, indent=2))
        return 0
    if not pools:
        print("no warm pools are configured ([networks.NAME.pool])")
        return 0
    rows = [[p.get("label", p.get("key", "")), p.get("ready", ""), p.get("target", ""), p.get("in_flight", ""),
             p.get("hits", ""), p.get("misses", ""), p.get("rekeys", ""), p.get("refills", ""),
             p.get("refill_errors", "")] for p in pools]
    print(table(rows, ["POOL", "READY", "TARGET", "IN FLIGHT", "HITS", "MISSES", "REKEYS", "REFILLS", "ERRORS"]))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    rep = _call(args.socket, "audit", fix=args.fix)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        v = rep["views"]
        print(f"store: {v['store_attachments']} attachment(s), {v['store_ports']} port row(s); "
              f"kernel: {v['kernel_links']} host link(s); provider: {v['provider_ports']} owned port(s)")
        if not rep["findings"]:
            print("no drift: the store, the kernel and the provider agree")
        rows = [[f["kind"], f["subject"], f["detail"], ("fixed" if f["fixed"] else "FAILED") if rep["fixed"]
                 else (f["repair"] or "-")] for f in rep["findings"]]
        if rows:
            print(table(rows, ["KIND", "SUBJECT", "DETAIL", "REPAIR" if not rep["fixed"] else "RESULT"]))
    unresolved = [f for f in rep["findings"] if not (rep["fixed"] and f["fixed"])]
    return 1 if unresolved else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cloudnic.cli.demo import run_demo
    return run_demo(shim=args.shim)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cloudnic", description="cloudnic operator CLI")
    p.add_argument("--socket", default=DEFAULT_SOCKET, help="agent socket (env CLOUDNIC_AGENT_SOCKET)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status", help="agent health, store, provider and address use per network")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    a = sub.add_parser("attachments", aliases=["pods"], help="every attachment this node serves")
    a.add_argument("--json", action="store_true")
    a.set_defaults(fn=cmd_attachments)
    pt = sub.add_parser("ports", help="the IaaS ports this node holds: assigned to pods or pooled")
    pt.add_argument("--json", action="store_true")
    pt.set_defaults(fn=cmd_ports)
    po = sub.add_parser("pools", help="warm pools: ready vs target, hits, misses, refills")
    po.add_argument("--json", action="store_true")
    po.set_defaults(fn=cmd_pools)
    au = sub.add_parser("audit", help="compare store, kernel and provider; --fix repairs the drift")
    au.add_argument("--fix", action="store_true")
    au.add_argument("--json", action="store_true")
    au.set_defaults(fn=cmd_audit)
    d = sub.add_parser("demo", help="start a private agent, attach sandboxes, ping, clean up")
    d.add_argument("--shim", default="", help="path of the cloudnic CNI executable")
    d.set_defaults(fn=cmd_demo)
    args = p.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
