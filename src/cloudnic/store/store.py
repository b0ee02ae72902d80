"""The agent's view of the world: attachments, ports and the intent journal.

Every method is one statement or one transaction and can also run inside a caller's
``transaction()``, so the agent can, e.g., commit an attachment and end its journal
entry atomically::

    with store.transaction():
        store.put_attachment(rec)
        store.journal_end(jid)
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from typing import Any

from cloudnic.errors import InternalError, NotFound

from .db import Database
from .records import AttachmentRecord, JournalEntry, PortRecord

_ATT_COLS = ("key", "network", "container_id", "ifname", "netns", "state", "port_id", "mode", "host_ifname",
             "result", "cni_version", "pod_namespace", "pod_name", "pod_uid", "plugged", "created_at",
             "updated_at")
_PORT_COLS = ("port_id", "provider", "network_id", "state", "mac", "fixed_ips", "pool_key", "attachment_key",
              "data", "created_at", "updated_at")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JOURNAL_COLS = ("id", "op", "key", "data", "created_at", "updated_at")


def dump_json(value: object, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InternalError(f"{what} is not JSON-serialisable", str(exc)) from exc


def load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InternalError(f"{what} holds invalid JSON in the state database", str(exc)) from exc


def _upsert_sql(table: str, cols: tuple[str, ...], key: str) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in (key, "created_at"))
    marks = ", ".join("?" for _ in cols)
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}")


_ATT_UPSERT = _upsert_sql("attachments", _ATT_COLS, "key")
_PORT_UPSERT = _upsert_sql("ports", _PORT_COLS, "port_id")
_JOURNAL_END = "DELETE FROM journal WHERE id = ?"


class Store(Database):
    """The state database (``/var/lib/cloudnic/state.db``). See :mod:`cloudnic.store.db`."""

    # ---- attachments --------------------------------------------------------------

    def put_attachment(self, rec: AttachmentRecord) -> AttachmentRecord:
        """Insert or replace; keeps the first ``created_at``, stamps ``updated_at``. Returns the row.
        One statement: the upsert never rewrites ``created_at`` and returns the one kept."""
        now = time.time()
        row = self.execute_one(_ATT_UPSERT + " RETURNING created_at", _attachment_params(rec, now))
        return replace(rec, created_at=float(row[0]), updated_at=now)

    def set_attachment_state(self, key: str, state: str) -> bool:
        """Change an attachment's state alone (its result and links are not rewritten); True when
        the row exists."""
        return self.execute("UPDATE attachments SET state = ?, updated_at = ? WHERE key = ?",
                            (state, time.time(), key)).rowcount > 0

    def get_attachment(self, key: str) -> AttachmentRecord | None:
        row = self.execute(f"SELECT {', '.join(_ATT_COLS)} FROM attachments WHERE key = ?", (key,)).fetchone()
        return None if row is None else _attachment(row)

    def list_attachments(self, network: str | None = None) -> list[AttachmentRecord]:
        sql = f"SELECT {', '.join(_ATT_COLS)} FROM attachments"
        if network is None:
            rows = self.execute(sql + " ORDER BY created_at, key").fetchall()
        else:
            rows = self.execute(sql + " WHERE network = ? ORDER BY created_at, key", (network,)).fetchall()
        return [_attachment(r) for r in rows]

    def delete_attachment(self, key: str) -> bool:
        """Delete; True when a row was removed (a missing row is not an error)."""
        return self.execute("DELETE FROM attachments WHERE key = ?", (key,)).rowcount > 0

    def count_attachments(self, network: str | None = None) -> int:
        if network is None:
            row = self.execute("SELECT COUNT(*) FROM attachments").fetchone()
        else:
            row = self.execute("SELECT COUNT(*) FROM attachments WHERE network = ?", (network,)).fetchone()
        return int(row[0])

    # ---- ports --------------------------------------------------------------------

    def put_port(self, rec: PortRecord) -> PortRecord:
        """Insert or replace; keeps the first ``created_at``, stamps ``updated_at``. Returns the row.
        One statement: the upsert never rewrites ``created_at`` and returns the one kept."""
        now = time.time()
        row = self.execute_one(_PORT_UPSERT + " RETURNING created_at", _port_params(rec, now))
        return replace(rec, created_at=float(row[0]), updated_at=now)

    def save(self, *, port: PortRecord | None = None, attachment: AttachmentRecord | None = None,
             journal_end: int | None = None) -> None:
        """Upsert a port row and/or an attachment row (each keeps its first ``created_at``, like
        ``put_*``) and end a journal entry, all or nothing. Everything is serialised before the
        database lock is taken: the lock, which every other request waits for, is held for the
        statements alone."""
        now = time.time()
        steps: list[tuple[str, tuple[Any, ...]]] = []
        if port is not None:
            steps.append((_PORT_UPSERT, _port_params(port, now)))
        if attachment is not None:
            steps.append((_ATT_UPSERT, _attachment_params(attachment, now)))
        if journal_end is not None:
            steps.append((_JOURNAL_END, (journal_end,)))
        with self.atomic():
            for sql, params in steps:
                self.execute(sql, params)

    def get_port(self, port_id: str) -> PortRecord | None:
        sql = f"SELECT {', '.join(_PORT_COLS)} FROM ports WHERE port_id = ?"
        row = self.execute(sql, (port_id,)).fetchone()
        return None if row is None else _port(row)

    def list_ports(self, state: str | None = None, network_id: str | None = None, *,
                   pool_key: str | None = None) -> list[PortRecord]:
        where: list[str] = []
        params: list[str] = []
        for col, value in (("state", state), ("network_id", network_id), ("pool_key", pool_key)):
            if value is not None:
                where.append(f"{col} = ?")
                params.append(value)
        sql = f"SELECT {', '.join(_PORT_COLS)} FROM ports"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_port(r) for r in self.execute(sql + " ORDER BY created_at, port_id", params).fetchall()]

    def delete_port(self, port_id: str) -> bool:
        """Delete; True when a row was removed (a missing row is not an error)."""
        return self.execute("DELETE FROM ports WHERE port_id = ?", (port_id,)).rowcount > 0

    # ---- intent journal -----------------------------------------------------------

    def journal_begin(self, op: str, key: str, data: dict[str, Any] | None = None) -> int:
        """Record an intent before any side effect; returns its id."""
        now = time.time()
        cur = self.execute(
            "INSERT INTO journal (op, key, data, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (op, key, dump_json(data or {}, f"journal {op} {key!r} data"), now, now),
        )
        if cur.lastrowid is None:
            raise InternalError(f"journal {op} {key!r}: SQLite returned no row id")
        return int(cur.lastrowid)

    def journal_update(self, jid: int, data: dict[str, Any]) -> JournalEntry:
        """Shallow-merge ``data`` into the entry's data (progress of the operation); one statement."""
        if not data or not all(_PLAIN_KEY.fullmatch(k) for k in data):
            return self._journal_merge(jid, data)
        paths = ", ".join("?, json(?)" for _ in data)
        params: list[Any] = []
        for k, v in data.items():
            params += [f'$."{k}"', dump_json(v, f"journal {jid} data[{k!r}]")]
        row = self.execute_one(
            f"UPDATE journal SET data = json_set(data, {paths}), updated_at = ? WHERE id = ? "
            f"RETURNING {', '.join(_JOURNAL_COLS)}", (*params, time.time(), jid))
        if row is None:
            raise NotFound(f"journal entry {jid} does not exist (already ended?)")
        return _journal(row)

    def _journal_merge(self, jid: int, data: dict[str, Any]) -> JournalEntry:
        """journal_update for keys a JSON path cannot name plainly: read, merge, write."""
        with self.transaction():
            entry = self.journal_get(jid)
            if entry is None:
                raise NotFound(f"journal entry {jid} does not exist (already ended?)")
            merged = {**entry.data, **data}
            now = time.time()
            self.execute("UPDATE journal SET data = ?, updated_at = ? WHERE id = ?",
                         (dump_json(merged, f"journal {jid} data"), now, jid))
        return JournalEntry(entry.id, entry.op, entry.key, merged, entry.created_at, now)

    def journal_end(self, jid: int) -> None:
        """The operation is complete (done or undone): forget it. Ending twice is harmless."""
        self.execute(_JOURNAL_END, (jid,))

    def journal_get(self, jid: int) -> JournalEntry | None:
        row = self.execute(f"SELECT {', '.join(_JOURNAL_COLS)} FROM journal WHERE id = ?", (jid,)).fetchone()
        return None if row is None else _journal(row)

    def journal_pending(self) -> list[JournalEntry]:
        """Every intent not ended yet, oldest first (what a crash left half-done)."""
        rows = self.execute(f"SELECT {', '.join(_JOURNAL_COLS)} FROM journal ORDER BY id").fetchall()
        return [_journal(r) for r in rows]


