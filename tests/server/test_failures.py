"""Class 6 of docs/security.md: failures stay with their job, and the host always answers.

Host-level tests drive `Host` with a scripted worker (the honest level for what the host does with
a worker's report or exit); wire tests use the real Jupyter server of tests/server/conftest.py."""

from __future__ import annotations

import asyncio
import errno

import pytest

from nnsight_jupyter.server.host import Host, HostError
from nnsight_jupyter.server.jobs import JobStore
from nnsight_jupyter.server.launch import host_paths
from nnsight_jupyter.server.worker import ModelSpec, run_batch


def _layer(model, tracer):
    with tracer.invoke("the cat sat"):
        model.model.layers[1].output.save()


class _ScriptedWorker:
    """A worker the test answers for: it keeps what the host sends; `exit()` makes it die."""

    made: list["_ScriptedWorker"] = []

    def __init__(self, spec, on_message, on_exit):
        self.spec, self.on_message, self.on_exit, self.sent = spec, on_message, on_exit, []
        _ScriptedWorker.made.append(self)

    def start(self):
        self.on_message({"type": "ready", "info": {}})

    def send(self, message):
        self.sent.append(message)

    def kill(self):
        self.on_exit(-9)


class _Listener:
    def __init__(self):
        self.messages = []

    def __call__(self, header, payload):
        self.messages.append(header)


@pytest.fixture
def host(tmp_path):
    _ScriptedWorker.made.clear()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    h = Host(JobStore(tmp_path / "jobs.sqlite"), {"tiny": ModelSpec("tiny", "nowhere")},
             worker_factory=_ScriptedWorker, max_user_crashes=2, crash_window=600)
    h._hop = lambda fn, *args: fn(*args)          # the scripted worker calls back on the loop's thread
    h.start()
    h.run = loop.run_until_complete
    yield h
    h.stop()
    loop.close()
    asyncio.set_event_loop(None)


def _submit(host, owner, graph):
    record = host.run(host.submit(owner, "tiny", graph))
    listener = _Listener()
    host.subscribe(record.id, listener)
    return record.id, listener


def _until(host, condition, timeout=30.0):
    """Let the host's loop run (its batching window is a timer) until `condition()` holds."""
    deadline = host.loop.time() + timeout
    while not condition():
        assert host.loop.time() < deadline, "the condition never held"
        host.run(asyncio.sleep(0.01))


def _batch(host):
    return _ScriptedWorker.made[-1].sent[-1]


def _ok(payload=b"NJV1", logs=()):
    return {"ok": True, "payload": payload, "rows": [0, 1], "logs": [list(x) for x in logs], "missing": {}}


def _done(host, batch, reports):
    host._on_message("tiny", {"type": "done", "batch_id": batch["batch_id"], "jobs": reports})


def test_a_failing_result_write_fails_that_job_and_dispatch_goes_on(host, graph_of, monkeypatch):
    first, first_seen = _submit(host, "alice", graph_of(_layer))
    batch = _batch(host)
    second, second_seen = _submit(host, "bob", graph_of(_layer))          # queued behind the batch
    real = host.store.store_result

    def disk_full(job_id, *args, **kwargs):
        if job_id == first:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(job_id, *args, **kwargs)

    monkeypatch.setattr(host.store, "store_result", disk_full)
    _done(host, batch, {first: _ok()})
    record = host.store.get(first)
    assert record.status == "error" and record.error_type == "ResultWriteError"
    assert "No space left on device" in record.error_message and "could not write" in record.error_message
    assert first_seen.messages[-1]["status"] == "error"
    _done(host, _batch(host), {second: _ok()})                          # the next batch was dispatched
    assert host.store.get(second).status == "done" and second_seen.messages[-1]["type"] == "result"


