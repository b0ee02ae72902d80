"""The agent's RPC server: a root-only Unix socket speaking docs/wire.md.

CNI requests are served by request threads, each one end to end: it blocks in
``accept()`` on the listening socket, reads the frame, runs the verb (store, provider,
netlink: all blocking) and writes the reply. No event-loop hop and no hand-off between
threads sits on a CNI request's path: with one interpreter lock, every hand-off costs a
wake-up and a lock transfer, which measured ~25 % of an ADD's CPU at 10 in flight.

``agent.workers`` threads wait in ``accept()``; when the last idle one takes a connection
it starts another (up to ``MAX_REQUEST_THREADS``), so callers that connect and stall (up
to ``READ_TIMEOUT_S``) never keep others waiting, and the pool shrinks back when idle.
At most ``agent.workers`` verbs run at once (the rest wait for a slot, their frames read).
A thread left in a foreign netns is replaced, like an executor worker.

Admin frames (the CLI) go to the event loop, which answers them as before: they await
the audit, pools and metrics there.
"""

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
import threading
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
from cloudnic.dataplane import is_netns_fd, thread_poisoned
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
ACCEPT_PAUSE_S = 0.1     # a request thread waits this long after accept() failed (EMFILE, ENOMEM)
READ_TIMEOUT_S = 30.0    # a caller must send its whole frame within this
CLOSE_JOIN_S = 2.0       # close() waits this long in all for the request threads to end
MAX_REQUEST_THREADS = 256  # request threads at most (each stalled caller holds one until READ_TIMEOUT_S)
SEND_TIMEOUT_S = 30.0    # and take the reply within this
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
                 metrics: Metrics | None = None, threads: int = 8) -> None:
        self.service = service
        self.metrics = metrics or Metrics()
        self.node_netns = service.rt.node_netns_ids()
        self.socket_path = socket_path
        self.max_request_bytes = max_request_bytes
        self.threads = max(threads, 1)                   # idle in accept() at rest; verbs at once
        self._verbs = threading.BoundedSemaphore(self.threads)
        self.sock: socket.socket | None = None
        self.started = time.time()
        self.served = 0
        self.retired = 0                         # request threads replaced (left in a foreign netns)
        self._lock = threading.Lock()            # served, inflight, the thread set
        self._inflight = 0
        self._workers: set[threading.Thread] = set()
        self._idle = 0                            # request threads waiting in accept()
        self._serial = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admin_tasks: set[asyncio.Task[None]] = set()

    @property
    def inflight(self) -> int:
        """Requests being served now (CNI on request threads, admin on the loop)."""
        with self._lock:
            return self._inflight + len(self._admin_tasks)

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
        self.sock = sock                         # blocking: the request threads wait in accept()

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then no new connection is accepted."""
        assert self.sock is not None
        self._loop = asyncio.get_running_loop()
        with self._lock:
            for _ in range(self.threads):
                self._spawn()
        try:
            await stop.wait()
        finally:
            self._stop_accepting()

    def _spawn(self) -> None:
        """Start one request thread (it counts as idle). Call with ``_lock`` held."""
        self._serial += 1
        self._idle += 1
        t = threading.Thread(target=self._accept_loop, name=f"cloudnic-req-{self._serial}", daemon=True)
        self._workers.add(t)
        t.start()

    def _stop_accepting(self) -> None:
        self._stopping = True
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)     # wakes every accept() with EINVAL

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the requests in flight to finish."""
        if self.inflight:
            log.info("waiting for in-flight requests", extra={"count": self.inflight})
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self._stop_accepting()
        with self._lock:
            workers = list(self._workers)
        deadline = time.monotonic() + CLOSE_JOIN_S      # idle ones return at once; a request still
        for t in workers:                               # running past drain() is not waited for
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.sock is not None:
            self.sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    # ---- request threads --------------------------------------------------------------

    def _accept_loop(self) -> None:
        me = threading.current_thread()
        assert self.sock is not None
        idle = True                               # counted in self._idle
        try:
            while not self._stopping:
                try:
                    conn, _addr = self.sock.accept()
                except OSError as e:
                    if self._stopping or e.errno in (errno.EINVAL, errno.EBADF):
                        return
                    # out of descriptors or memory: wait rather than spin; callers wait in the backlog
                    log.error("accept failed; pausing this request thread",
                              extra={"error": os.strerror(e.errno or 0), "pause_s": ACCEPT_PAUSE_S})
                    time.sleep(ACCEPT_PAUSE_S)
                    continue
                with self._lock:
                    self._idle -= 1
                    idle = False
                    self._inflight += 1
                    if self._idle == 0 and len(self._workers) < MAX_REQUEST_THREADS and not self._stopping:
                        self._spawn()             # someone must be in accept() for the next caller
                try:
                    self._connection(conn)
                finally:
                    with self._lock:
                        self._inflight -= 1
                if thread_poisoned():
                    log.critical("retiring request thread %s: it is stuck in a foreign netns", me.name)
                    with self._lock:
                        self.retired += 1
                        if not self._stopping and self._idle == 0:
                            self._spawn()
                    return
                with self._lock:
                    if self._idle >= self.threads:
                        return                    # enough threads wait already: shrink
                    self._idle += 1
                    idle = True
        finally:
            with self._lock:
                self._workers.discard(me)
                if idle:
                    self._idle -= 1

    def _connection(self, conn: socket.socket) -> None:
        netns_fd: int | None = None
        handed_over = False
        try:
            _pid, uid, _gid = _ucred.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _ucred.size))
            try:
                req = wire.read_any(conn, self.max_request_bytes, timeout=READ_TIMEOUT_S)
            except wire.WireError as e:
                log.warning("bad request frame", extra={"error": str(e), "kind": e.kind})
                if e.kind == "too_large":
                    why = f"request is larger than agent.max_request_bytes ({self.max_request_bytes})"
                    if e.magic == wire.MAGIC_ADMIN:     # an admin caller reads ADR1 frames only
                        self._send(conn, wire.encode_admin_reply({"ok": False, "error": why}))
                    else:
                        self._send(conn, wire.encode_response(1, error_object(IOFailure(why), "1.1.0")))
                return
            if isinstance(req, wire.AdminRequest):
                handed_over = self._to_loop(conn, req, uid)
                return
            netns_fd = req.netns_fd
            if uid != 0:
                err = IOFailure("permission denied: only root may call cloudnic-agent", f"peer uid {uid}")
                out = (1, error_object(err, _error_version(req.stdin)), b"")
            else:
                out = self.handle_cni(req)
            self._send(conn, wire.encode_response(*out))
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as e:
            log.info("caller went away", extra={"error": str(e) or type(e).__name__})
        except Exception:
            log.exception("connection handler failed")
        finally:
            if netns_fd is not None:
                os.close(netns_fd)
            if not handed_over:
                conn.close()

    @staticmethod
    def _send(conn: socket.socket, data: bytes) -> None:
        conn.settimeout(SEND_TIMEOUT_S)
        conn.sendall(data)

    # ---- admin frames: answered on the event loop ---------------------------------------

    def _to_loop(self, conn: socket.socket, req: wire.AdminRequest, uid: int) -> bool:
        """Hand the connection to the loop; False (the caller closes it) when there is none."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(self._start_admin, conn, req, uid)
        except RuntimeError:                     # the loop stopped meanwhile
            return False
        return True

    def _start_admin(self, conn: socket.socket, req: wire.AdminRequest, uid: int) -> None:
        task = asyncio.get_running_loop().create_task(self._admin(conn, req, uid))
        with self._lock:
            self._admin_tasks.add(task)
        task.add_done_callback(self._admin_done)

    def _admin_done(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._admin_tasks.discard(task)

    async def _admin(self, conn: socket.socket, req: wire.AdminRequest, uid: int) -> None:
        try:
            conn.setblocking(False)
            if uid != 0:
                reply: dict[str, Any] = {"error": f"permission denied for uid {uid}"}
            else:
                reply = await admin.handle(self, req.body)
            await asyncio.get_running_loop().sock_sendall(conn, wire.encode_admin_reply(reply))
        except (BrokenPipeError, ConnectionResetError) as e:
            log.info("caller went away", extra={"error": str(e)})
        except Exception:
            log.exception("admin request failed")
        finally:
            conn.close()

    # ---- one CNI request --------------------------------------------------------------

    def handle_cni(self, req: wire.Request) -> tuple[int, bytes, bytes]:
        """Run one CNI verb on this thread; returns (exit code, stdout, stderr)."""
        token = request_id.set(req.request_id)
        t0 = time.perf_counter()
        command = req.env.get("CNI_COMMAND", "")
        code = 0
        try:
            with self._verbs:                     # at most agent.workers verbs at once
                out = self._dispatch(req)
            with self._lock:
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

    def _dispatch(self, req: wire.Request) -> bytes:
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
        with self.service.gate.shared():
            return self._verb(call)

    def _verb(self, call: Call) -> bytes:
        svc, env, conf = self.service, call.env, call.conf
        if env.command == "ADD":
            hints = resolve_hints(conf, env)
            prev = parse_result(conf.prev_result) if conf.prev_result is not None else None
            result = svc.add(call, hints)
            if prev is not None:
                result = convert.chain_onto(prev, result)
            return result.to_json(conf.cni_version)
        if env.command == "DEL":
            svc.delete(call)
        elif env.command == "CHECK":
            svc.check(call)
        elif env.command == "GC":
            svc.gc(call)
        elif env.command == "STATUS":
            svc.status(call)
        else:    # parse_env has refused anything else already
            raise DecodeFailure(f"CNI_COMMAND {env.command!r} is not handled")
        return b""
