"""Fakes shared by the pool's unit tests (no tests here): an in-memory provider that counts
its calls and can be taken down, a parker that remembers what is parked, a manual clock."""

from __future__ import annotations

import ipaddress
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from cloudnic.errors import NotFound, TryAgainLater
from cloudnic.pool import PoolKey, PoolManager, PoolPolicy
from cloudnic.providers.base import Capabilities, FixedIP, Network, Port, PortSpec, Provider
from cloudnic.store import Store

NODE = "node-a"
CLUSTER = "c1"
OWNER_TAGS = (f"cloudnic:cluster={CLUSTER}", f"cloudnic:node={NODE}")


class FakeProvider(Provider):
    """A cloud in memory. ``calls`` counts every contract call by name; ``down`` makes every
    call raise ``TryAgainLater``; ``lose_create_reply`` creates the ports, then raises."""

    def __init__(self) -> None:
        self.ports: dict[str, Port] = {}
        self.calls: Counter[str] = Counter()
        self.create_counts: list[int] = []
        self.down = False
        self.lose_create_reply = False
        self.create_gate: threading.Event | None = None     # create_ports waits for it when set
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _call(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1
        if self.down:
            raise TryAgainLater(f"fake provider is down ({name})")

    def total_calls(self) -> int:
        return sum(self.calls.values())

    def describe(self) -> Capabilities:
        return Capabilities(name="fake", bulk_create=True, security_groups=True, tags=True)

    def get_network(self, name_or_id: str) -> Network:
        self._call("get_network")
        return Network(id=name_or_id, name=name_or_id)

    def create_ports(self, spec: PortSpec, count: int = 1) -> list[Port]:
        self._call("create_ports")
        if self.create_gate is not None:
            self.create_gate.wait(10)
        out = []
        with self._lock:
            self.create_counts.append(count)
            for _ in range(count):
                n = next(self._ids)
                subnet = spec.subnet_ids[0] if spec.subnet_ids else "s1"
                sgs = tuple(sorted(spec.security_groups)) or ("sg-default-id",)
                mac = f"02:00:00:00:{n // 256:02x}:{n % 256:02x}"
                port = Port(id=f"port-{n:04d}", network_id=spec.network_id, mac=mac,
                            fixed_ips=(FixedIP(subnet, ipaddress.ip_address(f"10.0.{n // 250}.{n % 250 + 2}")),),
                            name=spec.name, status="DOWN", security_groups=sgs, tags=spec.tags,
                            device_owner=spec.device_owner, host_id=spec.host_id)
                self.ports[port.id] = port
                out.append(port)
        if self.lose_create_reply:
            raise TryAgainLater("fake provider: the reply to the create was lost (timeout)")
        return out

    def get_port(self, port_id: str) -> Port | None:
        self._call("get_port")
        return self.ports.get(port_id)

    def update_port(self, port_id: str, *, name: str | None = None,
                    security_groups: tuple[str, ...] | None = None,
                    tags: tuple[str, ...] | None = None) -> Port:
        self._call("update_port")
        with self._lock:
            port = self.ports.get(port_id)
            if port is None:
                raise NotFound(f"port {port_id} does not exist")
            if name is not None:
                port = replace(port, name=name)
            if security_groups is not None:
                port = replace(port, security_groups=tuple(security_groups))
            if tags is not None:
                port = replace(port, tags=tuple(tags))
            self.ports[port_id] = port
        return port

    def delete_ports(self, port_ids: list[str]) -> None:
        self._call("delete_ports")
        with self._lock:
            for pid in port_ids:
                self.ports.pop(pid, None)

    def list_owned_ports(self, cluster_id: str, node: str) -> list[Port]:
        self._call("list_owned_ports")
        want = {f"cloudnic:cluster={cluster_id}", f"cloudnic:node={node}"}
        with self._lock:
            return [p for p in self.ports.values() if want <= set(p.tags)]

    def add_foreign(self, port: Port) -> Port:
        """A port created behind the pool's back (another process, a lost reply)."""
        self.ports[port.id] = port
        return port


class FakeParker:
    def __init__(self) -> None:
        self.parked: set[str] = set()
        self.park_calls = 0
        self.fail_for: set[str] = set()
        self._lock = threading.Lock()

    def park(self, port: Port) -> None:
        from cloudnic.errors import DataplaneError

        with self._lock:
            self.park_calls += 1
            if port.id in self.fail_for:
                raise DataplaneError(f"cannot park port {port.id}")
            self.parked.add(port.id)

    def unpark(self, port: Port) -> None:
        with self._lock:
            self.parked.discard(port.id)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


BLUE = PoolKey("net-1", "s1", ("sg-blue",))
RED = PoolKey("net-1", "s1", ("sg-red",))
GREEN_OTHER_SUBNET = PoolKey("net-1", "s2", ("sg-green",))
DEFAULT = PoolKey("net-1", "s1", ())


def spec_for(key: PoolKey) -> PortSpec:
    return PortSpec(network_id=key.network_id, subnet_ids=(key.subnet_id,) if key.subnet_id else (),
                    security_groups=key.security_groups, name="ignored-by-the-pool")


def make_manager(provider: FakeProvider, store: Store, *, policies: dict[PoolKey, PoolPolicy] | None = None,
                 default: PoolPolicy | None = None, parker: FakeParker | None = None, clock: Clock | None = None,
                 seed: int = 7, spec: Callable[[PoolKey], PortSpec] = spec_for) -> PoolManager:
    import random

    table = policies or {}

    def policy_for(key: PoolKey) -> PoolPolicy | None:
        return table.get(key, default)

    return PoolManager(provider, store, node=NODE, cluster_id=CLUSTER, spec_for=spec, parker=parker,
                       policy_for=policy_for, clock=clock or Clock(), rng=random.Random(seed))


def open_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state.db")
    try:
        yield s
    finally:
        s.close()
