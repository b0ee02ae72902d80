"""Networks of the standalone cloud as declared in the agent config, and their validation.

Subnet id = its ``name`` or, when empty, its canonical CIDR. Network id = its name.
Validation names the network, the subnet and the field, and says what to do.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudnic.errors import InvalidConfig
from cloudnic.providers.base import IPAddress, IPNetwork

MAX_PREFIX = {4: 30, 6: 126}
NO_GATEWAY = "none"


@dataclass(frozen=True)
class SubnetConfig:
    cidr: str
    gateway: str | None = None          # None: first host address; "none": no gateway
    exclude: tuple[str, ...] = ()       # each an IP, a CIDR or "a-b"
    name: str = ""
    routes: tuple[tuple[str, str | None], ...] = ()
    dns: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        if self.name:
            return self.name
        try:
            return str(ipaddress.ip_network(self.cidr.strip()))
        except ValueError:
            return self.cidr

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.cidr.strip())

    @property
    def gateway_ip(self) -> IPAddress | None:
        """The effective gateway (the config must be valid)."""
        if self.gateway is not None and self.gateway.strip().lower() == NO_GATEWAY:
            return None
        if self.gateway is None:
            return self.network.network_address + 1
        return ipaddress.ip_address(self.gateway.strip())


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    subnets: tuple[SubnetConfig, ...]
    mtu: int | None = None


def parse_exclusion(text: str, net: IPNetwork) -> tuple[IPAddress, IPAddress]:
    """An exclusion as an inclusive (first, last) pair; ``ValueError`` says what is wrong."""
    text = text.strip()
    if "-" in text:
        a_text, b_text = (p.strip() for p in text.split("-", 1))
        a, b = ipaddress.ip_address(a_text), ipaddress.ip_address(b_text)
        if a.version != b.version:
            raise ValueError(f"range {text!r} mixes IPv4 and IPv6")
        if int(a) > int(b):
            raise ValueError(f"range {text!r} starts after it ends; write it as \"{b}-{a}\"")
    elif "/" in text:
        sub = ipaddress.ip_network(text)
        a, b = sub.network_address, sub.broadcast_address
    else:
        a = b = ipaddress.ip_address(text)
    if a.version != net.version or a not in net or b not in net:
        raise ValueError(f"{text!r} is not inside the subnet {net}")
    return a, b


def _where(net: NetworkConfig, sub: SubnetConfig | None = None, field: str = "") -> str:
    out = f'network "{net.name}"'
    if sub is not None:
        out += f', subnet "{sub.id}"'
    if field:
        out += f", field {field!r}"
    return out


def _validate_subnet(net: NetworkConfig, sub: SubnetConfig) -> IPNetwork:
    try:
        cidr = ipaddress.ip_network(sub.cidr.strip())
    except ValueError as exc:
        raise InvalidConfig(f"{_where(net, sub, 'cidr')}: {sub.cidr!r} is not a valid CIDR; write it like "
                            "10.22.0.0/24 or fd00:22::/64 (no host bits set)", str(exc)) from None
    if cidr.prefixlen > MAX_PREFIX[cidr.version]:
        raise InvalidConfig(f"{_where(net, sub, 'cidr')}: {cidr} leaves no room for a gateway and a "
                            f"pod; use a prefix of /{MAX_PREFIX[cidr.version]} or shorter")
    gw_text = sub.gateway
    if gw_text is not None and gw_text.strip().lower() != NO_GATEWAY:
        try:
            gw = ipaddress.ip_address(gw_text.strip())
        except ValueError:
            raise InvalidConfig(f"{_where(net, sub, 'gateway')}: {gw_text!r} is not an IP address; give an "
                                f'address inside {cidr}, or "none" for no gateway') from None
        if gw.version != cidr.version or gw not in cidr:
            raise InvalidConfig(f"{_where(net, sub, 'gateway')}: {gw} is outside the subnet {cidr}; give an "
                                f'address inside it, or "none" for no gateway')
        if gw == cidr.network_address or (cidr.version == 4 and gw == cidr.broadcast_address):
            raise InvalidConfig(f"{_where(net, sub, 'gateway')}: {gw} is the network or broadcast address of "
                                f"{cidr}; use a host address")
    for ex in sub.exclude:
        try:
            parse_exclusion(ex, cidr)
        except ValueError as exc:
            raise InvalidConfig(f"{_where(net, sub, 'exclude')}: {exc}; give an IP, a CIDR or an "
                                f'"a-b" range inside {cidr}') from None
    for dst, via in sub.routes:
        try:
            rdst = ipaddress.ip_network(dst, strict=False)
            rgw = ipaddress.ip_address(via) if via else None
        except ValueError as exc:
            raise InvalidConfig(f"{_where(net, sub, 'routes')}: route {dst!r} via {via!r} is invalid; give a "
                                "destination CIDR and an optional gateway address", str(exc)) from None
        if rgw is not None and rgw.version != rdst.version:
            raise InvalidConfig(f"{_where(net, sub, 'routes')}: route {dst} via {via} mixes IPv4 and IPv6")
    for server in sub.dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidConfig(f"{_where(net, sub, 'dns')}: {server!r} is not an IP address") from None
    return cidr


def validate_networks(networks: Sequence[NetworkConfig]) -> None:
    """Refuse a config the standalone cloud cannot serve; ``InvalidConfig`` names what and where."""
    names: set[str] = set()
    subnet_ids: dict[str, str] = {}
    cidrs: list[tuple[IPNetwork, str]] = []
    for net in networks:
        if not net.name or not net.name.strip():
            raise InvalidConfig("a standalone network has an empty 'name'; give every network a unique name")
        if net.name in names:
            raise InvalidConfig(f'network "{net.name}" is declared twice; network names must be unique')
        names.add(net.name)
        if not net.subnets:
            raise InvalidConfig(f"{_where(net, field='subnets')}: the network has no subnet; "
                                "add at least one")
        has_v6 = False
        for sub in net.subnets:
            cidr = _validate_subnet(net, sub)
            has_v6 = has_v6 or cidr.version == 6
            if sub.id in subnet_ids:
                raise InvalidConfig(f'{_where(net, sub)}: subnet id "{sub.id}" is already used in network '
                                    f'"{subnet_ids[sub.id]}"; give the subnet a unique name')
            subnet_ids[sub.id] = net.name
            for other, where in cidrs:
                if other.version == cidr.version and other.overlaps(cidr):
                    raise InvalidConfig(f"{_where(net, sub, 'cidr')}: {cidr} overlaps {other} of {where}; "
                                        "subnets must not overlap")
            cidrs.append((cidr, f'network "{net.name}"'))
        if net.mtu is not None:
            low = 1280 if has_v6 else 68
            if not isinstance(net.mtu, int) or isinstance(net.mtu, bool) or not low <= net.mtu <= 65535:
                raise InvalidConfig(f"{_where(net, field='mtu')}: {net.mtu!r} is not a valid MTU; give an "
                                    f"integer between {low} and 65535")


# ---- from the agent config (JSON/YAML-shaped values) --------------------------------

_NET_KEYS = {"name", "subnets", "mtu"}
_SUB_KEYS = {"cidr", "gateway", "exclude", "name", "routes", "dns"}


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidConfig(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _routes(value: Any, where: str) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    for item in value or ():
        if isinstance(item, Mapping) and isinstance(item.get("dst"), str):
            gw = item.get("gw")
            out.append((item["dst"], str(gw) if gw else None))
        elif isinstance(item, (list, tuple)) and len(item) in (1, 2) and isinstance(item[0], str):
            out.append((item[0], str(item[1]) if len(item) == 2 and item[1] else None))
        else:
            raise InvalidConfig(f'{where}: route {item!r} is invalid; write {{"dst": "CIDR", "gw": "IP"}}')
    return tuple(out)


def networks_from_config(raw: Any) -> list[NetworkConfig]:
    """Build and validate networks from a list of mappings (the ``networks`` config key)."""
    if not isinstance(raw, list):
        raise InvalidConfig(f"standalone 'networks' must be a list of networks, got {type(raw).__name__}")
    nets: list[NetworkConfig] = []
    for i, item in enumerate(raw):
        where = f"networks[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidConfig(f"{where}: expected a mapping with name, subnets, mtu")
        unknown = sorted(set(item) - _NET_KEYS)
        if unknown:
            raise InvalidConfig(f"{where}: unknown key(s) {unknown}; known: {sorted(_NET_KEYS)}")
        name = item.get("name")
        if not isinstance(name, str):
            raise InvalidConfig(f"{where}: 'name' must be a string")
        where = f'{where} ("{name}")'
        subs_raw = item.get("subnets")
        if not isinstance(subs_raw, list):
            raise InvalidConfig(f"{where}: 'subnets' must be a list of subnets")
        subs: list[SubnetConfig] = []
        for j, s in enumerate(subs_raw):
            swhere = f"{where}.subnets[{j}]"
            if not isinstance(s, Mapping):
                raise InvalidConfig(f"{swhere}: expected a mapping with cidr, gateway, exclude, name, "
                                    "routes, dns")
            unknown = sorted(set(s) - _SUB_KEYS)
            if unknown:
                raise InvalidConfig(f"{swhere}: unknown key(s) {unknown}; known: {sorted(_SUB_KEYS)}")
            if not isinstance(s.get("cidr"), str):
                raise InvalidConfig(f"{swhere}: 'cidr' must be a string like \"10.22.0.0/24\"")
            gw = s.get("gateway")
            if gw is not None and not isinstance(gw, str):
                raise InvalidConfig(f"{swhere}: 'gateway' must be an address or \"none\"")
            sname = s.get("name", "")
            if not isinstance(sname, str):
                raise InvalidConfig(f"{swhere}: 'name' must be a string")
            subs.append(SubnetConfig(cidr=s["cidr"], gateway=gw, exclude=_str_list(s.get("exclude"),
                                     f"{swhere}.exclude"), name=sname,
                                     routes=_routes(s.get("routes"), f"{swhere}.routes"),
                                     dns=_str_list(s.get("dns"), f"{swhere}.dns")))
        mtu = item.get("mtu")
        if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool)):
            raise InvalidConfig(f"{where}: 'mtu' must be an integer")
        nets.append(NetworkConfig(name=name, subnets=tuple(subs), mtu=mtu))
    validate_networks(nets)
    return nets