def _attachment_params(rec: AttachmentRecord, now: float) -> tuple[Any, ...]:
    """The values of ``_ATT_UPSERT`` (``updated_at`` = now)."""
    return (rec.key, rec.network, rec.container_id, rec.ifname, rec.netns, rec.state, rec.port_id,
            rec.mode, rec.host_ifname, dump_json(rec.result, f"attachment {rec.key!r} result"),
            rec.cni_version, rec.pod_namespace, rec.pod_name, rec.pod_uid,
            dump_json(rec.plugged, f"attachment {rec.key!r} plugged"), rec.created_at or now, now)


def _port_params(rec: PortRecord, now: float) -> tuple[Any, ...]:
    """The values of ``_PORT_UPSERT`` (``updated_at`` = now)."""
    fixed = [[str(s), str(a)] for s, a in rec.fixed_ips]
    return (rec.port_id, rec.provider, rec.network_id, rec.state, rec.mac,
            dump_json(fixed, f"port {rec.port_id!r} fixed_ips"), rec.pool_key, rec.attachment_key,
            dump_json(rec.data, f"port {rec.port_id!r} data"), rec.created_at or now, now)


def _attachment(row: tuple[Any, ...]) -> AttachmentRecord:
    d = dict(zip(_ATT_COLS, row, strict=True))
    d["result"] = load_json(d["result"], f"attachment {d['key']!r} result")
    d["plugged"] = load_json(d["plugged"], f"attachment {d['key']!r} plugged")
    return AttachmentRecord(**d)


def _port(row: tuple[Any, ...]) -> PortRecord:
    d = dict(zip(_PORT_COLS, row, strict=True))
    fixed = load_json(d["fixed_ips"], f"port {d['port_id']!r} fixed_ips")
    d["fixed_ips"] = tuple((str(s), str(a)) for s, a in fixed)
    d["data"] = load_json(d["data"], f"port {d['port_id']!r} data")
    return PortRecord(**d)


def _journal(row: tuple[Any, ...]) -> JournalEntry:
    d = dict(zip(_JOURNAL_COLS, row, strict=True))
    d["data"] = load_json(d["data"], f"journal {d['id']} data")
    return JournalEntry(**d)
