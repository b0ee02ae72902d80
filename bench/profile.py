"""Where cloudnic's ADD/DEL time goes (``bench/run.py --only profile``; not in the default run).

* a ladder of exec'd calls, each adding one layer: ``/bin/true`` (the cost of an exec
  from this runner), the shim answering VERSION alone, a STATUS round trip through the
  agent, then ADD and DEL;
* the agent's own spans (``port_ms``, ``plug_ms`` of each "ADD done" line);
* py-spy on the agent during the ADD/DEL loop (wall clock, idle threads included),
  folded into inclusive time per cloudnic / pyroute2 / sqlite function;
* ``python -X importtime`` of the agent's imports (its start-up).

Outputs go to ``bench/results/profile-*`` next to latest.json; the figures also return
as flat ``prof_*`` keys.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.plugins import Plugin, Sandbox
from bench.spawn import run_plugin
from bench.stats import Summary

PYSPY_CANDIDATES = (os.environ.get("PY_SPY", ""), "/tmp/cnb-pyspy/bin/py-spy", shutil.which("py-spy") or "")


def find_pyspy() -> str:
    return next((c for c in PYSPY_CANDIDATES if c and os.access(c, os.X_OK)), "")


def ladder(p: Plugin, sbs: Sequence[Sandbox], n: int) -> dict[str, Any]:
    """Each rung adds one layer: exec alone, the shim alone (VERSION), an agent round trip (STATUS)."""
    env = p.env("VERSION", sbs[0])
    conf = json.dumps(p.conf).encode()
    steps: dict[str, list[float]] = {k: [] for k in ("exec_true", "shim_version", "shim_status")}
    for _ in range(n):
        steps["exec_true"].append(run_plugin("/bin/true", {}, b"").wall_ms)
        steps["shim_version"].append(run_plugin(p.exe, env, conf).wall_ms)
        steps["shim_status"].append(run_plugin(p.exe, dict(env, CNI_COMMAND="STATUS"), conf).wall_ms)
    return {f"prof_{k}_p50_ms": round(Summary.of(v).p50, 3) for k, v in steps.items()}


def traced(p: Plugin, sbs: Sequence[Sandbox], agent_pid: int, trace: Path) -> tuple[dict[str, Any], list[str]]:
    """ADD, CHECK, DEL of every sandbox, one verb at a time, the agent's timers dumped per verb."""
    data: dict[str, Any] = {}
    text: list[str] = []
    _dump(agent_pid, trace)                       # reset
    for verb in ("ADD", "CHECK", "DEL"):
        wall = [ex.wall_ms for ex in (p.call(verb, sb) for sb in sbs) if ex.ok]
        totals = _dump(agent_pid, trace)
        n = max(len(wall), 1)
        v = verb.lower()
        data[f"prof_{v}_p50_ms"] = round(Summary.of(wall).p50, 3)
        data[f"prof_{v}_mean_ms"] = round(sum(wall) / n, 3)
        conn = totals.get("server:Server._connection", {}).get("ms", 0.0) / n
        data[f"prof_{v}_agent_mean_ms"] = round(conn, 3)
        text += ["", f"## {verb}: agent time per request by function (inclusive, mean of {len(wall)}; "
                 f"wall per call {sum(wall) / n:.2f} ms, in the agent's connection handler {conn:.2f} ms)", "",
                 "  ms/req  calls/req  function"]
        rows = sorted(totals.items(), key=lambda kv: -kv[1]["ms"])
        text += [f"{r['ms'] / n:8.3f}  {r['calls'] / n:9.2f}  {name}" for name, r in rows if r["ms"] / n >= 0.005]
    return data, text


def _dump(pid: int, trace: Path, timeout: float = 5.0) -> dict[str, Any]:
    before = trace.stat().st_mtime_ns if trace.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if trace.exists() and trace.stat().st_mtime_ns != before:
            time.sleep(0.02)
            try:
                return dict(json.loads(trace.read_text()))
            except ValueError:
                continue
        time.sleep(0.01)
    return {}


def spans(log_path: Path, since: float) -> dict[str, Any]:
    port, plug = [], []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "ADD done" and float(rec.get("ts", 0)) >= since:
            port.append(float(rec.get("port_ms", 0)))
            plug.append(float(rec.get("plug_ms", 0)))
    return {"prof_agent_port_p50_ms": round(Summary.of(port).p50, 3),
            "prof_agent_plug_p50_ms": round(Summary.of(plug).p50, 3), "prof_agent_spans_n": len(port)}


IDLE_LEAVES = ("EpollSelector.select (selectors.py)", "NetnsSafeExecutor._work (cloudnic/dataplane/executor.py)",
               "BaseEventLoop._run_once (asyncio/base_events.py)", "Condition.wait (threading.py)")
IDLE_CALLS = ("socket.accept (socket.py)",)     # a request thread waiting for the next caller
KEEP = ("cloudnic/", "pyroute2/", "sqlite", "json/", "socket", "asyncio/", "concurrent/", "logging/")
RATE_HZ = 500


