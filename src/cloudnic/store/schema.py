"""The state database schema as an ordered list of migrations.

Each migration moves the schema from ``version - 1`` to ``version`` and is applied in
one transaction together with the new version number in ``meta``. Append new
migrations; never edit one that has shipped. Downgrades are not supported: a database
written by a newer cloudnic is refused (see :class:`cloudnic.store.Store`).

Two views live here side by side and must stay separate so that an audit compares
two different sources of truth:

* the agent's view: ``attachments``, ``ports``, ``journal``;
* the ``standalone`` cloud's view: ``sa_ports``, ``sa_addresses``, ``sa_cursors``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudnic.errors import InternalError


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_V1 = (
    """
    CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE attachments (
        key           TEXT PRIMARY KEY,
        network       TEXT NOT NULL,
        container_id  TEXT NOT NULL,
        ifname        TEXT NOT NULL,
        netns         TEXT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('creating', 'assigned', 'releasing')),
        port_id       TEXT NOT NULL,
        mode          TEXT NOT NULL,
        host_ifname   TEXT NOT NULL,
        result        TEXT NOT NULL,
        cni_version   TEXT NOT NULL,
        pod_namespace TEXT NOT NULL DEFAULT '',
        pod_name      TEXT NOT NULL DEFAULT '',
        pod_uid       TEXT NOT NULL DEFAULT '',
        plugged       TEXT NOT NULL,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL
    )
    """,
    "CREATE INDEX attachments_network ON attachments (network)",
    "CREATE INDEX attachments_container ON attachments (container_id)",
    """
    CREATE TABLE ports (
        port_id        TEXT PRIMARY KEY,
        provider       TEXT NOT NULL,
        network_id     TEXT NOT NULL,
        state          TEXT NOT NULL
                       CHECK (state IN ('creating', 'pooled', 'assigned', 'releasing', 'deleting')),
        mac            TEXT NOT NULL,
        fixed_ips      TEXT NOT NULL,
        pool_key       TEXT NOT NULL DEFAULT '',
        attachment_key TEXT NOT NULL DEFAULT '',
        data           TEXT NOT NULL,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL
    )
    """,
    "CREATE INDEX ports_state ON ports (state)",
    "CREATE INDEX ports_network ON ports (network_id)",
    "CREATE INDEX ports_pool ON ports (pool_key)",
    """
    CREATE TABLE journal (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        op         TEXT NOT NULL,
        key        TEXT NOT NULL,
        data       TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )
    """,
    # ---- the standalone cloud's own view ----
    """
    CREATE TABLE sa_ports (
        port_id         TEXT PRIMARY KEY,
        network_id      TEXT NOT NULL,
        mac             TEXT NOT NULL UNIQUE,
        name            TEXT NOT NULL DEFAULT '',
        status          TEXT NOT NULL DEFAULT 'ACTIVE',
        security_groups TEXT NOT NULL DEFAULT '[]',
        tags            TEXT NOT NULL DEFAULT '[]',
        device_owner    TEXT NOT NULL DEFAULT '',
        host_id         TEXT NOT NULL DEFAULT '',
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL
    )
    """,
    "CREATE INDEX sa_ports_network ON sa_ports (network_id)",
    """
    CREATE TABLE sa_addresses (
        network_id TEXT NOT NULL,
        subnet_id  TEXT NOT NULL,
        address    TEXT NOT NULL,
        port_id    TEXT NOT NULL REFERENCES sa_ports (port_id) ON DELETE CASCADE,
        PRIMARY KEY (network_id, address)
    )
    """,
    "CREATE INDEX sa_addresses_port ON sa_addresses (port_id)",
    """
    CREATE TABLE sa_cursors (
        network_id TEXT NOT NULL,
        subnet_id  TEXT NOT NULL,
        last       TEXT NOT NULL,
        PRIMARY KEY (network_id, subnet_id)
    )
    """,
)

_V2 = (
    # what the agent last learned from the provider about its networks (facts the pools and
    # ADD need), so that an agent (re)started while the provider is unreachable still serves
    # pool hits; see cloudnic.store.catalog
    """
    CREATE TABLE catalog (
        kind       TEXT NOT NULL,
        ref        TEXT NOT NULL,
        data       TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (kind, ref)
    )
    """,
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema: meta, attachments, ports, journal, standalone tables", _V1),
    Migration(2, "catalog: the provider's network facts, cached for starts during an outage", _V2),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def check_migrations(migrations: tuple[Migration, ...] | list[Migration]) -> None:
    """Migrations must be numbered 1, 2, 3 ... without gaps (a programming error otherwise)."""
    for expected, mig in enumerate(migrations, start=1):
        if mig.version != expected:
            raise InternalError(
                f"migration #{expected} has version {mig.version}; versions must be 1..n in order"
            )
