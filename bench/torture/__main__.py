"""``python -m bench.torture [--quick]``: the kill cycles (standalone and Neutron, with and
without a pool), the 20-way rounds, the hostile corpus and fuzzers, the Neutron outage;
writes bench/results/torture.{json,md} (torture-quick.* with --quick); exits 1 when anything was violated or failed."""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.torture import cycles, external, figures, neutron, scenarios
from bench.torture.node import rig, standalone_nets
from bench.torture.parallel import Rounds, run_rounds


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.torture", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small N everywhere (~3 min)")
    ap.add_argument("--cycles", type=int, help="random kills on the standalone node (Neutron nodes: a third each)")
    ap.add_argument("--rounds", type=int, help="20-way rounds of 100 sandboxes")
    ap.add_argument("--fuzz-examples", type=int, help="CLOUDNIC_FUZZ_EXAMPLES for the fuzzers")
    ap.add_argument("--only", default="standalone,neutron,parallel,hostile,outage",
                    help="comma-separated subset of standalone,neutron,parallel,hostile,outage")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--stem", default=None,
                    help="results file stem (bench/results/<stem>.json); torture, or torture-quick with --quick "
                         "(a quick run never overwrites the full run's record)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (agent configs and logs)")
    args = ap.parse_args(argv)
    if args.stem is None:
        args.stem = "torture-quick" if args.quick else "torture"
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    only = set(args.only.split(","))
    n_random = args.cycles if args.cycles is not None else (12 if args.quick else 90)
    n_rounds = args.rounds if args.rounds is not None else (2 if args.quick else 5)
    examples = args.fuzz_examples if args.fuzz_examples is not None else (200 if args.quick else 1500)
    outage_s = 15.0 if args.quick else 60.0
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="cnt-torture-"))
    t0 = time.monotonic()
    kills = cycles.Tally()
    rounds: Rounds | None = None
    extern: dict[str, Any] = {}
    meta: dict[str, Any] = {"seed": seed, "quick": args.quick, "points_total": len(cycles.points()),
                            "scenarios": [], "scenario_errors": {}}
    log(f"torture: {len(cycles.points())} crash points {list(cycles.points())}, seed {seed}, work {work}")

    def scenario(name: str, fn: Any) -> None:
        t = time.monotonic()
        log(f"scenario {name}")
        try:
            tally: cycles.Tally = fn()
        except KeyboardInterrupt:
            raise
        except Exception as e:
            text = str(e).strip().splitlines()
            short = " ... ".join(text[:1] + text[-2:]) if len(text) > 3 else " ".join(text)
            meta["scenario_errors"][name] = f"{type(e).__name__}: {short[:600]}"
            log(f"scenario {name} failed: {type(e).__name__}: {e}")
            return
        kills.merge(tally)
        meta["scenarios"].append({"name": name, "cycles": tally.cycles, "points": len(tally.points_hit),
                                  "violations": len(tally.violations), "errors": len(tally.errors),
                                  "s": round(time.monotonic() - t, 1)})
        log(f"scenario {name}: {tally.cycles} kills, {len(tally.points_hit)} points, "
            f"{len(tally.violations)} violations, {len(tally.errors)} errors in {time.monotonic() - t:.0f} s")

    try:
        if "standalone" in only:
            plan = scenarios.Plan(random_cycles=n_random)
            scenario("standalone", lambda: scenarios.standalone(work / "standalone", plan, rng, log, pool=True))
        if "parallel" in only:
            log(f"scenario parallel: {n_rounds} rounds of 100 sandboxes, 20-way")
            with rig(work / "parallel", standalone_nets(), sandboxes=100) as r:
                rounds = run_rounds(r, n_rounds, 100, 20, log)
        if only & {"neutron", "outage"}:
            try:
                with neutron.peer(log) as endpoint:
                    meta["neutron_endpoint"] = endpoint
                    if "neutron" in only:
                        nplan = scenarios.Plan(random_cycles=max(n_random // 3, 3), sandboxes=12)
                        for pool in (0, 3):
                            scenario(f"neutron-pool{pool}", lambda pool=pool: scenarios.neutron_node(
                                endpoint, work / f"neutron-{pool}", nplan, rng, log, pool=pool))
                    if "outage" in only:
                        log("scenario outage")
                        extern.update(external.outage(work / "outage", neutron.peer_env(), outage_s, log))
            except RuntimeError as e:
                meta["neutron_note"] = str(e)[:800]
                meta["scenario_errors"]["neutron"] = str(e)[:800]
        if "hostile" in only:
            log("scenario hostile corpus + fuzzers")
            extern.update(external.hostile_and_fuzz(examples, log))
    except KeyboardInterrupt:
        log("interrupted: cleaned up; no results written")
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta["duration_s"] = round(time.monotonic() - t0, 1)
    fig = figures.flat(kills, rounds, extern, meta)
    command = "python -m bench.torture " + " ".join(argv)
    path = figures.write(fig, command.strip(), args.stem)
    why = figures.failed(fig)
    log(f"wrote {path}: cycles {fig['cycles']}, kill_points {fig['kill_points']}/{fig['kill_points_total']}, "
        f"violations {fig['violations']}, parallel_errors {fig['parallel_errors']} — "
        f"{'GREEN' if not why else 'RED: ' + '; '.join(why)}")
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
