"""Drivers for the real CNI callers: cnitool, podman (CNI backend) and containerd's CRI.

Each driver owns the processes and objects it creates and removes them in ``close()``; the
fixtures in conftest.py call it even when a test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e_util import PREFIX, environ, run, unique, wait_for


@dataclass(frozen=True)
class E2EEnv:
    """The paths prepared by scripts/e2e-setup.sh (its env.json)."""

    dir: Path
    repo: Path
    cnitool: Path
    cni_bin: Path
    agent_dir: Path
    podman_conf: Path
    podman_storage_conf: Path
    podman_net_dir: Path
    busybox_image: str
    pause_image: str
    pause_tar: Path
    containerd_config: Path
    containerd_socket: Path
    containerd_net_dir: Path
    containerd_dir: Path

    @classmethod
    def load(cls, path: Path) -> E2EEnv:
        raw: dict[str, str] = json.loads(path.read_text())
        fields: dict[str, Any] = {k: (v if k.endswith("_image") else Path(v)) for k, v in raw.items()}
        return cls(**fields)


def conflist(name: str, plugins: Sequence[Mapping[str, Any]], version: str = "1.0.0") -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "plugins": [dict(p) for p in plugins]}


def attachments(agent: Any, *, holding: str | None = None) -> list[dict[str, Any]]:
    """The agent's attachments (admin op), optionally only those holding address ``holding``."""
    answer = agent.admin({"op": "attachments"})
    assert "attachments" in answer, answer
    found = list(answer["attachments"])
    if holding is not None:
        found = [a for a in found if any(ip.split("/")[0] == holding for ip in a.get("ips", []))]
    return found


