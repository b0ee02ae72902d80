"""The invariants of issue 5, checked against the store, the kernel and the IaaS itself.

``violations(view)`` returns human-readable strings, each starting with its kind:

* ``leaked-port``: an IaaS port this node owns (standalone: the store's ``sa_ports``;
  neutron: what neutron-server lists for the project) that is neither assigned to a live
  attachment nor pooled; ``missing-port``: a port row whose port the IaaS no longer has;
* ``duplicate-ip``: an address held twice (store rows, or on two links across sandboxes);
* ``missing``: a store row without its kernel objects (host link, bridge port, sandbox
  link with its addresses, host route and neighbour for routed, parked end for a pool);
* ``orphan``: a kernel object named or placed like ours (link, route, neighbour entry,
  rule, bridge port, parked end) without its row, or a buried (deferred-delete) host end
  the reaper did not delete while ``settle()`` waited;
* ``state``: the store disagrees with the runtime, or a row is in a transitional state;
* ``journal``: an intent still pending after recovery; ``check``: CHECK failed.

``settle()`` re-checks for a while before it reports, so work the agent legitimately
finishes in the background (a refill, a reaper) is waited for, never ignored.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.torture import cni
from bench.torture.kernel import Netns, exists, extra_rules, snapshot

OUR_HOST = re.compile(r"^cn[0-9a-f]{11}$")        # veth host ends (bridge, routed)
OUR_TAP = re.compile(r"^tap[0-9a-f-]{11}$")        # linuxbridge host ends (Neutron's names)
OUR_PARKED = re.compile(r"^pk[0-9a-f-]{11}$")
GRAVE = re.compile(r"^cnx[0-9a-f]{12}$")          # deferred deletes: buried host ends the reaper deletes
KINDS = ("leaked-port", "missing-port", "duplicate-ip", "missing", "orphan", "state", "journal", "check")


@dataclass(frozen=True)
class Live:
    """What the runtime believes: an ADD that succeeded and has not been DELeted."""

    key: str
    network: str
    container_id: str
    ifname: str
    netns: str                # the netns name (under /run/netns)
    result: dict[str, Any]


@dataclass(frozen=True)
class CloudPort:
    id: str
    ips: tuple[str, ...]
    label: str = ""


@dataclass(frozen=True)
class View:
    node_ns: str
    db_path: Path
    sandboxes: tuple[str, ...]
    live: tuple[Live, ...]
    bridges: dict[str, str] = field(default_factory=dict)     # network -> its bridge on the node
    parking_ns: str = ""                                       # set when pooled ports are parked
    socket: str = ""                                           # CHECK through the shim when set
    cloud_ports: Callable[[], list[CloudPort]] | None = None   # None: standalone (the store's sa_ports)
    in_doubt: frozenset[str] = frozenset()     # keys whose ADD/DEL was killed and not retried yet: either way


@dataclass(frozen=True)
class Store:
    attachments: list[dict[str, Any]]
    ports: list[dict[str, Any]]
    journal: list[dict[str, Any]]
    sa_ports: dict[str, tuple[str, ...]]


def read_store(path: Path) -> Store:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        def rows(sql: str) -> list[dict[str, Any]]:
            return [dict(r) for r in db.execute(sql).fetchall()]
        atts = rows("SELECT key, network, container_id, ifname, netns, state, port_id, mode, host_ifname, result "
                    "FROM attachments")
        for a in atts:
            a["result"] = json.loads(a["result"] or "{}")
        ports = rows("SELECT port_id, network_id, state, fixed_ips, pool_key, attachment_key FROM ports")
        for p in ports:
            p["fixed_ips"] = [ip for _s, ip in json.loads(p["fixed_ips"] or "[]")]
        journal = rows("SELECT id, op, key, data FROM journal")
        sa: dict[str, list[str]] = {r["port_id"]: [] for r in rows("SELECT port_id FROM sa_ports")}
        for r in rows("SELECT port_id, address FROM sa_addresses"):
            sa.setdefault(r["port_id"], []).append(r["address"])
    finally:
        db.close()
    return Store(atts, ports, journal, {k: tuple(v) for k, v in sa.items()})


def _ip(text: str) -> str:
    return str(ipaddress.ip_interface(text).ip)


def _dups(holders: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for addr, who in holders:
        seen.setdefault(addr, []).append(who)
    return {a: w for a, w in seen.items() if len(w) > 1}


def violations(view: View, *, run_check: bool = True) -> list[str]:
    out: list[str] = []
    st = read_store(view.db_path)
    out += _store_views(view, st)
    out += _cloud(view, st)
    node = snapshot(view.node_ns)
    sandboxes = {ns: snapshot(ns, full=False) for ns in view.sandboxes if exists(ns)}
    out += _duplicates(st, sandboxes)
    out += _kernel_rows(view, st, node, sandboxes)
    out += _kernel_orphans(view, st, node, sandboxes)
    if run_check and view.socket and not out:
        out += checks(view)
    return out


def settle(view: View, timeout: float = 10.0, interval: float = 0.25,
           known: frozenset[str] = frozenset()) -> list[str]:
    """Violations that persist for ``timeout`` seconds (background work gets its chance);
    violations in ``known`` (reported already, still there) are not waited for again."""
    deadline = time.monotonic() + timeout
    while True:
        found = violations(view, run_check=False)
        if not found:
            return violations(view)        # now with CHECK through the shim
        if time.monotonic() >= deadline or set(found) <= known:
            return found
        time.sleep(interval)


def count(found: Iterable[str], kind: str) -> int:
    return sum(1 for v in found if v.startswith(kind + ":"))


def _store_views(view: View, st: Store) -> list[str]:
    out = [f"journal: entry {j['id']} {j['op']} {j['key']} is still pending ({j['data']})" for j in st.journal]
    live = {lv.key for lv in view.live}
    atts = {a["key"]: a for a in st.attachments}
    for key in sorted(set(atts) - live - view.in_doubt):
        out.append(f"state: attachment {key} ({atts[key]['state']}) is in the store, but the runtime has no such "
                   "attachment (its ADD failed or it was deleted)")
    for key in sorted(live - set(atts) - view.in_doubt):
        out.append(f"state: the runtime holds {key} (ADD succeeded) but the store has no record of it")
    ports = {p["port_id"]: p for p in st.ports}
    for a in atts.values():
        if a["state"] != "assigned":
            out.append(f"state: attachment {a['key']} is {a['state']!r} after recovery")
        p = ports.get(a["port_id"])
        if p is None or p["state"] != "assigned" or p["attachment_key"] != a["key"]:
            out.append(f"state: attachment {a['key']} has port {a['port_id']} but its row is "
                       f"{None if p is None else (p['state'], p['attachment_key'])}")
    for p in ports.values():
        if p["state"] not in ("assigned", "pooled"):
            out.append(f"state: port row {p['port_id']} is {p['state']!r} after recovery")
        elif p["state"] == "assigned" and p["attachment_key"] not in atts:
            out.append(f"state: port row {p['port_id']} is assigned to {p['attachment_key']}, which has no record")
    return out


def _cloud(view: View, st: Store) -> list[str]:
    if view.cloud_ports is not None:
        cloud = {c.id: c for c in view.cloud_ports()}
    else:
        cloud = {pid: CloudPort(pid, ips) for pid, ips in st.sa_ports.items()}
    rows = {p["port_id"]: p for p in st.ports}
    live_keys = {a["key"] for a in st.attachments} | view.in_doubt     # attachments that exist
    out = []
    for pid, c in sorted(cloud.items()):
        row = rows.get(pid)
        if row is None or not (row["state"] == "pooled" or row["attachment_key"] in live_keys):
            why = "unknown to the store" if row is None else f"row {row['state']} for {row['attachment_key']!r}"
            out.append(f"leaked-port: port {pid} {c.label} ({', '.join(c.ips)}) is owned by this node but neither "
                       f"assigned to a live attachment nor pooled: {why}")
    for pid in sorted(set(rows) - set(cloud)):
        out.append(f"missing-port: port row {pid} ({rows[pid]['state']}) but the IaaS has no such port")
    return out


def _duplicates(st: Store, sandboxes: dict[str, Netns]) -> list[str]:
    out = []
    held = [(f"{a['network']}:{_ip(ip['address'])}", a["key"]) for a in st.attachments
            for ip in a["result"].get("ips", [])]
    held += [(f"{p['network_id']}:{ip}", f"port {p['port_id']}") for p in st.ports for ip in p["fixed_ips"]
             if p["state"] == "pooled"]
    for addr, who in sorted(_dups(held).items()):
        out.append(f"duplicate-ip: {addr} is held by {', '.join(who)} in the store")
    onlink = [(ip, f"{ns}/{link}") for ns, snap in sandboxes.items() for link, ips in snap.addrs.items()
              for ip in ips]
    for addr, who in sorted(_dups(onlink).items()):
        out.append(f"duplicate-ip: {addr} is configured on {', '.join(who)}")
    return out


def _kernel_rows(view: View, st: Store, node: Netns, sandboxes: dict[str, Netns]) -> list[str]:
    out = []
    routes = {(r.get("dst"), r.get("dev")) for r in node.routes}
    neigh = {(n.get("dst"), n.get("dev")) for n in node.neigh}
    for a in st.attachments:
        key, host = a["key"], a["host_ifname"]
        ips = [_ip(i["address"]) for i in a["result"].get("ips", [])]
        if a["mode"] != "macvlan":
            link = node.links.get(host)
            if link is None:
                out.append(f"missing: attachment {key}: host link {host} is not in node netns {node.name}")
            elif a["network"] in view.bridges and link.master != view.bridges[a["network"]]:
                out.append(f"missing: attachment {key}: host link {host} is not a port of bridge "
                           f"{view.bridges[a['network']]} (master {link.master!r})")
        sb_name = a["netns"].rsplit("/", 1)[-1]
        sb = sandboxes.get(sb_name)
        if sb is None or a["ifname"] not in sb.links:
            out.append(f"missing: attachment {key}: link {a['ifname']} is not in sandbox {a['netns']}")
        else:
            lacking = sorted(set(ips) - set(sb.addrs.get(a["ifname"], ())))
            if lacking:
                out.append(f"missing: attachment {key}: {a['ifname']} in {sb_name} lacks {', '.join(lacking)}")
        if a["mode"] == "routed":
            for ip in ips:
                if (ip, host) not in routes:
                    out.append(f"missing: attachment {key}: no host route {ip} dev {host} in {node.name}")
                if (ip, host) not in neigh:
                    out.append(f"missing: attachment {key}: no permanent neighbour {ip} dev {host} in {node.name}")
    if view.parking_ns:
        parked = set(snapshot(view.parking_ns, full=False).links) if exists(view.parking_ns) else set()
        for p in st.ports:
            if p["state"] == "pooled" and f"pk{p['port_id'][:11]}" not in parked:
                out.append(f"missing: pooled port {p['port_id']} has no parked end in {view.parking_ns}")
    return out


def _kernel_orphans(view: View, st: Store, node: Netns, sandboxes: dict[str, Netns]) -> list[str]:
    out = []
    hosts = {a["host_ifname"] for a in st.attachments}
    pooled = {p["port_id"] for p in st.ports if p["state"] == "pooled"}
    hosts |= {f"tap{pid[:11]}" for pid in pooled} if view.parking_ns else set()
    bridges = set(view.bridges.values())
    for name, link in sorted(node.links.items()):
        ours = OUR_HOST.match(name) or OUR_TAP.match(name) or (link.master in bridges and link.kind == "veth")
        if ours and name not in hosts:
            out.append(f"orphan: link {name} ({link.kind}, master {link.master or '-'}) in {node.name} has no row")
        elif GRAVE.match(name):         # settle() gives the reaper its time; one that stays is a leak
            out.append(f"orphan: graveyard link {name} in {node.name} was not reaped")
    pod_ips = {_ip(i["address"]) for a in st.attachments for i in a["result"].get("ips", [])}
    for r in node.routes:
        dev, dst = r.get("dev", ""), str(r.get("dst", ""))
        if (OUR_HOST.match(dev) or OUR_TAP.match(dev)) and dev not in hosts:
            out.append(f"orphan: route {dst} dev {dev} in {node.name} has no row")
        elif "/" not in dst and dst not in ("default",) and OUR_HOST.match(dev) and dst not in pod_ips:
            out.append(f"orphan: host route {dst} dev {dev} in {node.name} belongs to no attachment")
    for n in node.neigh:
        if OUR_HOST.match(n.get("dev", "")) and n.get("dst") not in pod_ips:
            out.append(f"orphan: permanent neighbour {n.get('dst')} dev {n.get('dev')} in {node.name} has no row")
    out += [f"orphan: rule {r} in {node.name}" for r in extra_rules(node)]
    used = {(a["netns"].rsplit("/", 1)[-1], a["ifname"]) for a in st.attachments}
    for ns, snap in sorted(sandboxes.items()):
        for name in sorted(set(snap.links) - {"lo"}):
            if (ns, name) not in used:
                out.append(f"orphan: link {name} in sandbox {ns} belongs to no attachment")
    if view.parking_ns and exists(view.parking_ns):
        for name in sorted(set(snapshot(view.parking_ns, full=False).links) - {"lo"}):
            if not (OUR_PARKED.match(name) and any(f"pk{pid[:11]}" == name for pid in pooled)):
                out.append(f"orphan: parked end {name} in {view.parking_ns} belongs to no pooled port")
    return out


def checks(view: View) -> list[str]:
    out = []
    for lv in view.live:
        if lv.key in view.in_doubt:
            continue
        r = cni.call("CHECK", cni.conf(lv.network, prevResult=lv.result), socket=view.socket,
                     container_id=lv.container_id, netns=f"/run/netns/{lv.netns}", ifname=lv.ifname)
        if not r.ok:
            out.append(f"check: CHECK of {lv.key} failed: {r.describe()}")
    return out
