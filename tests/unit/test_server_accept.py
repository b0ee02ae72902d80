"""The agent's request threads: each accepts and serves connections end to end; accept()
failing for want of descriptors pauses the thread (no spin, no exit); stopping wakes them all."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cloudnic.agent import server as server_mod
from cloudnic.agent.server import Server


class _FlakySock:
    """The listening socket, whose accept() fails ``fail`` times with EMFILE first."""

    def __init__(self, sock: socket.socket, fail: int) -> None:
        self._sock, self.fail, self.calls = sock, fail, 0
        self._guard = threading.Lock()

    def accept(self) -> tuple[socket.socket, Any]:
        with self._guard:
            self.calls += 1
            failing = self.fail > 0
            self.fail -= int(failing)
        if failing:
            raise OSError(errno.EMFILE, "Too many open files")
        return self._sock.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _server(tmp_path: Path, threads: int) -> Server:
    service = SimpleNamespace(rt=SimpleNamespace(node_netns_ids=set))
    srv = Server(service, str(tmp_path / "agent.sock"), 1 << 20, threads=threads)  # type: ignore[arg-type]
    srv.bind()
    return srv


def _serve_until(srv: Server, done) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(srv.serve(stop))
        for _ in range(500):
            if done():
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await srv.drain(5)

    asyncio.run(main())


def test_request_threads_serve_queued_connections_in_parallel(tmp_path: Path) -> None:
    srv = _server(tmp_path, threads=4)
    seen: list[str] = []
    guard = threading.Lock()
    concurrent, peak = [0], [0]

    def handler(conn: socket.socket) -> None:
        with guard:
            concurrent[0] += 1
            peak[0] = max(peak[0], concurrent[0])
        time.sleep(0.05)
        with guard:
            concurrent[0] -= 1
            seen.append(threading.current_thread().name)
        conn.close()

    srv._connection = handler  # type: ignore[method-assign]
    clients = []
    for _ in range(12):                         # queued in the backlog before serving starts
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(srv.socket_path)
        clients.append(c)
    try:
        _serve_until(srv, lambda: len(seen) == 12)
    finally:
        srv.close()
        for c in clients:
            c.close()
    assert len(seen) == 12
    assert peak[0] > 1 and len(set(seen)) > 1   # served by several threads at once
    assert all(name.startswith("cloudnic-req-") for name in seen)


def test_accept_failure_pauses_the_thread_then_it_serves_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(server_mod, "ACCEPT_PAUSE_S", 0.05)
    srv = _server(tmp_path, threads=1)
    assert srv.sock is not None
    real = srv.sock
    flaky = _FlakySock(real, fail=1)
    srv.sock = flaky  # type: ignore[assignment]
    seen: list[float] = []

    def handler(conn: socket.socket) -> None:
        seen.append(time.monotonic())
        conn.close()

    srv._connection = handler  # type: ignore[method-assign]
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t0 = time.monotonic()
    c.connect(srv.socket_path)
    try:
        _serve_until(srv, lambda: bool(seen))
    finally:
        srv.sock = real
        srv.close()
        c.close()
    assert len(seen) == 1                       # accepted once the pause was over
    assert seen[0] - t0 >= 0.04                 # after the pause, not in a busy loop
    assert flaky.calls <= 3                     # the failure, the connection, the one woken by stop


def test_stop_wakes_every_thread_blocked_in_accept(tmp_path: Path) -> None:
    srv = _server(tmp_path, threads=3)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(srv.serve(stop))
        await asyncio.sleep(0.05)
        assert srv.inflight == 0
        stop.set()
        await task

    asyncio.run(main())
    t0 = time.monotonic()
    srv.close()
    assert time.monotonic() - t0 < 1.0          # joined at once: accept() returned on shutdown
    assert not [t for t in threading.enumerate() if t.name.startswith("cloudnic-req-")]


def test_stalled_callers_get_threads_of_their_own_and_the_pool_shrinks_after(tmp_path: Path,
                                                                             monkeypatch) -> None:
    """2 threads at rest, 5 callers that connect and send half a header: a 6th is answered at once,
    the stalled ones time out, and the pool is back to 2 waiting threads."""
    from cloudnic.agent import wire

    monkeypatch.setattr(server_mod, "READ_TIMEOUT_S", 1.0)
    srv = _server(tmp_path, threads=2)
    stalled: list[socket.socket] = []
    answer: list[bytes] = []

    def version() -> None:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(srv.socket_path)
        c.sendall(wire.encode_request({"CNI_COMMAND": "VERSION"}, b""))
        answer.append(c.recv(65536))
        c.close()

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(srv.serve(stop))
        await asyncio.sleep(0.05)
        for _ in range(5):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(srv.socket_path)
            s.sendall(b"CN")
            stalled.append(s)
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, version)
        assert time.monotonic() - t0 < 0.5           # not behind the stalled ones
        assert len(srv._workers) >= 7
        for _ in range(300):                          # the stalled reads time out (1 s)
            if srv.inflight == 0 and len(srv._workers) == 2:
                break
            await asyncio.sleep(0.01)
        assert srv.inflight == 0 and len(srv._workers) == 2 and srv._idle == 2
        stop.set()
        await task

    try:
        asyncio.run(main())
    finally:
        srv.close()
        for s in stalled:
            s.close()
    reply = wire.decode_response(answer[0])
    assert reply.exit_code == 0 and b"supportedVersions" in reply.stdout
