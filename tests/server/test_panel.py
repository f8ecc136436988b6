"""The JupyterLab panel's REST view (`nnsight/api/panel`, `models/<name>/tree`) on a real host."""

import json
import urllib.error

import pytest

from nnsight_jupyter.server.jobs import JobRecord
from nnsight_jupyter.server.panel import wall_time


def _panel(host, token):
    return json.loads(host.request("nnsight/api/panel", token=token).read())


def _short(model, tracer):
    with tracer.invoke("the cat sat"):
        model.lm_head.output.save()


def test_models_show_state_dtype_placement_parameters_and_tree(jupyter_host, tiny_local):
    view = _panel(jupyter_host, "token-alice")
    assert view["user"] == "alice"
    tiny = view["models"]["tiny"]
    assert (tiny["state"], tiny["dtype"], tiny["placement"]) == ("ready", "float32", {"": "cpu"})
    assert tiny["parameters"] == sum(p.numel() for p in tiny_local._module.parameters())
    tree = json.loads(jupyter_host.request("nnsight/api/models/tiny/tree", token="token-alice").read())
    assert "tokenizer" not in tree
    layers = tree["module_tree"]["children"]["model"]["children"]["layers"]["children"]
    assert sorted(layers, key=int) == [str(i) for i in range(len(tiny_local._module.model.layers))]
    with pytest.raises(urllib.error.HTTPError) as missing:
        jupyter_host.request("nnsight/api/models/nope/tree", token="token-alice")
    assert missing.value.code == 404


def test_queue_and_own_jobs_then_cancel_by_rest(jupyter_host, keep_worker_busy, graph_of):
    busy, blocker = keep_worker_busy(jupyter_host, "token-alice")
    alice, bob = jupyter_host.socket("token-alice"), jupyter_host.socket("token-bob")
    try:
        alice.submit(graph_of(_short))
        mine = alice.until(lambda m: m["type"] == "accepted")["job_id"]
        bob.submit(graph_of(_short))
        theirs = bob.until(lambda m: m["type"] == "accepted")["job_id"]

        view = _panel(jupyter_host, "token-alice")
        jobs = {j["job_id"]: j for j in view["jobs"]}
        assert theirs not in jobs
        assert jobs[blocker]["status"] == "running" and jobs[blocker]["batch_id"]
        assert jobs[blocker]["wall_time"] is not None and jobs[mine]["wall_time"] is None
        assert (jobs[mine]["status"], jobs[mine]["position"]) == ("queued", 0)
        queue = [(q["status"], q["mine"], q["job_id"]) for q in view["queue"] if q["model"] == "tiny"]
        assert queue == [("running", True, blocker), ("queued", True, mine), ("queued", False, None)]
        assert view["models"]["tiny"]["queued"] == 2 and view["models"]["tiny"]["running"] == 1

        # The panel's cancel button: DELETE jobs/<id>, as the owner (bob cannot).
        with pytest.raises(urllib.error.HTTPError) as refused:
            jupyter_host.request(f"nnsight/api/jobs/{blocker}", method="DELETE", token="token-bob")
        assert refused.value.code == 404
        jupyter_host.request(f"nnsight/api/jobs/{blocker}", method="DELETE", token="token-alice")
        busy.until(lambda m: m.get("job_id") == blocker and m.get("status") == "cancelled")
        alice.until(lambda m: m.get("job_id") == mine and m["type"] == "result")
        bob.until(lambda m: m.get("job_id") == theirs and m["type"] == "result")

        jobs = {j["job_id"]: j for j in _panel(jupyter_host, "token-alice")["jobs"]}
        assert jobs[blocker]["status"] == "cancelled" and jobs[blocker]["finished"] is not None
        assert jobs[mine]["status"] == "done" and jobs[mine]["rows"] is not None and jobs[mine]["wall_time"] >= 0
    finally:
        for client in (busy, alice, bob):
            client.close()


def _record(started, finished):
    return JobRecord(id="a", owner="o", model="m", kind="trace", graph_hash="h", request_id=None, status="done",
                     created=0.0, updated=0.0, started=started, finished=finished, batch_id=None, rows=None,
                     error_type=None, error_message=None, attempts=1, seq=1, result_bytes=None, fetched_at=None)


def test_wall_time_runs_from_start_to_finish_or_now():
    assert wall_time(_record(None, None), now=10.0) is None
    assert wall_time(_record(2.0, 5.5), now=10.0) == 3.5
    assert wall_time(_record(2.0, None), now=10.0) == 8.0
