"""The kernel's own cost of what a bridge-mode ADD/DEL must do, measured without any plugin.

Two views, both in the node netns with fresh sandbox namespaces:

* ``ip -batch``: one iproute2 process creates N veth pairs with the peer directly in
  its sandbox and enslaved to a bridge (the one RTM_NEWLINK cloudnic sends), then deletes
  them one by one; per pair that is the kernel's cost plus a few µs of parsing. Then
  the same pairs deleted with one request (``link del group``): the kernel batches the
  RCU waits of a multi-device unregister, which is where a single delete's time goes.
* pyroute2, the way cloudnic's dataplane did it before its raw rtnetlink module: a socket
  opened inside the sandbox via setns, the same requests, per step timings. The gap to
  the first view is pyroute2.
* raw netlink from Python (bench/rawnl.py): the same requests hand-packed, the sandbox
  side (lo up, address, up, default route) sent as one batch. What a Python agent
  could reach without pyroute2 on the hot path.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from pyroute2 import IPRoute

from bench import netns
from bench.rawnl import Netlink
from bench.stats import Summary
from cloudnic.dataplane.netns import entered

BRIDGE = "cnb-fbr0"


def _timed_batch(lines: list[str], *, target_ns: str = "") -> float:
    args = ["ip"] + (["-n", target_ns] if target_ns else []) + ["-batch", "-"]
    t0 = time.perf_counter()
    subprocess.run(args, input="".join(x + "\n" for x in lines), text=True, check=True, capture_output=True)
    return (time.perf_counter() - t0) * 1000.0


def ip_batch_floor(sbs: Sequence[str]) -> dict[str, Any]:
    """Per veth pair, amortised over one ``ip -batch`` process: create (peer straight into its
    sandbox, host end enslaved and up), delete one by one, and delete all at once by group."""
    n = len(sbs)
    out: dict[str, Any] = {}
    empty = Summary.of([_timed_batch([]) for _ in range(10)]).p50

    def create(group: int) -> float:
        return _timed_batch([f"link add cnbf{i} address 02:00:00:00:{i >> 8:02x}:{i & 255:02x} mtu 1500 "
                             f"master {BRIDGE} group {group} up type veth peer name eth0 netns {sb} mtu 1500"
                             for i, sb in enumerate(sbs)])
    out["floor_veth_create_ms"] = round((create(0) - empty) / n, 3)
    out["floor_veth_delete_ms"] = round((_timed_batch([f"link del cnbf{i}" for i in range(n)]) - empty) / n, 3)
    create(77)
    out["floor_veth_delete_grouped_ms"] = round((_timed_batch(["link del group 77"]) - empty) / n, 3)
    out["floor_n"] = n
    return out


def _pyroute2_in(fd: int) -> IPRoute:
    """An IPRoute on a netlink socket created inside the netns ``fd`` (setns there and back)."""
    import socket
    with entered(fd):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
    return IPRoute(fileno=sock.detach())


def pyroute2_floor(sbs: Sequence[str]) -> dict[str, Any]:
    steps: dict[str, list[float]] = {k: [] for k in ("socket", "veth", "sandbox", "close", "total", "del")}
    host = IPRoute()
    try:
        br = host.link_lookup(ifname=BRIDGE)[0]
        for i, sb in enumerate(sbs):
            fd = _open(netns.path(sb))
            try:
                t0 = time.perf_counter()
                sipr = _pyroute2_in(fd)
                t1 = time.perf_counter()
                host.link("add", ifname=f"cnbp{i}", kind="veth", address=f"02:00:00:01:{i >> 8:02x}:{i & 255:02x}",
                          mtu=1500, state="up", master=br,
                          peer={"ifname": "eth1", "net_ns_fd": fd, "mtu": 1500})
                t2 = time.perf_counter()
                idx = sipr.link_lookup(ifname="eth1")[0]
                sipr.addr("add", index=idx, address=f"10.251.{(i + 2) >> 8}.{(i + 2) & 255}", prefixlen=16)
                sipr.link("set", index=idx, state="up")
                sipr.route("add", dst="0.0.0.0/0", gateway="10.251.255.254", oif=idx)
                t3 = time.perf_counter()
                sipr.close()
                t4 = time.perf_counter()
                host.link("del", ifname=f"cnbp{i}")
                t5 = time.perf_counter()
            finally:
                _close(fd)
            for k, v in (("socket", t1 - t0), ("veth", t2 - t1), ("sandbox", t3 - t2), ("close", t4 - t3),
                         ("total", t4 - t0), ("del", t5 - t4)):
                steps[k].append(v * 1000.0)
    finally:
        host.close()
    return {f"floor_pyroute2_{k}_ms": round(Summary.of(v).p50, 3) for k, v in steps.items()}


def rawnl_floor(sbs: Sequence[str]) -> dict[str, Any]:
    steps: dict[str, list[float]] = {k: [] for k in ("socket", "veth", "sandbox", "total", "del")}
    host = Netlink()
    try:
        br = host.link_index(BRIDGE)
        for i, sb in enumerate(sbs):
            fd = _open(netns.path(sb))
            try:
                t0 = time.perf_counter()
                nl = Netlink(fd)
                t1 = time.perf_counter()
                host.veth(f"cnbr{i}", f"02:00:00:02:{i >> 8:02x}:{i & 255:02x}", 1500, br, "eth2",
                          f"02:00:00:03:{i >> 8:02x}:{i & 255:02x}", fd)
                t2 = time.perf_counter()
                idx = nl.link_index("eth2")
                nl.request(nl.up(1), nl.addr(idx, f"10.252.{(i + 2) >> 8}.{(i + 2) & 255}/16"), nl.up(idx),
                           nl.default_route("10.252.255.254", idx))
                nl.close()
                t3 = time.perf_counter()
                host.delete(f"cnbr{i}")
                t4 = time.perf_counter()
            finally:
                _close(fd)
            for k, v in (("socket", t1 - t0), ("veth", t2 - t1), ("sandbox", t3 - t2), ("total", t3 - t0),
                         ("del", t4 - t3)):
                steps[k].append(v * 1000.0)
    finally:
        host.close()
    return {f"floor_rawnl_{k}_ms": round(Summary.of(v).p50, 3) for k, v in steps.items()}


def _open(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def measure(sbs: Sequence[str]) -> dict[str, Any]:
    """Both views over the given (empty) sandboxes; leaves them empty again."""
    netns.sh("ip", "link", "add", BRIDGE, "type", "bridge")
    try:
        netns.sh("ip", "link", "set", BRIDGE, "up")
        netns.sh("ip", "addr", "add", "10.250.255.254/16", "dev", BRIDGE)
        netns.sh("ip", "addr", "add", "10.251.255.254/16", "dev", BRIDGE)
        out = ip_batch_floor(sbs)
        out.update(pyroute2_floor(sbs))
        netns.sh("ip", "addr", "add", "10.252.255.254/16", "dev", BRIDGE)
        out.update(rawnl_floor(sbs))
        return out
    finally:
        netns.sh("ip", "link", "del", BRIDGE, check=False)


def _mac(kind: int, i: int) -> str:
    return f"02:00:00:{kind:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def _ip(net: str, i: int) -> str:
    return f"{net}.{(i + 2) >> 8 & 255}.{(i + 2) & 255}"


def _timed(sb_path: str, host_end: str, plug: Callable[[Netlink, int], None]) -> tuple[float, float]:
    """``plug(host socket, sandbox fd)`` timed, then the delete of ``host_end``: (add ms, del ms)."""
    fd = _open(sb_path)
    host = Netlink()
    try:
        t0 = time.perf_counter()
        plug(host, fd)
        t1 = time.perf_counter()
        host.delete(host_end)
        t2 = time.perf_counter()
        return (t1 - t0) * 1000.0, (t2 - t1) * 1000.0
    finally:
        host.close()
        _close(fd)


def probe(bridge: str, sb_path: str, i: int) -> tuple[float, float]:
    """One bare bridge-mode plug (raw netlink) into ``bridge`` and its delete: (add ms, del ms)."""
    def plug(host: Netlink, fd: int) -> None:
        nl = Netlink(fd)
        host.veth(f"cnbk{i}", _mac(4, i), 1500, host.link_index(bridge), "eth7", _mac(5, i), fd)
        idx = nl.link_index("eth7")
        nl.request(nl.up(1), nl.addr(idx, f"{_ip('10.253', i)}/16"), nl.up(idx),
                   nl.default_route("10.253.255.254", idx))
        nl.close()

    return _timed(sb_path, f"cnbk{i}", plug)


ROUTED_GW = "169.254.1.1"


def probe_routed(sb_path: str, i: int) -> tuple[float, float]:
    """One bare routed plug (raw netlink, IPv4) and its delete: (add ms, del ms). What cloudnic's
    routed mode asks the kernel for: the pair with the peer straight into the sandbox; on the host
    end the gateway /32, a /32 route and a permanent neighbour for the pod; in the sandbox lo up,
    the pod's /32, the link up, a permanent neighbour for the gateway and a default route on-link."""
    host_mac, pod_mac, pod_ip = _mac(6, i), _mac(7, i), _ip("10.254", i)

    def plug(host: Netlink, fd: int) -> None:
        host.veth(f"cnbr{i}", host_mac, 1500, 0, "eth7", pod_mac, fd)
        nl = Netlink(fd)
        idx = nl.link_index("eth7")
        nl.request(nl.up(1), nl.addr(idx, f"{pod_ip}/32"), nl.up(idx), nl.neigh(idx, ROUTED_GW, host_mac),
                   nl.default_route(ROUTED_GW, idx, onlink=True))
        nl.close()
        hidx = host.link_index(f"cnbr{i}")
        host.request(host.addr(hidx, f"{ROUTED_GW}/32"), host.host_route(pod_ip, hidx),
                     host.neigh(hidx, pod_ip, pod_mac))

    return _timed(sb_path, f"cnbr{i}", plug)