def test_logs_too_big_for_a_frame_fail_that_job_and_not_its_batch(host, graph_of):
    # With no log limit in the worker, 2 MB of logs cannot travel in a result header (1 MiB).
    first, _ = _submit(host, "carol", graph_of(_layer))                # runs now; the next two wait
    alice, alice_seen = _submit(host, "alice", graph_of(_layer))
    bob, bob_seen = _submit(host, "bob", graph_of(_layer))
    _done(host, _batch(host), {first: _ok()})
    batch = _batch(host)
    assert {job["job_id"] for job in batch["jobs"]} == {alice, bob}
    _done(host, batch, {alice: _ok(logs=[("x.py:1", "y" * 2_000_000)]), bob: _ok()})
    record = host.store.get(alice)
    assert record.status == "error" and record.error_type == "ResourceLimitError"
    assert "over the protocol's limit of 1048576" in record.error_message
    assert host.store.get(bob).status == "done" and bob_seen.messages[-1]["type"] == "result"
    third, _ = _submit(host, "carol", graph_of(_layer))
    _until(host, lambda: host.store.get(third).status == "running")   # nothing is left hanging


def test_worker_stops_count_against_their_owner_never_the_model(host, graph_of):
    job, seen = _submit(host, "mallory", graph_of(_layer))
    _ScriptedWorker.made[-1].on_exit(-11)        # the worker dies running mallory's job alone: re-queued once
    assert host.store.get(job).status == "running"
    _ScriptedWorker.made[-1].on_exit(-11)        # and again: the job fails, mallory has two strikes
    record = host.store.get(job)
    assert record.status == "error" and record.error_type == "WorkerRestarted" and "exit code -11" in record.error_message
    with pytest.raises(HostError) as info:
        host.run(host.submit("mallory", "tiny", graph_of(_layer)))
    assert info.value.code == "too_many_crashes" and info.value.error_type == "WorkerCrashError"
    assert "2 times in the last 600 s" in str(info.value) and "c.NNsightHost.max_user_crashes" in str(info.value)
    for index in range(6):               # six time-limit kills in a minute, all caused by jobs
        _submit(host, f"user{index}", graph_of(_layer))
        host._on_timeout("tiny", _batch(host)["batch_id"])
    assert host.models["tiny"].state == "ready"         # the model serves on
    bob, _ = _submit(host, "bob", graph_of(_layer))
    _done(host, _batch(host), {bob: _ok()})
    assert host.store.get(bob).status == "done"
    for _ in range(6):                   # six exits no job caused (idle): that is the model's own fault
        _ScriptedWorker.made[-1].on_exit(-11)
    assert host.models["tiny"].state == "failed" and "6 times in a minute" in host.models["tiny"].error


def test_a_damaged_job_store_is_moved_aside_and_the_host_starts(tmp_path):
    path = tmp_path / "jobs.sqlite"
    JobStore(path).close()
    path.write_bytes(b"this is not a database" * 100)
    store = JobStore(path)
    assert store.damaged and "was damaged" in store.damaged and "moved to" in store.damaged
    assert list(tmp_path.glob("jobs.sqlite.damaged-*"))
    host = Host(store, {}, worker_factory=_ScriptedWorker)
    assert "was damaged" in host.status()["message"]
    store.close()


def test_a_non_nnsight_exception_in_a_merged_batch_fails_only_its_job(graph_of, tiny_local, with_nodes,
                                                                      monkeypatch):
    # The merged forward pass raises something that is not an NNsightError and names no job (a bug
    # in a library, say): each job runs again alone, so only the one at fault fails.
    import nnsight_jupyter.execution.merge as merge

    def raises(graphs, target):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(merge, "execute_batch", raises)

    class Conn:
        def send(self, message):
            pass

    bad = with_nodes(graph_of(_layer), [("Tensor.reshape", (with_nodes.Prev(-1), 7, 7))])
    jobs = [{"job_id": "bad", "graph": bad, "solo": False}, {"job_id": "good", "graph": graph_of(_layer), "solo": False},
            {"job_id": "also", "graph": graph_of(_layer), "solo": False}]
    report = run_batch({"batch_id": "b", "jobs": jobs}, tiny_local._target, ModelSpec("tiny", "x"), Conn(), set())
    assert report["jobs"]["good"]["ok"] and report["jobs"]["also"]["ok"]
    assert not report["jobs"]["bad"]["ok"] and "evil.py:1" in report["jobs"]["bad"]["error"]["message"]