# ---- cnitool ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cnitool:
    """cnitool with its own NETCONFPATH; ``extra_env`` carries the agent socket."""

    env: E2EEnv
    conf_dir: Path
    extra_env: Mapping[str, str]

    def write(self, conf: Mapping[str, Any]) -> Path:
        path = self.conf_dir / f"{conf['name']}.conflist"
        path.write_text(json.dumps(conf, indent=1))
        return path

    def __call__(
        self,
        verb: str,
        network: str,
        netns_name: str,
        *,
        ifname: str = "eth0",
        cni_args: str | None = None,
        cap_args: Mapping[str, Any] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        env = environ(
            CNI_PATH=str(self.env.cni_bin),
            NETCONFPATH=str(self.conf_dir),
            CNI_IFNAME=ifname,
            **self.extra_env,
        )
        env.pop("CNI_ARGS", None)
        env.pop("CAP_ARGS", None)
        if cni_args:
            env["CNI_ARGS"] = cni_args
        if cap_args is not None:
            env["CAP_ARGS"] = json.dumps(cap_args)
        return run([str(self.env.cnitool), verb, network, f"/run/netns/{netns_name}"], env=env, check=check)

    def add(self, network: str, netns_name: str, **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self("add", network, netns_name, **kw).stdout)
        return result

    @staticmethod
    def container_id(netns_name: str) -> str:
        """The container id cnitool derives from the netns path (cnitool.go)."""
        return "cnitool-" + hashlib.sha512(f"/run/netns/{netns_name}".encode()).hexdigest()[:20]


# ---- podman -------------------------------------------------------------------------------------


class Podman:
    """podman with the isolated CNI configuration of the setup script, plus ``extra_env``."""

    def __init__(self, env: E2EEnv, extra_env: Mapping[str, str]) -> None:
        self.env = env
        self.proc_env = environ(
            CONTAINERS_CONF=str(env.podman_conf),
            CONTAINERS_STORAGE_CONF=str(env.podman_storage_conf),
            **extra_env,
        )
        self.networks: list[Path] = []

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], env=self.proc_env, check=check, timeout=timeout)

    def add_network(self, conf: Mapping[str, Any]) -> str:
        path = self.env.podman_net_dir / f"{conf['name']}.conflist"
        path.write_text(json.dumps(conf, indent=1))
        self.networks.append(path)
        return str(conf["name"])

    def run_container(
        self, stem: str, network: str, *extra: str, check: bool = True
    ) -> tuple[str, subprocess.CompletedProcess[str]]:
        name = unique(stem)
        proc = self(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            *extra,
            self.env.busybox_image,
            "sleep",
            "600",
            check=check,
        )
        return name, proc

    def ip_of(self, container: str, network: str) -> str:
        nets = json.loads(self("inspect", container, "--format", "{{json .NetworkSettings.Networks}}").stdout)
        return str(nets[network]["IPAddress"])

    def exec(self, container: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self("exec", container, *argv, check=check)

    def addresses(self, container: str, dev: str = "eth0") -> list[str]:
        """The IPv4 ``addr/prefix`` of ``dev`` as seen inside the container (busybox ip)."""
        words = self.exec(container, "ip", "-o", "-4", "addr", "show", "dev", dev).stdout.split()
        return [words[i + 1] for i, w in enumerate(words) if w == "inet"]

    def containers(self) -> list[str]:
        out = self("ps", "-a", "--format", "{{.Names}}").stdout
        return [n for n in out.split() if n.startswith(PREFIX)]

    def close(self) -> None:
        names = self.containers()
        if names:
            self("rm", "-f", "-t", "0", *names, check=False)
        for path in self.networks:
            path.unlink(missing_ok=True)


# ---- containerd (CRI) ---------------------------------------------------------------------------


class Containerd:
    """A private containerd driven through the CRI gRPC API (cri_api.v1), like a kubelet.

    The CNI plugins inherit containerd's environment, so ``extra_env`` (the agent socket) is
    given at start. ``conf`` becomes the only (first) conflist in the CNI conf_dir.
    """

    def __init__(self, env: E2EEnv, conf: Mapping[str, Any], extra_env: Mapping[str, str]) -> None:
        self.env = env
        self.conf = dict(conf)
        self.extra_env = dict(extra_env)
        self.dir = env.containerd_dir
        self.log_path = self.dir / "containerd.log"
        self.pid_path = self.dir / "containerd.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self._channel: Any = None
        self.rt: Any = None
        self.pods: list[str] = []

    # -- lifecycle --
    def start(self) -> None:
        import grpc
        from cri_api.v1 import api_pb2 as pb
        from cri_api.v1 import api_pb2_grpc as rpc

        self._stop_stale()
        for old in self.env.containerd_net_dir.iterdir():
            old.unlink()
        (self.env.containerd_net_dir / f"10-{self.conf['name']}.conflist").write_text(json.dumps(self.conf))
        self.env.containerd_socket.unlink(missing_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["containerd", "--config", str(self.env.containerd_config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ(**self.extra_env),
                start_new_session=True,
            )
        self.pid_path.write_text(str(self.proc.pid))
        wait_for("containerd's socket", self._socket_or_exit, timeout=30)
        self._channel = grpc.insecure_channel(f"unix://{self.env.containerd_socket}")
        self.rt = rpc.RuntimeServiceStub(self._channel)

        def network_ready() -> bool:
            try:
                status = self.rt.Status(pb.StatusRequest(), timeout=5).status
            except grpc.RpcError:
                return False
            return any(c.type == "NetworkReady" and c.status for c in status.conditions)

        wait_for("containerd's CRI NetworkReady", network_ready, timeout=30, interval=0.2)
        self._import_pause_image()
        for pod in self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:  # a crashed run's
            self._remove(pod.id)

    def _socket_or_exit(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"containerd exited with {self.proc.returncode}; see {self.log_path}")
        return self.env.containerd_socket.exists()

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(["ctr", "-a", str(self.env.containerd_socket), "-n", "k8s.io", *args], timeout=120)

    def _import_pause_image(self) -> None:
        if self.env.pause_image not in self._ctr("images", "ls", "-q").stdout.split():
            self._ctr("images", "import", str(self.env.pause_tar))

    def _stop_stale(self) -> None:
        """Stop a containerd left running by an earlier, killed run of these tests (same config)."""
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(self.env.containerd_config).encode() in cmdline:
                os.kill(pid, signal.SIGTERM)
                wait_for("the stale containerd to exit", lambda: not Path(f"/proc/{pid}").exists(), 20)

    def close(self) -> None:
        errors: list[str] = []
        if self.rt is not None:
            from cri_api.v1 import api_pb2 as pb

            with contextlib.suppress(Exception):
                self.pods = [
                    p.id for p in self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
                ]
            for sid in self.pods:
                try:
                    self._remove(sid)
                except Exception as exc:  # keep going: the daemon must still be stopped
                    errors.append(f"pod {sid}: {exc}")
        if self._channel is not None:
            self._channel.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.pid_path.unlink(missing_ok=True)
        self._unmount_netns()
        for old in self.env.containerd_net_dir.iterdir():
            old.unlink()
        if errors:
            raise AssertionError("containerd cleanup failed: " + "; ".join(errors))

    def _unmount_netns(self) -> None:
        netns_dir = self.dir / "state" / "io.containerd.grpc.v1.cri" / "netns"
        if netns_dir.is_dir():
            for path in netns_dir.iterdir():
                run(["umount", str(path)], check=False)
                path.unlink(missing_ok=True)

    # -- CRI calls --
    def run_pod(
        self,
        stem: str,
        *,
        annotations: Mapping[str, str] | None = None,
        port_mappings: Sequence[tuple[int, int]] = (),
    ) -> str:
        from cri_api.v1 import api_pb2 as pb

        name = unique(stem)
        log_dir = self.dir / "podlogs" / name
        log_dir.mkdir(parents=True, exist_ok=True)
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="cne-ns", uid=f"uid-{name}"),
            log_directory=str(log_dir),
            annotations=dict(annotations or {}),
            port_mappings=[
                pb.PortMapping(protocol=pb.TCP, container_port=c, host_port=h, host_ip="127.0.0.1")
                for c, h in port_mappings
            ],
        )
        sid: str = self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
        self.pods.append(sid)
        return sid

    def status(self, sid: str) -> Any:
        from cri_api.v1 import api_pb2 as pb

        return self.rt.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=True), timeout=30
        )

    def pod_ip(self, sid: str) -> str:
        return str(self.status(sid).status.network.ip)

    def pod_netns(self, sid: str) -> str:
        """The netns path of the pod, from the verbose status (the runtime spec of the sandbox)."""
        info = json.loads(self.status(sid).info["info"])
        for ns in info["runtimeSpec"]["linux"]["namespaces"]:
            if ns["type"] == "network":
                return str(ns["path"])
        raise AssertionError(f"pod {sid} has no network namespace in its runtime spec")

    def stop_pod(self, sid: str) -> None:
        from cri_api.v1 import api_pb2 as pb

        self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)

    def remove_pod(self, sid: str) -> None:
        from cri_api.v1 import api_pb2 as pb

        self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
        if sid in self.pods:
            self.pods.remove(sid)

    def _remove(self, sid: str) -> None:
        self.stop_pod(sid)
        self.remove_pod(sid)


def nsenter_ip(netns_path: str, *args: str) -> Any:
    """``ip -j args`` inside the netns at ``netns_path`` (containerd's netns is not in /run/netns)."""
    out = run(["nsenter", f"--net={netns_path}", "ip", "-j", *args]).stdout.strip()
    return json.loads(out) if out else []
