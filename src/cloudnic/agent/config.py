"""The agent's configuration file (TOML). Every key is documented in the README."""

from __future__ import annotations

import os
import socket as _socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudnic.errors import InvalidConfig
from cloudnic.providers.standalone import NetworkConfig, SubnetConfig, validate_networks

MODES = {"standalone": ("bridge", "routed", "macvlan"), "neutron": ("linuxbridge", "macvlan", "ovs")}
PROVIDERS = tuple(MODES)
_AGENT_KEYS = {
    "socket", "state_dir", "node_name", "cluster_id", "log_level", "log_file", "max_request_bytes",
    "request_timeout_s", "host_netns", "workers", "metrics_listen", "parking_netns", "reconcile_interval_s",
}
_NET_KEYS = {"mode", "mtu", "bridge", "gateway_on_bridge", "parent", "macvlan_mode", "host_shim", "deferred_delete",
             "subnets", "enable_forwarding", "neutron_network", "subnet", "security_groups", "pool"}
_POOL_KEYS = {"min_ready", "max_idle", "batch"}
_SUBNET_KEYS = {"cidr", "gateway", "exclude", "name", "routes", "dns"}


@dataclass(frozen=True)
class PoolSettings:
    """Warm pool of a network (Neutron): ports kept ready on this node."""

    min_ready: int = 0
    max_idle: int = 0
    batch: int = 1


@dataclass(frozen=True)
class NetworkSettings:
    """One network: how the node plumbs it (dataplane) and what the provider serves."""

    name: str
    mode: str = "bridge"
    mtu: int = 1500                    # 0: the provider network's MTU (neutron)
    bridge: str = ""
    gateway_on_bridge: bool = True
    parent: str = ""
    macvlan_mode: str = "bridge"
    host_shim: bool = True
    enable_forwarding: bool = True
    deferred_delete: bool = False                    # veth modes: DEL buries the link, a reaper deletes it
    provider_network: NetworkConfig | None = None    # standalone: the network it serves
    neutron_network: str = ""                        # neutron: the network's id or name
    subnet: str = ""                                 # default subnet (id, name or CIDR)
    security_groups: tuple[str, ...] = ()            # default security groups
    pool: PoolSettings | None = None


@dataclass(frozen=True)
class NamespaceMapping:
    network: str | None = None
    subnet: str | None = None
    security_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class AgentConfig:
    socket: str = "/run/cloudnic/agent.sock"
    state_dir: str = "/var/lib/cloudnic"
    node_name: str = field(default_factory=_socket.gethostname)
    cluster_id: str = "default"
    log_level: str = "info"
    log_file: str = ""
    max_request_bytes: int = 1 << 20
    request_timeout_s: float = 60.0
    host_netns: str = ""
    workers: int = 16
    metrics_listen: str = ""          # "host:port" of the Prometheus endpoint; "" = off
    parking_netns: str = "cloudnic-parking"   # where pooled ports wait, pre-plugged (linuxbridge)
    reconcile_interval_s: float = 300.0       # periodic audit --fix; 0 = only at start
    provider: str = "standalone"
    provider_settings: dict[str, Any] = field(default_factory=dict)   # [provider] without "type"
    networks: dict[str, NetworkSettings] = field(default_factory=dict)
    namespaces: dict[str, NamespaceMapping] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return Path(self.state_dir) / "state.db"


