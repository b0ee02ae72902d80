#!/usr/bin/env python3
"""cloudnic vs the reference bridge + host-local plugins, side by side in one run (issue 4).

    .venv/bin/python bench/run.py [--quick] [--only sequential,parallel,...] [--out DIR] [--keep]

Never touches the host's network. The outer process (in the host netns) creates a node
netns ``cnb-node-<pid>`` and re-executes itself inside it with ``ip netns exec``; that
inner process starts the agent and execs both plugins, so all of them live in the same
node netns and pay the same costs. The outer process cleans up whatever the inner one
leaves (its process group, sandbox netns names, the node netns), also on Ctrl-C.
Writes ``bench/results/latest.json`` and ``latest.md``; exits 0 when every scenario ran.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import netns, report  # noqa: E402
from bench.config import EXTRA, FULL, QUICK, SCENARIOS  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small N: a smoke run of every scenario (~1 min)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS + EXTRA)} "
                   "(default: all but profile)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="where latest.json/.md go")
    p.add_argument("--stem", default="", help="file name stem of the results (default: latest; with --only: "
                   "only-<scenarios>, so a partial run never replaces latest.*)")
    p.add_argument("--keep", action="store_true", help="keep /tmp/cnb-<tag> (agent log, config)")
    p.add_argument("--population", type=int, default=0,
                   help="profile: attachments present (half bridge, half routed) while profiling")
    p.add_argument("--agent-env", action="append", default=[], metavar="K=V",
                   help="extra environment for the agent (A/B runs, e.g. MALLOC_ARENA_MAX=2)")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tag", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def scenarios_of(args: argparse.Namespace) -> set[str]:
    return set(args.only.split(",")) if args.only else set(SCENARIOS)


def stem_of(args: argparse.Namespace) -> str:
    return args.stem or ("latest" if not args.only else "only-" + "-".join(sorted(scenarios_of(args))))


def outer(args: argparse.Namespace, argv: list[str]) -> int:
    if os.geteuid() != 0:
        log("must run as root: it creates network namespaces")
        return 2
    # Ctrl-C and SIGTERM unwind through the finally blocks below (also when started in the
    # background, where a shell leaves SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    tag = str(os.getpid())
    node = f"cnb-node-{tag}"
    netns.sh("ip", "netns", "add", node)
    proc: subprocess.Popen[bytes] | None = None
    started = time.time()
    try:
        proc = subprocess.Popen(["ip", "netns", "exec", node, sys.executable, str(Path(__file__).resolve()),
                                 "--inner", "--tag", tag, *argv], start_new_session=True)
        try:
            rc = proc.wait()
            results = Path(args.out) / f"{stem_of(args)}.json"
            fresh = results.exists() and results.stat().st_mtime >= started
            if rc in (0, 1) and fresh and "neutron" in scenarios_of(args):
                rc = max(rc, _neutron(args, tag))
            return rc
        except KeyboardInterrupt:
            log("interrupted: stopping the run (it cleans up after itself)")
            _signal_group(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                pass
            return 130
    finally:
        if proc is not None:
            _reap_group(proc)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        names = netns.leftovers(f"cnb-{tag}-")
        netns.delete_many([*names, node])
        if not args.keep:
            shutil.rmtree(f"/tmp/cnb-{tag}", ignore_errors=True)
        left = netns.leftovers(f"cnb-{tag}-") + netns.leftovers(node)
        log("cleaned up" + (f"; LEFT BEHIND: {left}" if left else f": node netns {node} and "
                            f"{len(names)} leftover sandbox name(s) removed"))


def _neutron(args: argparse.Namespace, tag: str) -> int:
    """Scenario 7 from the host netns (the peer is on the host's loopback); merged into the results."""
    from bench import neutron
    from bench.config import FULL, QUICK
    work = Path(f"/tmp/cnb-{tag}-neutron")
    log("neutron ...")
    t0 = time.perf_counter()
    try:
        figs = neutron.run(tag, (QUICK if args.quick else FULL).neutron_samples,
                           str(REPO / "shim" / "build" / "cloudnic"), work, log)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    figs["time_neutron_s"] = round(time.perf_counter() - t0, 1)
    log(f"neutron done in {figs['time_neutron_s']} s" + (f": {figs['neutron_note']}" if "neutron_note" in figs
                                                         else ""))
    path = Path(args.out) / f"{stem_of(args)}.json"
    if not path.exists():
        return 1
    data = json.loads(path.read_text())
    data.update(figs)
    report.write(data, Path(args.out), stem_of(args))
    return 1 if str(figs.get("neutron_note", "")).startswith("neutron scenario failed") else 0


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _reap_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop whatever is left of the inner run's process group (agent, iperf3, plugins)."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    if _group_alive(proc.pid):
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_group(proc.pid, signal.SIGKILL)


def _interrupt(*_: object) -> None:
    """SIGTERM from the outer process: unwind like Ctrl-C, so every finally block cleans up."""
    raise KeyboardInterrupt


def inner(args: argparse.Namespace) -> int:
    from bench.suite import Suite, cleanup_workdir, machine
    sizes = QUICK if args.quick else FULL
    scenarios = scenarios_of(args) - {"neutron"}      # the outer process runs neutron (host netns)
    unknown = scenarios - set(SCENARIOS + EXTRA)
    if unknown:
        log(f"--only: unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS + EXTRA)}")
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    started = datetime.datetime.now(datetime.UTC)
    data: dict[str, Any] = {"timestamp": started.isoformat(timespec="seconds"), "mode": sizes.name,
                  "agent_env": args.agent_env,
                  "machine": machine(), "scenarios": sorted(scenarios)}
    suite = Suite(args.tag, sizes, scenarios, log, Path(args.out),
                  log_level="debug" if "profile" in scenarios else "info", population=args.population,
                  agent_env=dict(kv.split("=", 1) for kv in args.agent_env))
    t0 = time.perf_counter()
    rc = 0
    try:
        suite.setup()
        data.update(suite.run())
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):     # a second signal must not cut the teardown short
            signal.signal(sig, signal.SIG_IGN)
        suite.teardown()
        cleanup_workdir(args.tag, args.keep)
    data["duration_s"] = round(time.perf_counter() - t0, 1)
    data["notes"] = suite.notes
    data["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if rc:
        return rc
    j, md = report.write(data, Path(args.out), stem_of(args))
    log(f"wrote {j} and {md} in {data['duration_s']} s")
    print(md.read_text())
    failed = [n for n in suite.notes if n.startswith("scenario ")]
    if failed:
        log("some scenarios failed: " + "; ".join(failed))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.inner:
        return inner(args)
    return outer(args, argv)


if __name__ == "__main__":
    sys.exit(main())

