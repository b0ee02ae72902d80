"""A scripted stand-in for cloudnic-agent, for the shim's tests.

It serves the real wire protocol (cloudnic.agent.wire) on a Unix socket from a thread
running its own asyncio loop, records what each connection sent, and answers as the
test's ``action`` says: a response, raw bytes, silence, or a closed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from dataclasses import dataclass, field

from cloudnic.agent import wire


@dataclass(frozen=True)
class Respond:
    """Read the request, answer with a well-formed CNR1 frame."""

    exit_code: int = 0
    stdout: bytes = b"{}"
    stderr: bytes = b""


@dataclass(frozen=True)
class Raw:
    """Send these bytes as the answer, then close (after reading the request if read_first)."""

    data: bytes
    read_first: bool = True


@dataclass(frozen=True)
class Hang:
    """Read the request (if read_first) and never answer."""

    read_first: bool = True


@dataclass(frozen=True)
class Close:
    """Close the connection: after reading the request, or straight away."""

    read_first: bool = True


Action = Respond | Raw | Hang | Close


@dataclass
class Received:
    """What one connection sent; ``error`` is the WireError kind when it did not decode."""

    fields: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    netns: tuple[int, int] | None = None  # (st_dev, st_ino) of the passed descriptor
    error: str | None = None


class FakeAgent:
    """``with FakeAgent(path) as agent: agent.action = Respond(...)``; see ``received``."""

    def __init__(self, path: str, max_body: int = 64 << 20) -> None:
        self.path = path
        self.max_body = max_body
        self.action: Action = Respond()
        # On a request that does not decode (too large, malformed), answer this way.
        self.on_error: Action = Close(read_first=False)
        self.received: list[Received] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    def __enter__(self) -> FakeAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(self.path)
            server.listen(64)
            server.setblocking(False)
        except BaseException:
            server.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(server,), name="fake-agent", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake agent did not start within 10 s")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self._failure is not None:
            raise RuntimeError("fake agent failed") from self._failure

    def _run(self, server: socket.socket) -> None:
        try:
            asyncio.run(self._main(server))
        except BaseException as exc:
            self._failure = exc
        finally:
            server.close()
            self._ready.set()

    async def _main(self, server: socket.socket) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def accept() -> None:
            while True:
                conn, _ = await loop.sock_accept(server)
                conn.setblocking(False)
                task = asyncio.create_task(self._serve(conn, self.action))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        acceptor = asyncio.create_task(accept())
        self._ready.set()
        await self._stop.wait()
        acceptor.cancel()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(acceptor, *tasks, return_exceptions=True)

    def _read(self, conn: socket.socket) -> wire.Request:
        """The agent's own (blocking) frame reader, on a thread; the socket is non-blocking again after."""
        conn.setblocking(True)
        try:
            return wire.read_request(conn, self.max_body, timeout=30)
        finally:
            conn.setblocking(False)

    async def _serve(self, conn: socket.socket, action: Action) -> None:
        loop = asyncio.get_running_loop()
        try:
            if getattr(action, "read_first", True):
                try:
                    req = await loop.run_in_executor(None, self._read, conn)
                except wire.WireError as err:
                    self.received.append(Received(error=err.kind))
                    action = self.on_error
                else:
                    self.received.append(self._record(req))
            if isinstance(action, Respond):
                await loop.sock_sendall(
                    conn, wire.encode_response(action.exit_code, action.stdout, action.stderr)
                )
            elif isinstance(action, Raw):
                await loop.sock_sendall(conn, action.data)
            elif isinstance(action, Hang):
                assert self._stop is not None
                await self._stop.wait()
        except OSError:
            pass  # the shim went away first: nothing to answer
        finally:
            conn.close()

    @staticmethod
    def _record(req: wire.Request) -> Received:
        netns = None
        if req.netns_fd is not None:
            st = os.fstat(req.netns_fd)
            netns = (st.st_dev, st.st_ino)
            req.close()
        return Received(dict(req.fields), req.stdin, netns)