def _type(where: str, value: Any, typ: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and typ in (int, float, (int, float)):
        raise InvalidConfig(f"{where}: must be {what}, not {value!r}")
    if not isinstance(value, typ):
        raise InvalidConfig(f"{where}: must be {what}, not {value!r}")
    return value


def _unknown(where: str, table: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise InvalidConfig(f"{where}: unknown key(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")


def _str_list(where: str, value: Any) -> tuple[str, ...]:
    _type(where, value, list, "a list of strings")
    for v in value:
        _type(where, v, str, "a list of strings")
    return tuple(value)


def _subnet(where: str, raw: Any) -> SubnetConfig:
    _type(where, raw, dict, "a table")
    _unknown(where, raw, _SUBNET_KEYS)
    if "cidr" not in raw:
        raise InvalidConfig(f"{where}: cidr is required")
    routes: list[tuple[str, str | None]] = []
    for i, r in enumerate(raw.get("routes", [])):
        _type(f"{where}.routes[{i}]", r, dict, 'a table {dst = "...", gw = "..."}')
        dst = _type(f"{where}.routes[{i}].dst", r.get("dst"), str, "a CIDR string")
        gw = r.get("gw")
        if gw is not None:
            _type(f"{where}.routes[{i}].gw", gw, str, "an IP address string")
        routes.append((dst, gw))
    gw = raw.get("gateway")
    if gw is not None:
        _type(f"{where}.gateway", gw, str, 'an IP address or "none"')
    return SubnetConfig(
        cidr=_type(f"{where}.cidr", raw["cidr"], str, "a CIDR string"),
        gateway=gw,
        exclude=_str_list(f"{where}.exclude", raw.get("exclude", [])),
        name=_type(f"{where}.name", raw.get("name", ""), str, "a string"),
        routes=tuple(routes),
        dns=_str_list(f"{where}.dns", raw.get("dns", [])),
    )


def _ifname(where: str, value: Any) -> str:
    _type(where, value, str, "an interface name")
    if not 0 < len(value.encode()) <= 15 or any(c in value for c in "/: \t\n\0") or value in (".", ".."):
        raise InvalidConfig(f"{where}: {value!r} is not a valid interface name (1-15 bytes, no / : or spaces)")
    return value


def _pool(where: str, raw: Any) -> PoolSettings:
    _type(where, raw, dict, "a table")
    _unknown(where, raw, _POOL_KEYS)
    vals = {k: _type(f"{where}.{k}", raw[k], int, "an integer") for k in _POOL_KEYS if k in raw}
    if any(v < 0 for v in vals.values()):
        raise InvalidConfig(f"{where}: min_ready, max_idle and batch must not be negative")
    pool = PoolSettings(**vals)
    if pool.batch < 1:
        raise InvalidConfig(f"{where}.batch: must be at least 1")
    if pool.max_idle and pool.max_idle < pool.min_ready:
        raise InvalidConfig(f"{where}.max_idle ({pool.max_idle}) is below min_ready ({pool.min_ready})")
    return pool


def _network(name: str, raw: Any, provider: str) -> NetworkSettings:
    where = f"networks.{name}"
    _type(where, raw, dict, "a table")
    _unknown(where, raw, _NET_KEYS)
    modes = MODES[provider]
    mode = _type(f"{where}.mode", raw.get("mode", modes[0]), str, "a string")
    if mode not in modes:
        raise InvalidConfig(f"{where}.mode: {mode!r} is not one of {', '.join(modes)} (provider {provider})")
    # with Neutron the network's own MTU applies unless the config overrides it (0 = Neutron's)
    mtu = _type(f"{where}.mtu", raw.get("mtu", 0 if provider == "neutron" else 1500), int, "an integer")
    if mtu and not 68 <= mtu <= 65535:
        raise InvalidConfig(f"{where}.mtu: {mtu} is outside 68..65535")
    bridge = raw.get("bridge", "")
    bridge = _ifname(f"{where}.bridge", bridge) if bridge else ("cn-" + name)[:15]
    parent = raw.get("parent", "")
    if mode == "macvlan":
        if not parent:
            raise InvalidConfig(f"{where}.parent: macvlan mode needs the parent link's name")
        _ifname(f"{where}.parent", parent)
    mv_mode = _type(f"{where}.macvlan_mode", raw.get("macvlan_mode", "bridge"), str, "a string")
    if mv_mode not in ("bridge", "private", "vepa", "passthru"):
        raise InvalidConfig(f"{where}.macvlan_mode: {mv_mode!r} is not bridge, private, vepa or passthru")
    flags = {}
    for key, default in (("gateway_on_bridge", True), ("host_shim", True), ("enable_forwarding", True),
                         ("deferred_delete", False)):
        flags[key] = _type(f"{where}.{key}", raw.get(key, default), bool, "true or false")
    common: dict[str, Any] = dict(name=name, mode=mode, mtu=mtu, bridge=bridge, parent=parent,
                                  macvlan_mode=mv_mode, **flags)
    if provider == "neutron":
        if "subnets" in raw:
            raise InvalidConfig(f"{where}.subnets: with provider neutron the subnets come from Neutron; "
                                f"name the network with neutron_network")
        common["neutron_network"] = _type(f"{where}.neutron_network", raw.get("neutron_network", name), str,
                                          "a Neutron network id or name")
        common["subnet"] = _type(f"{where}.subnet", raw.get("subnet", ""), str, "a subnet id, name or CIDR")
        common["security_groups"] = _str_list(f"{where}.security_groups", raw.get("security_groups", []))
        common["pool"] = _pool(f"{where}.pool", raw["pool"]) if "pool" in raw else None
        return NetworkSettings(**common)
    for key in ("neutron_network", "subnet", "security_groups"):
        if key in raw:
            raise InvalidConfig(f"{where}.{key}: only for provider neutron")
    common["pool"] = _pool(f"{where}.pool", raw["pool"]) if "pool" in raw else None
    subnets_raw = raw.get("subnets")
    if not subnets_raw:
        raise InvalidConfig(f"{where}.subnets: a network needs at least one subnet ([[{where}.subnets]])")
    _type(f"{where}.subnets", subnets_raw, list, "an array of tables")
    subnets = tuple(_subnet(f"{where}.subnets[{i}]", s) for i, s in enumerate(subnets_raw))
    return NetworkSettings(provider_network=NetworkConfig(name=name, subnets=subnets, mtu=mtu), **common)


def parse_config(data: dict[str, Any], *, state_dir: str | None = None, socket_path: str | None = None
                 ) -> AgentConfig:
    """Validate a decoded TOML document; ``InvalidConfig`` names the offending key."""
    _unknown("config", data, {"agent", "provider", "networks", "namespaces"})
    agent = data.get("agent", {})
    _type("agent", agent, dict, "a table")
    _unknown("agent", agent, _AGENT_KEYS)
    kw: dict[str, Any] = {}
    for key in ("socket", "state_dir", "node_name", "cluster_id", "log_level", "log_file", "host_netns",
                "metrics_listen", "parking_netns"):
        if key in agent:
            kw[key] = _type(f"agent.{key}", agent[key], str, "a string")
    for key in ("max_request_bytes", "workers"):
        if key in agent:
            kw[key] = _type(f"agent.{key}", agent[key], int, "an integer")
            if kw[key] < 1:
                raise InvalidConfig(f"agent.{key}: must be positive")
    for key in ("request_timeout_s", "reconcile_interval_s"):
        if key in agent:
            kw[key] = float(_type(f"agent.{key}", agent[key], (int, float), "a number of seconds"))
            if kw[key] < 0 or (kw[key] == 0 and key == "request_timeout_s"):
                raise InvalidConfig(f"agent.{key}: must be positive")
    if kw.get("log_level", "info") not in ("debug", "info", "warning", "error"):
        raise InvalidConfig(f"agent.log_level: {kw['log_level']!r} is not debug, info, warning or error")
    ml = kw.get("metrics_listen", "")
    if ml and not (":" in ml and ml.rpartition(":")[2].isdigit() and 0 < int(ml.rpartition(":")[2]) < 65536):
        raise InvalidConfig(f"agent.metrics_listen: {ml!r} is not host:port (e.g. 127.0.0.1:9469)")
    if "node_name" in kw and not kw["node_name"]:
        del kw["node_name"]
    provider = data.get("provider", {"type": "standalone"})
    _type("provider", provider, dict, "a table")
    ptype = provider.get("type", "standalone")
    if ptype not in PROVIDERS:
        raise InvalidConfig(f"provider.type: {ptype!r} is not one of {', '.join(PROVIDERS)}")
    if ptype == "standalone":
        _unknown("provider", provider, {"type"})
    networks_raw = data.get("networks", {})
    _type("networks", networks_raw, dict, "a table of networks")
    if not networks_raw:
        raise InvalidConfig("networks: declare at least one network ([networks.NAME])")
    networks = {name: _network(name, raw, ptype) for name, raw in networks_raw.items()}
    validate_networks([n.provider_network for n in networks.values() if n.provider_network is not None])
    namespaces: dict[str, NamespaceMapping] = {}
    for ns, raw in data.get("namespaces", {}).items():
        where = f"namespaces.{ns}"
        _type(where, raw, dict, "a table")
        _unknown(where, raw, {"network", "subnet", "security_groups"})
        net = raw.get("network")
        if net is not None and net not in networks:
            raise InvalidConfig(f"{where}.network: no network named {net!r} is declared")
        sub = raw.get("subnet")
        if sub is not None:
            _type(f"{where}.subnet", sub, str, "a subnet name or CIDR")
        namespaces[ns] = NamespaceMapping(
            network=net, subnet=sub,
            security_groups=_str_list(f"{where}.security_groups", raw.get("security_groups", [])))
    if state_dir:
        kw["state_dir"] = state_dir
    if socket_path:
        kw["socket"] = socket_path
    settings = {k: v for k, v in provider.items() if k != "type"}
    return AgentConfig(provider=ptype, provider_settings=settings, networks=networks, namespaces=namespaces, **kw)


def load_config(path: str | os.PathLike[str], *, state_dir: str | None = None,
                socket_path: str | None = None) -> AgentConfig:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise InvalidConfig(f"cannot read agent config {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise InvalidConfig(f"agent config {path} is not valid TOML: {e}") from e
    return parse_config(data, state_dir=state_dir, socket_path=socket_path)
