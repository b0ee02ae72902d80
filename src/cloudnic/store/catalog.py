"""The provider's facts the agent last learned (networks with their subnets), kept in the
state database so that an agent started while the provider is unreachable can still
serve pool hits: ADD needs a network's subnets (gateway, routes, MTU) even when its port
comes from the warm pool.

Rows are opaque JSON objects keyed by ``(kind, ref)``; the provider decides what goes in
(for Neutron: the network and subnet objects exactly as the API returned them) and
refreshes a row whenever the provider answers. Nothing here is a source of truth: a row
is only read when the provider cannot be asked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudnic.errors import CNIError

from .db import Database
from .store import dump_json, load_json


@dataclass(frozen=True)
class CatalogEntry:
    kind: str
    ref: str
    data: dict[str, Any]
    updated_at: float           # time.time() of the provider answer it came from

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.updated_at)


class Catalog:
    """``(kind, ref) -> JSON object`` in the ``catalog`` table of a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, kind: str, refs: tuple[str, ...] | list[str], data: Mapping[str, Any],
            *, now: float | None = None) -> None:
        """Store ``data`` under every ref in ``refs`` (e.g. a network's id and the name it was
        asked by), in one transaction."""
        stamp = time.time() if now is None else now
        text = dump_json(dict(data), f"catalog {kind}")
        with self.db.transaction():
            for ref in dict.fromkeys(refs):
                if ref:
                    self.db.execute(
                        "INSERT INTO catalog (kind, ref, data, updated_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (kind, ref) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                        (kind, ref, text, stamp))

    def get(self, kind: str, ref: str) -> CatalogEntry | None:
        row = self.db.execute("SELECT data, updated_at FROM catalog WHERE kind = ? AND ref = ?",
                              (kind, ref)).fetchone()
        if row is None:
            return None
        data = load_json(row[0], f"catalog {kind} {ref!r}")
        return CatalogEntry(kind, ref, data if isinstance(data, dict) else {}, float(row[1]))

    def entries(self, kind: str) -> list[CatalogEntry]:
        rows = self.db.execute("SELECT ref, data, updated_at FROM catalog WHERE kind = ? ORDER BY ref",
                               (kind,)).fetchall()
        return [CatalogEntry(kind, r[0], d if isinstance(d := load_json(r[1], f"catalog {kind}"), dict) else {},
                             float(r[2])) for r in rows]

    def delete(self, kind: str, ref: str) -> bool:
        return self.db.execute("DELETE FROM catalog WHERE kind = ? AND ref = ?", (kind, ref)).rowcount > 0

    def safe_put(self, kind: str, refs: tuple[str, ...] | list[str], data: Mapping[str, Any]) -> bool:
        """``put`` that never raises (a cache write must not fail the call it rides on)."""
        try:
            self.put(kind, refs, data)
        except CNIError:
            return False
        return True


__all__ = ["Catalog", "CatalogEntry"]
