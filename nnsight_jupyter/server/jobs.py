"""The durable job store of the model host.

Every job the host accepts is written here, in SQLite, before the host acknowledges it, so a job
survives a crash or a restart of the server. A job has an unguessable id (uuid4 hex), an owner, the
model it runs on, its kind ("trace", "generate", "session", "backward", ...), the bytes of its
intervention graph and a status that only moves along these edges::

    queued  -> running | cancelled | error
    running -> done | error | cancelled
    running -> queued          (a re-queue after a worker restart; only while attempts < 2)

`done`, `error` and `cancelled` are final. Every change of status is appended to a history table in
the same transaction as the change itself, so the history never disagrees with the job.

A job's row also records what the scheduler needs to place it again after a restart without
decoding its graph: `invokes` (how many invokes it has) and `merge_key` (`execution.merge.merge_key`:
None when the job cannot share a forward pass). A submit is idempotent by its request id: the
unique index on (owner, request_id) lets one owner's request id name one job only, so a client
resending a submit after a dropped socket gets the same job (`DuplicateRequest`), never a second one;
another owner's same request id is another job.

`seq` is the insertion order and therefore the queue order: a re-queued job (and every queued job
after a restart, see `JobStore.recover`) keeps its place. `batch_id` and `rows` record which batched
forward pass a job ran in and which rows of it were its own, so co-tenancy is observable.

Results are files in a result directory (one per job, named by the job id), written to a temp
file, fsync'ed, then renamed into place (`os.replace`), so a reader never sees half a result.
Only the server's own OS user can read the store: the directories it creates and the result
directory are 0o700, the database (and SQLite's -wal / -shm files, which take its mode) and every
result file 0o600, set when they are created, whatever the umask. (`NNsightHost` also keeps the
store outside the server's root_dir, so the contents API never serves it.)
`JobStore.purge` deletes results some time after they were fetched (`result_ttl`) and results
never fetched after `24 * result_ttl`; the job row and its status are kept.

The store is safe to use from several threads (the server's event loop and worker callbacks):
one connection, guarded by a lock; each write is one committed transaction (WAL journal,
``synchronous=FULL``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from nnsight_jupyter.errors import NNsightError

__all__ = [
    "CANCELLED",
    "DONE",
    "ERROR",
    "MAX_ATTEMPTS",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "TERMINAL",
    "TRANSITIONS",
    "DuplicateRequest",
    "JobNotFound",
    "JobRecord",
    "JobStateError",
    "JobStore",
]

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"

STATUSES: tuple[str, ...] = (QUEUED, RUNNING, DONE, ERROR, CANCELLED)
TERMINAL: frozenset[str] = frozenset({DONE, ERROR, CANCELLED})

# Allowed edges of the status graph; running -> queued is further limited by MAX_ATTEMPTS.
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, ERROR}),
    RUNNING: frozenset({DONE, ERROR, CANCELLED, QUEUED}),
    DONE: frozenset(),
    ERROR: frozenset(),
    CANCELLED: frozenset(),
}

# A job runs at most this many times: a job interrupted on its last attempt fails instead of
# being re-queued again (a job that kills its worker every time must not loop forever).
MAX_ATTEMPTS = 2

_SCHEMA_VERSION = 2     # 2: invokes and merge_key (the scheduler's shape of a job), error_fields
_STATUS_CHECK = "status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES))

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    owner         TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    graph_hash    TEXT    NOT NULL,
    request_id    TEXT,
    status        TEXT    NOT NULL CHECK ({_STATUS_CHECK}),
    created       REAL    NOT NULL,
    updated       REAL    NOT NULL,
    started       REAL,
    finished      REAL,
    batch_id      TEXT,
    rows          TEXT,
    error_type    TEXT,
    error_message TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    result_bytes  INTEGER,
    fetched_at    REAL,
    invokes       INTEGER,
    merge_key     TEXT,
    error_fields  TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status_model ON jobs (status, model, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_request ON jobs (owner, request_id);
CREATE TABLE IF NOT EXISTS graphs (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id),
    data   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    n      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    status TEXT NOT NULL CHECK ({_STATUS_CHECK}),
    time   REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS history_job ON history (job_id, n);
"""

