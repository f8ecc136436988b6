"""The durable job store: persistence, transitions, ownership, results, queue order, recovery."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid

import pytest

from nnsight_jupyter.errors import NNsightError
from nnsight_jupyter.server.jobs import (
    STATUSES,
    JobNotFound,
    JobRecord,
    JobStateError,
    JobStore,
)


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def make(store, owner="alice", model="m", kind="trace", graph=b"graph", **kw):
    return store.create(owner=owner, model=model, kind=kind, graph=graph,
                        graph_hash="h-" + graph.hex(), **kw)


def run_to_done(store, job_id, data=b"result"):
    store.transition(job_id, "running")
    return store.store_result(job_id, data)


# ---------------------------------------------------------------- create and persistence


def test_create_is_queued_and_durable_across_reopen(tmp_path):
    path = tmp_path / "sub" / "jobs.db"
    s = JobStore(path)
    job = s.create(owner="alice", model="smollm2", kind="trace", graph=b"\x00\x01graph",
                   graph_hash="abc", request_id="req-1")
    assert job.status == "queued"
    assert len(job.id) == 32 and int(job.id, 16) >= 0
    assert job.attempts == 0 and job.started is None and job.finished is None
    assert job.created == job.updated
    # Committed before create() returned: a second connection sees it without a close.
    other = JobStore(path)
    assert other.get(job.id) == job
    other.close()
    s.close()

    s2 = JobStore(path)
    again = s2.get(job.id)
    assert again == job
    assert s2.graph(job.id) == b"\x00\x01graph"
    assert s2.history(job.id) == [("queued", job.created, "created")]
    assert s2.result_dir == tmp_path / "sub" / "jobs.db.results"
    s2.close()


def test_ids_are_unique_and_seq_increases(store):
    jobs = [make(store) for _ in range(5)]
    assert len({j.id for j in jobs}) == 5
    assert [j.seq for j in jobs] == sorted(j.seq for j in jobs)
    assert len({j.seq for j in jobs}) == 5


def test_to_json_roundtrips_through_json(store):
    job = make(store)
    store.transition(job.id, "running", batch_id="b1", rows=[2, 3])
    d = store.get(job.id).to_json()
    assert json.loads(json.dumps(d)) == d
    assert d["rows"] == [2, 3] and d["batch_id"] == "b1" and d["status"] == "running"
    assert set(d) == set(JobRecord.__dataclass_fields__)


def test_missing_job(store):
    with pytest.raises(JobNotFound) as e:
        store.get("nope")
    assert str(e.value) == "no job nope"  # not KeyError's quoted repr
    assert isinstance(e.value, KeyError) and isinstance(e.value, NNsightError)
    with pytest.raises(JobNotFound):
        store.graph("nope")
    with pytest.raises(JobNotFound):
        store.transition("nope", "running")
    with pytest.raises(JobNotFound):
        store.history("nope")
    with pytest.raises(JobNotFound):
        store.position("nope")


def test_closed_store_raises(tmp_path):
    s = JobStore(tmp_path / "j.db")
    s.close()
    s.close()
    with pytest.raises(NNsightError, match="closed"):
        make(s)


# ---------------------------------------------------------------- transitions

ALLOWED = [
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "error"),
    ("running", "done"),
    ("running", "error"),
    ("running", "cancelled"),
    ("running", "queued"),
]


def _job_in(store, status):
    job = make(store)
    if status == "queued":
        return job
    store.transition(job.id, "running")
    if status != "running":
        store.transition(job.id, status)
    return store.get(job.id)


@pytest.mark.parametrize(("src", "dst"), ALLOWED)
def test_allowed_transitions(store, src, dst):
    job = _job_in(store, src)
    after = store.transition(job.id, dst, detail="why")
    assert after.status == dst
    assert store.get(job.id).status == dst
    assert store.history(job.id)[-1][0] == dst
    assert store.history(job.id)[-1][2] == "why"


@pytest.mark.parametrize(
    ("src", "dst"),
    [(s, d) for s in STATUSES for d in STATUSES if (s, d) not in ALLOWED],
)
def test_forbidden_transitions(store, src, dst):
    job = _job_in(store, src)
    before = store.get(job.id)
    n = len(store.history(job.id))
    with pytest.raises(JobStateError, match=f"from {src} to {dst}"):
        store.transition(job.id, dst)
    assert store.get(job.id) == before
    assert len(store.history(job.id)) == n


def test_transition_fields_and_timestamps(store):
    job = make(store)
    r = store.transition(job.id, "running", batch_id="batch-7", rows=[0, 1])
    assert r.attempts == 1 and r.started is not None and r.finished is None
    assert r.batch_id == "batch-7" and r.rows == [0, 1]
    e = store.transition(job.id, "error", error_type="ExecutionError",
                         error_message="node 3 failed")
    assert e.finished is not None and e.finished >= r.started
    assert (e.error_type, e.error_message) == ("ExecutionError", "node 3 failed")
    assert e.batch_id == "batch-7" and e.rows == [0, 1]


def test_requeue_only_while_attempts_left(store):
    job = make(store)
    store.transition(job.id, "running", batch_id="b", rows=[0])
    q = store.transition(job.id, "queued", detail="worker restarted")
    assert q.status == "queued" and q.attempts == 1 and q.seq == job.seq
    assert q.batch_id is None and q.rows is None and q.started is None
    r = store.transition(job.id, "running")
    assert r.attempts == 2
    with pytest.raises(JobStateError, match="re-queued"):
        store.transition(job.id, "queued")
    assert store.get(job.id).status == "running"


@pytest.mark.parametrize("bad", ["finished", "", "DONE", "queued; DROP TABLE jobs", None])
def test_unknown_status_cannot_be_set(store, bad):
    job = make(store)
    with pytest.raises(JobStateError, match="unknown job status"):
        store.transition(job.id, bad)
    assert store.get(job.id).status == "queued"


def test_schema_rejects_unknown_status(tmp_path):
    path = tmp_path / "j.db"
    s = JobStore(path)
    job = make(s)
    s.close()
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE jobs SET status = 'bogus' WHERE id = ?", (job.id,))
    db.close()


# ---------------------------------------------------------------- ownership


def test_owner_isolation(store):
    job = make(store, owner="alice")
    assert store.get_for(job.id, "alice") == job
    with pytest.raises(JobNotFound) as theirs:
        store.get_for(job.id, "mallory")
    missing = uuid.uuid4().hex
    with pytest.raises(JobNotFound) as nobody:
        store.get_for(missing, "mallory")
    assert str(theirs.value) == f"no job {job.id} for this user"
    assert str(theirs.value).replace(job.id, "<id>") == str(nobody.value).replace(missing, "<id>")
    assert type(theirs.value) is type(nobody.value)


def test_list_for_newest_first(store):
    a = [make(store, owner="alice") for _ in range(3)]
    make(store, owner="bob")
    assert [j.id for j in store.list_for("alice")] == [j.id for j in reversed(a)]
    assert [j.id for j in store.list_for("alice", limit=2)] == [a[2].id, a[1].id]
    assert store.list_for("carol") == []


def test_count_queued(store):
    a = [make(store, owner="alice") for _ in range(3)]
    make(store, owner="bob")
    assert store.count_queued("alice") == 3
    store.transition(a[0].id, "running")
    store.transition(a[1].id, "cancelled")
    assert store.count_queued("alice") == 1
    assert store.count_queued("bob") == 1
    assert store.count_queued("nobody") == 0


# ---------------------------------------------------------------- results


def test_store_and_fetch_result(store):
    job = make(store)
    store.transition(job.id, "running")
    done = store.store_result(job.id, b"\x00payload\xff", batch_id="b2", rows=[4])
    assert done.status == "done" and done.result_bytes == 9
    assert done.batch_id == "b2" and done.rows == [4] and done.finished is not None
    path = store.result_dir / f"{job.id}.result"
    assert path.read_bytes() == b"\x00payload\xff"
    assert [p.name for p in store.result_dir.iterdir()] == [path.name]  # no temp files left
    assert store.get(job.id).fetched_at is None
    assert store.result(job.id) == b"\x00payload\xff"
    first = store.get(job.id).fetched_at
    assert first is not None
    assert store.result(job.id) == b"\x00payload\xff"
    assert store.get(job.id).fetched_at == first  # only the first fetch is recorded
    assert store.history(job.id)[-1][0] == "done"


def test_no_result_before_done_or_after_error(store):
    job = make(store)
    with pytest.raises(JobNotFound, match="no result yet"):
        store.result(job.id)
    store.transition(job.id, "running")
    store.transition(job.id, "error", error_type="X", error_message="boom")
    with pytest.raises(JobNotFound, match="status error"):
        store.result(job.id)
    with pytest.raises(JobNotFound):
        store.result(uuid.uuid4().hex)


def test_store_result_refused_unless_running(store):
    queued = make(store)
    with pytest.raises(JobStateError):
        store.store_result(queued.id, b"x")
    cancelled = make(store)
    store.transition(cancelled.id, "running")
    store.transition(cancelled.id, "cancelled")
    with pytest.raises(JobStateError):
        store.store_result(cancelled.id, b"x")
    done = make(store)
    run_to_done(store, done.id, b"first")
    with pytest.raises(JobStateError):
        store.store_result(done.id, b"second")
    assert store.result(done.id) == b"first"  # never overwritten
    assert sorted(p.name for p in store.result_dir.iterdir()) == [f"{done.id}.result"]


def test_custom_result_dir(tmp_path):
    s = JobStore(tmp_path / "j.db", result_dir=tmp_path / "res")
    job = make(s)
    run_to_done(s, job.id, b"r")
    assert (tmp_path / "res" / f"{job.id}.result").read_bytes() == b"r"
    s.close()


def test_purge_after_ttl(tmp_path):
    s = JobStore(tmp_path / "j.db", result_ttl=10.0)
    fetched, unfetched, later = make(s), make(s), make(s)
    for j in (fetched, unfetched, later):
        run_to_done(s, j.id)
    s.result(fetched.id)
    s.result(later.id)
    now = time.time()
    # Pretend `later` was first fetched 100 s from now.
    s._write(lambda db: db.execute(
        "UPDATE jobs SET fetched_at = ? WHERE id = ?", (now + 100, later.id)))
    assert s.purge(now=now) == 0
    assert s.purge(now=now + 5) == 0

    # Fetched more than a TTL ago: gone; the job keeps its row and status.
    assert s.purge(now=now + 11) == 1
    assert not (s.result_dir / f"{fetched.id}.result").exists()
    after = s.get(fetched.id)
    assert after.status == "done" and after.result_bytes is None
    assert after.fetched_at is not None
    with pytest.raises(JobNotFound, match="expired"):
        s.result(fetched.id)
    assert (s.result_dir / f"{unfetched.id}.result").exists()
    assert (s.result_dir / f"{later.id}.result").exists()

    assert s.purge(now=now + 105) == 0
    # Past 24 TTLs the never-fetched result goes too (and `later`, fetched > TTL ago).
    assert s.purge(now=now + 24 * 10 + 1) == 2
    assert list(s.result_dir.iterdir()) == []
    assert {s.get(j.id).status for j in (fetched, unfetched, later)} == {"done"}
    assert s.purge(now=now + 10_000) == 0
    s.close()


def test_purge_unfetched_only_after_24_ttl(tmp_path):
    s = JobStore(tmp_path / "j.db", result_ttl=10.0)
    job = make(s)
    run_to_done(s, job.id)
    now = time.time()
    assert s.purge(now=now + 200) == 0
    assert s.purge(now=now + 241) == 1
    assert s.get(job.id).result_bytes is None
    assert list(s.result_dir.iterdir()) == []
    s.close()


# ---------------------------------------------------------------- queue order


def test_queue_order_and_positions_across_models(store):
    a1 = make(store, model="a")
    b1 = make(store, model="b")
    a2 = make(store, model="a")
    b2 = make(store, model="b")
    a3 = make(store, model="a")
    assert [j.id for j in store.queued("a")] == [a1.id, a2.id, a3.id]
    assert [j.id for j in store.queued("b")] == [b1.id, b2.id]
    assert [j.id for j in store.queued()] == [a1.id, b1.id, a2.id, b2.id, a3.id]
    assert [store.position(j.id) for j in (a1, a2, a3, b1, b2)] == [0, 1, 2, 0, 1]

    store.transition(a1.id, "running")
    assert store.position(a1.id) is None
    assert [store.position(j.id) for j in (a2, a3)] == [0, 1]
    assert [j.id for j in store.running()] == [a1.id]
    assert store.running("b") == []

    # A re-queued job goes back to its place at the front.
    store.transition(a1.id, "queued")
    assert [j.id for j in store.queued("a")] == [a1.id, a2.id, a3.id]
    assert store.position(a3.id) == 2

    store.transition(b1.id, "cancelled")
    assert store.position(b2.id) == 0
    assert store.position(b1.id) is None


# ---------------------------------------------------------------- recovery


def test_recover_requeues_once_then_interrupts(tmp_path):
    path = tmp_path / "j.db"
    s = JobStore(path)
    waiting_before = make(s)
    victim = make(s)
    waiting_after = make(s)
    done = make(s)
    run_to_done(s, done.id)
    s.transition(victim.id, "running", batch_id="b", rows=[0])
    s.close()  # the server "crashes" with `victim` running

    s = JobStore(path)
    out = s.recover()
    assert out == {"requeued": [victim.id], "interrupted": []}
    v = s.get(victim.id)
    assert v.status == "queued" and v.attempts == 1 and v.seq == victim.seq
    assert [j.id for j in s.queued()] == [waiting_before.id, victim.id, waiting_after.id]
    assert s.history(victim.id)[-1][0] == "queued"
    assert s.history(victim.id)[-1][2] == "re-queued after a server restart"
    assert s.get(done.id).status == "done" and s.result(done.id) == b"result"
    s.transition(victim.id, "running")
    s.close()  # and crashes again

    s = JobStore(path)
    out = s.recover(now=12345.0)
    assert out == {"requeued": [], "interrupted": [victim.id]}
    v = s.get(victim.id)
    assert v.status == "error" and v.error_type == "Interrupted"
    assert "server restarted" in v.error_message
    assert v.finished == 12345.0
    assert [j.id for j in s.queued()] == [waiting_before.id, waiting_after.id]
    assert s.recover() == {"requeued": [], "interrupted": []}
    s.close()


def test_recover_removes_orphan_files(tmp_path):
    s = JobStore(tmp_path / "j.db")
    done = make(s)
    run_to_done(s, done.id)
    crashed = make(s)
    s.transition(crashed.id, "running")
    (s.result_dir / f"{crashed.id}.result").write_bytes(b"half")  # renamed, never committed
    (s.result_dir / f".{crashed.id}.abc.tmp").write_bytes(b"partial")
    s.recover()
    assert sorted(p.name for p in s.result_dir.iterdir()) == [f"{done.id}.result"]
    s.close()


# ---------------------------------------------------------------- history


def test_history_records_every_transition(store):
    job = make(store)
    store.transition(job.id, "running", detail="batch b1")
    store.transition(job.id, "queued", detail="worker restarted")
    store.transition(job.id, "running", detail="batch b2")
    store.store_result(job.id, b"abc")
    h = store.history(job.id)
    assert [(s, d) for s, _, d in h] == [
        ("queued", "created"),
        ("running", "batch b1"),
        ("queued", "worker restarted"),
        ("running", "batch b2"),
        ("done", "result 3 bytes"),
    ]
    times = [t for _, t, _ in h]
    assert times == sorted(times)
    assert h[-1][1] == store.get(job.id).finished


# ---------------------------------------------------------------- concurrency


def test_concurrent_creates_and_transitions(store):
    ids: list[str] = []
    errors: list[BaseException] = []
    ids_lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(n):
        try:
            start.wait()
            for i in range(25):
                job = make(store, owner=f"user{n}", model=f"m{n % 2}", graph=f"{n}-{i}".encode())
                store.transition(job.id, "running", batch_id=f"b{n}-{i}", rows=[i])
                store.store_result(job.id, f"r{n}-{i}".encode())
                with ids_lock:
                    ids.append(job.id)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(ids) == 200 and len(set(ids)) == 200
    all_jobs = [j for n in range(8) for j in store.list_for(f"user{n}", limit=1000)]
    assert sorted(j.id for j in all_jobs) == sorted(ids)
    assert len({j.seq for j in all_jobs}) == 200
    for j in all_jobs:
        assert j.status == "done" and j.attempts == 1
        assert [s for s, _, _ in store.history(j.id)] == ["queued", "running", "done"]
        n, i = store.graph(j.id).decode().split("-")
        assert store.result(j.id) == f"r{n}-{i}".encode()
    assert store.queued() == [] and store.running() == []
    assert not [p for p in store.result_dir.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- idempotent submit, scheduler shape, schema 1


def test_one_job_per_owner_and_request_id(store):
    from nnsight_jupyter.server.jobs import DuplicateRequest

    job = make(store, request_id="req-7")
    with pytest.raises(DuplicateRequest) as again:
        make(store, request_id="req-7", graph=b"other")
    assert again.value.record.id == job.id
    assert store.find_request("alice", "req-7").id == job.id and store.find_request("bob", "req-7") is None
    other = make(store, owner="bob", request_id="req-7")      # another owner's same request id: its own job
    assert other.id != job.id
    assert make(store).id != make(store).id                   # no request id: no de-duplication
    assert len(store.list_for("alice")) == 3


def test_invokes_and_merge_key_are_kept_on_the_row(tmp_path):
    path = tmp_path / "jobs.db"
    with JobStore(path) as s:
        merged = make(s, invokes=3, merge_key='{"logits_to_keep": 1}')
        alone = make(s, kind="session", invokes=2, merge_key=None)
    with JobStore(path) as s:
        assert (s.get(merged.id).invokes, s.get(merged.id).merge_key) == (3, '{"logits_to_keep": 1}')
        assert (s.get(alone.id).invokes, s.get(alone.id).merge_key) == (2, None)


def test_a_schema_1_store_is_migrated(tmp_path):
    """A store written before invokes / merge_key / the request index: columns added (NULL: the host
    works them out from the graph), only the newest of duplicated request ids keeps it."""
    path = tmp_path / "jobs.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
            model TEXT NOT NULL, kind TEXT NOT NULL, graph_hash TEXT NOT NULL, request_id TEXT,
            status TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL, started REAL, finished REAL,
            batch_id TEXT, rows TEXT, error_type TEXT, error_message TEXT, attempts INTEGER NOT NULL DEFAULT 0,
            result_bytes INTEGER, fetched_at REAL);
        CREATE TABLE graphs (job_id TEXT PRIMARY KEY REFERENCES jobs (id), data BLOB NOT NULL);
        CREATE TABLE history (n INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL REFERENCES jobs (id),
            status TEXT NOT NULL, time REAL NOT NULL, detail TEXT NOT NULL DEFAULT '');
        INSERT INTO jobs (id, owner, model, kind, graph_hash, request_id, status, created, updated)
            VALUES ('old1', 'alice', 'm', 'trace', 'h', 'r', 'queued', 1, 1),
                   ('old2', 'alice', 'm', 'trace', 'h', 'r', 'queued', 2, 2);
        PRAGMA user_version = 1;
    """)
    db.close()
    with JobStore(path) as s:
        assert s.get("old1").invokes is None and s.get("old1").merge_key is None
        assert s.get("old1").request_id is None and s.get("old2").request_id == "r"
        assert s.find_request("alice", "r").id == "old2"
        assert make(s, invokes=2).invokes == 2
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2
