"""The benchmark harness runs end to end (``bench/run.py --quick``), against the real shim,
agent and reference plugins. Its figures are reported, never judged here (timings do not go
into pass/fail tests); what is checked is that every scenario ran without an error and
produced each figure the issue names, including the untimed waits for the kernel's clean-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.netns_util import leftover_netns

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_peers() -> None:
    """The reference plugins, GNU time and iperf3 (installed when missing, like ``make bench``)."""
    subprocess.run([str(REPO / "scripts" / "bench-setup.sh")], check=True, capture_output=True, timeout=600)


def test_a_quick_run_of_the_latency_parallel_and_scale_scenarios(bench_peers: None, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick",
                           "--only", "sequential,parallel,scale", "--out", str(tmp_path), "--stem", "smoke"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figs = json.loads((tmp_path / "smoke.json").read_text())
    assert figs["notes"] == [], figs["notes"]
    assert (figs["parallel_errors"], figs["ref_parallel_errors"]) == (0, 0)
    assert (figs["scale_errors"], figs["routed_scale_errors"]) == (0, 0)
    for key in ("add_p50_ms", "add_p99_ms", "del_p50_ms", "check_p50_ms", "ref_add_p50_ms", "ref_del_p50_ms",
                "add_p50_ratio", "del_p50_ratio", "parallel_pods_per_s", "ref_parallel_pods_per_s",
                "add_p50_at_1000_over_10", "routed_add_p50_at_1000_over_10", "floor_add_p50_at_1000_over_10",
                "floor_routed_add_p50_at_1000_over_10", "plugin_peak_rss_mb", "del_kernel_cleanup_p50_ms",
                "parallel_del_kernel_cleanup_ms"):
        assert isinstance(figs.get(key), int | float) and figs[key] > 0, (key, figs.get(key))
    assert figs["samples"] > 0 and "| figure | cloudnic | reference |" in (tmp_path / "smoke.md").read_text()
    assert leftover_netns("cnb-") == [], "the bench removes its netns"
