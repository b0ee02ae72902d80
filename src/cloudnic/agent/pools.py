"""Wiring the warm pools into the agent: keys, policies, specs and parking per network."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from cloudnic.agent.config import AgentConfig, NetworkSettings
from cloudnic.dataplane import park_attachment
from cloudnic.dataplane.base import Dataplane, ParkingDataplane
from cloudnic.pool import PoolKey, PoolManager, PoolPolicy, pool_port_name
from cloudnic.providers.base import Network, Port, PortSpec, Provider
from cloudnic.store import Store
from cloudnic.store.catalog import Catalog

log = logging.getLogger("cloudnic.pools")

OWNER_TAGS = ("cloudnic:cluster={cluster}", "cloudnic:node={node}")


class NetworkParker:
    """The pool's Parker: park a port on the parking dataplane of its network, if any."""

    def __init__(self, dataplanes: dict[str, Dataplane], mtu_of: dict[str, int]) -> None:
        self.dataplanes = dataplanes        # provider network id -> dataplane
        self.mtu_of = mtu_of

    def _dp(self, port: Port) -> ParkingDataplane | None:
        dp = self.dataplanes.get(port.network_id)
        return dp if isinstance(dp, ParkingDataplane) else None

    def park(self, port: Port) -> None:
        dp = self._dp(port)
        if dp is not None:
            dp.park(park_attachment(port.id, port.network_id, port.mac, self.mtu_of.get(port.network_id, 0)))

    def unpark(self, port: Port) -> None:
        dp = self._dp(port)
        if dp is not None:
            dp.unpark(park_attachment(port.id, port.network_id, port.mac, self.mtu_of.get(port.network_id, 0)))


class Pools:
    """The agent's pools: one PoolManager, keys for the networks that configure a pool."""

    def __init__(self, cfg: AgentConfig, provider: Provider, store: Store, networks: dict[str, Network],
                 dataplanes: dict[str, Dataplane]) -> None:
        self.cfg = cfg
        self.networks = networks                                     # config name -> provider network
        self.settings_by_id: dict[str, NetworkSettings] = {
            net.id: cfg.networks[name] for name, net in networks.items()}
        parker = NetworkParker({net.id: dataplanes[name] for name, net in networks.items()},
                               {net.id: cfg.networks[name].mtu or net.mtu or 0 for name, net in networks.items()})
        self.manager = PoolManager(
            provider, store, node=cfg.node_name, cluster_id=cfg.cluster_id, spec_for=self.spec_for,
            parker=parker, policy_for=self.policy_for, provider_name=cfg.provider)

    def policy_for(self, key: PoolKey) -> PoolPolicy | None:
        ns = self.settings_by_id.get(key.network_id)
        if ns is None or ns.pool is None or (ns.pool.min_ready == 0 and ns.pool.max_idle == 0):
            return None
        max_idle = ns.pool.max_idle or max(ns.pool.min_ready, ns.pool.batch)
        return PoolPolicy(min_ready=ns.pool.min_ready, max_idle=max_idle, batch=ns.pool.batch, jitter=5.0)

    def spec_for(self, key: PoolKey) -> PortSpec:
        return PortSpec(
            network_id=key.network_id, subnet_ids=(key.subnet_id,) if key.subnet_id else (),
            security_groups=key.security_groups, name=pool_port_name(self.cfg.cluster_id, self.cfg.node_name),
            host_id=self.cfg.node_name,
            tags=tuple(t.format(cluster=self.cfg.cluster_id, node=self.cfg.node_name) for t in OWNER_TAGS))

    def default_keys(self) -> list[PoolKey]:
        """The key each pooled network's requests get when they ask for nothing special."""
        keys = []
        for name, net in self.networks.items():
            ns = self.cfg.networks[name]
            if self.policy_for(PoolKey(net.id)) is None:
                continue
            subnet = next((s.id for s in net.subnets if ns.subnet in (s.id, s.name, str(s.cidr))), None) \
                if ns.subnet else None
            keys.append(PoolKey(net.id, subnet, tuple(sorted(ns.security_groups))))
        return keys

    def key_for(self, spec: PortSpec) -> PoolKey | None:
        """The pool a request may be served from; None when it asks for a specific IP or MAC."""
        if spec.fixed_ips or spec.mac or len(spec.subnet_ids) > 1:
            return None
        key = PoolKey(spec.network_id, spec.subnet_ids[0] if spec.subnet_ids else None,
                      tuple(sorted(spec.security_groups)))
        return key if self.policy_for(key) is not None else None

    def start(self, executor: Executor) -> dict[str, Any]:
        keys = self.default_keys()
        report = self.manager.rebuild(keys)
        self.manager.prewarm(keys)
        self.manager.start(executor, interval_s=1.0)
        return {"keys": len(keys), "rebuild": str(report)}

    def stop(self) -> None:
        self.manager.stop()

    def stats(self) -> list[dict[str, Any]]:
        return self.manager.stats()


def attach_catalog(provider: Provider, store: Store) -> bool:
    """Let a provider that can (neutron) keep the networks' facts in the store and fall back
    on them while it is unreachable: the pools and pool-served ADDs then work even for an
    agent (re)started during an outage. True when the provider took it."""
    use = getattr(provider, "use_catalog", None)
    if use is None:
        return False
    use(Catalog(store))
    return True


def make_pools(cfg: AgentConfig, provider: Provider, store: Store, lookup: Callable[[str], Network],
               dataplanes: dict[str, Dataplane]) -> Pools | None:
    attach_catalog(provider, store)     # before the first lookup (runtime.make_provider could pass it instead)
    names = [name for name, ns in cfg.networks.items() if ns.pool is not None]
    if not names:
        return None
    networks = {name: lookup(name) for name in cfg.networks}
    return Pools(cfg, provider, store, networks, dataplanes)
