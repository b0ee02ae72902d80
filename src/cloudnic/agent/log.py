"""Structured logs: one JSON object per line, carrying the request id of the shim."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "rid", None) or request_id.get()
        if rid:
            out["rid"] = rid
        for k, v in record.__dict__.items():
            if k not in _RESERVED and k != "rid" and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup(level: str = "info", path: str = "") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # never DEBUG: keystoneauth and openstacksdk log request bodies (credentials) at DEBUG
    for name in ("keystoneauth", "openstack", "urllib3"):
        logging.getLogger(name).setLevel(logging.INFO)


class Timer:
    """Timing spans for the agent's own profile: ``with Timer() as t: ...; t.ms``."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        self.ms = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.ms = (time.perf_counter() - self.t0) * 1000.0
