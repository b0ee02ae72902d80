"""Exec the real cloudnic executable as a runtime does (thread-safe: one process per call)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHIM = REPO / "shim" / "build" / "cloudnic"


@dataclass(frozen=True)
class CniCall:
    command: str
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def reply(self) -> Any:
        try:
            return json.loads(self.stdout) if self.stdout.strip() else {}
        except ValueError:
            return {"code": None, "msg": f"stdout is not JSON: {self.stdout[:200]!r}"}

    @property
    def error_code(self) -> int | None:
        if self.ok:
            return None
        r = self.reply()
        return r.get("code") if isinstance(r, dict) else None

    def describe(self) -> str:
        r = self.reply()
        if self.ok:
            return f"{self.command} ok"
        msg = r.get("msg") if isinstance(r, dict) else r
        return f"{self.command} exit {self.code} code {self.error_code}: {msg} {self.stderr.strip()[:200]}"


def conf(network: str, version: str = "1.1.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": network, "type": "cloudnic", "network": network, **extra}


def call(command: str, config: dict[str, Any], *, socket: str, container_id: str, netns: str,
         ifname: str = "eth0", args: str = "", timeout: float = 120.0) -> CniCall:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname,
           "CNI_PATH": "/opt/cni/bin", "CNI_NETNS": netns, "CLOUDNIC_AGENT_SOCKET": socket,
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if args:
        env["CNI_ARGS"] = args
    try:
        p = subprocess.run([str(SHIM)], input=json.dumps(config).encode(), env=env, capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return CniCall(command, -1, "", f"the shim did not answer within {timeout} s")
    return CniCall(command, p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
