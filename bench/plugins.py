"""The two contestants as a runtime sees them: an executable, a config on stdin, CNI_* env.

cloudnic is the static C shim (which forwards to the warm agent); the reference is
Debian's Go ``bridge`` plugin with ``host-local`` IPAM, configured to do the same job
(a veth into a Linux bridge whose address is the pods' gateway, no masquerade).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.spawn import Exec, peak_rss_kb, run_plugin

REF_DIR = "/usr/lib/cni"
CNI_VERSION = "1.0.0"


@dataclass(frozen=True)
class Sandbox:
    netns: str          # name under /run/netns
    container_id: str
    pod: str

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


@dataclass
class Plugin:
    """One plugin configuration; ``results`` keeps each sandbox's ADD result for CHECK."""

    label: str
    exe: str
    conf: dict[str, Any]
    cni_path: str = REF_DIR
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    # after each call, untimed: wait until the kernel's work that the call left running is done
    # (cloudnic's link deletes); seconds waited, kept per verb in ``settled_ms``
    settle: Callable[[], float] | None = None
    settled_ms: dict[str, list[float]] = field(default_factory=dict)

    def env(self, verb: str, sb: Sandbox, ifname: str = "eth0") -> dict[str, str]:
        return {
            "CNI_COMMAND": verb, "CNI_CONTAINERID": sb.container_id, "CNI_NETNS": sb.netns_path,
            "CNI_IFNAME": ifname, "CNI_PATH": self.cni_path,
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={sb.pod};"
                        f"K8S_POD_INFRA_CONTAINER_ID={sb.container_id}",
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        }

    def stdin(self, verb: str, sb: Sandbox) -> bytes:
        conf = self.conf
        if verb == "CHECK" and sb.container_id in self.results:
            conf = dict(conf, prevResult=self.results[sb.container_id])
        return json.dumps(conf).encode()

    def call(self, verb: str, sb: Sandbox, settle: bool = True) -> Exec:
        """One exec'd call; then (``settle``) the untimed wait for what it left in the kernel.
        Calls in flight together pass settle=False and their caller settles once after them."""
        ex = self._keep(verb, sb, run_plugin(self.exe, self.env(verb, sb), self.stdin(verb, sb)))
        if settle:
            self.settle_now(verb)
        return ex

    def settle_now(self, verb: str) -> None:
        if self.settle is not None:
            self.settled_ms.setdefault(verb, []).append(self.settle() * 1000.0)

    def call_rss(self, verb: str, sb: Sandbox) -> tuple[Exec, int]:
        """The call under GNU time (not timed): its peak RSS in kB."""
        ex, kb = peak_rss_kb(self.exe, self.env(verb, sb), self.stdin(verb, sb))
        self.settle_now(verb)
        return self._keep(verb, sb, ex), kb

    def _keep(self, verb: str, sb: Sandbox, ex: Exec) -> Exec:
        if ex.ok and verb == "ADD":
            try:
                self.results[sb.container_id] = json.loads(ex.stdout)
            except ValueError:
                pass
        elif ex.ok and verb == "DEL":
            self.results.pop(sb.container_id, None)
        return ex


def cloudnic(label: str, shim: str, socket: str, network: str) -> Plugin:
    conf = {"cniVersion": CNI_VERSION, "name": network, "type": "cloudnic", "network": network,
            "agentSocket": socket}
    return Plugin(label, shim, conf)


def reference_bridge(label: str, name: str, bridge: str, subnet: str, gateway: str, data_dir: str,
                     mtu: int = 1500) -> Plugin:
    conf = {"cniVersion": CNI_VERSION, "name": name, "type": "bridge", "bridge": bridge, "isGateway": True,
            "ipMasq": False, "mtu": mtu,
            "ipam": {"type": "host-local", "dataDir": data_dir,
                     "ranges": [[{"subnet": subnet, "gateway": gateway}]]}}
    return Plugin(label, f"{REF_DIR}/bridge", conf)


def reference_macvlan(label: str, name: str, master: str, subnet: str, data_dir: str) -> Plugin:
    conf = {"cniVersion": CNI_VERSION, "name": name, "type": "macvlan", "master": master, "mode": "bridge",
            "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]]}}
    return Plugin(label, f"{REF_DIR}/macvlan", conf)
