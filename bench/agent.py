"""A private cloudnic-agent for the benchmark, living in the node netns like the runner.

No ``host_netns``: the agent's own netns *is* the node (it is a child of the runner,
which lives in the node netns), so cloudnic and the reference plugins plumb into the
same place and neither pays for a namespace switch the other does not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloudnic.agent import wire
from cloudnic.dataplane.graveyard import GRAVE_PREFIX

REPO = Path(__file__).resolve().parents[1]
KERNEL_LINK_DELETE = ("rtnl_dellink", "netdev_run_todo")     # frames of a link delete in a kernel stack


@dataclass(frozen=True)
class Net:
    name: str
    mode: str            # bridge | routed | macvlan
    cidr: str
    gateway: str = ""
    bridge: str = ""
    parent: str = ""
    deferred_delete: bool = False

    def toml(self) -> str:
        lines = [f"[networks.{self.name}]", f'mode = "{self.mode}"', "mtu = 1500"]
        if self.deferred_delete:
            lines.append("deferred_delete = true")
        if self.bridge:
            lines.append(f'bridge = "{self.bridge}"')
        if self.parent:
            lines.append(f'parent = "{self.parent}"')
        lines += [f"[[networks.{self.name}.subnets]]", f'cidr = "{self.cidr}"']
        if self.gateway:
            lines.append(f'gateway = "{self.gateway}"')
        return "\n".join(lines) + "\n"


def wait_ready(proc: subprocess.Popen[bytes], socket: str, timeout: float, log_tail: Callable[[], str],
               poll_s: float = 0.02) -> None:
    """Until the agent on ``socket`` answers ping with ready; RuntimeError (with its log's tail)
    when it exits or is not ready within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"cloudnic-agent exited with {proc.returncode}:\n{log_tail()}")
        if os.path.exists(socket):
            with contextlib.suppress(OSError, ValueError, wire.WireError):
                if wire.admin_call(socket, {"op": "ping"}, 2.0).get("ready"):
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"cloudnic-agent not ready within {timeout}s:\n{log_tail()}")
        time.sleep(poll_s)


def _buried_links() -> bool:
    return any(name.startswith(GRAVE_PREFIX) for _, name in socket.if_nameindex())


class Agent:
    def __init__(self, workdir: Path, nets: list[Net], log_level: str = "info",
                 entry: tuple[str, ...] = ("-m", "cloudnic.agent.main"), env: dict[str, str] | None = None,
                 extra_agent: str = "", extra_toml: str = "") -> None:
        """``extra_agent``: more ``[agent]`` lines (host_netns ...); ``extra_toml``: more tables."""
        self.dir = workdir
        self.socket = str(workdir / "agent.sock")
        self.log_path = workdir / "agent.log"
        self.config = workdir / "agent.toml"
        self.config.write_text(
            "[agent]\n"
            f'socket = "{self.socket}"\nstate_dir = "{workdir / "state"}"\n'
            f'node_name = "bench-node"\ncluster_id = "bench"\nlog_level = "{log_level}"\n{extra_agent}\n'
            + "\n".join(n.toml() for n in nets) + extra_toml)
        self.entry = entry
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_s = 0.0

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, *self.entry, "--config", str(self.config)],
                stdout=log, stderr=log, cwd=REPO, env=None if self.env is None else {**os.environ, **self.env})
        wait_ready(self.proc, self.socket, timeout, self.log_tail, poll_s=0.01)
        self.start_s = time.perf_counter() - t0

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mb(self) -> dict[str, float]:
        """VmRSS and VmHWM (peak) of the agent, in MB (MiB)."""
        out: dict[str, float] = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = round(int(val.split()[0]) / 1024.0, 1)
        return out

    def cpu_s(self) -> float:
        """Cumulative user + system CPU seconds of the agent (all threads)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def link_deletes_in_flight(self) -> int:
        """Threads of the agent inside a kernel link delete (from their kernel stacks; needs root).

        cloudnic answers DEL once the pair is gone and leaves the kernel's clean-up after it
        (``netdev_run_todo``: an rcu_barrier, ~20 ms, no CPU) running on a thread of its own."""
        n = 0
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{tid}/stack") as f:
                    stack = f.read()
            except FileNotFoundError:           # the thread ended meanwhile
                continue
            n += any(frame in stack for frame in KERNEL_LINK_DELETE)
        return n

    def settle(self, timeout: float = 5.0, poll_s: float = 0.001, graves: bool = False) -> float:
        """Wait until no link delete of the agent is left in the kernel (with ``graves``: and no
        buried link is left for the reaper either, ``deferred_delete``); the seconds waited. The
        bench calls it after each cloudnic call (untimed) so that the next contestant's call
        does not share the kernel's clean-up after ours. The runner shares the agent's netns."""
        t0 = time.perf_counter()
        while self.link_deletes_in_flight() or (graves and _buried_links()):
            if time.perf_counter() - t0 > timeout:
                break
            time.sleep(poll_s)
        return time.perf_counter() - t0

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