# ----------------------------------------------------------------------------- over the wire


def _job(client, graph, request_id=None):
    client.submit(graph, request_id=request_id)
    accepted = client.until(lambda m: m["type"] in ("accepted", "error"))
    assert accepted["type"] == "accepted", accepted
    return accepted["job_id"], client.until(lambda m: m.get("job_id") == accepted["job_id"] and (
        m["type"] in ("result", "error") or m.get("status") in ("error", "cancelled")))


def test_wire_a_value_the_codec_cannot_encode_fails_that_job_and_the_worker_lives(jupyter_host, graph_of,
                                                                                 with_nodes):
    pid = jupyter_host.get("nnsight/api/status")["models"]["tiny"]["worker_pid"]
    client = jupyter_host.socket("token-grace")
    _, failed = _job(client, with_nodes(graph_of(_layer), [("Tensor.to", (with_nodes.Prev(-1), "meta"))]))
    assert failed["status"] == "error" and failed["error"]["type"] == "GraphError"
    assert "meta device" in failed["error"]["message"]
    _, result = _job(client, graph_of(_layer))
    assert result["type"] == "result"
    assert jupyter_host.get("nnsight/api/status")["models"]["tiny"]["worker_pid"] == pid


def test_wire_a_damaged_result_file_gets_an_error_and_the_socket_stays_open(jupyter_host, graph_of):
    client = jupyter_host.socket("token-grace")
    job_id, result = _job(client, graph_of(_layer))
    assert result["type"] == "result"
    db_path = host_paths(jupyter_host.root)["db_path"]
    (db_path.parent / f"{db_path.name}.results" / f"{job_id}.result").write_bytes(b"NJM1\xff\xff\xff\x7f damaged")
    client.send({"type": "attach", "job_id": job_id})
    error = client.until(lambda m: m["type"] == "error")
    assert error["code"] == "result_damaged" and error["job_id"] == job_id and "run the job again" in error["error"]["message"]
    assert _job(client, graph_of(_layer))[1]["type"] == "result"        # same socket, still served


@pytest.mark.parametrize("request_id, shown", [({"a": 1}, "a dict"), (10**30, "a int"), ("x" * 10_000, "10000 characters")])
def test_wire_a_bad_request_id_gets_an_error_frame_and_the_socket_stays_open(jupyter_host, graph_of, request_id, shown):
    from nnsight_jupyter import protocol

    client = jupyter_host.socket("token-grace")
    client.ws.send(protocol.pack({"type": "submit", "request_id": request_id, "model": "tiny"}, graph_of(_layer)))
    error = client.until(lambda m: m["type"] == "error")
    assert error["code"] == "protocol" and shown in error["error"]["message"] and "at most 200" in error["error"]["message"]
    client.send({"type": "attach", "job_id": {"not": "a string"}})
    assert client.until(lambda m: m["type"] == "error")["code"] == "protocol"
    assert _job(client, graph_of(_layer))[1]["type"] == "result"


def test_wire_a_damaged_job_store_still_gives_a_host_that_says_why(make_host, graph_of):
    host = make_host(start=False)
    db_path = host_paths(host.root)["db_path"]
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db_path.write_bytes(b"garbage, not SQLite" * 200)
    host.start()
    status = host.get("nnsight/api/status")
    assert "was damaged" in status["message"] and "moved to" in status["message"]
    assert "was damaged" in (host.root / "server.log").read_text()
    client = host.socket("token-alice")
    assert _job(client, graph_of(_layer))[1]["type"] == "result"
