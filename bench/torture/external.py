"""What other engineers build, run from here: the hostile-input corpus and the fuzzers
(pytest, counted from its junit XML and the fuzzers' count file) and the Neutron outage
scenario (``tests/neutron/outage.py``). Missing pieces are reported as such (null + note),
never replaced by invented numbers."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.torture.node import REPO

CORPUS = "tests/functional/test_hostile_corpus.py"
FUZZERS = ("tests/functional/test_fuzz_shim.py", "tests/functional/test_fuzz_rpc.py")
OUTAGE = REPO / "tests" / "neutron" / "outage.py"


def hostile_and_fuzz(examples: int, log: Callable[[str], None], timeout: float = 900) -> dict[str, Any]:
    files = [f for f in (CORPUS, *FUZZERS) if (REPO / f).exists()]
    missing = [f for f in (CORPUS, *FUZZERS) if f not in files]
    out: dict[str, Any] = {"bad_input_cases": None, "bad_input_failures": None, "fuzz_cases": None,
                           "fuzz_failures": None, "hostile_note": ""}
    if missing:
        out["hostile_note"] = f"not present yet: {', '.join(missing)}"
    if not files:
        return out
    with tempfile.TemporaryDirectory(prefix="cnt-fuzz-") as tmp:
        junit, counts = Path(tmp) / "junit.xml", Path(tmp) / "fuzz-count"
        env = {**os.environ, "CLOUDNIC_FUZZ_EXAMPLES": str(examples), "CLOUDNIC_FUZZ_COUNT_FILE": str(counts)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, f"--junitxml={junit}"]
        log(f"  {' '.join(cmd[2:])} (CLOUDNIC_FUZZ_EXAMPLES={examples})")
        try:
            p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            out["hostile_note"] += f"; pytest did not finish within {timeout:.0f} s"
            return out
        if not junit.exists():
            out["hostile_note"] += f"; pytest wrote no junit XML (exit {p.returncode}): {p.stdout[-400:]}"
            return out
        cases = ET.parse(junit).getroot().iter("testcase")
        corpus = fuzz = 0
        corpus_failed = fuzz_failed = 0
        for c in cases:
            failed = any(ch.tag in ("failure", "error") for ch in c)
            if "test_hostile_corpus" in (c.get("classname") or "") + (c.get("file") or ""):
                corpus += 1
                corpus_failed += failed
            else:
                fuzz += 1
                fuzz_failed += failed
        if CORPUS in files:
            out["bad_input_cases"], out["bad_input_failures"] = corpus, corpus_failed
        if any(f in files for f in FUZZERS):
            out["fuzz_failures"] = fuzz_failed
            if counts.exists():
                out["fuzz_cases"] = sum(1 for line in counts.read_text().splitlines() if line.strip())
            else:
                out["hostile_note"] += (f"; the fuzzers ran ({fuzz} tests) but wrote no count file "
                                        "(CLOUDNIC_FUZZ_COUNT_FILE), so fuzz_cases is unknown")
        out["hostile_pytest_exit"] = p.returncode
    out["hostile_note"] = out["hostile_note"].lstrip("; ")
    return out


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def outage(work: Path, peer_env: dict[str, str], outage_s: float, log: Callable[[str], None]) -> dict[str, Any]:
    """tests/neutron/outage.py's ``run_outage`` against our peer (its own project, network and agent)."""
    out: dict[str, Any] = {"neutron_outage_s": None, "neutron_outage_pool_hits_ok": None,
                           "neutron_outage_misses_code11": None, "neutron_outage_note": ""}
    if not OUTAGE.exists():
        out["neutron_outage_note"] = "not measured: tests/neutron/outage.py is not present yet"
        return out
    work.mkdir(parents=True, exist_ok=True)
    added = [p for p in (str(OUTAGE.parent), str(REPO)) if p not in sys.path]
    sys.path[:0] = added
    try:
        with _env({k: peer_env[k] for k in ("NEUTRON_CI_DIR", "NEUTRON_PORT", "NEUTRON_PG_PORT")}):
            spec = importlib.util.spec_from_file_location("cnt_outage", OUTAGE)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules["cnt_outage"] = mod          # its dataclasses look their module up there
            spec.loader.exec_module(mod)
            peer = mod.NeutronPeer.plain(Path(peer_env["NEUTRON_CI_DIR"]), int(peer_env["NEUTRON_PORT"]))
            with peer.project("torture") as project:
                net = project.network(cidr="10.79.0.0/24")
                with mod.outage_agent(peer, project, work, net) as agent:
                    result = mod.run_outage(agent, peer, project, outage_s=outage_s, log=log)
        figures = dataclasses.asdict(result)
    except Exception as e:
        out["neutron_outage_note"] = f"outage scenario failed: {type(e).__name__}: {str(e)[:600]}"
        out["neutron_outage_errors"] = 1
        return out
    finally:
        for p in added:
            sys.path.remove(p)
    out["neutron_outage_s"] = figures.get("outage_s")
    out["neutron_outage_pool_hits_ok"] = figures.get("pool_hits_ok")
    out["neutron_outage_misses_code11"] = figures.get("misses_code11")
    problems = list(figures.get("errors") or ())
    if figures.get("misses") != figures.get("misses_code11"):
        problems.append(f"{figures.get('misses')} misses, only {figures.get('misses_code11')} with code 11")
    if figures.get("recovered_s") is None:
        problems.append("service did not recover after the server came back")
    if figures.get("ports_leaked", 0) > 0:
        problems.append(f"{figures['ports_leaked']} Neutron ports leaked")
    out["neutron_outage_errors"] = len(problems)
    out["neutron_outage_figures"] = {k: v for k, v in figures.items() if not isinstance(v, tuple) or len(v) < 20}
    if problems:
        out["neutron_outage_note"] = "; ".join(problems)[:800]
    return out
