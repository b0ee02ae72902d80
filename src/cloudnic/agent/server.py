"""The agent's RPC server: a root-only Unix socket speaking docs/wire.md."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
import time
from pathlib import Path
from typing import Any

from cloudnic.agent import admin, convert, wire
from cloudnic.agent.log import request_id
from cloudnic.agent.metrics import Metrics
from cloudnic.agent.service import Call, Service
from cloudnic.cni import version as cniversion
from cloudnic.cni.config import parse_netconf
from cloudnic.cni.env import parse_env
from cloudnic.cni.errors_out import error_object, version_object
from cloudnic.cni.hints import resolve_hints
from cloudnic.cni.result import parse_result
from cloudnic.dataplane import is_netns_fd
from cloudnic.errors import (
    CNIError,
    DecodeFailure,
    IncompatibleVersion,
    InternalError,
    InvalidConfig,
    InvalidEnvironment,
    IOFailure,
)

log = logging.getLogger("cloudnic.agent")
ACCEPT_BURST = 64        # connections accepted per readiness of the listening socket
ACCEPT_PAUSE_S = 0.1     # listening paused this long after accept() failed (EMFILE, ENOMEM)
_ucred = struct.Struct("3i")
_VERBS = frozenset({"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"})


def _error_version(stdin: bytes) -> str:
    """The cniVersion to put in an error object: the config's, when it is one we know."""
    try:
        v = json.loads(stdin).get("cniVersion")
    except Exception:
        return "1.1.0"
    return v if isinstance(v, str) and v in cniversion.SUPPORTED else "1.1.0"


def _netns_unopenable(path: str, err: int) -> InvalidEnvironment:
    """CNI_NETNS the shim could not open (errno ``err``); EINVAL: not a regular file, never opened."""
    if err == errno.EINVAL:
        return InvalidEnvironment(f"CNI_NETNS {path!r} is not a network namespace (a directory, device, FIFO "
                                  "or socket); give the path of one such as /run/netns/<name>")
    return InvalidEnvironment(f"CNI_NETNS {path!r}: cannot open the network namespace ({os.strerror(err)}); "
                              "give the path of an existing one such as /run/netns/<name>")


