"""Test helpers: create and remove network namespaces and links, and read kernel state.

Reading goes through ``ip -j`` (an independent view of the kernel, not the code under
test). Every namespace made here is removed by its context manager, even on failure;
removing a namespace removes every link inside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import netns as pr_netns

NETNS_DIR = "/run/netns"


def unique(tag: str, prefix: str = "cnd-") -> str:
    """A fresh name ``<prefix><tag>-xxxxxx`` (keep prefix+tag under 8 chars for link names)."""
    return f"{prefix}{tag}-{uuid.uuid4().hex[:6]}"


def sh(*cmd: str, check: bool = True) -> str:
    p = subprocess.run(list(cmd), check=False, capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


@dataclass
class Netns:
    name: str
    fd: int

    @property
    def path(self) -> str:
        return f"{NETNS_DIR}/{self.name}"

    def exec(self, *cmd: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check)

    def ip(self, *args: str) -> Any:
        out = sh("ip", "-n", self.name, "-j", *args)
        return json.loads(out) if out.strip() else []


def create_netns(name: str) -> Netns:
    pr_netns.create(name)
    try:
        fd = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        remove_netns(name)
        raise
    ns = Netns(name, fd)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    return ns


def remove_netns(name: str) -> None:
    if os.path.exists(f"{NETNS_DIR}/{name}"):
        pr_netns.remove(name)


def close_netns(ns: Netns) -> None:
    """Close the fd and remove the name (idempotent)."""
    if ns.fd >= 0:
        os.close(ns.fd)
        ns.fd = -1
    remove_netns(ns.name)


@contextmanager
def netns(tag: str) -> Iterator[Netns]:
    ns = create_netns(unique(tag))
    try:
        yield ns
    finally:
        close_netns(ns)


def leftover_netns(prefix: str = "cnd-") -> list[str]:
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    return sorted(n for n in names if n.startswith(prefix))


# ---- reading kernel state -----------------------------------------------------------------


def link(ns: Netns, ifname: str) -> dict[str, Any] | None:
    """``ip -d link show`` of one link, or None."""
    p = subprocess.run(["ip", "-n", ns.name, "-j", "-d", "link", "show", "dev", ifname],
                       check=False, capture_output=True, text=True)
    if p.returncode != 0:
        return None
    data = json.loads(p.stdout)
    return data[0] if data else None


def link_names(ns: Netns) -> set[str]:
    return {lk["ifname"] for lk in ns.ip("link", "show")}


def link_kind(info: dict[str, Any]) -> str:
    return str(info.get("linkinfo", {}).get("info_kind", ""))


def is_up(info: dict[str, Any]) -> bool:
    return "UP" in info.get("flags", [])


def addresses(ns: Netns, ifname: str) -> set[str]:
    """Addresses as ``ip/prefix``, link-local IPv6 left out."""
    out = set()
    for entry in ns.ip("addr", "show", "dev", ifname):
        for a in entry.get("addr_info", []):
            if a.get("scope") == "link" and a["family"] == "inet6":
                continue
            out.add(f"{a['local']}/{a['prefixlen']}")
    return out


def all_addresses(ns: Netns, ifname: str) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for e in ns.ip("addr", "show", "dev", ifname)
            for a in e.get("addr_info", [])}


def routes(ns: Netns, ifname: str, family: int = 4) -> set[tuple[str, str | None]]:
    """(dst, gateway) of the main-table routes through ``ifname``."""
    out = set()
    for r in ns.ip(f"-{family}", "route", "show", "dev", ifname):
        out.add((r["dst"], r.get("gateway")))
    return out


def neighbours(ns: Netns, ifname: str) -> dict[str, tuple[str, list[str]]]:
    """ip -> (lladdr, state flags)."""
    return {n["dst"]: (n.get("lladdr", ""), n.get("state", []))
            for n in ns.ip("neigh", "show", "dev", ifname)}


def ping(ns: Netns, addr: str, count: int = 1) -> bool:
    p = subprocess.run(["ip", "netns", "exec", ns.name, "ping", "-c", str(count), "-W2", addr],
                       check=False, capture_output=True, timeout=30)
    return p.returncode == 0


def add_veth(ns: Netns, a: str, b: str, mtu: int = 1500) -> None:
    """A veth pair inside ``ns``, both ends up (a stand-in NIC: this kernel has no dummy links)."""
    sh("ip", "-n", ns.name, "link", "add", a, "mtu", str(mtu), "type", "veth",
       "peer", "name", b, "mtu", str(mtu))
    sh("ip", "-n", ns.name, "link", "set", a, "up")
    sh("ip", "-n", ns.name, "link", "set", b, "up")


def fill_bridge(ns: Netns, bridge: str, count: int, workdir: Path) -> None:
    """``count`` veth pairs in ``ns`` whose first ends are ports of ``bridge`` (one ip -batch)."""
    batch = workdir / f"fill-{bridge}.ip"
    batch.write_text("".join(f"link add cnf{i} master {bridge} type veth peer name cnf{i}p\n" for i in range(count)))
    sh("ip", "-n", ns.name, "-b", str(batch))