def fold(raw: str, cycles: int, top: int = 30) -> dict[str, list[tuple[str, float, float]]]:
    """Per thread kind (event loop; threads: request threads and workers): (function, share of
    busy samples, ms per cycle).

    From py-spy's raw (collapsed) stacks, idle ones dropped (the loop in epoll, a worker
    waiting for a task, a request thread in accept()). Inclusive: a function counts for every sample it is on the stack.
    """
    incl: dict[str, Counter[str]] = {"loop": Counter(), "threads": Counter()}
    busy: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames[-1] in IDLE_LEAVES or any(f.startswith(IDLE_CALLS) for f in frames[-2:]):
            continue
        kind = "threads" if frames[0].startswith("Thread._bootstrap") else "loop"
        n = int(count)
        busy[kind] += n
        for f in set(frames):
            if any(k in f for k in KEEP) and "runners.py" not in f and "base_events.py" not in f:
                incl[kind][f] += n
    out: dict[str, list[tuple[str, float, float]]] = {}
    for kind, counter in incl.items():
        total = busy[kind] or 1
        out[kind] = [(f, c / total, c * 1000.0 / RATE_HZ / max(cycles, 1)) for f, c in counter.most_common(top)]
        out[kind].insert(0, ("(all busy samples)", 1.0, busy[kind] * 1000.0 / RATE_HZ / max(cycles, 1)))
    return out


def pyspy(pyspy_bin: str, pid: int, work: Callable[[], None], out: Path,
          cycles: int) -> dict[str, list[tuple[str, float, float]]]:
    raw = out.with_suffix(".raw.txt")
    rec = subprocess.Popen([pyspy_bin, "record", "-p", str(pid), "-r", str(RATE_HZ), "-i", "-f", "raw", "--nolineno",
                            "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)        # py-spy attaches
        work()
    finally:
        rec.send_signal(signal.SIGINT)
        try:
            rec.wait(30)
        except subprocess.TimeoutExpired:
            rec.kill()
            rec.wait()
    if not raw.exists():
        return {}
    return fold(raw.read_text(errors="replace"), cycles)


def importtime(top: int = 25) -> list[tuple[str, float]]:
    """Cumulative import time (ms) of the agent's heaviest imports."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", "import cloudnic.agent.main"],
                       capture_output=True, text=True, timeout=120)
    rows = []
    for line in p.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        rows.append((parts[2].rstrip(), int(parts[1]) / 1000.0))
    rows.sort(key=lambda r: -r[1])
    return rows[:top]


def run(p: Plugin, sbs: Sequence[Sandbox], n: int, agent_pid: int, agent_log: Path, trace: Path,
        out_dir: Path, log: Callable[[str], None], tag: str = "", raw_dir: Path | None = None) -> dict[str, Any]:
    """``raw_dir``: where py-spy's raw stacks go (default ``out_dir``); only the folded tables are kept."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    since = time.time()
    data.update(ladder(p, sbs, n))
    tdata, ttext = traced(p, sbs[:n], agent_pid, trace)
    data.update(tdata)
    data.update(spans(agent_log, since))
    title = "# cloudnic ADD/CHECK/DEL profile" + (f" with {tag[1:]} other attachments present" if tag else "")
    text = [title, "", "## ladder (p50 ms) and the agent's own spans", ""]
    text += [f"{k}: {v}" for k, v in data.items()] + ttext
    pyspy_bin = find_pyspy()
    if pyspy_bin:
        def loop() -> None:
            for i in range(n):
                p.call("ADD", sbs[i % len(sbs)])
                p.call("DEL", sbs[i % len(sbs)])
        kinds = pyspy(pyspy_bin, agent_pid, loop, (raw_dir or out_dir) / f"profile{tag}-pyspy", n)
        for kind, rows in kinds.items():
            if rows:
                data[f"prof_{kind}_busy_ms_per_cycle"] = round(rows[0][2], 2)
            text += ["", f"## py-spy, {kind} thread(s): inclusive busy time per ADD+DEL cycle ({n} cycles, "
                     f"{RATE_HZ} Hz, wall clock incl. waits in syscalls and for the GIL)", "",
                     "   share  ms/cycle  function"]
            text += [f"{share * 100:7.1f}%  {ms:7.2f}  {frame}" for frame, share, ms in rows]
    else:
        text += ["", "## py-spy: not found (pip install py-spy into a throwaway venv; PY_SPY=path)"]
    imp = importtime()
    data["prof_import_agent_ms"] = imp[0][1] if imp else None
    text += ["", "## python -X importtime of cloudnic.agent.main (cumulative ms)", ""]
    text += [f"{ms:8.1f}  {mod}" for mod, ms in imp]
    (out_dir / f"profile{tag}.txt").write_text("\n".join(text) + "\n")
    log(f"profile written to {out_dir / f'profile{tag}.txt'}")
    return data
