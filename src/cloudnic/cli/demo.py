"""`cloudnic demo`: a private agent, sandboxes attached through the real CNI executable,
pod→pod and pod→gateway pings, then everything removed again.

The demo's "node" is a network namespace of its own (the agent's `host_netns`), so the
machine's own network is never touched: no bridge, route or sysctl change on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cloudnic.agent import wire
from cloudnic.cli.main import table

REPO_SHIM = Path(__file__).resolve().parents[3] / "shim" / "build" / "cloudnic"

NETWORKS = """
[networks.demo-bridge]
mode = "bridge"
bridge = "cndemo-br0"
mtu = 1500
[[networks.demo-bridge.subnets]]
cidr = "10.77.0.0/24"
gateway = "10.77.0.1"
exclude = ["10.77.0.2-10.77.0.9"]
[[networks.demo-bridge.subnets]]
cidr = "fd00:77::/64"
gateway = "fd00:77::1"

[networks.demo-routed]
mode = "routed"
mtu = 1500
[[networks.demo-routed.subnets]]
cidr = "10.78.0.0/24"
"""

SANDBOXES = [("a", "demo-bridge"), ("b", "demo-bridge"), ("c", "demo-routed"), ("d", "demo-routed")]


def _find_shim(explicit: str) -> str:
    for cand in (explicit, os.environ.get("CLOUDNIC_SHIM", ""), str(REPO_SHIM), "/opt/cni/bin/cloudnic"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise SystemExit("cloudnic demo: no cloudnic CNI executable found; run `make` first or pass --shim")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Demo:
    def __init__(self, shim: str) -> None:
        self.shim = shim
        self.tag = f"{os.getpid() % 100000}"
        self.tmp = Path(tempfile.mkdtemp(prefix="cloudnic-demo-"))
        self.node = f"cndemo-node-{self.tag}"
        self.sock = str(self.tmp / "agent.sock")
        self.netns: list[str] = []
        self.agent: subprocess.Popen[bytes] | None = None
        self.results: dict[str, dict[str, Any]] = {}

    def ns(self, name: str) -> str:
        return f"cndemo-{self.tag}-{name}"

    def start(self) -> None:
        _ip("netns", "add", self.node)
        self.netns.append(self.node)
        _ip("netns", "exec", self.node, "ip", "link", "set", "lo", "up")
        cfg = self.tmp / "agent.toml"
        cfg.write_text(f'[agent]\nsocket = "{self.sock}"\nstate_dir = "{self.tmp / "state"}"\n'
                       f'host_netns = "/run/netns/{self.node}"\nnode_name = "demo"\n' + NETWORKS)
        log = open(self.tmp / "agent.log", "wb")
        self.agent = subprocess.Popen([sys.executable, "-m", "cloudnic.agent.main", "--config", str(cfg)],
                                      stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.agent.poll() is not None:
                raise SystemExit("cloudnic demo: the agent exited:\n" + (self.tmp / "agent.log").read_text())
            try:
                if wire.admin_call(self.sock, {"op": "ping"}, 2.0).get("ready"):
                    return
            except (OSError, ValueError, wire.WireError):
                time.sleep(0.05)
        raise SystemExit("cloudnic demo: the agent did not become ready in 30 s")

    def cni(self, command: str, sandbox: str, network: str) -> tuple[int, str, float]:
        conf = {"cniVersion": "1.1.0", "name": network, "type": "cloudnic", "network": network}
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": f"demo{self.tag}{sandbox}",
               "CNI_NETNS": f"/run/netns/{self.ns(sandbox)}", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
               "CNI_ARGS": f"K8S_POD_NAMESPACE=demo;K8S_POD_NAME=pod-{sandbox}",
               "CLOUDNIC_AGENT_SOCKET": self.sock, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        t0 = time.perf_counter()
        p = subprocess.run([self.shim], input=json.dumps(conf).encode(), env=env, capture_output=True)
        ms = (time.perf_counter() - t0) * 1000
        return p.returncode, p.stdout.decode(), ms

    def ping(self, sandbox: str, addr: str) -> bool:
        p = subprocess.run(["ip", "netns", "exec", self.ns(sandbox), "ping", "-c1", "-W2", addr],
                           capture_output=True, text=True)
        return p.returncode == 0

    def run(self) -> int:
        print(f"cloudnic demo: agent with the standalone provider in {self.tmp}, node netns {self.node}\n")
        self.start()
        rows = []
        for sb, network in SANDBOXES:
            _ip("netns", "add", self.ns(sb))
            self.netns.append(self.ns(sb))
            rc, out, ms = self.cni("ADD", sb, network)
            if rc != 0:
                print(f"ADD {sb} failed: {out}")
                return 1
            res = json.loads(out)
            self.results[sb] = res
            ips = ", ".join(i["address"] for i in res["ips"])
            mac = next(i["mac"] for i in res["interfaces"] if i.get("sandbox"))
            mode = "bridge" if network == "demo-bridge" else "routed"
            rows.append([self.ns(sb), network, mode, ips, mac, f"{ms:.1f}"])
        print(table(rows, ["SANDBOX", "NETWORK", "MODE", "IP", "MAC", "ADD ms"]))
        print()
        failures = 0
        for src, dst in (("a", "b"), ("c", "d")):
            for ip in self.results[dst]["ips"]:
                addr = ip["address"].split("/")[0]
                ok = self.ping(src, addr)
                failures += not ok
                print(f"ping {self.ns(src)} -> {self.ns(dst)} ({addr}): {'ok' if ok else 'FAILED'}")
        for sb in ("a", "c"):
            for ip in self.results[sb]["ips"]:
                gw = ip.get("gateway")
                if gw:
                    ok = self.ping(sb, gw)
                    failures += not ok
                    print(f"ping {self.ns(sb)} -> gateway {gw}: {'ok' if ok else 'FAILED'}")
        for sb, network in SANDBOXES:
            rc, out, _ = self.cni("CHECK", sb, network)
            failures += rc != 0
            print(f"CHECK {self.ns(sb)}: {'ok' if rc == 0 else out}")
        print()
        for sb, network in SANDBOXES:
            rc, out, ms = self.cni("DEL", sb, network)
            failures += rc != 0
            print(f"DEL {self.ns(sb)}: {'ok' if rc == 0 else out} ({ms:.1f} ms)")
        return 1 if failures else 0

    def cleanup(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(20)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        for ns in reversed(self.netns):
            _ip("netns", "del", ns, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        left = [n for n in _ip("netns", "list", check=False).stdout.split() if n.startswith(f"cndemo-{self.tag}")]
        print("\ncleaned up: agent stopped, namespaces and links removed, temp dir deleted"
              + (f"; LEFT BEHIND: {left}" if left else ""))


def run_demo(shim: str = "") -> int:
    if os.geteuid() != 0:
        raise SystemExit("cloudnic demo: needs root (it creates network namespaces)")
    demo = Demo(_find_shim(shim))
    try:
        rc = demo.run()
    finally:
        demo.cleanup()
    print("\ndemo " + ("passed" if rc == 0 else "FAILED"))
    return rc
