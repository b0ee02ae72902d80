"""Run one hostile case through the real shim against a real agent, and check everything a user would see.

A case passes when: the shim exits 1 with exactly one JSON error object on stdout (no traceback, nothing
else), the code is the expected one, ``msg``/``details`` name the offending field, the agent is still
alive and serving, and neither the store (attachments, ports, address use) nor the kernel state of the
node and the sandbox changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.hostile.hostile_case import PLACEHOLDERS, Case, base
from tests.support.agent import AgentHandle
from tests.support.cni import CNIRun, kernel_snapshot, netns, run_cni, sh, unique

ERROR_KEYS = {"cniVersion", "code", "msg", "details"}
CONTAINER_ID = "hostile"
HOLDER_ARGS = "IP=10.91.0.250;MAC=02:aa:00:00:00:fa"


@dataclass(frozen=True)
class Bench:
    """One agent, the node netns it plumbs into, a sandbox, and odd files to point CNI_NETNS at."""

    agent: AgentHandle
    node: str
    sandbox: str
    paths: dict[str, str]

    def expand(self, value: str) -> str:
        for key in PLACEHOLDERS:
            if key in value:
                value = value.replace(key, self.paths[key])
        return value


def node_of(agent: AgentHandle) -> str:
    return agent.config_path.read_text().split('host_netns = "/run/netns/')[1].split('"')[0]


@contextlib.contextmanager
def _odd_paths(tmp: Path, sandbox: str, node: str) -> Iterator[dict[str, str]]:
    (tmp / "file").write_text("not a namespace\n")
    (tmp / "dir").mkdir()
    os.mkfifo(tmp / "fifo")
    (tmp / "link").symlink_to(tmp / "file")
    runfile = Path("/run/netns") / unique("cnh-file-")
    runfile.write_text("")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp / "sock"))
    try:
        yield {"{sandbox}": sandbox, "{node}": node, "{file}": str(tmp / "file"), "{dir}": str(tmp / "dir"),
               "{fifo}": str(tmp / "fifo"), "{sock}": str(tmp / "sock"), "{link}": str(tmp / "link"),
               "{runfile}": str(runfile)}
    finally:
        sock.close()
        runfile.unlink(missing_ok=True)


@contextlib.contextmanager
def bench(agent: AgentHandle, tmp: Path) -> Iterator[Bench]:
    """A sandbox (with a link ``dummy0`` in it) and a live attachment holding 10.91.0.250 / 02:aa:00:00:00:fa."""
    node = node_of(agent)
    with netns(unique("cnh-sb-")) as sandbox, netns(unique("cnh-hold-")) as holder, \
            _odd_paths(tmp, sandbox, node) as paths:
        sh("ip", "-n", sandbox, "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1")
        r = run_cni("ADD", base(), socket=agent.socket, container_id="holder", netns=f"/run/netns/{holder}",
                    args=HOLDER_ARGS)
        assert r.code == 0, r.stdout
        # a dual-stack ADD/DEL first: the bridge keeps the gateway addresses it gets on first use, so that
        # a fuzzed ADD that is accepted (and DELeted again) leaves the node exactly as it found it
        with netns(unique("cnh-warm-")) as warm:
            for verb in ("ADD", "DEL"):
                w = run_cni(verb, base(), socket=agent.socket, container_id="warmup", netns=f"/run/netns/{warm}")
                assert w.code == 0, w.stdout
        try:
            yield Bench(agent, node, sandbox, paths)
        finally:
            run_cni("DEL", base(), socket=agent.socket, container_id="holder", netns=f"/run/netns/{holder}")


def snapshot(b: Bench) -> tuple[Any, ...]:
    return (b.agent.admin({"op": "attachments"})["attachments"], b.agent.admin({"op": "ports"})["ports"],
            b.agent.admin({"op": "status"})["usage"], kernel_snapshot(b.node), kernel_snapshot(b.sandbox))


def assert_serving(agent: AgentHandle) -> None:
    assert agent.proc.poll() is None, f"the agent died:\n{agent.log_text()[-3000:]}"
    assert agent.admin({"op": "ping"}, timeout=5.0).get("ok"), "the agent does not answer ping"


def one_json_object(stdout: str) -> dict[str, Any]:
    """The single JSON object that is all of stdout (one trailing newline allowed)."""
    assert stdout and not stdout[0].isspace(), f"stdout does not start with a JSON object: {stdout[:200]!r}"
    obj, end = json.JSONDecoder().raw_decode(stdout)
    assert stdout[end:] in ("", "\n"), f"more than one JSON object on stdout: {stdout[end:end + 200]!r}"
    assert isinstance(obj, dict), f"stdout is not a JSON object: {stdout[:200]!r}"
    return obj


def invoke(b: Bench, case: Case, timeout: float = 30.0) -> CNIRun:
    env = {k: b.expand(v) for k, v in case.env.items()}
    data = case.conf if case.conf is not None else base()
    return run_cni(case.command, data, socket=b.agent.socket, container_id=CONTAINER_ID,
                   netns=f"/run/netns/{b.sandbox}", args=case.args, extra_env=env, drop_env=case.drop,
                   timeout=timeout)


def undo(b: Bench) -> None:
    """A case that wrongly succeeded: take its attachment away again so the next case starts clean."""
    run_cni("DEL", base(), socket=b.agent.socket, container_id=CONTAINER_ID, netns=f"/run/netns/{b.sandbox}")


def check(b: Bench, case: Case) -> dict[str, Any]:
    """Run ``case`` and assert every property of a correctly refused request; returns the error object."""
    before = snapshot(b)
    try:
        r = invoke(b, case)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{case.name}: the shim hung (no answer within 30 s)") from None
    if r.code == 0:
        undo(b)
    assert r.code == 1, f"{case.name}: expected a refusal (exit 1), got exit {r.code}: {r.stdout[:400]!r}"
    obj = one_json_object(r.stdout)
    assert set(obj) <= ERROR_KEYS and {"code", "msg"} <= set(obj), f"{case.name}: {obj}"
    assert isinstance(obj["cniVersion"], str) and isinstance(obj["msg"], str), obj
    assert obj["code"] == case.code, f"{case.name}: expected code {case.code}, got {obj}"
    text = (obj["msg"] + " " + obj.get("details", "")).lower()
    assert case.names.lower() in text, f"{case.name}: the message does not name {case.names!r}: {obj}"
    assert "Traceback" not in r.stdout + r.stderr, f"{case.name}: traceback: {r.stderr[-2000:]}"
    assert_serving(b.agent)
    assert snapshot(b) == before, f"{case.name}: the store or the kernel changed"
    return obj
