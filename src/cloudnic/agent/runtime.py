"""The agent's long-lived parts: store, provider, dataplanes per network, worker threads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cloudnic.agent.config import AgentConfig, NetworkSettings
from cloudnic.agent.pools import Pools, make_pools
from cloudnic.dataplane import NetnsSafeExecutor, make_dataplane
from cloudnic.dataplane.base import Dataplane
from cloudnic.errors import InvalidConfig, NotFound
from cloudnic.providers.base import Network, Port, Provider
from cloudnic.providers.neutron import NeutronProvider, settings_from_table
from cloudnic.providers.standalone import StandaloneProvider
from cloudnic.store import Store


class Catalog:
    """The networks this node serves: the config's names mapped to the provider's networks.

    A request may name a network by its config name, or (Neutron) by the provider's id
    or name of a configured network, as the skynet annotations do.
    """

    def __init__(self, provider: Provider, refs: dict[str, str]) -> None:
        self.provider = provider
        self.refs = refs                      # config name -> provider network id or name
        self._by_id: dict[str, str] = {}      # provider network id -> config name

    def get(self, name_or_id: str) -> Network:
        for name, ref in self.refs.items():
            if name_or_id in (name, ref) or self._by_id.get(name_or_id) == name:
                return self._fetch(name, ref)
        for name, ref in self.refs.items():    # a provider id or name not seen yet
            net = self._fetch(name, ref)
            if name_or_id in (net.id, net.name):
                return net
        raise NotFound(f"network {name_or_id!r} is not served by this node")

    def _fetch(self, name: str, ref: str) -> Network:
        net = self.provider.get_network(ref)
        self._by_id[net.id] = name
        return net

    def all(self) -> list[Network]:
        return [self._fetch(name, ref) for name, ref in self.refs.items()]

    def config_name(self, network: Network) -> str:
        """The config's name of a provider network returned by get()/all()."""
        return self._by_id.get(network.id, network.name)


def make_provider(cfg: AgentConfig, store: Store) -> Provider:
    if cfg.provider == "neutron":
        return NeutronProvider(settings_from_table(cfg.provider_settings))
    networks = [ns.provider_network for ns in cfg.networks.values() if ns.provider_network is not None]
    return StandaloneProvider(store, networks)


def make_network_dataplane(ns: NetworkSettings, host_netns_fd: int | None, parking_netns: str) -> Dataplane:
    if ns.mode == "linuxbridge":      # the bridge's MTU follows its ports; 1500 until one says otherwise
        return make_dataplane("linuxbridge", mtu=ns.mtu or 1500, host_netns_fd=host_netns_fd,
                              parking_netns=parking_netns, deferred_delete=ns.deferred_delete)
    if ns.mode == "bridge":
        return make_dataplane("bridge", bridge=ns.bridge, mtu=ns.mtu, gateway_on_bridge=ns.gateway_on_bridge,
                              host_netns_fd=host_netns_fd, deferred_delete=ns.deferred_delete)
    if ns.mode == "routed":
        return make_dataplane("routed", mtu=ns.mtu, host_netns_fd=host_netns_fd,
                              enable_forwarding=ns.enable_forwarding, deferred_delete=ns.deferred_delete)
    return make_dataplane("macvlan", parent=ns.parent, mtu=ns.mtu or 1500, host_netns_fd=host_netns_fd,
                          macvlan_mode=ns.macvlan_mode, host_shim=ns.host_shim)


class Runtime:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        Path(cfg.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = Store(cfg.db_path)
        self.store.checkpoint_in_background()
        self.host_netns_fd: int | None = None
        if cfg.host_netns:
            try:
                self.host_netns_fd = os.open(cfg.host_netns, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise InvalidConfig(f"agent.host_netns {cfg.host_netns!r}: cannot open ({e.strerror})") from e
        self.provider: Provider = make_provider(cfg, self.store)
        self.catalog = Catalog(self.provider, {name: ns.neutron_network or name
                                               for name, ns in cfg.networks.items()})
        self._dataplanes = {name: make_network_dataplane(ns, self.host_netns_fd, cfg.parking_netns)
                            for name, ns in cfg.networks.items()}
        # worker threads enter sandbox netns; a thread that cannot return to its own is retired
        self.pools: Pools | None = None        # set up by start_pools() after recovery
        self.executor = NetnsSafeExecutor(max_workers=cfg.workers, thread_name_prefix="cloudnic-worker")

    def wait_active(self, port: Port) -> Port:
        """After plugging a port made on demand: wait (bounded) until the provider reports it
        ACTIVE, when the provider is configured so (neutron ``port_ready = "active"``)."""
        if isinstance(self.provider, NeutronProvider) and self.provider.settings.port_ready == "active":
            return self.provider.wait_active(port.id)
        return port

    def node_netns_ids(self) -> set[tuple[int, int]]:
        """(dev, inode) of the agent's own netns and of the node netns: never a sandbox."""
        ids = {(st.st_dev, st.st_ino) for st in [os.stat("/proc/self/ns/net")]}
        if self.host_netns_fd is not None:
            st = os.fstat(self.host_netns_fd)
            ids.add((st.st_dev, st.st_ino))
        return ids

    def dataplane(self, network: str) -> Dataplane:
        try:
            return self._dataplanes[network]
        except KeyError:
            raise NotFound(f"network {network!r} has no dataplane on this node") from None

    def dataplanes(self) -> dict[str, Dataplane]:
        return dict(self._dataplanes)

    def free_addresses(self, network: str) -> int | None:
        usage = getattr(self.provider, "usage", None)
        if usage is None:
            return None
        rows = [r for r in usage() if r["network"] == network]
        return sum(int(r["free"]) for r in rows) if rows else None

    def start_pools(self) -> dict[str, Any]:
        """Build the warm pools (rebuilt from the store and the provider, then pre-warmed)."""
        self.pools = make_pools(self.cfg, self.provider, self.store, self.catalog.get, self._dataplanes)
        return self.pools.start(self.executor) if self.pools is not None else {"keys": 0}

    def close(self) -> None:
        if self.pools is not None:
            self.pools.stop()
        self.executor.shutdown(wait=True)
        for dp in self._dataplanes.values():
            dp.close()
        self.provider.close()
        self.store.close()
        if self.host_netns_fd is not None:
            os.close(self.host_netns_fd)
