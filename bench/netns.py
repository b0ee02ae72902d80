"""Sandbox network namespaces in bulk, and the node namespace the whole benchmark lives in.

``ip -batch`` creates or removes any number of namespaces in one process (iproute2
saves and restores its own netns around each ``netns add``): 1000 take about a second.
Everything is named ``cnb-<tag>-...`` so the outer process can find what a crashed inner
one left behind.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable

NETNS_DIR = "/run/netns"


def sh(*cmd: str, check: bool = True, timeout: float = 60.0, stdin: str | None = None) -> str:
    p = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def batch(lines: Iterable[str], *, check: bool = True, timeout: float = 300.0) -> str:
    """Run ``ip -batch -`` (``-force`` keeps going past an error when check is False)."""
    text = "".join(line + "\n" for line in lines)
    if not text:
        return ""
    args = ["ip", "-batch", "-"] if check else ["ip", "-force", "-batch", "-"]
    return sh(*args, check=check, timeout=timeout, stdin=text)


def create_many(names: Iterable[str]) -> None:
    batch(f"netns add {n}" for n in names)


def delete_many(names: Iterable[str]) -> None:
    """Remove namespaces (their links go with them); a missing one is no error."""
    existing = [n for n in names if os.path.exists(f"{NETNS_DIR}/{n}")]
    if existing:
        batch((f"netns del {n}" for n in existing), check=False)
    for n in existing:            # a name whose mount belonged to a gone mount namespace
        try:
            os.unlink(f"{NETNS_DIR}/{n}")
        except OSError:
            pass


def leftovers(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def path(name: str) -> str:
    return f"{NETNS_DIR}/{name}"


def addresses(name: str, ifname: str = "eth0") -> list[str]:
    """The global IPv4 addresses of ``ifname`` in netns ``name`` (for iperf3 targets)."""
    out = sh("ip", "-n", name, "-4", "-o", "addr", "show", "dev", ifname, "scope", "global")
    return [line.split()[3].split("/")[0] for line in out.splitlines() if line.strip()]
