"""Read a network namespace's links, addresses, routes, neighbours and rules through ``ip -j``."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any


def ip_json(ns: str, *args: str) -> Any:
    p = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"ip -n {ns} {' '.join(args)} failed: {p.stderr.strip()}")
    return json.loads(p.stdout) if p.stdout.strip() else []


def exists(ns: str) -> bool:
    return bool(ns) and os.path.exists(f"/run/netns/{ns}")


@dataclass(frozen=True)
class Link:
    name: str
    kind: str
    master: str


@dataclass(frozen=True)
class Netns:
    """One snapshot of a netns: what the invariants compare with the store."""

    name: str
    links: dict[str, Link]
    addrs: dict[str, tuple[str, ...]]          # link -> global addresses (no prefix length)
    routes: tuple[dict[str, Any], ...]
    neigh: tuple[dict[str, Any], ...]          # permanent entries only
    rules: tuple[dict[str, Any], ...]


def snapshot(ns: str, *, full: bool = True) -> Netns:
    links = {ln["ifname"]: Link(ln["ifname"], ln.get("linkinfo", {}).get("info_kind", ""), ln.get("master", ""))
             for ln in ip_json(ns, "-d", "link", "show")}
    addrs: dict[str, tuple[str, ...]] = {}
    for a in ip_json(ns, "addr", "show"):
        got = tuple(i["local"] for i in a.get("addr_info", []) if i.get("scope") == "global")
        if got:
            addrs[a["ifname"]] = got
    if not full:
        return Netns(ns, links, addrs, (), (), ())
    routes = tuple(r for fam in ("-4", "-6") for r in ip_json(ns, fam, "route", "show", "table", "all")
                   if r.get("table") != "local" and r.get("type", "unicast") == "unicast")
    neigh = tuple(ip_json(ns, "neigh", "show", "nud", "permanent"))
    rules = tuple(r for fam in ("-4", "-6") for r in ip_json(ns, fam, "rule", "show"))
    return Netns(ns, links, addrs, routes, neigh, rules)


DEFAULT_RULES = {(0, "local"), (32766, "main"), (32767, "default")}


def extra_rules(ns: Netns) -> list[str]:
    return [json.dumps(r, sort_keys=True) for r in ns.rules if (r.get("priority"), r.get("table")) not in DEFAULT_RULES]
