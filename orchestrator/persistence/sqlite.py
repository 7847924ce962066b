"""The embedded default :class:`HistoryStore`: one SQLite file (``sqlite:///path``).

How it is built, and why:

* **One writer thread, group commit.** Every change (``write``, shard
  acquisition, task deletion, retention, namespaces) is a job on a queue. The
  writer thread takes every job that is waiting, runs them in *one* SQLite
  transaction, each inside its own ``SAVEPOINT`` (so one failing
  compare-and-swap rolls back only its own job), and commits once: many
  executions' writes share one fsync. :attr:`SqliteHistoryStore.commits`
  counts the commits. Each caller's future gets its own result or error, set
  on the caller's event loop with ``call_soon_threadsafe``.
* **Point reads on the caller's thread, scans on a reader thread.** In WAL
  mode readers never block the writer and see only committed data; a write's
  future resolves after its commit, so a caller always reads its own writes.
  Reads bounded by an index seek (a run's state, the current-run pointer, the
  next timers, a few history events, a namespace) run at once on the event
  loop's thread with a connection of their own: a thread hand-off costs far
  more than such a read (microseconds in WAL mode). That connection never
  waits for a lock (``busy_timeout`` 0): when SQLite says busy, the read is
  done again on the reader thread, which waits up to ``busy_timeout``.
  Queries whose cost grows with the data (visibility lists and counts, long
  histories past their first :data:`INLINE_ROWS` events, task
  sweeps of more than that many rows) run on the reader
  thread with a second read connection, so a slow scan never stalls the loop.
* **Durability.** ``journal_mode=WAL`` with ``synchronous=FULL`` by default:
  a write acknowledged to the caller survives a power loss. ``NORMAL`` is
  faster and still never corrupts the file, but the last commits before a
  power loss may vanish after having been acknowledged, which the history
  engine cannot tell from a lost write; use it only where that is acceptable.
* **Errors.** SQLite's busy/locked/I/O errors become
  :class:`StoreUnavailableError` (nothing was committed; safe to retry), a
  failed ``COMMIT`` whose outcome SQLite cannot tell becomes
  :class:`AmbiguousWriteError`, and a unique-key violation becomes
  :class:`ConditionFailedError`.

>>> store = SqliteHistoryStore("/tmp/sagas.db")   # then: await store.open()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from orchestrator.api.events import HistoryEvent
from orchestrator.api.tasks import TimerTask, TransferTask
from orchestrator.history.state import ExecutionState
from orchestrator.persistence import _codec
from orchestrator.persistence._visibility_query import (
    SQLITE_JULIAN_EPOCH,
    Condition,
    VisibilityQuery,
    check_page_size,
    page_token,
)
from orchestrator.persistence._write_plan import (
    StoredView,
    WritePlan,
    duplicate_event_error,
    duplicate_task_error,
    keys_to_read,
    plan_write,
)
from orchestrator.persistence.base import (
    AmbiguousWriteError,
    ConditionFailedError,
    CurrentRun,
    ExecutionWrite,
    HistoryStore,
    MemberRecord,
    NamespaceRecord,
    ShardInfo,
    StoreError,
    StoreUnavailableError,
    VisibilityPage,
    VisibilityRecord,
    lease_held_error,
)

_log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
"""Version of the table layout below; a file of a newer version is refused."""

INLINE_ROWS = 512
"""Most rows a read on the event loop's thread returns: more history events are read on the reader
thread, and a task query with a larger limit runs there whole."""

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    shard_id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    range_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shard_leases (
    shard_id INTEGER PRIMARY KEY,
    lease_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    member_id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    namespace TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    db_version INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (namespace, workflow_id, run_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS current_executions (
    namespace TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    status TEXT NOT NULL,
    start_request_id TEXT NOT NULL,
    PRIMARY KEY (namespace, workflow_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_events (
    namespace TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (namespace, workflow_id, run_id, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transfer_tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    shard_id INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (shard_id, task_id)
);
CREATE INDEX IF NOT EXISTS transfer_tasks_by_shard ON transfer_tasks (shard_id, seq);
CREATE TABLE IF NOT EXISTS timer_tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    shard_id INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    fire_time REAL NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (shard_id, task_id)
);
CREATE INDEX IF NOT EXISTS timer_tasks_by_fire_time ON timer_tasks (shard_id, fire_time, seq);
CREATE TABLE IF NOT EXISTS visibility (
    namespace TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    task_queue TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time REAL NOT NULL,
    close_time REAL,
    execution_time REAL NOT NULL,
    history_length INTEGER NOT NULL,
    search_attributes TEXT NOT NULL,
    memo TEXT NOT NULL,
    parent_workflow_id TEXT,
    PRIMARY KEY (namespace, workflow_id, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS visibility_by_start_time ON visibility (namespace, start_time);
CREATE INDEX IF NOT EXISTS visibility_by_status ON visibility (namespace, status);
CREATE INDEX IF NOT EXISTS visibility_by_type ON visibility (namespace, workflow_type);
CREATE TABLE IF NOT EXISTS namespaces (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO schema_version (version) SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM schema_version);
COMMIT;
"""

