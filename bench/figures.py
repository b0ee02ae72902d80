"""Turn samples into the flat keys of latest.json (names fixed by issue 4, plus details)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.iperf import IperfResult
from bench.latency import Samples, Throughput
from bench.plugins import Plugin
from bench.scale import ScaleResult
from bench.stats import Summary, percentile, ratio

MB = 1024.0   # ru_maxrss and /proc are in KiB; "MB" here is MiB


def sequential(seq: Samples, n: int, bridge: str, routed: str, ref: str, deferred: str = "") -> dict[str, Any]:
    """``deferred``: the bridge mode with ``deferred_delete = true`` (keys ``dd_*``)."""
    out: dict[str, Any] = {"samples": n}
    ours = [("", bridge), ("routed_", routed)] + ([("dd_", deferred)] if deferred else [])
    for verb in ("ADD", "CHECK", "DEL"):
        v = verb.lower()
        for prefix, label in ours:
            out.update(seq.summary(label, verb).flat(f"{prefix}{v}"))
        out.update(seq.summary(ref, verb).flat(f"ref_{v}"))
    for prefix, label in (*ours, ("ref_", ref)):
        for verb in ("ADD", "CHECK", "DEL"):
            cpu = seq.cpu_ms.get((label, verb), [])
            out[f"{prefix}{verb.lower()}_plugin_cpu_ms"] = round(sum(cpu) / len(cpu), 3) if cpu else None
            acpu = seq.agent_cpu_ms.get((label, verb), [])
            if acpu:
                out[f"{prefix}{verb.lower()}_agent_cpu_ms"] = round(sum(acpu) / len(acpu), 3)
    for prefix, _ in ours:
        for v, q in (("add", "p50"), ("add", "p99"), ("del", "p50"), ("check", "p50"), ("del", "p99")):
            out[f"{prefix}{v}_{q}_ratio"] = ratio(out.get(f"{prefix}{v}_{q}_ms"), out.get(f"ref_{v}_{q}_ms"))
    return out


def rss(seq: Samples, ours: str, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix, label in (("", ours), ("ref_", ref)):
        kb = seq.rss_kb.get(label, [])
        out[f"{prefix}plugin_peak_rss_mb"] = round(max(kb) / MB, 2) if kb else None
        out[f"{prefix}plugin_rss_p50_mb"] = round(percentile(kb, 50) / MB, 2) if kb else None
        out[f"{prefix}plugin_rss_n"] = len(kb)
    floor = seq.rss_kb.get("time-floor", [])
    out["rss_bin_true_mb"] = round(percentile(floor, 50) / MB, 2) if floor else None
    return out


def cleanup(plugins: Mapping[str, Plugin], ours: str, deferred: str) -> dict[str, Any]:
    """How long the kernel went on deleting after a cloudnic DEL had answered (the bench waits,
    untimed, before the next call): per sequential DEL, and after each 10-way DEL round."""
    out: dict[str, Any] = {}
    for prefix, label in (("", ours), ("dd_", deferred)):
        settled = plugins[label].settled_ms if label in plugins else {}
        out[f"{prefix}del_kernel_cleanup_p50_ms"] = _p50(settled.get("DEL", []))
    out["parallel_del_kernel_cleanup_ms"] = _p50(plugins[ours].settled_ms.get("DEL-parallel", []))
    return out


def _p50(values: Sequence[float]) -> float | None:
    return round(percentile(list(values), 50), 2) if values else None


def parallel(runs: Sequence[Throughput], seq: Samples, ours: str, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix, label in (("", ours), ("ref_", ref)):
        adds = [r for r in runs if r.label == label and r.verb == "ADD"]
        dels = [r for r in runs if r.label == label and r.verb == "DEL"]
        out[f"{prefix}parallel_pods_per_s"] = round(percentile([r.per_s for r in adds], 50), 1) if adds else None
        out[f"{prefix}parallel_pods_per_s_rounds"] = [round(r.per_s, 1) for r in adds]
        out[f"{prefix}parallel_del_pods_per_s"] = (round(percentile([r.per_s for r in dels], 50), 1)
                                                   if dels else None)
        out[f"{prefix}parallel_errors"] = sum(len(r.errors) for r in adds + dels)
        # how busy the machine's cores were during the ADD rounds, and the runner's and agent's share
        for key, attr in (("busy_cores", "busy_cores"), ("runner_cpu_ms", "runner_cpu_ms")):
            out[f"{prefix}parallel_add_{key}"] = _p50([getattr(r, attr) for r in adds])
        if any(r.agent_cpu_ms for r in adds):
            out["parallel_add_agent_cpu_ms"] = _p50([r.agent_cpu_ms for r in adds])
            out["parallel_del_agent_cpu_ms"] = _p50([r.agent_cpu_ms for r in dels])
        out.update(seq.summary(label, "ADD-parallel").flat(f"{prefix}parallel_add"))
        out.update(seq.summary(label, "DEL-parallel").flat(f"{prefix}parallel_del"))
        if adds:
            out[f"{prefix}parallel_pods"] = adds[0].pods
            out[f"{prefix}parallel_rounds"] = len(adds)
    out["parallel_ratio"] = ratio(out.get("parallel_pods_per_s"), out.get("ref_parallel_pods_per_s"))
    out["parallel_del_ratio"] = ratio(out.get("parallel_del_pods_per_s"), out.get("ref_parallel_del_pods_per_s"))
    errs = [e for r in runs for e in r.errors]
    if errs:
        out["parallel_first_error"] = errs[0]
    return out


def scale(res: ScaleResult, down: Samples, levels: Sequence[int], ours: str, ref: str) -> dict[str, Any]:
    lo, hi = levels[0], levels[-1]
    out: dict[str, Any] = {"scale_levels": list(levels)}
    for prefix, label in (("", ours), ("ref_", ref)):
        for level in levels:
            out.update(res.probes.summary(label, f"ADD@{level}").flat(f"{prefix}add_at_{level}"))
            out.update(res.probes.summary(label, f"DEL@{level}").flat(f"{prefix}del_at_{level}"))
            out.update(res.probes.summary(label, f"CHECK@{level}").flat(f"{prefix}check_at_{level}"))
        # the key names the full run's levels; a quick run fills it from its own levels
        out[f"{prefix}add_p50_at_1000_over_10"] = ratio(out.get(f"{prefix}add_at_{hi}_p50_ms"),
                                                        out.get(f"{prefix}add_at_{lo}_p50_ms"))
        out[f"{prefix}del_p50_at_1000_over_10"] = ratio(out.get(f"{prefix}del_at_{hi}_p50_ms"),
                                                        out.get(f"{prefix}del_at_{lo}_p50_ms"))
        ramp = {verb.split("@")[1]: round(Summary.of(ms).p50, 2)
                for (lab, verb), ms in sorted(res.ramp.ms.items(), key=lambda kv: int(kv[0][1].split("@")[1]))
                if lab == label}
        out[f"{prefix}ramp_add_p50_ms_by_count"] = ramp
        out.update(down.summary(label, "DEL-teardown").flat(f"{prefix}del_teardown"))
    for level in levels:
        out.update(res.probes.summary("kernel", f"ADD@{level}").flat(f"floor_add_at_{level}"))
        out.update(res.probes.summary("kernel", f"DEL@{level}").flat(f"floor_del_at_{level}"))
    out["floor_add_p50_at_1000_over_10"] = ratio(out.get(f"floor_add_at_{hi}_p50_ms"),
                                                 out.get(f"floor_add_at_{lo}_p50_ms"))
    for level, r in sorted(res.agent_rss.items()):
        out[f"agent_rss_{level}_mb"] = r.get("VmRSS")
        out["agent_hwm_mb"] = r.get("VmHWM")
    out.setdefault("agent_rss_500_mb", None)
    out["scale_errors"] = res.probes.error_count() + res.ramp.error_count() + down.error_count()
    return out


def scale_routed(res: ScaleResult, levels: Sequence[int], label: str) -> dict[str, Any]:
    """The routed mode's scale pass (no bridge): ``routed_add_at_*`` and its 1000/10 ratio."""
    lo, hi = levels[0], levels[-1]
    out: dict[str, Any] = {}
    for level in levels:
        for verb in ("ADD", "CHECK", "DEL"):
            out.update(res.probes.summary(label, f"{verb}@{level}").flat(f"routed_{verb.lower()}_at_{level}"))
    out["routed_add_p50_at_1000_over_10"] = ratio(out.get(f"routed_add_at_{hi}_p50_ms"),
                                                  out.get(f"routed_add_at_{lo}_p50_ms"))
    for level in levels:
        out.update(res.probes.summary("kernel", f"ADD@{level}").flat(f"floor_routed_add_at_{level}"))
    out["floor_routed_add_p50_at_1000_over_10"] = ratio(out.get(f"floor_routed_add_at_{hi}_p50_ms"),
                                                        out.get(f"floor_routed_add_at_{lo}_p50_ms"))
    out["routed_scale_errors"] = res.probes.error_count() + res.ramp.error_count()
    return out


def iperf(res: IperfResult, ref: str, bridge: str, routed: str, macvlan: str, floor: str = "") -> dict[str, Any]:
    """``floor``: the bare veth pair (``floor_iperf_veth_*``, ``floor_iperf_veth_ratio``: the most any
    same-host dataplane could reach against the reference)."""
    out: dict[str, Any] = {}
    for key, label in (("ref_iperf_bridge", ref), ("iperf_bridge", bridge), ("iperf_routed", routed),
                       ("iperf_macvlan", macvlan), *((("floor_iperf_veth", floor),) if floor else ())):
        g = res.gbps.get(label, [])
        out[f"{key}_gbps"] = round(percentile(g, 50), 2) if g else None
        out[f"{key}_runs"] = [round(x, 2) for x in g]
    for mode in ("bridge", "routed", "macvlan"):
        out[f"iperf_{mode}_ratio"] = ratio(out.get(f"iperf_{mode}_gbps"), out.get("ref_iperf_bridge_gbps"))
    if floor:
        out["floor_iperf_veth_ratio"] = ratio(out.get("floor_iperf_veth_gbps"), out.get("ref_iperf_bridge_gbps"))
    return out
