"""Run a real cloudnic-agent for tests: its own state dir, socket and (optionally) node netns."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cloudnic.agent import wire

REPO = Path(__file__).resolve().parents[2]
SHIM = REPO / "shim" / "build" / "cloudnic"


@dataclass
class AgentHandle:
    socket: str
    state_dir: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def admin(self, obj: dict, timeout: float = 10.0) -> dict:
        return wire.admin_call(self.socket, obj, timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def agent_config(tmp_dir: Path, networks_toml: str, *, host_netns: str | None = None,
                 extra_agent: str = "") -> str:
    lines = [
        "[agent]",
        f'socket = "{tmp_dir / "agent.sock"}"',
        f'state_dir = "{tmp_dir / "state"}"',
        'node_name = "test-node"',
        'cluster_id = "test"',
        'log_level = "debug"',
    ]
    # a parking netns of its own (pooled linuxbridge ports wait there); removed by stop_agent
    lines.append(f'parking_netns = "cnt-park-{uuid.uuid4().hex[:8]}"')
    if host_netns:
        lines.append(f'host_netns = "{host_netns}"')
    if extra_agent:
        lines.append(extra_agent)
    return "\n".join(lines) + "\n\n" + networks_toml


def start_agent(tmp_dir: Path, config_text: str, *, timeout: float = 20.0) -> AgentHandle:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    cfg = tmp_dir / "agent.toml"
    cfg.write_text(config_text)
    log_path = tmp_dir / "agent.log"
    sock = str(tmp_dir / "agent.sock")
    logf = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "cloudnic.agent.main", "--config", str(cfg)],
                            stdout=logf, stderr=logf, cwd=REPO)
    logf.close()
    handle = AgentHandle(socket=sock, state_dir=tmp_dir / "state", config_path=cfg, log_path=log_path,
                         proc=proc, env={"CLOUDNIC_AGENT_SOCKET": sock})
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"cloudnic-agent exited with {proc.returncode}:\n{handle.log_text()[-4000:]}")
        if os.path.exists(sock):
            with contextlib.suppress(OSError, ValueError, wire.WireError):
                if handle.admin({"op": "ping"}, timeout=2.0).get("ready"):
                    return handle
        if time.monotonic() > deadline:
            stop_agent(handle)
            raise RuntimeError(f"cloudnic-agent not ready within {timeout}s:\n{handle.log_text()[-4000:]}")
        time.sleep(0.05)


def stop_agent(handle: AgentHandle, sig: int = signal.SIGTERM, timeout: float = 20.0,
               keep_parking: bool = False) -> int:
    """Stop the agent; its parking netns goes too unless ``keep_parking`` (a restart test)."""
    if handle.proc.poll() is None:
        handle.proc.send_signal(sig)
        try:
            handle.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            handle.proc.kill()
            handle.proc.wait()
    if not keep_parking:
        m = re.search(r'^parking_netns = "([^"]+)"', handle.config_path.read_text(), re.M)
        if m and os.path.exists(f"/run/netns/{m.group(1)}"):
            subprocess.run(["ip", "netns", "del", m.group(1)], capture_output=True)
    return handle.proc.returncode


@contextlib.contextmanager
def running_agent(tmp_dir: Path, networks_toml: str, *, host_netns: str | None = None,
                  extra_agent: str = "") -> Iterator[AgentHandle]:
    handle = start_agent(tmp_dir, agent_config(tmp_dir, networks_toml, host_netns=host_netns,
                                               extra_agent=extra_agent))
    try:
        yield handle
    finally:
        stop_agent(handle)
