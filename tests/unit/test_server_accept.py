"""The agent's accept loop: bursts from a reader callback, and a pause (not a spin, not a
crash) when accept() fails for want of descriptors."""

from __future__ import annotations

import asyncio
import errno
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cloudnic.agent import server as server_mod
from cloudnic.agent.server import Server


class _FlakySock:
    """The listening socket, whose accept() fails ``fail`` times with EMFILE first."""

    def __init__(self, sock: socket.socket, fail: int) -> None:
        self._sock, self.fail, self.calls = sock, fail, 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.calls += 1
        if self.fail > 0:
            self.fail -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self._sock.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _server(tmp_path: Path) -> Server:
    service = SimpleNamespace(rt=SimpleNamespace(node_netns_ids=set))
    srv = Server(service, str(tmp_path / "agent.sock"), 1 << 20)  # type: ignore[arg-type]
    srv.bind()
    return srv


def test_accepts_a_burst_of_queued_connections(tmp_path: Path) -> None:
    srv = _server(tmp_path)
    seen: list[socket.socket] = []

    async def handler(conn: socket.socket) -> None:
        seen.append(conn)
        conn.close()

    srv._connection = handler  # type: ignore[method-assign]

    async def main() -> None:
        clients = []
        for _ in range(20):                     # queued in the backlog before serving starts
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(srv.socket_path)
            clients.append(c)
        stop = asyncio.Event()
        task = asyncio.create_task(srv.serve(stop))
        for _ in range(200):
            if len(seen) == 20:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task
        for c in clients:
            c.close()

    try:
        asyncio.run(main())
    finally:
        srv.close()
    assert len(seen) == 20


def test_accept_failure_pauses_listening_then_resumes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(server_mod, "ACCEPT_PAUSE_S", 0.05)
    srv = _server(tmp_path)
    assert srv.sock is not None
    flaky = _FlakySock(srv.sock, fail=1)
    srv.sock = flaky  # type: ignore[assignment]
    seen: list[float] = []

    async def handler(conn: socket.socket) -> None:
        seen.append(asyncio.get_running_loop().time())
        conn.close()

    srv._connection = handler  # type: ignore[method-assign]

    async def main() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(srv.serve(stop))
        await asyncio.sleep(0.01)
        t0 = asyncio.get_running_loop().time()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(srv.socket_path)
        for _ in range(300):
            if seen:
                break
            await asyncio.sleep(0.005)
        stop.set()
        await task
        c.close()
        return t0

    try:
        t0 = asyncio.run(main())
    finally:
        srv.sock = flaky._sock
        srv.close()
    assert len(seen) == 1                       # accepted once listening resumed
    assert seen[0] - t0 >= 0.04                 # after the pause, not in a busy loop
    assert flaky.calls <= 3                     # the failure was not retried in a spin
