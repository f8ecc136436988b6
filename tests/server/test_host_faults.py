"""Faults lose nothing: time limits, a worker killed mid-job, a server restarted with jobs queued."""

import os
import signal

import pytest
import torch

from nnsight_jupyter.graph.codec import decode_values


def _generation(n):
    def body(model, tracer):
        with tracer.invoke("hello"):
            tracer.result.save()
    return body, n


def _read_layer(prompt):
    def body(model, tracer):
        with tracer.invoke(prompt):
            model.model.layers[1].output.save()
    return body


def _kill_worker(host):
    """SIGKILL the model's worker process (its pid from the host's status; never 0 or ourselves)."""
    pid = host.get("nnsight/api/status")["models"]["tiny"]["worker_pid"]
    assert isinstance(pid, int) and pid > 1 and pid != os.getpid(), pid
    os.kill(pid, signal.SIGKILL)


def _state(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(line for line in status if line.startswith("State:"))
    except OSError:
        return "gone"


def _wait_status(client, job_id, *statuses, timeout=120):
    return client.until(lambda m: m.get("job_id") == job_id and (
        m["type"] == "result" or m.get("status") in statuses), timeout=timeout)


def test_time_limit_stops_the_job_and_the_host_goes_on(make_host, graph_of):
    host = make_host(job_timeout=1.5)
    client = host.socket("token-alice")
    body, n = _generation(20000)
    client.submit(graph_of(body, kind="generate", max_new_tokens=n))
    job_id = client.until(lambda m: m["type"] == "accepted")["job_id"]
    message = _wait_status(client, job_id, "error", "done")
    assert message["status"] == "error" and message["error"]["type"] == "TimeLimitExceeded"
    assert "1.5 s" in message["error"]["message"]
    host.wait_ready()
    client.submit(graph_of(_read_layer("the cat")))
    next_job = client.until(lambda m: m["type"] == "accepted")["job_id"]
    assert _wait_status(client, next_job, "error")["type"] == "result"


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_worker_killed_mid_job_is_requeued_once(make_host, graph_of, tiny_local, backend, backend_config):
    """A local worker process, or the Ray Serve replica running the job (backend "ray"), killed mid-job."""
    host = make_host(**backend_config(backend))
    client = host.socket("token-bob")
    body, n = _generation(400)
    client.submit(graph_of(body, kind="generate", max_new_tokens=n))
    job_id = client.until(lambda m: m["type"] == "accepted")["job_id"]
    client.until(lambda m: m.get("job_id") == job_id and m.get("status") == "running")
    client.submit(graph_of(_read_layer("the cat sat")))   # queued behind it: keeps its place
    queued_id = client.until(lambda m: m["type"] == "accepted")["job_id"]
    _kill_worker(host)
    requeued = _wait_status(client, job_id, "queued", "error")
    assert requeued["status"] == "queued"
    result = _wait_status(client, job_id, "error", timeout=180)
    assert result["type"] == "result"
    with tiny_local.generate("hello", max_new_tokens=n) as tracer:
        local = tracer.result.save()
    assert torch.equal(next(iter(decode_values(result["_payload"]).values())), local.value)
    assert _wait_status(client, queued_id, "error")["type"] == "result"
    history = host.get(f"nnsight/api/jobs/{job_id}", token="token-bob")["history"]
    assert [h[0] for h in history] == ["queued", "running", "queued", "running", "done"]
    assert "worker stopped" in history[2][2]


def test_worker_killed_twice_fails_the_job_clearly(make_host, graph_of):
    host = make_host()
    client = host.socket("token-bob")
    body, n = _generation(100000)
    client.submit(graph_of(body, kind="generate", max_new_tokens=n))
    job_id = client.until(lambda m: m["type"] == "accepted")["job_id"]
    for _ in range(2):
        client.until(lambda m: m.get("job_id") == job_id and m.get("status") == "running", timeout=120)
        _kill_worker(host)
    failed = _wait_status(client, job_id, "error")
    assert failed["error"]["type"] == "WorkerRestarted" and "tried 2 times" in failed["error"]["message"]


def test_server_restart_with_jobs_queued(make_host, graph_of, tiny_local, wait_until):
    host = make_host()
    client = host.socket("token-carol")
    body, n = _generation(100000)
    client.submit(graph_of(body, kind="generate", max_new_tokens=n))
    blocker = client.until(lambda m: m["type"] == "accepted")["job_id"]
    client.until(lambda m: m.get("job_id") == blocker and m.get("status") == "running")
    prompts = ["the cat", "hello world", "a dog"]
    queued = []
    for prompt in prompts:
        client.submit(graph_of(_read_layer(prompt)))
        queued.append(client.until(lambda m: m["type"] == "accepted")["job_id"])
    client.send({"type": "cancel", "job_id": blocker})
    _wait_status(client, blocker, "cancelled")
    worker = host.get("nnsight/api/status")["models"]["tiny"]["worker_pid"]
    host.stop(signal.SIGKILL, end_workers=False)      # a crash: no clean shutdown
    wait_until(lambda: not os.path.exists(f"/proc/{worker}") or "zombie" in _state(worker), 10,
               "the worker stopping by itself once its server is gone")
    host.start()                              # same job store
    again = host.socket("token-carol")
    for job_id, prompt in zip(queued, prompts):
        again.send({"type": "attach", "job_id": job_id})
        result = _wait_status(again, job_id, "error")
        assert result["type"] == "result"
        with tiny_local.trace(prompt):
            h = tiny_local.model.layers[1].output.save()
        # The three queued jobs now share one forward pass: equal to solo runs within float tolerance.
        torch.testing.assert_close(next(iter(decode_values(result["_payload"]).values())), h.value,
                                   atol=1e-5, rtol=1e-4)


def test_result_over_the_size_limit_fails_that_job_only(make_host, graph_of):
    host = make_host(max_result_bytes=20_000)
    client = host.socket("token-frank")

    def big(model, tracer):
        with tracer.invoke("the cat sat on the mat"):
            model.model.layers[0].output.expand(64, -1, -1).save()   # 64 x 6 x 64 floats: over the limit
            model.lm_head.output.save()

    client.submit(graph_of(big))
    job_id = client.until(lambda m: m["type"] == "accepted")["job_id"]
    failed = _wait_status(client, job_id, "error")
    assert failed["error"]["type"] == "ResultTooLarge" and "20000" in failed["error"]["message"]
    client.submit(graph_of(_read_layer("hello")))
    small = client.until(lambda m: m["type"] == "accepted")["job_id"]
    assert _wait_status(client, small, "error")["type"] == "result"


def _invokes(prompts, **kwargs):
    def body(model, tracer):
        for prompt in prompts:
            with tracer.invoke(prompt, **kwargs):
                model.model.layers[1].output.save()
    return body


def test_a_restarted_host_keeps_each_jobs_invoke_count_and_merge_key(make_host, graph_of):
    """The row keeps what the scheduler needs: after a crash, two 3-invoke jobs do not share a pass
    over max_batch_invokes=4 (counted as 1 invoke each, they would), and a job whose invokes pass
    other keyword arguments does not join them (with its key lost, it would)."""
    host = make_host(max_batch_invokes=4)
    client = host.socket("token-dave")
    body, n = _generation(100000)
    client.submit(graph_of(body, kind="generate", max_new_tokens=n))
    blocker = client.until(lambda m: m["type"] == "accepted")["job_id"]
    client.until(lambda m: m.get("job_id") == blocker and m.get("status") == "running")
    graphs = [graph_of(_invokes(["the cat", "a dog", "hello"])), graph_of(_invokes(["the mat", "a cat", "world"])),
              graph_of(_invokes(["the city"], logits_to_keep=1))]
    queued = []
    for graph in graphs:
        client.submit(graph)
        queued.append(client.until(lambda m: m["type"] == "accepted")["job_id"])
    rows = {job["id"]: job for job in host.get("nnsight/api/jobs", token="token-dave")["jobs"]}
    assert [rows[j]["invokes"] for j in queued] == [3, 3, 1]
    assert rows[queued[0]]["merge_key"] == rows[queued[1]]["merge_key"] != rows[queued[2]]["merge_key"]
    host.stop(signal.SIGKILL)                 # a crash: the blocker is re-queued, the three stay queued
    host.start()
    again = host.socket("token-dave")
    again.send({"type": "cancel", "job_id": blocker})
    passes = []
    for job_id in queued:
        again.send({"type": "attach", "job_id": job_id})
        result = _wait_status(again, job_id, "error")
        assert result["type"] == "result", result
        passes.append(result["batch_id"].split(".")[0])
    assert len(set(passes)) == 3, passes      # three forward passes of their own
