"""A counting HTTP reverse proxy on loopback, in front of neutron-server (standard library only).

Tests point the code under test at ``HttpCounter.url`` instead of the server and then assert on what went over
the wire: ``counts()`` maps ``"METHOD /path"`` (query string left out) to the number of requests, so "N ADDs made
zero Neutron calls" is ``counter.total() == 0`` and "refill used one bulk create" is
``counter.counts().get("POST /v2.0/ports") == 1``. Fault modes: ``down()`` refuses connections (the listening
socket is closed and open connections are cut), ``slow(seconds)`` delays every response (or, with
``phase="request"``, every request before it reaches the server), ``fail(status)`` answers every request with that
status without forwarding it; ``up()`` ends any of them.

Both sides can live in another network namespace: ``listen_netns`` makes the proxy listen on that namespace's
loopback, ``upstream_netns`` makes it connect to the server on that namespace's loopback. The sockets are created
by a short-lived thread that joins the namespace (``setns`` affects only the calling thread) and then exits; a
socket keeps the namespace it was created in.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import socket
import socketserver
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

CLONE_NEWNET = 0x40000000
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


def socket_in_netns(netns: str | None, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A new socket in the named network namespace (``ip netns`` name), or in this one when ``netns`` is None."""
    if netns is None:
        return socket.socket(family, kind)
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into netns {netns!r}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["sock"] = socket.socket(family, kind)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=work, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    sock: socket.socket = result["sock"]
    return sock


@dataclass(frozen=True)
class Seen:
    """One request that reached the proxy."""

    method: str
    path: str
    query: str
    at: float  # time.monotonic()

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


class _UpstreamConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, netns: str | None, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._netns = netns

    def connect(self) -> None:
        sock = socket_in_netns(self._netns)
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, counter: HttpCounter, address: tuple[str, int], netns: str | None) -> None:
        self.counter = counter
        super().__init__(address, _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = socket_in_netns(netns)
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    upstream: _UpstreamConnection | None = None

    def setup(self) -> None:
        super().setup()
        self.server.counter._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.counter._track(self.connection, False)
            if self.upstream is not None:
                self.upstream.close()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _proxy(self) -> None:
        counter = self.server.counter
        parts = urlsplit(self.path)
        body = self._body()
        counter._record(Seen(self.command, parts.path, parts.query, time.monotonic()))
        fail_status = counter._fail_status
        if fail_status is not None:
            self._reply(
                fail_status,
                [("Content-Type", "application/json")],
                json.dumps(
                    {
                        "NeutronError": {
                            "type": "HttpCounterFault",
                            "message": f"fault injected: {fail_status}",
                            "detail": "",
                        }
                    }
                ).encode(),
            )
            return
        counter._delay("request")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if self.upstream is None:
            self.upstream = counter._connect_upstream()
        try:
            self.upstream.request(self.command, self.path, body=body, headers=headers)
            resp = self.upstream.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.upstream.close()
            self.upstream = None
            self._reply(502, [("Content-Type", "text/plain")], f"http_counter: upstream failed: {exc}".encode())
            return
        counter._delay("response")
        self._reply(resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP], data)

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response_only(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _proxy


class HttpCounter:
    """A counting reverse proxy listening on ``host:port`` (port 0: any free one) in front of ``upstream``.

    ``upstream`` is ``http://127.0.0.1:<port>``. Thread-safe; start() it (or use it as a context manager).
    """

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        listen_netns: str | None = None,
        upstream_netns: str | None = None,
        upstream_timeout: float = 120.0,
    ) -> None:
        target = urlsplit(upstream)
        if target.scheme != "http" or not target.hostname or not target.port:
            raise ValueError(f"HttpCounter upstream must be http://HOST:PORT, not {upstream!r}")
        self.upstream = upstream
        self._target = (target.hostname, target.port)
        self._address = (host, port)
        self.listen_netns = listen_netns
        self.upstream_netns = upstream_netns
        self._upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._open: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._slow_s = 0.0
        self._slow_phase = "response"
        self._fail_status: int | None = None
        self._wake = threading.Event()

    # ---- life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> HttpCounter:
        with self._lock:
            if self._server is None:
                self._server = _Server(self, self._address, self.listen_netns)
                host, port = self._server.server_address[:2]
                self._address = (str(host), int(port))  # the same port again after down()/up()
                self._thread = threading.Thread(
                    target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="http-counter", daemon=True
                )
                self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening and cut every open connection."""
        self._wake.set()
        with self._lock:
            server, thread, self._server, self._thread = self._server, self._thread, None, None
            conns = list(self._open)
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> HttpCounter:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def port(self) -> int:
        return int(self._address[1])

    @property
    def url(self) -> str:
        return f"http://{self._address[0]}:{self._address[1]}"

    def __str__(self) -> str:
        return self.url

    # ---- counting ------------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """``{"METHOD /path": n}`` for every request since the last reset()."""
        with self._lock:
            return dict(Counter(seen.key for seen in self._seen))

    def total(self, method: str | None = None, prefix: str = "") -> int:
        """How many requests (of ``method``, on paths starting with ``prefix``) since the last reset()."""
        with self._lock:
            return sum(1 for s in self._seen if (method is None or s.method == method) and s.path.startswith(prefix))

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()

    # ---- faults --------------------------------------------------------------------------------------------------
    def down(self) -> None:
        """Refuse connections (ECONNREFUSED) and cut the open ones, until up()."""
        self.close()

    def slow(self, seconds: float, *, phase: str = "response") -> None:
        """Delay each response by ``seconds`` after the server answered it (phase "response"), or each request
        before it is forwarded (phase "request"), until up()."""
        if phase not in ("request", "response"):
            raise ValueError(f"slow(): phase must be 'request' or 'response', not {phase!r}")
        self.start()
        self._wake.clear()
        self._slow_s, self._slow_phase, self._fail_status = seconds, phase, None

    def fail(self, status: int = 503) -> None:
        """Answer every request with ``status`` (a NeutronError body) without forwarding it, until up()."""
        self.start()
        self._slow_s, self._fail_status = 0.0, status

    def up(self) -> None:
        """Back to a plain counting proxy (listening, no delay, no injected failure)."""
        self._slow_s, self._fail_status = 0.0, None
        self._wake.set()
        self.start()

    @property
    def mode(self) -> str:
        if self._server is None:
            return "down"
        if self._fail_status is not None:
            return f"fail {self._fail_status}"
        return f"slow {self._slow_s}s ({self._slow_phase})" if self._slow_s else "up"

    # ---- used by the handler -------------------------------------------------------------------------------------
    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def _track(self, conn: socket.socket, opened: bool) -> None:
        with self._lock:
            (self._open.add if opened else self._open.discard)(conn)

    def _delay(self, phase: str) -> None:
        if self._slow_s and self._slow_phase == phase:
            self._wake.wait(self._slow_s)

    def _connect_upstream(self) -> _UpstreamConnection:
        return _UpstreamConnection(self._target[0], self._target[1], self.upstream_netns, self._upstream_timeout)
