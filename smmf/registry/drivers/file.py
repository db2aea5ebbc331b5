"""`file:///path/registry.db` — the embedded default: one SQLite file shared by the processes of one host.

There is no server, so every participant does a server's chores: any
process that touches the file first sweeps expired leases (writing a delete
into the change log for each of their keys), and watchers poll the change log
by revision.  Deletes stay in the log as tombstones until it is compacted;
a watcher that falls behind the kept history gets `Compacted` and re-lists.

SQLite calls run on one thread per store so the event loop never waits on a
lock held by another process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ...errors import AlreadyRegistered, Compacted, LeaseNotFound, RegistryUnavailable
from ..store import RawEvent, Store

R = TypeVar("R")

#: Changes kept for watchers that fall behind; older rows are compacted.
DEFAULT_HISTORY = 10_000
#: How often a watcher looks for new changes, in seconds.
DEFAULT_POLL = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    lease INTEGER,
    revision INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ttl REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases(expires_at);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    value BLOB
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


def _prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"


class FileStore(Store):
    def __init__(self, path: str | Path, *, poll: float = DEFAULT_POLL, history: int = DEFAULT_HISTORY) -> None:
        self.path = Path(path).expanduser()
        self.address = f"file://{self.path}"
        self.poll = poll
        self.history = history
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smmf-file-registry")
        self._conn: sqlite3.Connection | None = None

    # -- plumbing ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        def call() -> R:
            try:
                return fn(self._connect())
            except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
                raise RegistryUnavailable(self.address, str(exc)) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    @staticmethod
    def _write(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], R]) -> R:
        """Run `body` in one IMMEDIATE transaction, after sweeping expired leases."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            FileStore._sweep(conn)
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    @staticmethod
    def _log(conn: sqlite3.Connection, key: str, value: bytes | None) -> int:
        cur = conn.execute("INSERT INTO changes (key, value) VALUES (?, ?)", (key, value))
        return int(cur.lastrowid or 0)

    @staticmethod
    def _sweep(conn: sqlite3.Connection) -> None:
        now = time.time()
        expired = [row[0] for row in conn.execute("SELECT id FROM leases WHERE expires_at < ?", (now,))]
        for lease in expired:
            for (key,) in conn.execute("SELECT key FROM kv WHERE lease = ?", (lease,)).fetchall():
                FileStore._log(conn, key, None)
            conn.execute("DELETE FROM kv WHERE lease = ?", (lease,))
            conn.execute("DELETE FROM leases WHERE id = ?", (lease,))

    def _sweep_if_due(self, conn: sqlite3.Connection) -> None:
        """Sweep only when something expired, so idle pollers do not take the write lock."""
        due = conn.execute("SELECT 1 FROM leases WHERE expires_at < ? LIMIT 1", (time.time(),)).fetchone()
        if due:
            self._write(conn, lambda _: None)

    @staticmethod
    def _revision(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _compacted(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name = 'compacted'").fetchone()
        return int(row[0]) if row else 0

    def _compact(self, conn: sqlite3.Connection, revision: int) -> None:
        """Drop change-log rows older than the kept history, in steps of a tenth of it."""
        floor = revision - self.history
        if floor >= self._compacted(conn) + max(1, self.history // 10):
            conn.execute("DELETE FROM changes WHERE revision <= ?", (floor,))
            conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('compacted', ?)", (floor,))

    # -- Store -------------------------------------------------------------

    async def grant(self, ttl: float) -> int:
        def body(conn: sqlite3.Connection) -> int:
            cur = conn.execute("INSERT INTO leases (ttl, expires_at) VALUES (?, ?)", (ttl, time.time() + ttl))
            return int(cur.lastrowid or 0)

        return await self._run(lambda conn: self._write(conn, body))

    async def refresh(self, lease: int) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("UPDATE leases SET expires_at = ? + ttl WHERE id = ?", (time.time(), lease))
            return cur.rowcount > 0

        return await self._run(lambda conn: self._write(conn, body))

    async def revoke(self, lease: int) -> None:
        def body(conn: sqlite3.Connection) -> None:
            for (key,) in conn.execute("SELECT key FROM kv WHERE lease = ?", (lease,)).fetchall():
                self._log(conn, key, None)
            conn.execute("DELETE FROM kv WHERE lease = ?", (lease,))
            conn.execute("DELETE FROM leases WHERE id = ?", (lease,))

        await self._run(lambda conn: self._write(conn, body))

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        return await self._run(lambda conn: self._write(conn, self._putter(key, value, lease, create=False)))

    async def create(self, key: str, value: bytes, lease: int | None = None) -> int:
        return await self._run(lambda conn: self._write(conn, self._putter(key, value, lease, create=True)))

    def _putter(
        self, key: str, value: bytes, lease: int | None, *, create: bool
    ) -> Callable[[sqlite3.Connection], int]:
        def body(conn: sqlite3.Connection) -> int:
            if create and conn.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone():
                raise AlreadyRegistered(key)
            if lease is not None and not conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone():
                raise LeaseNotFound(f"lease {lease} not found")
            revision = self._log(conn, key, value)
            conn.execute(
                "INSERT OR REPLACE INTO kv (key, value, lease, revision) VALUES (?, ?, ?, ?)",
                (key, value, lease, revision),
            )
            self._compact(conn, revision)
            return revision

        return body

    async def get(self, key: str) -> bytes | None:
        def read(conn: sqlite3.Connection) -> bytes | None:
            self._sweep_if_due(conn)
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return None if row is None else bytes(row[0])

        return await self._run(read)

    async def delete(self, key: str) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            if conn.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount == 0:
                return False
            self._log(conn, key, None)
            return True

        return await self._run(lambda conn: self._write(conn, body))

    async def list(self, prefix: str) -> tuple[dict[str, bytes], int]:
        def read(conn: sqlite3.Connection) -> tuple[dict[str, bytes], int]:
            self._sweep_if_due(conn)
            conn.execute("BEGIN")
            try:
                rows = conn.execute(
                    "SELECT key, value FROM kv WHERE key >= ? AND key < ?", (prefix, _prefix_end(prefix))
                ).fetchall()
                return {key: bytes(value) for key, value in rows}, self._revision(conn)
            finally:
                conn.execute("COMMIT")

        return await self._run(read)

    def _changes(self, prefix: str, after: int) -> Callable[[sqlite3.Connection], tuple[Sequence[RawEvent], int]]:
        def read(conn: sqlite3.Connection) -> tuple[Sequence[RawEvent], int]:
            self._sweep_if_due(conn)
            conn.execute("BEGIN")
            try:
                compacted = self._compacted(conn)
                if after < compacted:
                    raise Compacted(after, compacted)
                head = self._revision(conn)
                rows = conn.execute(
                    "SELECT revision, key, value FROM changes"
                    " WHERE revision > ? AND revision <= ? AND key >= ? AND key < ? ORDER BY revision",
                    (after, head, prefix, _prefix_end(prefix)),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            events = [RawEvent(key, None if value is None else bytes(value), rev) for rev, key, value in rows]
            return events, head

        return read

    async def stream(self, prefix: str, after: int) -> AsyncGenerator[RawEvent, None]:
        while True:
            events, after = await self._run(self._changes(prefix, after))
            for event in events:
                yield event
            await asyncio.sleep(self.poll)

    async def close(self) -> None:
        def shut(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None

        if self._conn is not None:
            await self._run(shut)
        self._executor.shutdown(wait=False)
