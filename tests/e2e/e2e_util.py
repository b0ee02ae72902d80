"""Small helpers for the e2e tests: processes, netns, links, addresses, qdiscs, iptables.

Everything the tests create in the kernel carries the ``cne-`` prefix, so cleanup can find it
even when a test died half-way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

PREFIX = "cne-"
RESULTS_DIR = Path("/var/lib/cni/results")

# One agent network per test module: (network, bridge, subnet, gateway). All names start with cne-.
NETWORKS = {
    "tool": ("cne-tool", "cne-br-tool", "10.237.1.0/24", "10.237.1.1"),
    "chain": ("cne-chain", "cne-br-chain", "10.237.2.0/24", "10.237.2.1"),
    "pod": ("cne-pod", "cne-br-pod", "10.237.3.0/24", "10.237.3.1"),
    "cri": ("cne-cri", "cne-br-cri", "10.237.4.0/24", "10.237.4.1"),
}


def networks_toml() -> str:
    out = []
    for net, bridge, cidr, gw in NETWORKS.values():
        out.append(
            f'[networks.{net}]\nmode = "bridge"\nbridge = "{bridge}"\ngateway_on_bridge = true\n'
            f"enable_forwarding = false\nmtu = 1500\n"
            f'[[networks.{net}.subnets]]\ncidr = "{cidr}"\ngateway = "{gw}"\n'
        )
    return "\n".join(out)


def network(key: str) -> tuple[str, str, str, str]:
    """(network name, bridge, subnet, gateway) of a test module's agent network."""
    return NETWORKS[key]


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure with ``check`` raise an AssertionError that shows its output."""
    proc = subprocess.run(
        list(argv),
        env=dict(env) if env is not None else None,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def ip_json(*args: str, netns: str | None = None) -> Any:
    """``ip -j [-n netns] args...`` parsed; [] for an empty answer."""
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + list(args)
    out = run(argv).stdout.strip()
    return json.loads(out) if out else []


def unique(stem: str) -> str:
    """A unique ``cne-`` name, at most 15 bytes (a valid interface / netns name)."""
    return f"{PREFIX}{stem}-{secrets.token_hex(3)}"[:15]


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy and return it; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---- network namespaces --------------------------------------------------------------------------


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


@contextlib.contextmanager
def netns(stem: str = "ns") -> Iterator[str]:
    """A fresh named netns ``cne-<stem>-<hex>`` with lo up; deleted on exit, even on failure."""
    name = unique(stem)
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        run(["ip", "netns", "delete", name], check=False)


def list_netns(prefix: str = PREFIX) -> list[str]:
    return [n["name"] for n in ip_json("netns", "list") if n["name"].startswith(prefix)]


def link(name: str, netns_name: str | None = None) -> dict[str, Any] | None:
    """The ``ip -j link show`` record of a link, or None when it does not exist."""
    argv = ["ip", "-j"] + (["-n", netns_name] if netns_name else []) + ["link", "show", "dev", name]
    proc = run(argv, check=False)
    if proc.returncode != 0:
        return None
    items = json.loads(proc.stdout or "[]")
    return items[0] if items else None


def addresses(dev: str, netns_name: str | None = None) -> list[str]:
    """The addresses of ``dev`` as ``addr/prefix`` strings (link-local IPv6 left out)."""
    data = ip_json("addr", "show", "dev", dev, netns=netns_name)
    return [
        f"{a['local']}/{a['prefixlen']}"
        for entry in data
        for a in entry.get("addr_info", [])
        if a.get("scope") != "link"
    ]


def default_gateway(netns_name: str) -> str | None:
    routes = ip_json("-4", "route", "show", "default", netns=netns_name)
    return routes[0].get("gateway") if routes else None


def host_links(prefix: str = PREFIX) -> list[str]:
    return [entry["ifname"] for entry in ip_json("link", "show") if entry["ifname"].startswith(prefix)]


def bridge_ports(bridge: str) -> list[str]:
    if link(bridge) is None:
        return []
    return [entry["ifname"] for entry in ip_json("link", "show", "master", bridge)]


def peer_ifindex(dev: str, netns_name: str) -> int:
    """The host-side ifindex of the veth ``dev`` inside ``netns_name``."""
    entry = link(dev, netns_name)
    assert entry is not None, f"{dev} is missing in netns {netns_name}"
    return int(entry["link_index"])


def host_link_by_index(index: int) -> dict[str, Any] | None:
    for entry in ip_json("link", "show"):
        if entry["ifindex"] == index:
            return dict(entry)
    return None


def qdiscs(dev: str) -> list[dict[str, Any]]:
    """``tc -j qdisc show dev DEV``; [] when the device is gone."""
    proc = run(["tc", "-j", "qdisc", "show", "dev", dev], check=False)
    return list(json.loads(proc.stdout)) if proc.returncode == 0 and proc.stdout.strip() else []


def ping(netns_name: str, address: str, count: int = 1) -> bool:
    proc = run(["ip", "netns", "exec", netns_name, "ping", "-c", str(count), "-W", "2", address], check=False)
    return proc.returncode == 0


def nat_rules() -> str:
    """``iptables -t nat -S`` (the portmap plugin of Debian 12 uses iptables, here iptables-nft)."""
    return run(["iptables", "-w", "-t", "nat", "-S"]).stdout


def in_subnet(address: str, cidr: str) -> bool:
    return ipaddress.ip_interface(address).ip in ipaddress.ip_network(cidr)


def read_sysctl(path: str) -> str:
    return Path("/proc/sys", path.replace(".", "/")).read_text().strip()


# ---- cleanup of everything with our prefix -------------------------------------------------------


def cleanup_kernel(prefix: str = PREFIX) -> list[str]:
    """Delete every netns and link named ``prefix*`` and libcni cache entries; return what was removed."""
    removed: list[str] = []
    for name in list_netns(prefix):
        run(["ip", "netns", "delete", name], check=False)
        removed.append(f"netns {name}")
    for name in host_links(prefix):
        if run(["ip", "link", "delete", "dev", name], check=False).returncode == 0:
            removed.append(f"link {name}")
    if RESULTS_DIR.is_dir():
        for path in RESULTS_DIR.glob(f"{prefix}*"):
            path.unlink(missing_ok=True)
            removed.append(f"cache {path}")
    return removed


def environ(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
