"""The inner run: everything here happens inside the node netns (see run.py).

Set-up (node links, sandbox namespaces, the agent), the scenarios in order, and the
flat figures for latest.json. Teardown always runs: the agent is stopped and every
sandbox namespace removed, whatever failed.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import figures, floor, netns
from bench.agent import Agent, Net
from bench.config import Sizes
from bench.iperf import run_iperf, veth_floor_pair
from bench.latency import Samples, parallel, peak_rss, sequential, warm_up
from bench.plugins import Plugin, Sandbox, cloudnic, reference_bridge
from bench.scale import run_scale, teardown

REPO = Path(__file__).resolve().parents[1]
SHIM = REPO / "shim" / "build" / "cloudnic"

C_BRIDGE, C_ROUTED, C_MACVLAN, REF = "cloudnic-bridge", "cloudnic-routed", "cloudnic-macvlan", "ref-bridge"
C_BRIDGE_DD = "cloudnic-bridge-dd"      # the bridge mode with the opt-in deferred_delete
FLOOR_VETH = "floor-veth"               # iperf3 over one bare veth pair: the same-host ceiling
NETS = [Net("cnb-bridge", "bridge", "10.210.0.0/16", "10.210.0.1", bridge="cnb-cbr0"),
        Net("cnb-bridge-dd", "bridge", "10.213.0.0/16", "10.213.0.1", bridge="cnb-cbr1", deferred_delete=True),
        Net("cnb-routed", "routed", "10.211.0.0/16"),
        Net("cnb-macvlan", "macvlan", "10.212.0.0/16", "10.212.0.1", parent="cnb-mvp0")]
REF_BRIDGE, REF_SUBNET, REF_GW = "cnb-rbr0", "10.220.0.0/16", "10.220.0.1"
EXEC_TRUE = Plugin("exec-true", "/bin/true", {})


class Suite:
    def __init__(self, tag: str, sizes: Sizes, scenarios: set[str], log: Callable[[str], None],
                 out_dir: Path, log_level: str = "info", population: int = 0,
                 agent_env: dict[str, str] | None = None) -> None:
        self.agent_env = agent_env or {}
        self.population = population
        self.tag = tag
        self.out_dir = out_dir
        self.log_level = log_level
        self.sizes = sizes
        self.scenarios = scenarios
        self.log = log
        self.work = Path(f"/tmp/cnb-{tag}")
        self.agent: Agent | None = None
        self.netns_names: list[str] = []
        self.sandboxes: dict[str, list[Sandbox]] = {}
        self.data: dict[str, Any] = {}
        self.notes: list[str] = []

    # ---- set-up -----------------------------------------------------------------------

    def _sandboxes(self, label: str, count: int) -> list[Sandbox]:
        short = {C_BRIDGE: "cb", C_ROUTED: "cr", C_MACVLAN: "cm", REF: "rb", C_BRIDGE_DD: "cd"}[label]
        sbs = [Sandbox(f"cnb-{self.tag}-{short}{i}", f"cnb{self.tag}{short}{i:05d}", f"pod-{short}{i}")
               for i in range(count)]
        self.netns_names += [s.netns for s in sbs]
        return sbs

    def setup(self) -> None:
        s = self.sizes
        self.work.mkdir(parents=True, exist_ok=True)
        netns.batch(["link set lo up",
                     "link add cnb-mvp0 type veth peer name cnb-mvp1", "link set cnb-mvp1 up",
                     "link set cnb-mvp0 up",
                     # a fixed MAC, else the bridge takes its lowest port's and the plugin's CHECK of
                     # earlier pods fails; made up front as an operator would
                     f"link add {REF_BRIDGE} address 02:00:0a:dc:00:01 type bridge",
                     f"link set {REF_BRIDGE} up"])
        scale = s.scale_top + s.scale_probes if "scale" in self.scenarios else 0
        big = max(s.samples + self.population, s.parallel_pods, scale, s.warmup, 2)
        self.sandboxes = {C_BRIDGE: self._sandboxes(C_BRIDGE, big), REF: self._sandboxes(REF, big),
                          EXEC_TRUE.label: [Sandbox("none", f"true{i}", "none") for i in range(s.samples)],
                          C_ROUTED: self._sandboxes(C_ROUTED, max(s.samples, s.warmup, s.floor_pods, 2,
                                                                  self.population, scale)),
                          C_MACVLAN: self._sandboxes(C_MACVLAN, 2),
                          C_BRIDGE_DD: self._sandboxes(C_BRIDGE_DD, max(s.samples, s.warmup, 2))}
        t0 = time.perf_counter()
        netns.create_many(self.netns_names)
        self.log(f"created {len(self.netns_names)} sandbox netns in {time.perf_counter() - t0:.1f} s")
        (self.work / "agent").mkdir(exist_ok=True)
        if "profile" in self.scenarios:     # the agent with timers around its layers (bench/tracer.py)
            self.agent = Agent(self.work / "agent", NETS, log_level=self.log_level,
                               entry=(str(REPO / "bench" / "tracer.py"),),
                               env={"CNB_TRACE_OUT": str(self.work / "trace.json"), **self.agent_env})
        else:
            self.agent = Agent(self.work / "agent", NETS, log_level=self.log_level, env=self.agent_env or None)
        self.agent.start()
        self.data["agent_start_s"] = round(self.agent.start_s, 3)
        self.data["agent_rss_idle_mb"] = self.agent.rss_mb()["VmRSS"]
        self.log(f"agent ready in {self.agent.start_s:.2f} s, RSS {self.data['agent_rss_idle_mb']} MB")
        sock = self.agent.socket
        self.plugins = {
            C_BRIDGE: cloudnic(C_BRIDGE, str(SHIM), sock, "cnb-bridge"),
            C_ROUTED: cloudnic(C_ROUTED, str(SHIM), sock, "cnb-routed"),
            C_MACVLAN: cloudnic(C_MACVLAN, str(SHIM), sock, "cnb-macvlan"),
            C_BRIDGE_DD: cloudnic(C_BRIDGE_DD, str(SHIM), sock, "cnb-bridge-dd"),
            REF: reference_bridge(REF, "cnb-ref", REF_BRIDGE, REF_SUBNET, REF_GW, str(self.work / "host-local")),
        }
        for label in (C_BRIDGE, C_ROUTED, C_MACVLAN):
            self.plugins[label].settle = self.agent.settle
        self.plugins[C_BRIDGE_DD].settle = functools.partial(self.agent.settle, graves=True)

    def teardown(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.data.setdefault("agent_log", str(self.agent.log_path))
        netns.delete_many(self.netns_names)
        netns.sh("ip", "link", "del", REF_BRIDGE, check=False)
        netns.sh("ip", "link", "del", "cnb-mvp0", check=False)
        left = netns.leftovers(f"cnb-{self.tag}-")
        if left:
            self.notes.append(f"left behind {len(left)} netns: {left[:5]}")

    # ---- scenarios --------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        s = self.sizes
        seq = Samples()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("warm-up", lambda: self.notes.extend(warm_up(
                [self.plugins[k] for k in (C_BRIDGE, C_ROUTED, C_BRIDGE_DD, REF)], self.sandboxes, s.warmup))),
            ("memory", lambda: peak_rss([self.plugins[k] for k in (C_BRIDGE, REF)], self.sandboxes,
                                        max(2, s.warmup), seq)),
            # /bin/true rides along as a gauge of the machine's noise: the cost of one exec
            ("sequential", lambda: sequential([*(self.plugins[k] for k in (C_BRIDGE, C_ROUTED, C_BRIDGE_DD, REF)),
                                               EXEC_TRUE],
                                              self.sandboxes, s.samples, seq, agent_cpu=self._agent_cpu)),
            ("parallel", lambda: self._parallel(seq)),
            ("scale", self._scale),
            ("iperf", self._iperf),
            ("floor", self._floor),
            ("profile", self._profile),
        ]
        for name, fn in steps:
            if name not in ("warm-up", "memory") and name not in self.scenarios:
                continue
            t0 = time.perf_counter()
            self.log(f"{name} ...")
            try:
                fn()
            except Exception as e:     # report and go on: one broken scenario must not hide the others
                self.notes.append(f"scenario {name} failed: {type(e).__name__}: {e}")
                self.log(traceback.format_exc())
            self.data[f"time_{name}_s"] = round(time.perf_counter() - t0, 1)
            self.log(f"{name} done in {self.data[f'time_{name}_s']} s")
        self.data.update(figures.sequential(seq, s.samples, C_BRIDGE, C_ROUTED, REF, deferred=C_BRIDGE_DD))
        self.data.update(seq.summary(EXEC_TRUE.label, "ADD").flat("exec_true"))
        self.data.update(figures.rss(seq, C_BRIDGE, REF))
        self.data.update(figures.cleanup(self.plugins, C_BRIDGE, C_BRIDGE_DD))
        for (label, verb), errs in sorted(seq.errors.items()):
            self.notes.append(f"{len(errs)} failed {label} {verb} call(s), first: {errs[0]}")
        return self.data

    def _agent_cpu(self) -> float:
        assert self.agent is not None
        return self.agent.cpu_s()

    def _parallel(self, seq: Samples) -> None:
        s = self.sizes
        runs = parallel([self.plugins[C_BRIDGE], self.plugins[REF]], self.sandboxes, s.parallel_pods,
                        s.parallel_width, s.parallel_rounds, seq, agent_cpu=self._agent_cpu)
        self.data.update(figures.parallel(runs, seq, C_BRIDGE, REF))
        assert self.agent is not None
        self.data["agent_rss_after_parallel_mb"] = self.agent.rss_mb()["VmRSS"]

    def _scale(self) -> None:
        s = self.sizes
        plugins = [self.plugins[C_BRIDGE], self.plugins[REF]]
        top = s.scale_top
        bg = {k: self.sandboxes[k][:top] for k in (C_BRIDGE, REF)}
        probes = {k: self.sandboxes[k][top:top + s.scale_probes] for k in (C_BRIDGE, REF)}
        assert self.agent is not None
        agent = self.agent
        try:
            kprobe = self.sandboxes[C_ROUTED]
            res = run_scale(plugins, bg, probes, s.scale_levels, s.rss_at, agent.rss_mb,
                            bucket=max(10, top // 10),
                            kernel_probe=lambda i: floor.probe("cnb-cbr0", kprobe[i % len(kprobe)].netns_path, i))
        finally:
            down = Samples()
            teardown(plugins, bg, top, down)
        self.data.update(figures.scale(res, down, s.scale_levels, C_BRIDGE, REF))
        self.notes += res.notes[:5]
        # the routed mode has no bridge, so none of the kernel's per-bridge-port costs: its own
        # pass after the bridge population is gone, so agent_rss_500_mb above stays at 500
        routed = self.sandboxes[C_ROUTED]
        if len(routed) >= top + s.scale_probes:
            rbg, rprobes = {C_ROUTED: routed[:top]}, {C_ROUTED: routed[top:top + s.scale_probes]}
            rdown = Samples()
            try:
                # the bridge population is gone: its sandboxes host the bare routed plug next to ours
                kfree = self.sandboxes[C_BRIDGE]
                rres = run_scale([self.plugins[C_ROUTED]], rbg, rprobes, s.scale_levels, (), agent.rss_mb,
                                 bucket=max(10, top // 10),
                                 kernel_probe=lambda i: floor.probe_routed(kfree[i % len(kfree)].netns_path, i))
            finally:
                teardown([self.plugins[C_ROUTED]], rbg, top, rdown)
            self.data.update(figures.scale_routed(rres, s.scale_levels, C_ROUTED))
            self.notes += rres.notes[:5]

    def _iperf(self) -> None:
        s = self.sizes
        labels = (REF, C_BRIDGE, C_ROUTED, C_MACVLAN)
        pairs = {k: (self.sandboxes[k][0], self.sandboxes[k][1]) for k in labels}
        fa, fb = (Sandbox(f"cnb-{self.tag}-fv{i}", f"fv{i}", "none") for i in (0, 1))
        self.netns_names += [fa.netns, fb.netns]       # removed with the others at teardown
        netns.create_many([fa.netns, fb.netns])
        floor_pair = (fa, fb, veth_floor_pair(fa, fb))
        res = run_iperf([self.plugins[k] for k in labels], pairs, s.iperf_seconds, s.iperf_rounds,
                        wired={FLOOR_VETH: floor_pair})
        self.data.update(figures.iperf(res, REF, C_BRIDGE, C_ROUTED, C_MACVLAN, FLOOR_VETH))
        self.notes += res.errors

    def _floor(self) -> None:
        sbs = [sb.netns for sb in self.sandboxes[C_ROUTED][:self.sizes.floor_pods]]
        self.data.update(floor.measure(sbs))

    def _profile(self) -> None:
        assert self.agent is not None
        from bench import profile
        n = max(self.sizes.samples, 50)
        half = self.population // 2
        bg = [(self.plugins[C_BRIDGE], sb) for sb in self.sandboxes[C_BRIDGE][n:n + half]] + \
             [(self.plugins[C_ROUTED], sb) for sb in self.sandboxes[C_ROUTED][:self.population - half]]
        for p, sb in bg:
            ex = p.call("ADD", sb)
            if not ex.ok:
                self.notes.append(f"profile population ADD {sb.netns}: {ex.error()}")
        self.data["prof_population"] = len(bg)
        self.data["prof_agent_rss_mb"] = self.agent.rss_mb()
        try:
            self.data.update(profile.run(self.plugins[C_BRIDGE], self.sandboxes[C_BRIDGE][:n], n, self.agent.pid,
                                         self.agent.log_path, self.work / "trace.json", self.out_dir, self.log,
                                         tag=f"-{len(bg)}" if bg else "", raw_dir=self.work))
        finally:
            for p, sb in reversed(bg):
                p.call("DEL", sb)


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "cpu": _cpu_model(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cleanup_workdir(tag: str, keep: bool) -> None:
    if not keep:
        shutil.rmtree(f"/tmp/cnb-{tag}", ignore_errors=True)
