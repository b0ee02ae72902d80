"""The ``standalone`` provider: the agent itself is the cloud.

Networks come from the agent config; ports and addresses live in the store's
``sa_*`` tables (the cloud's view, kept apart from the agent's ``ports``). The
allocator state is in memory, loaded from the store at start, and every change is
written in the same store transaction that marks it in memory; a rollback undoes the
in-memory marks too, and ``sa_addresses``'s primary key refuses a double hand-out
whatever memory believes.

Lock order is always store lock, then provider lock, so the agent may call the
provider inside its own ``store.transaction()``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import secrets
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from cloudnic.errors import AddressExhausted, AddressUnavailable, CNIError, InvalidConfig, NotFound
from cloudnic.providers.base import (
    Capabilities,
    FixedIP,
    Health,
    IPAddress,
    Network,
    Port,
    PortSpec,
    Provider,
    Route,
    Subnet,
)
from cloudnic.store import SaPortRow, StandaloneTables, Store

from .allocator import SubnetAllocator
from .config import NetworkConfig, validate_networks

CLUSTER_TAG = "cloudnic:cluster={}"
NODE_TAG = "cloudnic:node={}"
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
_MAC_TRIES = 64


def ownership_tags(cluster_id: str, node: str) -> tuple[str, str]:
    """The tags ``list_owned_ports`` looks for."""
    return CLUSTER_TAG.format(cluster_id), NODE_TAG.format(node)


class StandaloneProvider(Provider):
    def __init__(self, store: Store, networks: Sequence[NetworkConfig], *, mac_prefix: str = "02:c1") -> None:
        validate_networks(networks)
        self._store = store
        self._tables = StandaloneTables(store)
        self._prefix = _parse_prefix(mac_prefix)
        self._lock = threading.RLock()
        self._configs = {n.name: n for n in networks}
        self._allocs: dict[str, list[SubnetAllocator]] = {}
        for net in networks:
            allocs = [SubnetAllocator(net.name, s) for s in net.subnets]
            for a in allocs:
                if a.usable_total <= 0:
                    raise InvalidConfig(f'network "{net.name}", {a.label}: the gateway and exclusions leave '
                                        "no usable address; remove an exclusion or widen the subnet")
            self._allocs[net.name] = allocs
        self._networks = {n.name: _network(n, self._allocs[n.name]) for n in networks}
        self._macs: set[str] = set()
        self._load()

    def _load(self) -> None:
        with self._store.snapshot(), self._lock:
            for row in self._tables.addresses():
                alloc, off = self._locate(row.network_id, row.subnet_id, row.address)
                if alloc is not None and off is not None:
                    alloc.load(off)
            for (net, sid), last in self._tables.cursors().items():
                alloc, off = self._locate(net, sid, last)
                if alloc is not None and off is not None:
                    alloc.cursor = off
            self._macs = set(self._tables.macs())

    def _locate(self, network: str, subnet_id: str,
                address: str) -> tuple[SubnetAllocator | None, int | None]:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None, None
        allocs = self._allocs.get(network, [])
        for alloc in sorted(allocs, key=lambda a: a.id != subnet_id):
            off = alloc.offset(ip)
            if off is not None:
                return alloc, off
        return None, None

    # ---- contract ---------------------------------------------------------------

    def describe(self) -> Capabilities:
        return Capabilities(name="standalone", bulk_create=False, hotplug_nic=False, security_groups=False,
                            tags=True, static_ip=True, static_mac=True)

    def get_network(self, name_or_id: str) -> Network:
        net = self._networks.get(name_or_id)
        if net is None:
            raise NotFound(f'network "{name_or_id}" is not declared in the standalone provider config; '
                           f"declared networks: {', '.join(sorted(self._networks)) or '(none)'}")
        return net

    def list_networks(self) -> list[Network]:
        return list(self._networks.values())

    def create_ports(self, spec: PortSpec, count: int = 1) -> list[Port]:
        if count < 1:
            raise InvalidConfig(f"create_ports: count must be at least 1, got {count}")
        if count > 1 and spec.fixed_ips:
            raise InvalidConfig("create_ports: fixed_ips cannot be combined with count > 1 (an address can "
                                "be held by one port only)")
        if count > 1 and spec.mac:
            raise InvalidConfig("create_ports: mac cannot be combined with count > 1 (a MAC can be held by "
                                "one port only)")
        net = self.get_network(spec.network_id).name
        wanted = [self._subnet(net, sid) for sid in spec.subnet_ids]
        fixed = [_parse_ip(x) for x in spec.fixed_ips]
        mac = _parse_mac(spec.mac) if spec.mac else None
        rows: list[SaPortRow] = []
        with self._store.transaction(), self._lock:
            touched: dict[str, SubnetAllocator] = {}
            for _ in range(count):
                picked = self._pick(net, fixed, wanted, touched, count)
                row = SaPortRow(
                    port_id=str(uuid.uuid4()), network_id=net, mac=self._claim_mac(mac),
                    addresses=tuple((a.id, str(a.address(off))) for a, off in picked), name=spec.name,
                    security_groups=tuple(spec.security_groups), tags=tuple(spec.tags),
                    device_owner=spec.device_owner, host_id=spec.host_id,
                )
                rows.append(self._tables.insert_port(row))
            self._tables.set_cursors((net, a.id, str(a.address(a.cursor))) for a in touched.values())
        return [_port(r) for r in rows]

    def get_port(self, port_id: str) -> Port | None:
        row = self._tables.get_port(port_id)
        return None if row is None else _port(row)

    def update_port(self, port_id: str, *, name: str | None = None,
                    security_groups: tuple[str, ...] | None = None,
                    tags: tuple[str, ...] | None = None) -> Port:
        row = self._tables.update_port(port_id, name=name, security_groups=security_groups, tags=tags)
        if row is None:
            raise NotFound(f"port {port_id} does not exist in the standalone cloud")
        return _port(row)

    def delete_ports(self, port_ids: list[str]) -> None:
        with self._store.transaction():
            for pid in port_ids:
                row = self._tables.delete_port(pid)
                if row is not None:
                    self._store.on_commit(functools.partial(self._forget, row))

    def list_owned_ports(self, cluster_id: str, node: str) -> list[Port]:
        want = set(ownership_tags(cluster_id, node))
        return [_port(r) for r in self._tables.list_ports() if want <= set(r.tags)]

    def health(self) -> Health:
        try:
            self._store.execute("SELECT 1 FROM sa_ports LIMIT 1")
        except CNIError as exc:
            return Health(ok=False, detail=f"standalone store unusable: {exc}")
        full = [f"{u['network']}/{u['subnet']}" for u in self.usage() if u["free"] == 0]
        detail = f"{len(self._networks)} network(s)"
        if full:
            detail += f"; no free address in {', '.join(full)}"
        return Health(ok=True, detail=detail)

    def usage(self) -> list[dict[str, Any]]:
        """Per subnet: network, subnet id, cidr, total usable, used, free (for ``cloudnic status``)."""
        with self._lock:
            return [{"network": a.network, "subnet": a.id, "cidr": str(a.cidr), "total": a.usable_total,
                     "used": len(a.used), "free": a.free}
                    for allocs in self._allocs.values() for a in allocs]

    # ---- allocation ---------------------------------------------------------------

    def _subnet(self, net: str, subnet_id: str) -> SubnetAllocator:
        for a in self._allocs[net]:
            if subnet_id in (a.id, str(a.cidr)):
                return a
        raise NotFound(f'subnet "{subnet_id}" does not exist in network "{net}"; its subnets: '
                       f"{', '.join(a.id for a in self._allocs[net])}")

    def _take(self, alloc: SubnetAllocator, off: int) -> None:
        alloc.take(off)
        self._store.on_rollback(lambda: self._release(alloc, off))

    def _release(self, alloc: SubnetAllocator, off: int) -> None:
        with self._lock:
            alloc.release(off)

    def _take_next(self, alloc: SubnetAllocator, touched: dict[str, SubnetAllocator], count: int) -> None:
        off = alloc.next_free()
        if off is None:
            raise _exhausted(alloc.network, [alloc], count)
        if alloc.id not in touched:
            touched[alloc.id] = alloc
            old = alloc.cursor
            self._store.on_rollback(lambda: setattr(alloc, "cursor", old))
        alloc.cursor = off
        self._take(alloc, off)

    def _pick(self, net: str, fixed: list[IPAddress], wanted: list[SubnetAllocator],
              touched: dict[str, SubnetAllocator], count: int) -> list[tuple[SubnetAllocator, int]]:
        picked: list[tuple[SubnetAllocator, int]] = []
        for ip in fixed:
            alloc, off = self._check_fixed(net, ip)
            self._take(alloc, off)
            picked.append((alloc, off))
        covered = {a.id for a, _ in picked}
        for alloc in wanted:
            if alloc.id not in covered:
                self._take_next(alloc, touched, count)
                picked.append((alloc, alloc.cursor))
                covered.add(alloc.id)
        if not fixed and not wanted:
            for version in (4, 6):
                family = [a for a in self._allocs[net] if a.version == version]
                if not family:
                    continue
                room = next((a for a in family if a.free > 0), None)
                if room is None:
                    raise _exhausted(net, family, count)
                self._take_next(room, touched, count)
                picked.append((room, room.cursor))
        return picked

    def _check_fixed(self, net: str, ip: IPAddress) -> tuple[SubnetAllocator, int]:
        for alloc in self._allocs[net]:
            off = alloc.offset(ip)
            if off is None:
                continue
            where = f'{ip} in {alloc.label} of network "{net}"'
            why = alloc.reserved_reason(off)
            if why is not None:
                raise AddressUnavailable(f"{where} is {why}; ask for another address")
            if off in alloc.used:
                holder = self._tables.address_holder(net, str(ip))
                if holder is None:
                    raise AddressUnavailable(f"{where} is requested twice in one port")
                raise AddressUnavailable(f"{where} is held by port {holder.port_id} ({_pod(holder)}); "
                                         "ask for another address or delete that pod first", holder=holder.port_id)
            return alloc, off
        cidrs = ", ".join(str(a.cidr) for a in self._allocs[net])
        raise AddressUnavailable(f'{ip} is outside every subnet of network "{net}" ({cidrs}); ask for an '
                                 "address inside one of them")

    def _claim_mac(self, mac: str | None) -> str:
        if mac is not None:
            if mac in self._macs:
                holder = self._tables.mac_holder(mac)
                who = f"port {holder.port_id} ({_pod(holder)})" if holder else "another port"
                raise AddressUnavailable(f"MAC {mac} is held by {who}; ask for another MAC or delete that "
                                         "pod first", holder=holder.port_id if holder else "")
        else:
            for _ in range(_MAC_TRIES):
                raw = bytearray(self._prefix + secrets.token_bytes(6 - len(self._prefix)))
                if not self._prefix:
                    raw[0] = (raw[0] & 0xFC) | 0x02     # unicast, locally administered
                candidate = ":".join(f"{b:02x}" for b in raw)
                if candidate not in self._macs:
                    mac = candidate
                    break
            else:
                raise AddressExhausted(f"no free MAC address under prefix {_hex(self._prefix)} after "
                                       f"{_MAC_TRIES} tries; configure a shorter mac_prefix")
        self._macs.add(mac)
        self._store.on_rollback(functools.partial(self._drop_mac, mac))
        return mac

    def _drop_mac(self, mac: str) -> None:
        with self._lock:
            self._macs.discard(mac)

    def _forget(self, row: SaPortRow) -> None:
        with self._lock:
            self._macs.discard(row.mac)
            for subnet_id, address in row.addresses:
                alloc, off = self._locate(row.network_id, subnet_id, address)
                if alloc is not None and off is not None:
                    alloc.release(off)


# ---- helpers ------------------------------------------------------------------------


def _network(cfg: NetworkConfig, allocs: list[SubnetAllocator]) -> Network:
    subnets = tuple(
        Subnet(id=a.id, network_id=cfg.name, cidr=a.cidr, gateway=a.gateway, name=a.cfg.name,
               host_routes=tuple(Route(dst=str(ipaddress.ip_network(d, strict=False)), gw=g)
                                 for d, g in a.cfg.routes),
               dns_nameservers=a.cfg.dns)
        for a in allocs
    )
    return Network(id=cfg.name, name=cfg.name, mtu=cfg.mtu, subnets=subnets, network_type="standalone")


def _port(row: SaPortRow) -> Port:
    return Port(
        id=row.port_id, network_id=row.network_id, mac=row.mac,
        fixed_ips=tuple(FixedIP(subnet_id=s, address=ipaddress.ip_address(a)) for s, a in row.addresses),
        name=row.name, status=row.status, security_groups=row.security_groups, tags=row.tags,
        device_owner=row.device_owner, host_id=row.host_id,
    )


def _pod(row: SaPortRow) -> str:
    return f"pod {row.name}" if row.name else "no pod name"


def _exhausted(net: str, allocs: list[SubnetAllocator], count: int) -> AddressExhausted:
    need = f" ({count} ports asked for)" if count > 1 else ""
    if len(allocs) == 1:
        return AddressExhausted(f'{allocs[0].label} of network "{net}" has no free address{need}; add a '
                                "subnet or widen it")
    names = ", ".join(str(a.cidr) for a in allocs)
    return AddressExhausted(f'subnets {names} of network "{net}" have no free address{need}; add a subnet or '
                            "widen one")


def _parse_ip(value: object) -> IPAddress:
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise InvalidConfig(f"fixed IP {value!r} is not an IP address") from None


def _parse_mac(value: str) -> str:
    mac = value.strip().lower().replace("-", ":")
    if not _MAC_RE.match(mac):
        raise InvalidConfig(f"mac {value!r} is not a MAC address; write it like 02:c1:0a:16:00:07")
    first = int(mac[:2], 16)
    if first & 1:
        raise AddressUnavailable(f"MAC {mac} is a multicast address; a port needs a unicast MAC "
                                 "(even first octet)")
    if mac == "00:00:00:00:00:00":
        raise AddressUnavailable("MAC 00:00:00:00:00:00 is not a usable address; ask for another MAC")
    return mac


def _parse_prefix(prefix: str) -> bytes:
    text = prefix.strip().lower().replace("-", ":")
    parts = [p for p in text.split(":") if p] if text else []
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
        parts = ["bad"]
    if len(raw) != len(parts) or any(len(p) != 2 for p in parts) or len(raw) > 5:
        raise InvalidConfig(f"mac_prefix {prefix!r} is not 0 to 5 hex octets; write it like \"02:c1\"")
    if raw and raw[0] & 1:
        raise InvalidConfig(f"mac_prefix {prefix!r} starts with a multicast octet; use an even first octet "
                            "such as 02 (locally administered)")
    return raw


def _hex(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw) or "(none)"
