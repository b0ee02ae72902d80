"""The SQLite connection: file creation, pragmas, migrations, transactions, errors.

One connection per process, shared by the agent's event-loop thread and its worker
threads (``check_same_thread=False``) and guarded by one re-entrant lock. A
transaction holds the lock from ``BEGIN IMMEDIATE`` to ``COMMIT``, so statements of
other threads never interleave with it. Nested ``transaction()`` blocks are
savepoints: an exception inside one undoes just that block, an exception that
leaves the outermost block undoes everything.

WAL + ``synchronous=NORMAL`` make every committed transaction survive a crash of the
process (SIGKILL at any point); a transaction cut short leaves no trace.

Checkpoints (copying the WAL back into the database file, with its fsyncs) happen by
default inside whichever COMMIT crosses 1000 WAL pages, under the lock, so one request
in ~50 paid a few ms for them. :meth:`Database.checkpoint_in_background` (the agent uses
it) turns that off and runs PASSIVE checkpoints on a thread with its own connection,
which never blocks a writer; a SIGKILL at any moment loses nothing either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Self

from cloudnic.errors import CNIError, InternalError, IOFailure, TryAgainLater

from .schema import MIGRATIONS, Migration, check_migrations

BUSY_TIMEOUT_MS = 5000
CHECKPOINT_INTERVAL_S = 1.0
log = logging.getLogger(__name__)
_MEMORY = ":memory:"


class Database:
    """A SQLite database with cloudnic's schema applied. Subclassed by :class:`Store`."""

    def __init__(self, path: str | os.PathLike[str], *,
                 migrations: Sequence[Migration] | None = None) -> None:
        self.path = os.fspath(path)
        self._migrations = tuple(MIGRATIONS if migrations is None else migrations)
        check_migrations(self._migrations)
        self._lock = threading.RLock()
        self._depth = 0
        self._hooks: list[tuple[list[Callable[[], None]], list[Callable[[], None]]]] = []
        self._closed = False
        self._checkpointer: _Checkpointer | None = None
        if self.path != _MEMORY:
            _prepare_file(self.path)
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise IOFailure(f"cannot open the state database {self.path}; check the path and permissions",
                            str(exc)) from exc
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # ---- setup ------------------------------------------------------------------

    def _configure(self) -> None:
        self.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if self.path != _MEMORY:
            mode = self.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise IOFailure(f"state database {self.path}: cannot switch to WAL mode (got {mode!r}); "
                                "put the file on a local filesystem")
        self.execute("PRAGMA synchronous = NORMAL")
        self.execute("PRAGMA foreign_keys = ON")

    def _stored_version(self) -> int:
        row = self.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        if row is None:
            return 0
        value = self.get_meta("schema_version")
        try:
            return int(value) if value is not None else 0
        except ValueError:
            raise IOFailure(f"state database {self.path}: meta.schema_version is {value!r}, not a number; "
                            "the file is damaged — restore it from a backup or move it away") from None

    def _migrate(self) -> None:
        known = self._migrations[-1].version if self._migrations else 0
        with self._lock:
            current = self._stored_version()
            if current > known:
                raise InternalError(
                    f"state database {self.path} has schema version {current} but this cloudnic only knows "
                    f"versions up to {known}; downgrading is not supported — run the newer cloudnic, or move "
                    "the file away to start from an empty state"
                )
            for mig in self._migrations:
                if mig.version <= current:
                    continue
                with self.transaction():
                    for stmt in mig.statements:
                        self.execute(stmt)
                    self.execute(
                        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                    )
                    self.set_meta("schema_version", str(mig.version))

    # ---- public -----------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._stored_version()

    def checkpoint_in_background(self, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        """Take WAL checkpoints off the writers' path (see the module doc). Idempotent."""
        if self.path == _MEMORY or self._checkpointer is not None:
            return
        try:
            self._checkpointer = _Checkpointer(self.path, interval_s)
        except sqlite3.Error as exc:
            raise IOFailure(f"state database {self.path}: cannot open a connection for checkpoints",
                            str(exc)) from exc
        self.execute("PRAGMA wal_autocheckpoint = 0")

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()       # first: the last connection to close checkpoints the rest
            self._checkpointer = None
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A re-entrant transaction: commits at the outermost exit, rolls back on exception."""
        with self._lock:
            depth = self._depth
            savepoint = f"sp{depth}"
            self.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
            self._depth = depth + 1
            self._hooks.append(([], []))
            try:
                yield
            except BaseException:
                self._depth = depth
                _, undo = self._hooks.pop()
                with contextlib.suppress(sqlite3.Error, CNIError):
                    if depth == 0:
                        self.execute("ROLLBACK")
                    else:
                        self.execute(f"ROLLBACK TO {savepoint}")
                        self.execute(f"RELEASE {savepoint}")
                _run(reversed(undo))
                raise
            self._depth = depth
            done, undo = self._hooks.pop()
            if depth == 0:
                try:
                    self.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error, CNIError):
                        self.execute("ROLLBACK")
                    _run(reversed(undo))
                    raise
                _run(done)
            else:
                self.execute(f"RELEASE {savepoint}")
                self._hooks[-1][0].extend(done)
                self._hooks[-1][1].extend(undo)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """All-or-nothing for a block of statements at the least cost: inside a transaction
        already, just that transaction (no savepoint: an exception undoes the block only by
        rolling back the enclosing transaction as it propagates); outside one, a transaction.
        For blocks whose callers never catch their errors inside the enclosing transaction."""
        with self._lock:
            if self._depth > 0:
                yield
                return
            with self.transaction():
                yield

    def on_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the current outermost transaction commits (now, outside one)."""
        with self._lock:
            if not self._hooks:
                fn()
            else:
                self._hooks[-1][0].append(fn)

    def on_rollback(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` if the current transaction (or savepoint) is rolled back; in-memory undo."""
        with self._lock:
            if self._hooks:
                self._hooks[-1][1].append(fn)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A consistent read of several statements (a deferred transaction). Reads only."""
        with self._lock:
            if self._depth > 0:
                yield
                return
            self.execute("BEGIN")
            self._depth = 1
            self._hooks.append(([], []))
            try:
                yield
            finally:
                self._depth = 0
                done, _ = self._hooks.pop()
                with contextlib.suppress(sqlite3.Error, CNIError):
                    self.execute("COMMIT")
                _run(done)

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = (), *,
                on_integrity: Callable[[sqlite3.IntegrityError], CNIError] | None = None) -> sqlite3.Cursor:
        """Run one statement under the lock; sqlite errors become cloudnic errors.

        ``on_integrity`` turns a constraint violation into a meaningful error; without
        it a violation is a bug (``InternalError``).
        """
        with self._lock:
            if self._closed:
                raise InternalError(f"state database {self.path} is closed")
            try:
                return self._conn.execute(sql, params)
            except sqlite3.IntegrityError as exc:
                if on_integrity is not None:
                    raise on_integrity(exc) from exc
                raise InternalError(f"state database {self.path}: constraint violated", str(exc)) from exc
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if "locked" in text or "busy" in text:
                    raise TryAgainLater(f"state database {self.path} is busy (another process holds it); "
                                        "retry", text) from exc
                raise IOFailure(f"state database {self.path}: {text}", " ".join(sql.split())[:80]) from exc
            except sqlite3.DatabaseError as exc:
                raise IOFailure(f"state database {self.path} is unreadable; restore it from a backup or "
                                "move it away", str(exc)) from exc

    def execute_one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        """Run one statement and read its first row (None without one), both under the lock.

        For writes with RETURNING: such a statement is finished only once its rows are read,
        and another thread's COMMIT in between would fail with "SQL statements in progress"."""
        with self._lock:
            rows = self.execute(sql, params).fetchall()
        return rows[0] if rows else None

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def integrity_check(self) -> str:
        """``ok`` or SQLite's description of the damage."""
        rows = self.execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(r[0]) for r in rows)


def _run(callbacks: Iterable[Callable[[], None]]) -> None:
    for fn in callbacks:
        fn()


def _prepare_file(path: str) -> None:
    """Create the parent directory (0700) and the file (0600) before SQLite opens it."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
            os.chmod(parent, 0o700)
        if not os.path.exists(path):
            fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            os.close(fd)
            os.chmod(path, 0o600)
    except OSError as exc:
        raise IOFailure(f"cannot create the state database {path}; check the directory and permissions",
                        f"{exc.strerror or exc}") from exc


class _Checkpointer:
    """A thread with its own connection running ``wal_checkpoint(PASSIVE)`` every interval.

    PASSIVE copies what it can without waiting for readers or writers, so it never holds
    up a request; SQLite restarts the WAL at the next write once all of it is copied."""

    def __init__(self, path: str, interval_s: float) -> None:
        self.interval_s = interval_s
        self.runs = 0                 # checkpoints taken (for tests)
        self._stop = threading.Event()
        self._conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        self._thread = threading.Thread(target=self._run, name="cloudnic-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = False
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                    if failing:
                        log.info("WAL checkpoints work again")
                        failing = False
                    if frames > 0 and done < frames:
                        log.debug("WAL checkpoint partial", extra={"frames": frames, "done": done, "busy": busy})
                except sqlite3.Error as exc:      # retried next interval; said once, not every second
                    if not failing:
                        log.warning("WAL checkpoint failed; retrying", extra={"error": str(exc)})
                    failing = True
        finally:
            self._conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
