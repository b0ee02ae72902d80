"""bench/results/torture.json (the flat keys of issue 5) and a short Markdown summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.torture.cycles import Tally
from bench.torture.invariants import count
from bench.torture.parallel import Rounds

RESULTS = Path(__file__).resolve().parents[1] / "results"


def flat(kills: Tally, rounds: Rounds | None, extern: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    every = kills.violations + (rounds.violations + rounds.leftovers if rounds else [])
    out: dict[str, Any] = {
        "cycles": kills.cycles,
        "kill_points": len(kills.points_hit),
        "violations": len(every),
        "leaked_ports": count(every, "leaked-port"),
        "duplicate_ips": count(every, "duplicate-ip") + (rounds.duplicate_ips if rounds else 0),
        "orphans": count(every, "orphan"),
        "bad_input_cases": extern.get("bad_input_cases"),
        "bad_input_failures": extern.get("bad_input_failures"),
        "fuzz_cases": extern.get("fuzz_cases"),
        "parallel_rounds": rounds.rounds if rounds else 0,
        "parallel_errors": len(rounds.errors) if rounds else None,
        "neutron_outage_s": extern.get("neutron_outage_s"),
        "neutron_outage_pool_hits_ok": extern.get("neutron_outage_pool_hits_ok"),
        "neutron_outage_misses_code11": extern.get("neutron_outage_misses_code11"),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.update({
        "kill_points_total": meta.get("points_total"),
        "kill_points_not_reached": sorted(p for p in kills.not_reached if p not in kills.points_hit),
        "runtime_errors": len(kills.errors),
        "requests": kills.requests + (rounds.requests if rounds else 0),
        "invariant_checks": kills.invariant_checks,
        "violation_recurrences": kills.recurrences,
        **{k: v for k, v in extern.items() if k not in out},
        **meta,
        "violation_samples": every[:20],
        "error_samples": (kills.errors + (rounds.errors if rounds else []))[:20],
    })
    return out


def failed(fig: dict[str, Any]) -> list[str]:
    """Why the run is red (empty: green)."""
    why = []
    for k in ("violations", "runtime_errors", "parallel_errors", "bad_input_failures", "fuzz_failures",
              "neutron_outage_errors"):
        if fig.get(k):
            why.append(f"{k} = {fig[k]}")
    why += [f"scenario {s} failed: {e}" for s, e in fig.get("scenario_errors", {}).items()]
    return why


def markdown(fig: dict[str, Any], command: str) -> str:
    rows = [(k, fig.get(k)) for k in ("cycles", "kill_points", "kill_points_total", "violations", "leaked_ports",
                                      "duplicate_ips", "orphans", "runtime_errors", "parallel_rounds",
                                      "parallel_errors", "bad_input_cases", "bad_input_failures", "fuzz_cases",
                                      "neutron_outage_s", "neutron_outage_pool_hits_ok",
                                      "neutron_outage_misses_code11")]
    lines = [f"# Torture run {fig['timestamp']}", "", f"`{command}` — {fig.get('duration_s')} s, "
             f"{'GREEN' if not failed(fig) else 'RED: ' + '; '.join(failed(fig))}", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {'null' if v is None else v} |" for k, v in rows]
    for note in ("hostile_note", "neutron_note", "neutron_outage_note"):
        if fig.get(note):
            lines += ["", f"*{note}*: {fig[note]}"]
    if fig.get("scenarios"):
        lines += ["", "| scenario | kills | points | violations | errors | s |", "|---|---|---|---|---|---|"]
        lines += [f"| {s['name']} | {s['cycles']} | {s['points']} | {s['violations']} | {s['errors']} | {s['s']} |"
                  for s in fig["scenarios"]]
    if fig.get("violation_samples") or fig.get("error_samples"):
        lines += ["", "First violations / errors:", ""]
        lines += [f"- {v}" for v in fig.get("violation_samples", []) + fig.get("error_samples", [])]
    return "\n".join(lines) + "\n"


def write(fig: dict[str, Any], command: str, stem: str = "torture") -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}.json"
    path.write_text(json.dumps(fig, indent=1, sort_keys=False) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(fig, command))
    return path
