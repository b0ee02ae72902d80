"""Run cloudnic-agent with wall-clock timers around its layers (profiling only, never in the figures).

    CNB_TRACE_OUT=/tmp/x.json python bench/tracer.py --config agent.toml

Wraps the functions named in ``TARGETS`` (every reference to them in any cloudnic
module, so ``from x import f`` bindings are covered too) with a timer that adds the
call's wall time to a per-function total. SIGUSR1 writes the totals to
``$CNB_TRACE_OUT`` and resets them; so does a normal exit. Inclusive times: nested
targets (a Kernel call inside plug) count in both.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# module -> names ("Class.method", "Class.*" for every public method, or a function)
TARGETS: dict[str, tuple[str, ...]] = {
    "cloudnic.agent.server": ("Server._connection", "Server.handle_cni", "Server._dispatch", "Server._send"),
    "cloudnic.agent.wire": ("read_any", "encode_response"),
    "cloudnic.agent.service": ("Service.add", "Service.delete", "Service.check", "Service.status",
                               "Service._add_sync", "Service._delete_sync", "Service._commit_add",
                               "Service._record", "Service.release_sync", "Service._check_kernel",
                               "Service._readd", "Service.run"),
    "cloudnic.agent.convert": ("build_attachment", "build_result", "attachment_from_dict", "plugged_from_dict"),
    "cloudnic.cni.env": ("parse_env",),
    "cloudnic.cni.config": ("parse_netconf",),
    "cloudnic.cni.hints": ("resolve_hints",),
    "cloudnic.cni.result": ("parse_result", "Result.to_json", "Result.to_dict"),
    "cloudnic.ipam.resolve": ("choose_network", "build_port_spec"),
    "cloudnic.store.store": ("Store.*",),
    "cloudnic.store.db": ("Database.transaction", "Database.execute"),
    "cloudnic.providers.standalone.provider": ("StandaloneProvider.*",),
    "cloudnic.dataplane.veth": ("VethDataplane.plug", "VethDataplane.unplug", "VethDataplane.check",
                                "create_veth", "configure_sandbox", "delete_if_ours", "require_free_ifname"),
    "cloudnic.dataplane.bridge": ("BridgeDataplane._plug", "BridgeDataplane._ensure_bridge",
                                  "BridgeDataplane._check_more"),
    "cloudnic.dataplane.kernel": ("Kernel.*",),
    "cloudnic.dataplane.netns": ("netns_socket", "NetnsHandle.socket", "entered"),
    "cloudnic.dataplane.rtnl": ("RtnlSocket.request", "RtnlSocket.batch", "RtnlSocket.dump"),
    "cloudnic.dataplane.executor": ("NetnsSafeExecutor.submit",),
    "logging": ("Handler.handle",),
}

_lock = threading.RLock()   # the SIGUSR1 handler may interrupt _add on the main thread
_totals: dict[str, list[float]] = {}     # name -> [calls, seconds]


def _add(name: str, dt: float) -> None:
    with _lock:
        t = _totals.setdefault(name, [0, 0.0])
        t[0] += 1
        t[1] += dt


def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def awrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                _add(name, time.perf_counter() - t0)
        return awrapper
    if inspect.isgeneratorfunction(fn):     # contextmanager bodies: time the whole with-block
        @functools.wraps(fn)
        def gwrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return (yield from fn(*a, **kw))
            finally:
                _add(name, time.perf_counter() - t0)
        return gwrapper

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            _add(name, time.perf_counter() - t0)
    return wrapper


def _unwrap_cm(fn: Any) -> Any:
    """A @contextmanager function: wrap its generator (``__wrapped__``) and re-decorate."""
    return getattr(fn, "__wrapped__", None)


def install() -> list[str]:
    """Patch every target; returns the names patched."""
    import contextlib
    done = []
    replaced: dict[int, Any] = {}
    for modname, names in TARGETS.items():
        mod = importlib.import_module(modname)
        for name in names:
            cls_name, _, meth = name.partition(".")
            if meth:
                cls = getattr(mod, cls_name, None)
                if cls is None:          # the code moved on: skip what is gone
                    continue
                meths = [m for m in vars(cls) if not m.startswith("_") and callable(vars(cls)[m])] \
                    if meth == "*" else [meth]
                for m in meths:
                    if not hasattr(cls, m):
                        continue
                    orig = inspect.getattr_static(cls, m)
                    if isinstance(orig, staticmethod | classmethod | property):
                        continue
                    setattr(cls, m, _patched(f"{modname.split('.')[-1]}:{cls_name}.{m}", orig, contextlib))
                    done.append(f"{cls_name}.{m}")
            else:
                if not hasattr(mod, name):
                    continue
                orig = getattr(mod, name)
                new = _patched(f"{modname.split('.')[-1]}:{name}", orig, contextlib)
                replaced[id(orig)] = new
                done.append(name)
    # rebind `from module import name` copies in every loaded cloudnic module
    for mname, m in list(sys.modules.items()):
        if not mname.startswith("cloudnic") or m is None:
            continue
        for attr, val in list(vars(m).items()):
            if id(val) in replaced and not attr.startswith("__"):
                setattr(m, attr, replaced[id(val)])
    return done


def _patched(label: str, orig: Any, contextlib: Any) -> Any:
    inner = _unwrap_cm(orig)
    if inner is not None and inspect.isgeneratorfunction(inner):
        return contextlib.contextmanager(_wrap(label, inner))
    return _wrap(label, orig)


def dump(*_: Any) -> None:
    out = os.environ.get("CNB_TRACE_OUT")
    if not out:
        return
    with _lock:
        data = {k: {"calls": int(v[0]), "ms": round(v[1] * 1000, 3)} for k, v in _totals.items()}
        _totals.clear()
    Path(out).write_text(json.dumps(data, indent=1, sort_keys=True))


def main() -> int:
    sys.path.insert(0, str(REPO / "src"))
    import cloudnic.agent.main as agent_main  # every cloudnic module loads first
    install()
    signal.signal(signal.SIGUSR1, dump)
    atexit.register(dump)
    return int(agent_main.main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
