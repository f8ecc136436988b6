"""A queued job's row is all a restarted host needs to queue it again as it was: its invoke count
and merge key (schema 1 rows, which lack them, are worked out from their graphs once)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from nnsight_jupyter.server.host import Host
from nnsight_jupyter.server.jobs import JobStore
from nnsight_jupyter.server.worker import ModelSpec


class _NeverReady:
    """A worker that never finishes loading: jobs stay queued."""

    def __init__(self, spec, on_message, on_exit):
        self.spec = spec

    def start(self):
        pass

    def send(self, message):
        raise AssertionError("nothing is dispatched to a worker that is not ready")

    def kill(self):
        pass


def _three(model, tracer):
    for prompt in ("the cat", "a dog", "hello"):
        with tracer.invoke(prompt, logits_to_keep=1):
            model.model.layers[1].output.save()


def _one(model, tracer):
    with tracer.invoke("the mat"):
        model.model.layers[1].output.save()


@pytest.fixture
def run_host(tmp_path):
    """run_host(fn) -> fn(host) run on a started host over the same job store each time."""
    def run(fn):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        host = Host(JobStore(tmp_path / "jobs.sqlite"), {"tiny": ModelSpec("tiny", "nowhere")},
                    worker_factory=_NeverReady)
        try:
            host.start()
            return loop.run_until_complete(fn(host)) if asyncio.iscoroutinefunction(fn) else fn(host)
        finally:
            host.stop()
            loop.close()
            asyncio.set_event_loop(None)
    return run


def _shapes(host):
    return [(p.job_id, p.invokes, p.mergeable, p.key) for p in host.models["tiny"].queue]


@pytest.mark.parametrize("schema_1", [False, True])
def test_a_restarted_host_queues_jobs_with_their_invokes_and_merge_key(run_host, graph_of, tmp_path, schema_1):
    async def submit(host):
        for body in (_three, _one):
            await host.submit("alice", "tiny", graph_of(body))
        return _shapes(host)

    before = run_host(submit)
    assert [shape[1:] for shape in before] == [(3, True, before[0][3]), (1, True, before[1][3])]
    assert before[0][3] != before[1][3]                    # logits_to_keep=1 vs no keyword arguments
    if schema_1:                                           # rows written before the columns existed
        db = sqlite3.connect(tmp_path / "jobs.sqlite")
        db.execute("UPDATE jobs SET invokes = NULL, merge_key = NULL")
        db.commit()
        db.close()
    assert run_host(_shapes) == before