_COLUMNS = (
    "id, owner, model, kind, graph_hash, request_id, status, created, updated, started, finished, "
    "batch_id, rows, error_type, error_message, attempts, seq, result_bytes, fetched_at, invokes, merge_key, "
    "error_fields"
)

# Schema 1 -> 2: the scheduler's shape of each job on its row, one job per (owner, request id), and
# the fields of a job's error (its line, module, shapes and fix, as JSON).
# Rows of schema 1 get NULL shapes (the host works them out from their graphs once); of several
# schema-1 jobs of one owner with one request id, only the newest keeps it.
_MIGRATIONS = {
    1: (
        "ALTER TABLE jobs ADD COLUMN invokes INTEGER",
        "ALTER TABLE jobs ADD COLUMN merge_key TEXT",
        "ALTER TABLE jobs ADD COLUMN error_fields TEXT",
        "UPDATE jobs SET request_id = NULL WHERE request_id IS NOT NULL AND seq < (SELECT MAX(j.seq) "
        "FROM jobs j WHERE j.owner = jobs.owner AND j.request_id = jobs.request_id)",
    ),
}


class JobStateError(NNsightError):
    """A job was asked to move to a status it cannot reach from where it is."""


class DuplicateRequest(NNsightError):
    """This owner already submitted a job with this request id: `record` is that job."""

    def __init__(self, record: JobRecord):
        self.record = record
        super().__init__(f"request {record.request_id!r} is job {record.id}")


class JobNotFound(NNsightError, KeyError):
    """No such job (or not one of the asking user's), or no result for it (any more)."""

    # KeyError quotes its message in str(); the message is meant to be read as written.
    def __str__(self) -> str:
        return Exception.__str__(self)