_VISIBILITY_COLUMNS = (
    "namespace, workflow_id, run_id, workflow_type, task_queue, status, start_time, close_time, "
    "execution_time, history_length, search_attributes, memo, parent_workflow_id"
)

# Primary result codes that mean "the database could not be used right now".
_TRANSIENT_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)

_Connection = sqlite3.Connection


@dataclass
class _Job:
    run: Callable[[_Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class _AbortGroup(Exception):
    """A job met a database error that spoils the whole transaction."""

    def __init__(self, cause: sqlite3.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause


class SqliteHistoryStore(HistoryStore):
    """:class:`HistoryStore` on one SQLite file with a group-commit writer (see module docstring).

    Use it as an async context manager, or call :meth:`open` and :meth:`aclose`::

        async with await open_store("sqlite:///var/lib/sagas/history.db") as store:
            ...

    ``path=":memory:"`` uses a private temporary file, removed by
    :meth:`aclose` (the store needs two connections to one database).
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout: float = 5.0,
        max_group_size: int = 512,
    ) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.max_group_size = max_group_size
        self.commits = 0
        """Transactions committed by the writer; with group commit, at most one per change."""
        self._tempdir: str | None = None
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._read_conn: _Connection | None = None
        self._inline_conn: _Connection | None = None
        """Point reads, on the thread of the loop that opened the store (``_inline_thread``)."""
        self._inline_thread: int | None = None
        self._closed = False

    # lifecycle --------------------------------------------------------------
    async def open(self) -> None:
        """Create the file and tables if needed and start the writer and reader threads."""
        if self._closed:
            raise StoreError(f"{self.url}: this store was closed; create a new one")
        if self._writer is not None:
            return
        file = self.path
        if file == ":memory:":
            self._tempdir = tempfile.mkdtemp(prefix="sagas-sqlite-")
            file = os.path.join(self._tempdir, "history.db")
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._writer = threading.Thread(
            target=self._writer_main, args=(file, loop, ready), name="sagas-sqlite-writer", daemon=True
        )
        self._writer.start()
        try:
            await ready
            self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sagas-sqlite-reader")
            self._read_conn = await loop.run_in_executor(self._reader, self._connect, file, True)
            self._inline_conn = self._connect(file, True, busy_timeout=0.0)
            self._inline_thread = threading.get_ident()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Finish the queued changes, then close both connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        inline_conn, self._inline_conn = self._inline_conn, None
        if inline_conn is not None:
            inline_conn.close()
        if self._reader is not None:
            read_conn = self._read_conn
            if read_conn is not None:
                await asyncio.get_running_loop().run_in_executor(self._reader, read_conn.close)
            self._reader.shutdown(wait=True)
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)

    def _connect(self, file: str, read_only: bool, busy_timeout: float | None = None) -> _Connection:
        timeout = self.busy_timeout if busy_timeout is None else busy_timeout
        try:
            conn = sqlite3.connect(file, timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _store_error(exc, f"cannot open {file}") from exc
        if read_only:
            conn.execute("PRAGMA query_only = ON")
            return conn
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise StoreError(f"{file}: SQLite refused WAL mode (got {mode!r}); put the file on a local disk")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.executescript(_SCHEMA)
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise StoreError(
                f"{file} has schema version {version} but this server knows up to {SCHEMA_VERSION}: "
                "it was written by a newer server. Upgrade this server to open it."
            )
        return conn

    # the writer thread ------------------------------------------------------
    def _writer_main(self, file: str, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect(file, read_only=False)
        except BaseException as exc:  # report every start-up failure to open()
            _settle(loop, ready, error=exc)
            return
        _settle(loop, ready)
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                jobs = [first]
                while len(jobs) < self.max_group_size:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    jobs.append(job)
                self._run_group(conn, jobs)
        finally:
            conn.close()

    def _run_group(self, conn: _Connection, jobs: list[_Job]) -> None:
        # A caller that gave up waiting (cancelled) does not get its change applied.
        jobs = [job for job in jobs if not job.future.cancelled()]
        if not jobs:
            return
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        stage = "begin"
        try:
            conn.execute("BEGIN IMMEDIATE")
            stage = "apply"
            for job in jobs:
                outcomes.append(self._run_job(conn, job))
            stage = "commit"
            conn.execute("COMMIT")
        except (_AbortGroup, sqlite3.Error) as exc:
            cause = exc.cause if isinstance(exc, _AbortGroup) else exc
            committed_unknown = stage == "commit" and not conn.in_transaction
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    _log.exception("rollback failed on %s", self.path)
            failed: list[tuple[_Job, Any, BaseException | None]] = []
            for job in jobs:
                if committed_unknown:
                    error: StoreError = AmbiguousWriteError(
                        f"{self.url}: COMMIT failed ({cause}); the change may or may not be stored. "
                        "Reload and compare before trying again."
                    )
                else:
                    error = _store_error(cause, "the change was not applied")
                failed.append((job, None, error))
            _settle_jobs(failed)
            return
        except BaseException as exc:  # a bug here must neither leave callers waiting nor stop the writer
            _log.exception("SQLite writer failed on %s", self.path)
            for job in jobs:
                internal = StoreError(f"{self.url}: internal error in the writer: {exc!r}")
                _settle(job.loop, job.future, error=internal)
            try:
                conn.rollback()
            except sqlite3.Error:
                _log.exception("rollback failed on %s", self.path)
            return
        self.commits += 1
        _settle_jobs(outcomes)

    @staticmethod
    def _run_job(conn: _Connection, job: _Job) -> tuple[_Job, Any, BaseException | None]:
        conn.execute("SAVEPOINT job")
        try:
            result = job.run(conn)
        except sqlite3.IntegrityError as exc:
            _rollback_to_savepoint(conn)
            return job, None, ConditionFailedError(f"a unique key is already taken: {exc}")
        except sqlite3.Error as exc:
            raise _AbortGroup(exc) from exc
        except Exception as exc:
            _rollback_to_savepoint(conn)
            return job, None, exc
        conn.execute("RELEASE job")
        return job, result, None

    async def _change(self, run: Callable[[_Connection], T]) -> T:
        """Queue ``run`` for the writer thread; its return value once committed."""
        # No await before the put: a batch of concurrent callers all reach the
        # queue in one turn of the event loop, and the writer takes them together.
        if self._writer is None or self._closed:
            raise StoreError(
                f"{self.url} is not open: call `await store.open()` first (and not after aclose)"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Job(run, loop, future))
        return cast(T, await future)

    async def _point_read(self, run: Callable[[_Connection], T]) -> T:
        """Run ``run`` now on this thread's read connection: no thread hand-off (see module docstring).

        On another thread than the loop that opened the store, or when SQLite answers busy (the
        inline connection never waits for a lock), the read goes to the reader thread instead.
        """
        conn = self._inline_conn
        if conn is None or self._closed or threading.get_ident() != self._inline_thread:
            return await self._read(run)
        try:
            return run(conn)
        except sqlite3.Error as exc:
            if _is_busy(exc):
                return await self._read(run)
            raise _store_error(exc, "read failed") from exc

    async def _read(self, run: Callable[[_Connection], T]) -> T:
        """Run ``run`` on the reader thread's connection (scans that may be slow)."""
        if self._reader is None or self._read_conn is None or self._closed:
            raise StoreError(
                f"{self.url} is not open: call `await store.open()` first (and not after aclose)"
            )
        conn = self._read_conn

        def read() -> T:
            try:
                return run(conn)
            except sqlite3.Error as exc:
                raise _store_error(exc, "read failed") from exc

        return await asyncio.get_running_loop().run_in_executor(self._reader, read)

    # shards -----------------------------------------------------------------
    async def acquire_shard(self, shard_id: int, owner: str, lease_seconds: float | None = None) -> int:
        def acquire(conn: _Connection) -> int:
            now = time.time()
            row = conn.execute(
                "SELECT s.owner, coalesce(l.lease_until, 0) FROM shards s "
                "LEFT JOIN shard_leases l ON l.shard_id = s.shard_id WHERE s.shard_id = ?",
                (shard_id,),
            ).fetchone()
            if lease_seconds is not None and row is not None and row[0] != owner and row[1] > now:
                raise lease_held_error(shard_id, row[0], row[1])
            range_id = _range_id(conn, shard_id) + 1
            conn.execute(
                "INSERT INTO shards (shard_id, owner, range_id) VALUES (?, ?, ?) ON CONFLICT (shard_id) "
                "DO UPDATE SET owner = excluded.owner, range_id = excluded.range_id",
                (shard_id, owner, range_id),
            )
            _set_lease(conn, shard_id, 0.0 if lease_seconds is None else now + lease_seconds)
            return range_id

        return await self._change(acquire)

    async def renew_shard(self, shard_id: int, owner: str, range_id: int, lease_seconds: float) -> bool:
        def renew(conn: _Connection) -> bool:
            if not _holds(conn, shard_id, owner, range_id):
                return False
            _set_lease(conn, shard_id, time.time() + lease_seconds)
            return True

        return await self._change(renew)

    async def release_shard(self, shard_id: int, owner: str, range_id: int) -> None:
        def release(conn: _Connection) -> None:
            if _holds(conn, shard_id, owner, range_id):
                _set_lease(conn, shard_id, 0.0)

        await self._change(release)

    async def list_shards(self) -> list[ShardInfo]:
        def list_(conn: _Connection) -> list[ShardInfo]:
            rows = conn.execute(
                "SELECT s.shard_id, s.owner, s.range_id, coalesce(l.lease_until, 0) FROM shards s "
                "LEFT JOIN shard_leases l ON l.shard_id = s.shard_id ORDER BY s.shard_id"
            ).fetchall()
            return [ShardInfo(int(r[0]), str(r[1]), int(r[2]), float(r[3])) for r in rows]

        return await self._point_read(list_)

    # membership -------------------------------------------------------------
    async def heartbeat_member(self, member_id: str, address: str, ttl: float) -> None:
        def beat(conn: _Connection) -> None:
            conn.execute(
                "INSERT INTO members (member_id, address, expires_at) VALUES (?, ?, ?) ON CONFLICT (member_id) "
                "DO UPDATE SET address = excluded.address, expires_at = excluded.expires_at",
                (member_id, address, time.time() + ttl),
            )

        await self._change(beat)

    async def list_members(self) -> list[MemberRecord]:
        def list_(conn: _Connection) -> list[MemberRecord]:
            rows = conn.execute(
                "SELECT member_id, address, expires_at FROM members WHERE expires_at > ? ORDER BY member_id",
                (time.time(),),
            ).fetchall()
            return [MemberRecord(str(r[0]), str(r[1]), float(r[2])) for r in rows]

        return await self._point_read(list_)

    async def remove_member(self, member_id: str) -> None:
        def remove(conn: _Connection) -> None:
            conn.execute("DELETE FROM members WHERE member_id = ?", (member_id,))

        await self._change(remove)

    # executions -------------------------------------------------------------
    async def write(self, shard_id: int, range_id: int, writes: list[ExecutionWrite]) -> None:
        def write(conn: _Connection) -> None:
            runs, workflows = keys_to_read(writes)
            view = StoredView(range_id=_range_id(conn, shard_id))
            for key in runs:
                row = conn.execute(
                    "SELECT db_version FROM executions WHERE namespace = ? AND workflow_id = ? AND run_id = ?",
                    key,
                ).fetchone()
                if row is not None:
                    view.versions[key] = row[0]
            for wf_key in workflows:
                row = conn.execute(
                    "SELECT run_id, status, start_request_id FROM current_executions "
                    "WHERE namespace = ? AND workflow_id = ?",
                    wf_key,
                ).fetchone()
                if row is not None:
                    view.current[wf_key] = CurrentRun(*row)
            _apply(conn, plan_write(shard_id, range_id, writes, view))

        await self._change(write)

    async def get_execution(self, namespace: str, workflow_id: str, run_id: str) -> ExecutionState | None:
        def get(conn: _Connection) -> ExecutionState | None:
            row = conn.execute(
                "SELECT state FROM executions WHERE namespace = ? AND workflow_id = ? AND run_id = ?",
                (namespace, workflow_id, run_id),
            ).fetchone()
            return None if row is None else _codec.decode_state(row[0])

        return await self._point_read(get)

    async def get_current_run(self, namespace: str, workflow_id: str) -> CurrentRun | None:
        def get(conn: _Connection) -> CurrentRun | None:
            row = conn.execute(
                "SELECT run_id, status, start_request_id FROM current_executions "
                "WHERE namespace = ? AND workflow_id = ?",
                (namespace, workflow_id),
            ).fetchone()
            return None if row is None else CurrentRun(*row)

        return await self._point_read(get)

    async def read_events(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str,
        first_event_id: int = 1,
        max_events: int | None = None,
    ) -> list[HistoryEvent]:
        key = (namespace, workflow_id, run_id)

        def reader(first: int, limit: int | None) -> Callable[[_Connection], list[HistoryEvent]]:
            def read(conn: _Connection) -> list[HistoryEvent]:
                rows = conn.execute(
                    "SELECT data FROM history_events WHERE namespace = ? AND workflow_id = ? AND run_id = ? "
                    "AND event_id >= ? ORDER BY event_id LIMIT ?",
                    (*key, first, -1 if limit is None else limit),
                ).fetchall()
                return [_codec.decode_event(row[0], key) for row in rows]

            return read

        # The first INLINE_ROWS events at once (usually all of them: a workflow task's new events,
        # a page); the rest of a long history on the reader thread. Events are never rewritten, so
        # the two parts fit together.
        head_limit = INLINE_ROWS if max_events is None else min(max_events, INLINE_ROWS)
        head = await self._point_read(reader(first_event_id, head_limit))
        if len(head) < head_limit or head_limit == max_events:
            return head
        rest_limit = None if max_events is None else max_events - head_limit
        return head + await self._read(reader(head[-1].event_id + 1, rest_limit))

    async def delete_execution(self, namespace: str, workflow_id: str, run_id: str) -> None:
        key = (namespace, workflow_id, run_id)

        def delete(conn: _Connection) -> None:
            where = "WHERE namespace = ? AND workflow_id = ? AND run_id = ?"
            for table in ("executions", "history_events", "visibility", "current_executions"):
                conn.execute(f"DELETE FROM {table} {where}", key)

        await self._change(delete)

    # outbox -----------------------------------------------------------------
    async def get_transfer_tasks(self, shard_id: int, limit: int = 100) -> list[TransferTask]:
        def get(conn: _Connection) -> list[TransferTask]:
            rows = conn.execute(
                "SELECT data FROM transfer_tasks WHERE shard_id = ? ORDER BY seq LIMIT ?", (shard_id, limit)
            ).fetchall()
            return [_codec.decode_transfer_task(row[0]) for row in rows]

        return await (self._point_read(get) if limit <= INLINE_ROWS else self._read(get))

    async def delete_transfer_tasks(self, shard_id: int, task_ids: list[str]) -> None:
        await self._delete_tasks("transfer_tasks", shard_id, task_ids)

    async def get_timer_tasks(self, shard_id: int, fire_before: float, limit: int = 100) -> list[TimerTask]:
        def get(conn: _Connection) -> list[TimerTask]:
            rows = conn.execute(
                "SELECT data FROM timer_tasks WHERE shard_id = ? AND fire_time <= ? "
                "ORDER BY fire_time, seq LIMIT ?",
                (shard_id, fire_before, limit),
            ).fetchall()
            return [_codec.decode_timer_task(row[0]) for row in rows]

        return await (self._point_read(get) if limit <= INLINE_ROWS else self._read(get))

    async def next_timer_time(self, shard_id: int) -> float | None:
        def get(conn: _Connection) -> float | None:
            row = conn.execute(
                "SELECT min(fire_time) FROM timer_tasks WHERE shard_id = ?", (shard_id,)
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._point_read(get)

    async def delete_timer_tasks(self, shard_id: int, task_ids: list[str]) -> None:
        await self._delete_tasks("timer_tasks", shard_id, task_ids)

    async def _delete_tasks(
        self, table: Literal["transfer_tasks", "timer_tasks"], shard_id: int, task_ids: list[str]
    ) -> None:
        if not task_ids:
            return

        def delete(conn: _Connection) -> None:
            conn.executemany(
                f"DELETE FROM {table} WHERE shard_id = ? AND task_id = ?", [(shard_id, t) for t in task_ids]
            )

        await self._change(delete)

    # visibility -------------------------------------------------------------
    async def list_visibility(
        self,
        namespace: str,
        *,
        filters: dict[str, Any] | None = None,
        page_size: int = 100,
        next_page_token: str | None = None,
    ) -> VisibilityPage:
        check_page_size(page_size)
        query = VisibilityQuery.parse(namespace, filters, next_page_token)
        where, params = _visibility_where(query)

        def list_(conn: _Connection) -> VisibilityPage:
            rows = conn.execute(
                f"SELECT {_VISIBILITY_COLUMNS} FROM visibility WHERE {where} "
                "ORDER BY start_time DESC, run_id, workflow_id LIMIT ?",
                (*params, page_size + 1),
            ).fetchall()
            records = [_visibility_record(row) for row in rows[:page_size]]
            more = len(rows) > page_size
            return VisibilityPage(records, page_token(records[-1]) if more else None)

        return await self._read(list_)

    async def count_visibility(self, namespace: str, *, filters: dict[str, Any] | None = None) -> int:
        where, params = _visibility_where(VisibilityQuery.parse(namespace, filters))

        def count(conn: _Connection) -> int:
            return int(conn.execute(f"SELECT count(*) FROM visibility WHERE {where}", params).fetchone()[0])

        return await self._read(count)

    # namespaces -------------------------------------------------------------
    async def upsert_namespace(self, record: NamespaceRecord) -> None:
        data = _codec.encode_namespace(record)

        def upsert(conn: _Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO namespaces (name, data) VALUES (?, ?)", (record.name, data))

        await self._change(upsert)

    async def get_namespace(self, name: str) -> NamespaceRecord | None:
        def get(conn: _Connection) -> NamespaceRecord | None:
            row = conn.execute("SELECT data FROM namespaces WHERE name = ?", (name,)).fetchone()
            return None if row is None else _codec.decode_namespace(row[0])

        return await self._point_read(get)

    async def list_namespaces(self) -> list[NamespaceRecord]:
        def list_(conn: _Connection) -> list[NamespaceRecord]:
            rows = conn.execute("SELECT data FROM namespaces ORDER BY name").fetchall()
            return [_codec.decode_namespace(row[0]) for row in rows]

        return await self._read(list_)


# helpers run on the writer thread ----------------------------------------------
def _holds(conn: _Connection, shard_id: int, owner: str, range_id: int) -> bool:
    row = conn.execute("SELECT owner, range_id FROM shards WHERE shard_id = ?", (shard_id,)).fetchone()
    return row is not None and row[0] == owner and int(row[1]) == range_id


def _set_lease(conn: _Connection, shard_id: int, lease_until: float) -> None:
    conn.execute(
        "INSERT INTO shard_leases (shard_id, lease_until) VALUES (?, ?) ON CONFLICT (shard_id) "
        "DO UPDATE SET lease_until = excluded.lease_until",
        (shard_id, lease_until),
    )


def _range_id(conn: _Connection, shard_id: int) -> int:
    row = conn.execute("SELECT range_id FROM shards WHERE shard_id = ?", (shard_id,)).fetchone()
    return 0 if row is None else int(row[0])


def _apply(conn: _Connection, plan: WritePlan) -> None:
    """Store ``plan``; any error rolls back the job's savepoint, so all or nothing."""
    for key, row in plan.executions.items():
        state = _codec.encode_state(row.state)
        if row.stored_version is None:
            conn.execute(
                "INSERT INTO executions (namespace, workflow_id, run_id, db_version, state) VALUES (?, ?, ?, ?, ?)",
                (*key, row.state.db_version, state),
            )
        else:
            updated = conn.execute(
                "UPDATE executions SET db_version = ?, state = ? "
                "WHERE namespace = ? AND workflow_id = ? AND run_id = ? AND db_version = ?",
                (row.state.db_version, state, *key, row.stored_version),
            ).rowcount
            if updated != 1:  # cannot happen: the version was read in this transaction
                raise ConditionFailedError(f"run {'/'.join(key)} changed during the write")
    conn.executemany(
        "INSERT INTO current_executions (namespace, workflow_id, run_id, status, start_request_id) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, workflow_id) DO UPDATE SET "
        "run_id = excluded.run_id, status = excluded.status, start_request_id = excluded.start_request_id",
        [(*wf_key, c.run_id, c.status, c.start_request_id) for wf_key, c in plan.current.items()],
    )
    # Row by row, so that a unique-key violation names the event or task that caused it.
    for key, event in plan.events:
        try:
            conn.execute(
                "INSERT INTO history_events (namespace, workflow_id, run_id, event_id, data) VALUES (?, ?, ?, ?, ?)",
                (*key, event.event_id, _codec.encode_event(event)),
            )
        except sqlite3.IntegrityError:
            raise duplicate_event_error(key, event.event_id) from None
    for transfer in plan.transfer_tasks:
        try:
            conn.execute(
                "INSERT INTO transfer_tasks (shard_id, task_id, data) VALUES (?, ?, ?)",
                (transfer.shard_id, transfer.task_id, _codec.encode_transfer_task(transfer)),
            )
        except sqlite3.IntegrityError:
            raise duplicate_task_error("transfer", transfer.shard_id, transfer.task_id) from None
    for timer in plan.timer_tasks:
        try:
            conn.execute(
                "INSERT INTO timer_tasks (shard_id, task_id, fire_time, data) VALUES (?, ?, ?, ?)",
                (timer.shard_id, timer.task_id, timer.fire_time, _codec.encode_timer_task(timer)),
            )
        except sqlite3.IntegrityError:
            raise duplicate_task_error("timer", timer.shard_id, timer.task_id) from None
    conn.executemany(
        f"INSERT OR REPLACE INTO visibility ({_VISIBILITY_COLUMNS}) VALUES ({', '.join('?' * 13)})",
        [_visibility_row(r) for r in plan.visibility.values()],
    )


def _rollback_to_savepoint(conn: _Connection) -> None:
    conn.execute("ROLLBACK TO job")
    conn.execute("RELEASE job")


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    *,
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    """Resolve ``future`` on its own loop (called from the writer thread)."""

    def settle() -> None:
        if future.done():  # cancelled by its caller meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
        pass


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _settle_jobs(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
    """Resolve the futures of a group: one hand-off to each caller's loop, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)

    def settle(items: list[tuple[_Job, Any, BaseException | None]]) -> None:
        for job, result, error in items:
            if job.future.done():  # cancelled by its caller meanwhile
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(settle, items)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            pass


def _store_error(exc: sqlite3.Error, what: str) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF in _TRANSIENT_CODES:
        return StoreUnavailableError(f"SQLite store unavailable ({exc}); {what}. Retry later.")
    return StoreError(f"SQLite error ({exc}); {what}")


# visibility rows -----------------------------------------------------------------
def _visibility_where(query: VisibilityQuery) -> tuple[str, tuple[Any, ...]]:
    clauses = ["namespace = ?"]
    params: list[Any] = [query.namespace]
    for column, value in query.equals.items():  # column names come from a fixed list
        clauses.append(f"{column} = ?")
        params.append(value)
    if query.start_time_after is not None:
        clauses.append("start_time >= ?")
        params.append(query.start_time_after)
    if query.start_time_before is not None:
        clauses.append("start_time < ?")
        params.append(query.start_time_before)
    for cond in query.conditions:  # column names and operators come from fixed lists
        clauses.append(_comparison(cond.field, cond, params))
    for cond in query.search_attributes:
        clauses.append(_attribute_clause(cond, params))
    if query.after is not None:
        neg_start, run_id, workflow_id = query.after
        # "start_time <= ?" on its own lets SQLite seek the (namespace, start_time) index.
        clauses.append(
            "start_time <= ? AND "
            "(start_time < ? OR (start_time = ? AND (run_id > ? OR (run_id = ? AND workflow_id > ?))))"
        )
        params += [-neg_start, -neg_start, -neg_start, run_id, run_id, workflow_id]
    return " AND ".join(clauses), tuple(params)


_JSON_TYPES = {"string": "= 'text'", "number": "IN ('integer', 'real')"}


def _comparison(expr: str, cond: Condition, params: list[Any]) -> str:
    """``expr op ?`` for a validated condition (``expr`` is SQL built from fixed parts)."""
    if cond.op == "starts_with":
        prefix = str(cond.operand)
        params += [len(prefix), prefix]
        return f"substr({expr}, 1, ?) = ?"
    params.append(cond.operand)
    return f"{expr} {cond.op} ?"


def _attribute_clause(cond: Condition, params: list[Any]) -> str:
    """A search-attribute condition with the semantics of ``Condition.holds`` (see ``_visibility_query``)."""
    path = f'$."{cond.field}"'  # the name is validated: letters, digits, '_'
    kind = cond.kind
    if kind == "bool":
        params += [path, "true" if cond.value == (cond.op == "=") else "false"]
        return "json_type(search_attributes, ?) = ?"
    value = "json_extract(search_attributes, ?)"
    if kind == "datetime":
        # Only strings that start like an ISO date and name a real day; then epoch milliseconds.
        params += [path, path, path, path, path]
        guard = (
            f"json_type(search_attributes, ?) = 'text' "
            f"AND {value} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' "
            f"AND date(substr({value}, 1, 10), '+0 days') = substr({value}, 1, 10)"
        )
        millis = f"CAST(round((julianday({value}) - {SQLITE_JULIAN_EPOCH}) * 86400000.0) AS INTEGER)"
        return f"({guard} AND {_comparison(millis, cond, params)})"
    params += [path, path]
    return f"(json_type(search_attributes, ?) {_JSON_TYPES[kind]} AND {_comparison(value, cond, params)})"


def _visibility_row(r: VisibilityRecord) -> tuple[Any, ...]:
    return (
        r.namespace,
        r.workflow_id,
        r.run_id,
        r.workflow_type,
        r.task_queue,
        r.status,
        r.start_time,
        r.close_time,
        r.execution_time,
        r.history_length,
        json.dumps(r.search_attributes),
        json.dumps(r.memo),
        r.parent_workflow_id,
    )


def _visibility_record(row: tuple[Any, ...]) -> VisibilityRecord:
    (ns, wf, run, wf_type, task_queue, status, start, close, execution, length, attrs, memo, parent) = row
    return VisibilityRecord(
        namespace=ns,
        workflow_id=wf,
        run_id=run,
        workflow_type=wf_type,
        task_queue=task_queue,
        status=status,
        start_time=start,
        execution_time=execution,
        close_time=close,
        history_length=length,
        search_attributes=json.loads(attrs),
        memo=json.loads(memo),
        parent_workflow_id=parent,
    )
