"""One node of the torture: its own node netns, a real agent (restartable, armable to
SIGKILL itself at a crash point), a set of sandbox netns, and the runtime's view of
which attachments are live. Everything is named ``cnt<pid>x<hex>-…`` and removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import netns as bnetns
from bench.agent import wait_ready
from bench.torture import cni
from bench.torture.invariants import CloudPort, Live, View
from cloudnic.agent import wire

REPO = Path(__file__).resolve().parents[2]


def prefix() -> str:
    """A unique prefix for this process's netns names (short: netns names become mount points)."""
    return f"cnt{os.getpid()}x{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Net:
    """A network of the node: its TOML table and the bridge its host ends join (if any)."""

    name: str
    mode: str
    toml: str
    bridge: str = ""
    args: str = ""              # CNI_ARGS for every ADD (none by default)


class Agent:
    def __init__(self, workdir: Path, config_text: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.socket = str(workdir / "agent.sock")
        self.config = workdir / "agent.toml"
        self.log_path = workdir / "agent.log"
        self.db_path = workdir / "state" / "state.db"
        self.config.write_text(config_text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.armed = ""

    def start(self, crash_at: str = "", timeout: float = 90.0) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CLOUDNIC_CRASH_AT"}
        if crash_at:
            env["CLOUDNIC_CRASH_AT"] = crash_at
        self.armed = crash_at
        with open(self.log_path, "ab") as log:
            log.write(f"--- torture: start armed={crash_at!r}\n".encode())
            log.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "cloudnic.agent.main", "--config", str(self.config)],
                                         stdout=log, stderr=log, cwd=REPO, env=env)
        try:
            wait_ready(self.proc, self.socket, timeout, self.log_tail)
        except RuntimeError:
            self.kill()            # not ready in time (or exited): never leave a half-started agent
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_dead(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def admin(self, obj: dict[str, Any]) -> dict[str, Any]:
        return dict(wire.admin_call(self.socket, obj, 30.0))

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


@dataclass
class Rig:
    """The node, its agent and sandboxes, and what the runtime believes is attached."""

    tag: str
    node_ns: str
    parking_ns: str
    agent: Agent
    nets: dict[str, Net]
    sandboxes: list[str]
    parked: bool = False                       # pooled ports wait in the parking netns
    cloud_ports: Callable[[], list[CloudPort]] | None = None     # None: standalone (the store's view)
    live: dict[str, Live] = field(default_factory=dict)
    _seq: int = 0

    def free_sandboxes(self) -> list[str]:
        used = {lv.netns for lv in self.live.values()}
        return [s for s in self.sandboxes if s not in used]

    def next_cid(self) -> str:
        self._seq += 1
        return f"{self.tag}-c{self._seq:05d}"

    def add(self, network: str, sandbox: str, cid: str | None = None, timeout: float = 120.0) -> cni.CniCall:
        cid = cid or self.next_cid()
        net = self.nets[network]
        r = cni.call("ADD", cni.conf(network), socket=self.agent.socket, container_id=cid,
                     netns=bnetns.path(sandbox), args=net.args, timeout=timeout)
        if r.ok:
            key = f"{network}/{cid}/eth0"
            self.live[key] = Live(key, network, cid, "eth0", sandbox, r.reply())
        return r

    def delete(self, network: str, sandbox: str, cid: str, timeout: float = 120.0) -> cni.CniCall:
        r = cni.call("DEL", cni.conf(network), socket=self.agent.socket, container_id=cid,
                     netns=bnetns.path(sandbox), timeout=timeout)
        if r.ok:
            self.live.pop(f"{network}/{cid}/eth0", None)
        return r

    def view(self, in_doubt: frozenset[str] = frozenset()) -> View:
        return View(in_doubt=in_doubt, node_ns=self.node_ns, db_path=self.agent.db_path,
                    sandboxes=tuple(self.sandboxes),
                    live=tuple(self.live.values()),
                    bridges={n.name: n.bridge for n in self.nets.values() if n.bridge},
                    parking_ns=self.parking_ns if self.parked else "", socket=self.agent.socket,
                    cloud_ports=self.cloud_ports)


def agent_toml(workdir: Path, node_ns: str, parking_ns: str, nets: list[Net], *, node_name: str,
               cluster_id: str = "torture", extra: str = "") -> str:
    return ("[agent]\n"
            f'socket = "{workdir / "agent.sock"}"\nstate_dir = "{workdir / "state"}"\n'
            f'node_name = "{node_name}"\ncluster_id = "{cluster_id}"\nlog_level = "info"\n'
            f'host_netns = "/run/netns/{node_ns}"\nparking_netns = "{parking_ns}"\n\n'
            + extra + "\n" + "\n".join(n.toml for n in nets))


@contextlib.contextmanager
def rig(workdir: Path, nets: list[Net], *, sandboxes: int, node_name: str = "torture-node", extra: str = "",
        parked: bool = False, cloud_ports: Callable[[], list[CloudPort]] | None = None,
        start: bool = True) -> Iterator[Rig]:
    """A node netns with ``sandboxes`` sandbox netns and a (started) agent; all removed at the end."""
    p = prefix()
    node_ns, parking_ns = f"{p}-node", f"{p}-park"
    sbs = [f"{p}-s{i:03d}" for i in range(sandboxes)]
    agent = Agent(workdir, agent_toml(workdir, node_ns, parking_ns, nets, node_name=node_name, extra=extra))
    try:
        bnetns.create_many([node_ns, *sbs])
        bnetns.batch([f"netns exec {n} ip link set lo up" for n in [node_ns, *sbs]])
        r = Rig(tag=p, node_ns=node_ns, parking_ns=parking_ns, agent=agent, nets={n.name: n for n in nets},
                sandboxes=sbs, parked=parked, cloud_ports=cloud_ports)
        if start:
            agent.start()
        yield r
    finally:
        agent.kill()
        bnetns.delete_many([*sbs, node_ns, parking_ns])


def standalone_nets(bridge: str = "ct-br0", pool: bool = False) -> list[Net]:
    """Bridge and routed, dual-stack; with ``pool`` also a bridge network served from a warm pool."""
    pooled = [Net("tpool", "bridge", '[networks.tpool]\nmode = "bridge"\nbridge = "ct-br1"\n'
                  '[[networks.tpool.subnets]]\ncidr = "10.97.0.0/24"\n'
                  "[networks.tpool.pool]\nmin_ready = 3\nmax_idle = 4\nbatch = 3\n", bridge="ct-br1")]
    return (pooled if pool else []) + [
        Net("tbridge", "bridge", f'[networks.tbridge]\nmode = "bridge"\nbridge = "{bridge}"\n'
            '[[networks.tbridge.subnets]]\ncidr = "10.95.0.0/24"\n[[networks.tbridge.subnets]]\n'
            'cidr = "fd00:95::/64"\n', bridge=bridge),
        # deferred_delete: DEL buries the host end and a reaper deletes it (the invariants wait for it)
        Net("trouted", "routed", '[networks.trouted]\nmode = "routed"\ndeferred_delete = true\n'
            '[[networks.trouted.subnets]]\n'
            'cidr = "10.96.0.0/24"\n[[networks.trouted.subnets]]\ncidr = "fd00:96::/64"\n'),
    ]

