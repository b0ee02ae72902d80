"""Prometheus metrics of the agent, served over HTTP (agent.metrics_listen) and the admin socket.

Counters and histograms are kept in memory by the agent's event loop thread; sources
that live elsewhere (provider call statistics, pools) are read when the text is rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from cloudnic.errors import InvalidConfig

log = logging.getLogger("cloudnic.metrics")

BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    parts = []
    for k, v in sorted(labels.items()):
        esc = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{k}="{esc}"')
    return "{" + ",".join(parts) + "}"


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS_MS)
        self.total = 0
        self.sum_ms = 0.0

    def observe(self, ms: float) -> None:
        self.total += 1
        self.sum_ms += ms
        for i, b in enumerate(BUCKETS_MS):
            if ms <= b:
                self.counts[i] += 1

    def copy(self) -> Histogram:
        h = Histogram()
        h.counts, h.total, h.sum_ms = list(self.counts), self.total, self.sum_ms
        return h


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = defaultdict(int)       # (verb, code) -> n
        self.latency: dict[str, Histogram] = defaultdict(Histogram)        # verb -> ms
        self.gauges: dict[str, Callable[[], float]] = {}
        self.sources: list[Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]] = []
        self._lock = threading.Lock()

    def observe_request(self, verb: str, code: int, ms: float) -> None:
        """Called by the request threads; ``render`` reads under the same lock."""
        with self._lock:
            self.requests[(verb or "unknown", str(code))] += 1
            self.latency[verb or "unknown"].observe(ms)

    def gauge(self, name: str, fn: Callable[[], float]) -> None:
        self.gauges[name] = fn

    def source(self, fn: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> None:
        """A callable yielding (name, type, labels, value) samples at render time."""
        self.sources.append(fn)

    def render(self) -> str:
        out: list[str] = []
        with self._lock:                       # a consistent copy; the request threads keep counting
            requests = sorted(self.requests.items())
            latency = [(verb, h.copy()) for verb, h in sorted(self.latency.items())]
        out.append("# HELP cloudnic_requests_total CNI requests served, by verb and CNI result code (0 = ok)")
        out.append("# TYPE cloudnic_requests_total counter")
        for (verb, code), n in requests:
            out.append(f"cloudnic_requests_total{_labels({'verb': verb, 'code': code})} {n}")
        out.append("# HELP cloudnic_request_duration_ms Time the agent spent on a CNI request")
        out.append("# TYPE cloudnic_request_duration_ms histogram")
        for verb, h in latency:
            for b, c in zip(BUCKETS_MS, h.counts, strict=True):
                out.append(f"cloudnic_request_duration_ms_bucket{_labels({'verb': verb, 'le': str(b)})} {c}")
            out.append(f"cloudnic_request_duration_ms_bucket{_labels({'verb': verb, 'le': '+Inf'})} {h.total}")
            out.append(f"cloudnic_request_duration_ms_sum{_labels({'verb': verb})} {h.sum_ms:.3f}")
            out.append(f"cloudnic_request_duration_ms_count{_labels({'verb': verb})} {h.total}")
        for name, fn in sorted(self.gauges.items()):
            try:
                value = fn()
            except Exception as e:     # a broken source must not break the page
                log.warning("metric source failed", extra={"metric": name, "error": str(e)})
                continue
            out.append(f"# TYPE {name} gauge")
            out.append(f"{name} {value}")
        seen: set[str] = set()
        for src in self.sources:
            try:
                samples = list(src())
            except Exception as e:
                log.warning("metric source failed", extra={"error": str(e)})
                continue
            for name, kind, labels, value in samples:
                base = name
                if kind == "histogram":        # one TYPE line for name_bucket/_sum/_count
                    base = next((name[: -len(s)] for s in ("_bucket", "_sum", "_count") if name.endswith(s)), name)
                if base not in seen:
                    out.append(f"# TYPE {base} {kind}")
                    seen.add(base)
                out.append(f"{name}{_labels(labels)} {value}")
        return "\n".join(out) + "\n"


class MetricsServer:
    """A minimal HTTP/1.0 server: GET /metrics and GET /healthz, loopback by default."""

    def __init__(self, metrics: Metrics, listen: str, ready: Callable[[], bool]) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self.metrics = metrics
        self.ready = ready
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as e:
            raise InvalidConfig(f"agent.metrics_listen {self.host}:{self.port}: cannot listen "
                                f"({e.strerror or e})") from e

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            if parts[:1] != ["GET"]:
                status, body, ctype = "405 Method Not Allowed", "only GET\n", "text/plain"
            elif path == "/metrics":
                status, body, ctype = "200 OK", self.metrics.render(), "text/plain; version=0.0.4"
            elif path == "/healthz":
                ok = self.ready()
                status, body, ctype = ("200 OK", "ok\n", "text/plain") if ok else \
                    ("503 Service Unavailable", "not ready\n", "text/plain")
            else:
                status, body, ctype = "404 Not Found", "try /metrics or /healthz\n", "text/plain"
            data = body.encode()
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def samples_from_stats(prefix: str, rows: Iterable[dict[str, Any]], label_keys: tuple[str, ...],
                       value_keys: dict[str, str]) -> list[tuple[str, str, dict[str, str], float]]:
    """Turn a list of stat dicts (pools, provider calls) into metric samples."""
    out = []
    for row in rows:
        labels = {k: str(row.get(k, "")) for k in label_keys}
        for key, kind in value_keys.items():
            if key in row and isinstance(row[key], int | float):
                out.append((f"{prefix}_{key}", kind, labels, float(row[key])))
    return out


def provider_call_samples(provider: Any) -> list[tuple[str, str, dict[str, str], float]]:
    """Every IaaS call the provider made: count, errors, retries, latency histogram (seconds)."""
    stats = getattr(provider, "stats", None)
    if stats is None or not hasattr(stats, "snapshot"):
        return []
    out: list[tuple[str, str, dict[str, str], float]] = []
    for op, st in sorted(stats.snapshot().items()):
        labels = {"op": op}
        out.append(("cloudnic_provider_calls_total", "counter", labels, float(st.count)))
        out.append(("cloudnic_provider_call_errors_total", "counter", labels, float(st.errors)))
        out.append(("cloudnic_provider_call_retries_total", "counter", labels, float(st.retries)))
        for le, n in st.buckets:
            out.append(("cloudnic_provider_call_seconds_bucket", "histogram", {**labels, "le": str(le)}, float(n)))
        out.append(("cloudnic_provider_call_seconds_bucket", "histogram", {**labels, "le": "+Inf"}, float(st.count)))
        out.append(("cloudnic_provider_call_seconds_sum", "histogram", labels, float(st.sum_s)))
        out.append(("cloudnic_provider_call_seconds_count", "histogram", labels, float(st.count)))
        for kind, n in st.errors_by_kind:
            out.append(("cloudnic_provider_call_errors_by_kind_total", "counter", {**labels, "kind": kind}, float(n)))
    return out
