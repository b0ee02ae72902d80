"""``latest.json`` (flat keys, for scripts) and ``latest.md`` (the targets table) from one run."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Num = float | int | None


@dataclass(frozen=True)
class Target:
    """One row of the targets table: a figure, both sides, the ratio and the rule it must meet."""

    figure: str
    ours: str                 # key of cloudnic's value
    ref: str | None           # key of the reference's value (or None)
    ratio: str | None         # key of the ratio (or None: the rule applies to ``ours``)
    target: str               # human text
    rule: Callable[[float], bool] | None


TARGETS = (
    Target("warm ADD p50 (ms), bridge", "add_p50_ms", "ref_add_p50_ms", "add_p50_ratio", "≤ 0.5x",
           lambda r: r <= 0.5),
    Target("ADD p99 (ms), bridge", "add_p99_ms", "ref_add_p99_ms", "add_p99_ratio", "≤ 1.0x", lambda r: r <= 1.0),
    Target("DEL p50 (ms), bridge", "del_p50_ms", "ref_del_p50_ms", "del_p50_ratio", "≤ 0.5x", lambda r: r <= 0.5),
    Target("DEL p50 (ms), bridge, deferred_delete = true (opt-in)", "dd_del_p50_ms", "ref_del_p50_ms",
           "dd_del_p50_ratio", "≤ 0.5x", lambda r: r <= 0.5),
    Target("CHECK p50 (ms), bridge", "check_p50_ms", "ref_check_p50_ms", "check_p50_ratio", "—", None),
    Target("warm ADD p50 (ms), routed", "routed_add_p50_ms", "ref_add_p50_ms", "routed_add_p50_ratio", "—", None),
    Target("DEL p50 (ms), routed", "routed_del_p50_ms", "ref_del_p50_ms", "routed_del_p50_ratio", "—", None),
    Target("10-way parallel ADD (sandboxes/s)", "parallel_pods_per_s", "ref_parallel_pods_per_s",
           "parallel_ratio", "≥ 2x", lambda r: r >= 2.0),
    Target("errors in the parallel runs", "parallel_errors", "ref_parallel_errors", None, "0", lambda v: v == 0),
    Target("ADD p50 at 1000 attachments / at 10", "add_p50_at_1000_over_10", "ref_add_p50_at_1000_over_10", None,
           "≤ 1.3", lambda v: v <= 1.3),
    Target("ADD p50 at 1000 attachments / at 10, routed (no bridge)", "routed_add_p50_at_1000_over_10", None, None,
           "≤ 1.3", lambda v: v <= 1.3),
    Target("bare kernel plug (raw netlink) at 1000 / at 10", "floor_add_p50_at_1000_over_10", None, None, "—",
           None),
    Target("bare kernel routed plug (raw netlink) at 1000 / at 10", "floor_routed_add_p50_at_1000_over_10", None,
           None, "—", None),
    Target("plugin peak RSS (MB)", "plugin_peak_rss_mb", "ref_plugin_peak_rss_mb", None, "≤ 15", lambda v: v <= 15),
    Target("agent RSS with 500 attachments (MB)", "agent_rss_500_mb", None, None, "≤ 80", lambda v: v <= 80),
    Target("iperf3 pod↔pod (Gbit/s), bridge", "iperf_bridge_gbps", "ref_iperf_bridge_gbps", "iperf_bridge_ratio",
           "≥ 0.95x", lambda r: r >= 0.95),
    Target("iperf3 pod↔pod (Gbit/s), routed", "iperf_routed_gbps", "ref_iperf_bridge_gbps", "iperf_routed_ratio",
           "—", None),
    Target("iperf3 pod↔pod (Gbit/s), macvlan", "iperf_macvlan_gbps", "ref_iperf_bridge_gbps",
           "iperf_macvlan_ratio", "≥ 1.1x", lambda r: r >= 1.1),
    Target("Neutron cold ADD - port-create (ms)", "neutron_cold_add_overhead_ms", None, None, "≤ 20",
           lambda v: v <= 20),
    Target("Neutron pool refill of 50 ports (s); POSTs", "neutron_refill_50_s", None, None,
           "1 bulk call", None),
)

LATENCY_ROWS = (
    ("ADD, bridge", "add", "ref_add"), ("CHECK, bridge", "check", "ref_check"), ("DEL, bridge", "del", "ref_del"),
    ("DEL, bridge, deferred_delete", "dd_del", "ref_del"),
    ("ADD, routed", "routed_add", "ref_add"), ("CHECK, routed", "routed_check", "ref_check"),
    ("DEL, routed", "routed_del", "ref_del"),
    ("ADD, 10 in flight", "parallel_add", "ref_parallel_add"), ("DEL, 10 in flight", "parallel_del",
                                                               "ref_parallel_del"),
    ("ADD with 10 present", "add_at_10", "ref_add_at_10"), ("ADD with 1000 present", "add_at_1000",
                                                             "ref_add_at_1000"),
    ("CHECK with 10 present", "check_at_10", "ref_check_at_10"),
    ("CHECK with 1000 present", "check_at_1000", "ref_check_at_1000"),
    ("DEL with 10 present", "del_at_10", "ref_del_at_10"), ("DEL with 1000 present", "del_at_1000",
                                                             "ref_del_at_1000"),
    ("ADD with 10 present, routed", "routed_add_at_10", None),
    ("ADD with 1000 present, routed", "routed_add_at_1000", None),
    ("CHECK with 1000 present, routed", "routed_check_at_1000", None),
    ("bare kernel plug (raw netlink) with 10 present", "floor_add_at_10", None),
    ("bare kernel plug (raw netlink) with 1000 present", "floor_add_at_1000", None),
    ("bare kernel routed plug (raw netlink) with 10 present", "floor_routed_add_at_10", None),
    ("bare kernel routed plug (raw netlink) with 1000 present", "floor_routed_add_at_1000", None),
    ("ADD, Neutron pool hit", "neutron_pool_add", None),
    ("ADD, Neutron cold (port created)", "neutron_cold_add", None),
    ("agent's port step in a cold ADD", "neutron_cold_agent_port", None),
    ("POST /v2.0/ports alone", "neutron_port_create", None),
    ("exec of /bin/true (noise gauge)", "exec_true", None),
)


def fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def met(t: Target, data: dict[str, Any]) -> str:
    if t.rule is None:
        if t.ours == "neutron_refill_50_s" and data.get("neutron_refill_50_posts") is not None:
            return "yes" if data["neutron_refill_50_posts"] == 1 else "no"
        return "—"
    v = data.get(t.ratio) if t.ratio else data.get(t.ours)
    if v is None:
        return "n/a"
    return "**yes**" if t.rule(float(v)) else "no"


def markdown(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    out = [f"# cloudnic benchmark — {data.get('timestamp', '')}", "",
           f"Machine: {m.get('cores')} cores, kernel {m.get('kernel')}, Python {m.get('python')}; "
           f"mode `{data.get('mode')}`, {data.get('samples')} samples per verb; wall time of each CNI call "
           "as a runtime execs it (cloudnic = static shim + warm agent; reference = Debian's Go `bridge` + "
           "`host-local`), both exec'd by one process inside the same node netns, interleaved per sample.", "",
           "| figure | cloudnic | reference | ratio | target | met? |", "|---|---|---|---|---|---|"]
    for t in TARGETS:
        ours = data.get(t.ours)
        if t.ours == "neutron_refill_50_s" and data.get("neutron_refill_50_posts") is not None:
            ours_s = f"{fmt(ours)} s; {data['neutron_refill_50_posts']} POST(s)"
        else:
            ours_s = fmt(ours)
        out.append(f"| {t.figure} | {ours_s} | {fmt(data.get(t.ref)) if t.ref else '—'} | "
                   f"{fmt(data.get(t.ratio)) + 'x' if t.ratio and data.get(t.ratio) is not None else '—'} | "
                   f"{t.target} | {met(t, data)} |")
    out += ["", "## Latency detail (ms)", "",
            "| call | cloudnic p50 | p90 | p99 | n | reference p50 | p90 | p99 | n |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, ours, ref in LATENCY_ROWS:
        if data.get(f"{ours}_n") in (None, 0):
            continue
        cols = [fmt(data.get(f"{ours}_{k}")) for k in ("p50_ms", "p90_ms", "p99_ms", "n")]
        rcols = [fmt(data.get(f"{ref}_{k}")) if ref else "—" for k in ("p50_ms", "p90_ms", "p99_ms", "n")]
        out.append(f"| {name} | " + " | ".join(cols + rcols) + " |")
    if data.get("add_plugin_cpu_ms") is not None:
        out += ["", "## CPU per call (ms, mean): what bounds parallel throughput on 2 cores", "",
                "| call | cloudnic shim | cloudnic agent | cloudnic total | reference (bridge + host-local) |",
                "|---|---|---|---|---|"]
        for prefix, mode in (("", "bridge"), ("routed_", "routed")):
            for v in ("add", "check", "del"):
                shim, agent = data.get(f"{prefix}{v}_plugin_cpu_ms"), data.get(f"{prefix}{v}_agent_cpu_ms")
                total = shim + agent if shim is not None and agent is not None else None
                out.append(f"| {v.upper()}, {mode} | {fmt(shim)} | {fmt(agent)} | {fmt(total)} | "
                           f"{fmt(data.get(f'ref_{v}_plugin_cpu_ms'))} |")
    floor = {k: v for k, v in data.items() if k.startswith("floor_") and "_at_" not in k}
    if floor:
        out += ["", "## Kernel floor (no plugin; per pod, p50 or mean)", "", "| measurement | value |", "|---|---|"]
        out += [f"| `{k}` | {fmt(v)} |" for k, v in floor.items()]
    extra = {k: data[k] for k in ("agent_start_s", "agent_rss_idle_mb", "agent_rss_after_parallel_mb",
                                  "agent_rss_1000_mb", "agent_hwm_mb",
                                  "plugin_rss_p50_mb", "ref_plugin_rss_p50_mb", "rss_bin_true_mb",
                                  "parallel_del_pods_per_s", "ref_parallel_del_pods_per_s") if k in data}
    if extra:
        out += ["", "## Other figures", "", "| figure | value |", "|---|---|"]
        out += [f"| `{k}` | {fmt(v)} |" for k, v in extra.items()]
    if data.get("neutron_cold_add_calls"):
        out += ["", "Neutron API calls per cold ADD: " + ", ".join(
            f"`{k}`: {v}" for k, v in data["neutron_cold_add_calls"].items())]
    if data.get("neutron_refill_50_calls"):
        out += ["", "Neutron API calls of the 50-port refill: " + ", ".join(
            f"`{k}`: {v}" for k, v in data["neutron_refill_50_calls"].items())
            + f"; one bulk POST of 50 made directly takes {fmt(data.get('neutron_bulk_post_50_s'))} s."]
    if data.get("neutron_note"):
        out += ["", f"Neutron: {data['neutron_note']}"]
    notes = data.get("notes") or []
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def write(data: dict[str, Any], out_dir: Path, stem: str = "latest") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    j = out_dir / f"{stem}.json"
    md = out_dir / f"{stem}.md"
    j.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    md.write_text(markdown(data))
    return j, md
