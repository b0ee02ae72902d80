"""Run the real cloudnic executable as a runtime would, and look at network namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.support.agent import SHIM


@dataclass
class CNIRun:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_code(self) -> int | None:
        return self.json.get("code") if self.code != 0 else None


def run_cni(command: str, conf: dict[str, Any] | bytes | str, *, socket: str, container_id: str = "",
            netns: str | None = None, ifname: str = "eth0", args: str = "", extra_env: dict[str, str] | None = None,
            drop_env: tuple[str, ...] = (), shim: str = str(SHIM), timeout: float = 60.0) -> CNIRun:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname,
           "CNI_PATH": "/opt/cni/bin", "CLOUDNIC_AGENT_SOCKET": socket, "PATH": os.environ.get("PATH", "")}
    if netns is not None:
        env["CNI_NETNS"] = netns
    if args:
        env["CNI_ARGS"] = args
    for k in drop_env:
        env.pop(k, None)
    env.update(extra_env or {})
    if isinstance(conf, dict):
        data = json.dumps(conf).encode()
    elif isinstance(conf, str):
        data = conf.encode()
    else:
        data = conf
    p = subprocess.run([shim], input=data, env=env, capture_output=True, timeout=timeout)
    return CNIRun(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))


def sh(*cmd: str, check: bool = True) -> str:
    p = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr}")
    return p.stdout


def ns_exec(ns: str, *cmd: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *cmd, check=check)


def ip_json(ns: str | None, *args: str) -> Any:
    cmd = ["ip", "-j", *args] if ns is None else ["ip", "-n", ns, "-j", *args]
    out = sh(*cmd)
    return json.loads(out) if out.strip() else []


def ping(ns: str, addr: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W2", addr],
                          capture_output=True).returncode == 0


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


@contextmanager
def netns(name: str) -> Iterator[str]:
    sh("ip", "netns", "add", name)
    try:
        ns_exec(name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def kernel_snapshot(ns: str | None) -> dict[str, Any]:
    """Links (name, mac, state), addresses, routes and neighbours of a netns, for 'unchanged' checks."""
    links = [(ln["ifname"], ln.get("address"), ln.get("operstate"), ln.get("master"))
             for ln in ip_json(ns, "link", "show")]
    addrs = sorted((a["ifname"], i["local"], i["prefixlen"]) for a in ip_json(ns, "addr", "show")
                   for i in a.get("addr_info", []) if not i["local"].startswith("fe80"))
    routes = sorted(json.dumps(r, sort_keys=True) for r in ip_json(ns, "route", "show", "table", "all")
                    if r.get("type") != "local" and r.get("table") != "local")
    neigh = sorted(json.dumps(n, sort_keys=True) for n in ip_json(ns, "neigh", "show", "nud", "permanent"))
    return {"links": sorted(links, key=str), "addrs": addrs, "routes": routes, "neigh": neigh}


def conf(network: str, version: object = "1.1.0", **extra: object) -> dict[str, object]:
    """A cloudnic plugin config for ``network``."""
    c: dict[str, object] = {"cniVersion": version, "name": network, "type": "cloudnic", "network": network}
    c.update(extra)
    return c