@dataclass
class JobRecord:
    """One row of the job store, as the host and the REST API see it."""

    id: str
    owner: str
    model: str
    kind: str
    graph_hash: str
    request_id: str | None
    status: str
    created: float
    updated: float
    started: float | None
    finished: float | None
    batch_id: str | None
    rows: list[int] | None
    error_type: str | None
    error_message: str | None
    attempts: int
    seq: int
    result_bytes: int | None
    fetched_at: float | None
    invokes: int | None = None          # None: a job stored by schema 1 (work it out from its graph)
    merge_key: str | None = None        # None: it runs alone
    error_fields: dict[str, Any] | None = None    # the error's own fields (NNsightError.fields())

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict of every field (rows as a list)."""
        d = asdict(self)
        d["rows"] = list(self.rows) if self.rows is not None else None
        return d

    @classmethod
    def _from_row(cls, row: tuple) -> JobRecord:
        (id_, owner, model, kind, graph_hash, request_id, status, created, updated, started,
         finished, batch_id, rows, error_type, error_message, attempts, seq, result_bytes,
         fetched_at, invokes, merge_key, error_fields) = row
        return cls(
            id=id_, owner=owner, model=model, kind=kind, graph_hash=graph_hash,
            request_id=request_id, status=status, created=created, updated=updated,
            started=started, finished=finished, batch_id=batch_id,
            rows=json.loads(rows) if rows is not None else None,
            error_type=error_type, error_message=error_message, attempts=attempts, seq=seq,
            result_bytes=result_bytes, fetched_at=fetched_at, invokes=invokes, merge_key=merge_key,
            error_fields=json.loads(error_fields) if error_fields else None,
        )


def _rows_json(rows: Iterable[int] | None) -> str | None:
    if rows is None:
        return None
    return json.dumps([int(r) for r in rows])


class JobStore:
    """The SQLite-backed job store; see the module docstring.

    `path` is the database file (created with its parent folder if missing). Results go to
    `result_dir`, by default ``<path>.results/``. Safe to share between threads.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        result_dir: str | Path | None = None,
        result_ttl: float = 3600.0,
    ):
        self.path = Path(path)
        _private_dir(self.path.parent)
        self.result_dir = (
            Path(result_dir) if result_dir is not None else Path(f"{self.path}.results")
        )
        self.result_ttl = float(result_ttl)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        # Where a damaged store was moved before this one was started afresh (None: it was sound).
        self.damaged: str | None = None
        try:
            self._open()
        except sqlite3.DatabaseError as error:
            self.damaged = self._move_aside(error)
            self._open()

    def _make_private(self) -> None:
        """Create the result folder (0o700) and the database file (0o600) whatever the umask.

        SQLite creates its -wal and -shm files with the database file's mode; ones left by an older
        version are tightened here."""
        _private_dir(self.result_dir, tighten=True)
        os.close(_private_file(self.path, os.O_RDWR))
        for suffix in ("-wal", "-shm", "-journal"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def _open(self) -> None:
        """Connect, check the file is a sound SQLite database, create the schema if missing."""
        self._make_private()
        # Autocommit mode: every write below opens its own explicit transaction.
        db = self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        try:
            with self._lock:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
                check = db.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise sqlite3.DatabaseError(f"integrity check failed: {check}")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > _SCHEMA_VERSION:
                    raise NNsightError(
                        f"the job store {self.path} was written by a newer nnsight_jupyter "
                        f"(schema {version}, this one knows {_SCHEMA_VERSION}); upgrade, or point "
                        "the host at another job store"
                    )
                db.execute("BEGIN IMMEDIATE")
                try:
                    if version:                 # an older store: bring it up to date first
                        for old in range(version, _SCHEMA_VERSION):
                            for stmt in _MIGRATIONS[old]:
                                db.execute(stmt)
                    # One statement at a time: executescript() would commit on its own.
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            db.execute(stmt)
                    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except BaseException:
            db.close()
            self._db = None
            raise

    def _move_aside(self, error: Exception) -> str:
        """Rename a damaged database (and its WAL, shared-memory file and results) out of the way;
        return the message the host logs and shows in its status."""
        aside = f"{self.path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{aside}{suffix}")
        if self.result_dir == Path(f"{self.path}.results") and self.result_dir.exists():
            os.replace(self.result_dir, f"{aside}.results")
        return (f"the job store {self.path} was damaged ({error}); it was moved to {aside} and the host "
                "started with an empty job store: jobs and results from before are not available")

    # ------------------------------------------------------------------ plumbing

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise NNsightError(f"the job store {self.path} is closed")
        return self._db

    def _write(self, fn):
        """Run `fn(db)` in one IMMEDIATE transaction under the lock; commit, or roll back."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return out

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn().execute(sql, params).fetchall()

    @staticmethod
    def _fetch(db: sqlite3.Connection, job_id: str) -> JobRecord:
        row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        return JobRecord._from_row(row)

    def _result_path(self, job_id: str) -> Path:
        return self.result_dir / f"{job_id}.result"

    def close(self) -> None:
        """Close the database; further calls raise. Closing twice is harmless."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ jobs

    def create(
        self,
        *,
        owner: str,
        model: str,
        kind: str,
        graph: bytes,
        graph_hash: str,
        request_id: str | None = None,
        invokes: int = 1,
        merge_key: str | None = None,
    ) -> JobRecord:
        """Insert a queued job with its graph; committed (durable) before this returns.

        `DuplicateRequest` (nothing inserted) if `owner` already has a job with `request_id`."""
        job_id = uuid.uuid4().hex
        now = time.time()

        def run(db: sqlite3.Connection) -> JobRecord:
            try:
                db.execute(
                    "INSERT INTO jobs (id, owner, model, kind, graph_hash, request_id, status, "
                    "created, updated, attempts, invokes, merge_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                    (job_id, owner, model, kind, graph_hash, request_id, QUEUED, now, now, invokes, merge_key),
                )
            except sqlite3.IntegrityError:
                existing = self._by_request(db, owner, request_id)
                if existing is None:
                    raise
                raise DuplicateRequest(existing) from None
            db.execute("INSERT INTO graphs (job_id, data) VALUES (?, ?)", (job_id, bytes(graph)))
            db.execute(
                "INSERT INTO history (job_id, status, time, detail) VALUES (?, ?, ?, ?)",
                (job_id, QUEUED, now, "created"),
            )
            return self._fetch(db, job_id)

        return self._write(run)

    @staticmethod
    def _by_request(db: sqlite3.Connection, owner: str, request_id: str | None) -> JobRecord | None:
        if request_id is None:
            return None
        row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE owner = ? AND request_id = ?",
                         (owner, request_id)).fetchone()
        return JobRecord._from_row(row) if row is not None else None

    def find_request(self, owner: str, request_id: str | None) -> JobRecord | None:
        """`owner`'s job submitted with `request_id`, or None."""
        with self._lock:
            return self._by_request(self._conn(), owner, request_id)

    def get(self, job_id: str) -> JobRecord:
        """The job `job_id`; `JobNotFound` if there is none."""
        with self._lock:
            return self._fetch(self._conn(), job_id)

    def get_for(self, job_id: str, owner: str) -> JobRecord:
        """The job `job_id` if it belongs to `owner`.

        A job of someone else is reported exactly like a missing one, so ids can't be probed.
        """
        rows = self._read(
            f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)
        )
        if not rows:
            raise JobNotFound(f"no job {job_id} for this user")
        return JobRecord._from_row(rows[0])

    def graph(self, job_id: str) -> bytes:
        """The graph bytes the job was submitted with."""
        rows = self._read("SELECT data FROM graphs WHERE job_id = ?", (job_id,))
        if not rows:
            raise JobNotFound(f"no job {job_id}")
        return bytes(rows[0][0])

    def _transition(
        self,
        db: sqlite3.Connection,
        job_id: str,
        status: str,
        *,
        now: float,
        batch_id: str | None = None,
        rows: Iterable[int] | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        error_fields: dict[str, Any] | None = None,
        result_bytes: int | None = None,
        detail: str = "",
    ) -> JobRecord:
        if status not in STATUSES:
            raise JobStateError(
                f"unknown job status {status!r}; a job status is one of {', '.join(STATUSES)}"
            )
        job = self._fetch(db, job_id)
        if status not in TRANSITIONS[job.status]:
            if job.status in TERMINAL:
                why = f"it is already {job.status}"
            else:
                allowed = ", ".join(sorted(TRANSITIONS[job.status]))
                why = f"from {job.status} it can only go to {allowed}"
            raise JobStateError(f"job {job_id} cannot go from {job.status} to {status}: {why}")
        if job.status == RUNNING and status == QUEUED and job.attempts >= MAX_ATTEMPTS:
            raise JobStateError(
                f"job {job_id} cannot be re-queued: it already ran {job.attempts} times "
                f"(at most {MAX_ATTEMPTS})"
            )

        sets: dict[str, Any] = {"status": status, "updated": now}
        if status == RUNNING:
            sets["started"] = now
            sets["attempts"] = job.attempts + 1
        elif status == QUEUED:
            # Back in the queue (same seq, so same place): the interrupted run is forgotten.
            sets.update(started=None, batch_id=None, rows=None)
        if status in TERMINAL:
            sets["finished"] = now
        if batch_id is not None:
            sets["batch_id"] = batch_id
        if rows is not None:
            sets["rows"] = _rows_json(rows)
        if error_type is not None:
            sets["error_type"] = error_type
        if error_message is not None:
            sets["error_message"] = error_message
        if error_fields:
            sets["error_fields"] = json.dumps(error_fields)
        if result_bytes is not None:
            sets["result_bytes"] = result_bytes

        assignments = ", ".join(f"{k} = ?" for k in sets)
        db.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ?", (*sets.values(), job_id)
        )
        db.execute(
            "INSERT INTO history (job_id, status, time, detail) VALUES (?, ?, ?, ?)",
            (job_id, status, now, detail),
        )
        return self._fetch(db, job_id)

    def transition(
        self,
        job_id: str,
        status: str,
        *,
        batch_id: str | None = None,
        rows: Iterable[int] | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        error_fields: dict[str, Any] | None = None,
        detail: str = "",
    ) -> JobRecord:
        """Move a job to `status` (validated; `JobStateError` if not allowed) and log it.

        Sets `started` (and counts an attempt) on ->running and `finished` on a final status;
        the other fields are recorded when given.
        """
        now = time.time()
        return self._write(
            lambda db: self._transition(
                db, job_id, status, now=now, batch_id=batch_id, rows=rows,
                error_type=error_type, error_message=error_message, error_fields=error_fields,
                detail=detail,
            )
        )

    def history(self, job_id: str) -> list[tuple[str, float, str]]:
        """Every status the job went through, oldest first: (status, time, detail)."""
        with self._lock:
            db = self._conn()
            self._fetch(db, job_id)
            rows = db.execute(
                "SELECT status, time, detail FROM history WHERE job_id = ? ORDER BY n", (job_id,)
            ).fetchall()
        return [(s, t, d) for s, t, d in rows]

    # ------------------------------------------------------------------ results

    def store_result(
        self,
        job_id: str,
        data: bytes,
        *,
        batch_id: str | None = None,
        rows: Iterable[int] | None = None,
    ) -> JobRecord:
        """Save a running job's result (atomically) and mark it done.

        The bytes go to a temp file (fsync'ed) outside the lock; the rename into place and the
        transition happen together under the lock, so a job that was cancelled meanwhile keeps
        no result and a finished job's result is never overwritten.
        """
        data = bytes(data)
        final = self._result_path(job_id)
        tmp = self.result_dir / f".{job_id}.{uuid.uuid4().hex}.tmp"
        try:
            with os.fdopen(_private_file(tmp, os.O_WRONLY | os.O_EXCL), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            now = time.time()

            def run(db: sqlite3.Connection) -> JobRecord:
                job = self._fetch(db, job_id)
                if job.status != RUNNING:
                    raise JobStateError(
                        f"job {job_id} cannot store a result: it is {job.status}, not running"
                    )
                os.replace(tmp, final)
                try:
                    return self._transition(
                        db, job_id, DONE, now=now, batch_id=batch_id, rows=rows,
                        result_bytes=len(data), detail=f"result {len(data)} bytes",
                    )
                except BaseException:
                    final.unlink(missing_ok=True)
                    raise

            job = self._write(run)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.result_dir)
        return job

    def result(self, job_id: str) -> bytes:
        """The stored result of `job_id`; `JobNotFound` if there is none (yet, or any more).

        The first fetch is recorded (`fetched_at`); `purge` drops the result `result_ttl` later.
        """
        with self._lock:
            job = self._fetch(self._conn(), job_id)
        if job.result_bytes is None:
            raise JobNotFound(_no_result_message(job))
        try:
            data = self._result_path(job_id).read_bytes()
        except FileNotFoundError:
            raise JobNotFound(f"the result of job {job_id} is no longer available") from None
        if job.fetched_at is None:
            now = time.time()
            self._write(
                lambda db: db.execute(
                    "UPDATE jobs SET fetched_at = ? WHERE id = ? AND fetched_at IS NULL",
                    (now, job_id),
                )
            )
        return data

    # ------------------------------------------------------------------ queries

    def _select(self, where: str, params: tuple, order: str = "seq", limit: int | None = None):
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [JobRecord._from_row(r) for r in self._read(sql, params)]

    def _by_status(self, status: str, model: str | None) -> list[JobRecord]:
        if model is None:
            return self._select("status = ?", (status,))
        return self._select("status = ? AND model = ?", (status, model))

    def queued(self, model: str | None = None) -> list[JobRecord]:
        """Queued jobs (of `model`, or of every model) in queue order."""
        return self._by_status(QUEUED, model)

    def running(self, model: str | None = None) -> list[JobRecord]:
        """Running jobs (of `model`, or of every model), oldest first."""
        return self._by_status(RUNNING, model)

    def stored_bytes(self, owner: str) -> int:
        """Bytes of `owner`'s results kept on disk now (purged results no longer count)."""
        return self._read(
            "SELECT COALESCE(SUM(result_bytes), 0) FROM jobs WHERE owner = ? AND result_bytes IS NOT NULL",
            (owner,),
        )[0][0]

    def count_queued(self, owner: str) -> int:
        """How many jobs `owner` has waiting in the queue (running ones not counted)."""
        return self._read(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND status = ?", (owner, QUEUED)
        )[0][0]

    def position(self, job_id: str) -> int | None:
        """0-based place of a queued job among the queued jobs of its model; None if not queued."""
        with self._lock:
            db = self._conn()
            job = self._fetch(db, job_id)
            if job.status != QUEUED:
                return None
            return db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = ? AND model = ? AND seq < ?",
                (QUEUED, job.model, job.seq),
            ).fetchone()[0]

    def list_for(self, owner: str, limit: int = 50) -> list[JobRecord]:
        """The `limit` newest jobs of `owner`, newest first."""
        return self._select("owner = ?", (owner,), order="seq DESC", limit=limit)

    # ------------------------------------------------------------------ housekeeping

    def recover(self, now: float | None = None) -> dict[str, list[str]]:
        """Call once when the host starts, before any worker runs.

        Jobs a previous process left running are re-queued (keeping their place) if they have
        an attempt left, else failed as "Interrupted". Queued jobs are untouched. Leftover temp
        files and result files that no job owns (a crash between writing and committing) go.
        """
        now = time.time() if now is None else float(now)
        out: dict[str, list[str]] = {"requeued": [], "interrupted": []}

        def run(db: sqlite3.Connection) -> None:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY seq", (RUNNING,)
            )]
            for job_id in ids:
                job = self._fetch(db, job_id)
                if job.attempts < MAX_ATTEMPTS:
                    self._transition(db, job_id, QUEUED, now=now,
                                     detail="re-queued after a server restart")
                    out["requeued"].append(job_id)
                else:
                    self._transition(
                        db, job_id, ERROR, now=now, error_type="Interrupted",
                        error_message=(
                            f"the server restarted while job {job_id} was running "
                            f"(attempt {job.attempts} of {MAX_ATTEMPTS}); it was not run again. "
                            "Submit it again; if it keeps happening, the job may be crashing "
                            "the model's worker."
                        ),
                        detail="interrupted by a server restart",
                    )
                    out["interrupted"].append(job_id)
            owned = {r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE result_bytes IS NOT NULL"
            )}
            for p in self.result_dir.iterdir():
                if p.name.endswith(".tmp") or (
                    p.suffix == ".result" and p.stem not in owned
                ):
                    p.unlink(missing_ok=True)

        self._write(run)
        return out

    def purge(self, now: float | None = None) -> int:
        """Delete results fetched over `result_ttl` ago, and unfetched ones finished over
        `24 * result_ttl` ago. Jobs keep their row and status. Returns how many were deleted."""
        now = time.time() if now is None else float(now)
        ttl = self.result_ttl

        def run(db: sqlite3.Connection) -> int:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE result_bytes IS NOT NULL AND ("
                " (fetched_at IS NOT NULL AND fetched_at < ?)"
                " OR (fetched_at IS NULL AND finished IS NOT NULL AND finished < ?))",
                (now - ttl, now - 24 * ttl),
            )]
            for job_id in ids:
                self._result_path(job_id).unlink(missing_ok=True)
                db.execute(
                    "UPDATE jobs SET result_bytes = NULL WHERE id = ?", (job_id,)
                )
            return len(ids)

        return self._write(run)


def _no_result_message(job: JobRecord) -> str:
    if job.status == DONE:
        return (
            f"the result of job {job.id} has expired (results are kept a while after they "
            "finish, and a while after they are first fetched)"
        )
    if job.status in TERMINAL:
        return f"job {job.id} has no result: it ended with status {job.status}"
    return f"job {job.id} has no result yet: it is {job.status}"


def _private_dir(path: Path, *, tighten: bool = False) -> None:
    """Create `path` (and missing parents) as 0o700, whatever the umask; `tighten` an existing one too.

    Directories that already existed are left as they are unless `tighten` (the result directory is
    the store's own; the folder the database sits in may be anybody's, e.g. a home directory).
    """
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)
    if tighten and not missing:
        os.chmod(path, 0o700)


def _private_file(path: Path, flags: int) -> int:
    """Open (creating if missing) `path` readable and writable by its owner only (0o600), umask-independent."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (POSIX); a no-op where directories can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
