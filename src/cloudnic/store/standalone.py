"""Tables of the ``standalone`` provider: the cloud's own view of its ports and addresses.

Kept apart from the agent's ``ports``/``attachments`` on purpose (an audit compares the
two). ``sa_addresses`` has ``PRIMARY KEY (network_id, address)``: the database itself
refuses to hand an address out twice, whatever the in-memory allocator believes.
Addresses are stored in canonical text form (``str(ipaddress.ip_address(...))``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from cloudnic.errors import AddressUnavailable, CNIError

from .db import Database
from .store import dump_json, load_json

_COLS = ("port_id", "network_id", "mac", "name", "status", "security_groups", "tags", "device_owner",
         "host_id", "created_at", "updated_at")


@dataclass(frozen=True)
class SaPortRow:
    """A port of the standalone cloud. ``addresses`` holds (subnet_id, address) pairs."""

    port_id: str
    network_id: str
    mac: str
    addresses: tuple[tuple[str, str], ...]
    name: str = ""
    status: str = "ACTIVE"
    security_groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    device_owner: str = ""
    host_id: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class SaAddressRow:
    network_id: str
    subnet_id: str
    address: str
    port_id: str


def _conflict(exc: sqlite3.IntegrityError) -> CNIError:
    text = str(exc)
    if "sa_ports.mac" in text:
        return AddressUnavailable("the MAC address is already held by another port (concurrent allocation)",
                                  text)
    if "sa_addresses" in text:
        return AddressUnavailable("an address is already held by another port (concurrent allocation)", text)
    return AddressUnavailable("the port conflicts with an existing one", text)


class StandaloneTables:
    """Row access for :mod:`cloudnic.providers.standalone`. Use inside ``db.transaction()``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def insert_port(self, row: SaPortRow) -> SaPortRow:
        """Insert the port and its addresses; a held MAC or address raises ``AddressUnavailable``."""
        now = time.time()
        with self.db.atomic():
            self.db.execute(
                f"INSERT INTO sa_ports ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))})",
                (row.port_id, row.network_id, row.mac, row.name, row.status,
                 dump_json(list(row.security_groups), "security_groups"), dump_json(list(row.tags), "tags"),
                 row.device_owner, row.host_id, now, now),
                on_integrity=_conflict,
            )
            for subnet_id, address in row.addresses:
                self.db.execute(
                    "INSERT INTO sa_addresses (network_id, subnet_id, address, port_id) VALUES (?, ?, ?, ?)",
                    (row.network_id, subnet_id, address, row.port_id),
                    on_integrity=_conflict,
                )
        return replace(row, created_at=now, updated_at=now)

    def delete_port(self, port_id: str) -> SaPortRow | None:
        """Delete the port and (by cascade) its addresses; returns what was deleted, or None."""
        with self.db.transaction():
            row = self.get_port(port_id)
            if row is not None:
                self.db.execute("DELETE FROM sa_ports WHERE port_id = ?", (port_id,))
        return row

    def update_port(self, port_id: str, *, name: str | None = None,
                    security_groups: tuple[str, ...] | None = None,
                    tags: tuple[str, ...] | None = None) -> SaPortRow | None:
        with self.db.transaction():
            if self.get_port(port_id) is None:
                return None
            sets = ["updated_at = ?"]
            params: list[object] = [time.time()]
            if name is not None:
                sets.append("name = ?")
                params.append(name)
            if security_groups is not None:
                sets.append("security_groups = ?")
                params.append(dump_json(list(security_groups), "security_groups"))
            if tags is not None:
                sets.append("tags = ?")
                params.append(dump_json(list(tags), "tags"))
            self.db.execute(f"UPDATE sa_ports SET {', '.join(sets)} WHERE port_id = ?", [*params, port_id])
            return self.get_port(port_id)

    def get_port(self, port_id: str) -> SaPortRow | None:
        rows = self._select("WHERE port_id = ?", (port_id,))
        return rows[0] if rows else None

    def list_ports(self, network_id: str | None = None) -> list[SaPortRow]:
        if network_id is None:
            return self._select("", ())
        return self._select("WHERE network_id = ?", (network_id,))

    def address_holder(self, network_id: str, address: str) -> SaPortRow | None:
        row = self.db.execute("SELECT port_id FROM sa_addresses WHERE network_id = ? AND address = ?",
                              (network_id, address)).fetchone()
        return None if row is None else self.get_port(str(row[0]))

    def mac_holder(self, mac: str) -> SaPortRow | None:
        rows = self._select("WHERE mac = ?", (mac,))
        return rows[0] if rows else None

    def addresses(self) -> list[SaAddressRow]:
        rows = self.db.execute("SELECT network_id, subnet_id, address, port_id FROM sa_addresses").fetchall()
        return [SaAddressRow(*map(str, r)) for r in rows]

    def macs(self) -> list[str]:
        return [str(r[0]) for r in self.db.execute("SELECT mac FROM sa_ports").fetchall()]

    def cursors(self) -> dict[tuple[str, str], str]:
        rows = self.db.execute("SELECT network_id, subnet_id, last FROM sa_cursors").fetchall()
        return {(str(n), str(s)): str(last) for n, s, last in rows}

    def set_cursors(self, cursors: Iterable[tuple[str, str, str]]) -> None:
        """Remember the last address handed out per (network, subnet), like host-local."""
        with self.db.atomic():
            for network_id, subnet_id, last in cursors:
                self.db.execute(
                    "INSERT INTO sa_cursors (network_id, subnet_id, last) VALUES (?, ?, ?) "
                    "ON CONFLICT (network_id, subnet_id) DO UPDATE SET last = excluded.last",
                    (network_id, subnet_id, last),
                )

    def _select(self, where: str, params: tuple[str, ...]) -> list[SaPortRow]:
        with self.db.snapshot():
            sql = f"SELECT {', '.join(_COLS)} FROM sa_ports {where} ORDER BY created_at, port_id"
            rows = self.db.execute(sql, params).fetchall()
            if not rows:
                return []
            ids = [str(r[0]) for r in rows]
            addrs: dict[str, list[tuple[str, str]]] = {i: [] for i in ids}
            asql = "SELECT port_id, subnet_id, address FROM sa_addresses"
            if len(ids) == 1:
                arows = self.db.execute(asql + " WHERE port_id = ? ORDER BY rowid", (ids[0],)).fetchall()
            else:
                arows = self.db.execute(asql + " ORDER BY rowid").fetchall()
        for port_id, subnet_id, address in arows:
            if port_id in addrs:
                addrs[port_id].append((str(subnet_id), str(address)))
        out = []
        for r in rows:
            d = dict(zip(_COLS, r, strict=True))
            pid = d["port_id"]
            d["security_groups"] = tuple(load_json(d["security_groups"], f"port {pid} security_groups"))
            d["tags"] = tuple(load_json(d["tags"], f"port {pid} tags"))
            out.append(SaPortRow(addresses=tuple(addrs[d["port_id"]]), **d))
        return out