class Server:
    def __init__(self, service: Service, socket_path: str, max_request_bytes: int,
                 metrics: Metrics | None = None) -> None:
        self.service = service
        self.metrics = metrics or Metrics()
        self.node_netns = service.rt.node_netns_ids()
        self.socket_path = socket_path
        self.max_request_bytes = max_request_bytes
        self.sock: socket.socket | None = None
        self.inflight: set[asyncio.Task[None]] = set()
        self.started = time.time()
        self.served = 0
        self._accepting = False

    # ---- socket lifecycle -----------------------------------------------------------

    def bind(self) -> None:
        path = Path(self.socket_path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise InvalidConfig(f"agent.socket {path} exists and is not a socket; remove it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
                raise InvalidConfig(f"agent.socket {path}: another cloudnic-agent is serving it")
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink()          # stale socket of a dead agent
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(256)
        sock.setblocking(False)
        self.sock = sock

    async def serve(self, stop: asyncio.Event) -> None:
        """Accept until ``stop`` is set. Accepting is a reader callback on the listening socket
        (no future per connection): each readiness accepts what is queued, in bursts."""
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        fd = self.sock.fileno()
        self._accepting = True
        loop.add_reader(fd, self._accept_ready, loop)
        try:
            await stop.wait()
        finally:
            self._accepting = False
            loop.remove_reader(fd)

    def _accept_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.sock is not None
        for _ in range(ACCEPT_BURST):        # then back to the loop: in-flight requests go on
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # out of descriptors or memory: stop listening briefly rather than spin on a
                # socket that stays readable; callers wait in the backlog meanwhile
                log.error("accept failed; pausing new connections", extra={"error": os.strerror(e.errno or 0),
                                                                           "pause_s": ACCEPT_PAUSE_S})
                fd = self.sock.fileno()
                loop.remove_reader(fd)
                loop.call_later(ACCEPT_PAUSE_S, self._resume_accept, loop)
                return
            task = loop.create_task(self._connection(conn))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    def _resume_accept(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._accepting and self.sock is not None:
            loop.add_reader(self.sock.fileno(), self._accept_ready, loop)

    async def drain(self, timeout: float) -> None:
        if self.inflight:
            log.info("waiting for in-flight requests", extra={"count": len(self.inflight)})
            await asyncio.wait(set(self.inflight), timeout=timeout)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    # ---- one connection -------------------------------------------------------------

    async def _connection(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        netns_fd: int | None = None
        try:
            conn.setblocking(False)
            _pid, uid, _gid = _ucred.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _ucred.size))
            try:
                req = await wire.read_any(loop, conn, self.max_request_bytes, timeout=30.0)
            except wire.WireError as e:
                log.warning("bad request frame", extra={"error": str(e), "kind": e.kind})
                if e.kind == "too_large":
                    why = f"request is larger than agent.max_request_bytes ({self.max_request_bytes})"
                    if e.magic == wire.MAGIC_ADMIN:     # an admin caller reads ADR1 frames only
                        await self._send(loop, conn, wire.encode_admin_reply({"ok": False, "error": why}))
                    else:
                        await self._send(loop, conn, wire.encode_response(1, error_object(IOFailure(why), "1.1.0")))
                return
            if isinstance(req, wire.Request):
                netns_fd = req.netns_fd
                if uid != 0:
                    err = IOFailure("permission denied: only root may call cloudnic-agent",
                                    f"peer uid {uid}")
                    out = (1, error_object(err, _error_version(req.stdin)), b"")
                else:
                    out = await self.handle_cni(req)
                await self._send(loop, conn, wire.encode_response(*out))
            else:
                if uid != 0:
                    reply: dict[str, Any] = {"error": f"permission denied for uid {uid}"}
                else:
                    reply = await admin.handle(self, req.body)
                await self._send(loop, conn, wire.encode_admin_reply(reply))
        except (BrokenPipeError, ConnectionResetError) as e:
            log.info("caller went away", extra={"error": str(e)})
        except Exception:
            log.exception("connection handler failed")
        finally:
            if netns_fd is not None:
                os.close(netns_fd)
            conn.close()

    async def _send(self, loop: asyncio.AbstractEventLoop, conn: socket.socket, data: bytes) -> None:
        await loop.sock_sendall(conn, data)

    async def handle_cni(self, req: wire.Request) -> tuple[int, bytes, bytes]:
        """Run one CNI verb; returns (exit code, stdout, stderr)."""
        token = request_id.set(req.request_id)
        t0 = time.perf_counter()
        command = req.env.get("CNI_COMMAND", "")
        code = 0
        try:
            out = await self._dispatch(req)
            self.served += 1
            return 0, out, b""
        except CNIError as e:
            code = e.code
            log.info("request failed", extra={"command": command, "code": e.code, "error": str(e)})
            # the config is decoded again only on failure, for the error's cniVersion
            return 1, error_object(e, _error_version(req.stdin)), self._stderr_line(req.request_id, command, e)
        except Exception as e:
            log.exception("request crashed", extra={"command": command})
            err = InternalError(f"cloudnic-agent failed unexpectedly during {command or 'the request'}: "
                                f"{type(e).__name__}", str(e))
            code = err.code
            return 1, error_object(err, _error_version(req.stdin)), self._stderr_line(req.request_id, command, err)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            self.metrics.observe_request(command if command in _VERBS else "invalid", code, ms)
            log.debug("request done", extra={"command": command, "ms": round(ms, 2)})
            request_id.reset(token)

    @staticmethod
    def _stderr_line(rid: str, command: str, err: CNIError) -> bytes:
        """One line for the runtime's log, carrying the request id found in the agent's log."""
        return f"cloudnic[{rid}]: {command} failed with code {err.code}: {err}\n".encode(errors="replace")

    async def _dispatch(self, req: wire.Request) -> bytes:
        env = parse_env(req.env)
        if env.command == "VERSION":
            return version_object(_error_version(req.stdin))
        conf = parse_netconf(req.stdin, env.command)
        if env.command in ("STATUS", "GC") and not cniversion.supports_status_gc(conf.cni_version):
            raise IncompatibleVersion(f"cniVersion {conf.cni_version}: {env.command} needs 1.1.0")
        fd = req.netns_fd
        if fd is None and req.netns_errno is not None and env.command in ("ADD", "CHECK"):
            raise _netns_unopenable(env.netns, req.netns_errno)
        if fd is not None and not is_netns_fd(fd):
            if env.command == "DEL":    # DEL of a gone/replaced netns: host side only
                fd = None                  # (the descriptor is closed with the connection)
            else:
                raise InvalidEnvironment(f"CNI_NETNS {env.netns!r} is not a network namespace; give the path "
                                         "of one such as /run/netns/<name> or /proc/<pid>/ns/net")
        if fd is not None:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in self.node_netns:
                raise InvalidEnvironment(f"CNI_NETNS {env.netns!r} is the node's own network namespace, "
                                         "not a sandbox's; refusing to plumb it")
        call = Call(env=env, conf=conf, netns_fd=fd, netns_errno=req.netns_errno)
        async with self.service.gate.shared():
            return await self._verb(call)

    async def _verb(self, call: Call) -> bytes:
        svc, env, conf = self.service, call.env, call.conf
        if env.command == "ADD":
            hints = resolve_hints(conf, env)
            prev = parse_result(conf.prev_result) if conf.prev_result is not None else None
            result = await svc.add(call, hints)
            if prev is not None:
                result = convert.chain_onto(prev, result)
            return result.to_json(conf.cni_version)
        if env.command == "DEL":
            await svc.delete(call)
        elif env.command == "CHECK":
            await svc.check(call)
        elif env.command == "GC":
            await svc.gc(call)
        elif env.command == "STATUS":
            await svc.status(call)
        else:    # parse_env has refused anything else already
            raise DecodeFailure(f"CNI_COMMAND {env.command!r} is not handled")
        return b""
