"""The model host on a real Jupyter server: remote equals local, co-tenancy, concurrency, re-attach, cancel."""

import threading

import torch

from nnsight_jupyter.graph.codec import decode_values

PROMPTS = ["the cat sat on the mat", "hello world", "when mary and john went to the store",
           "the eiffel tower is in the city of", "a dog", "john gave a book to mary", "the city", "hello"]


def _save_layer(prompt, layer=1):
    def body(model, tracer):
        with tracer.invoke(prompt):
            model.model.layers[layer].output.save()
            model.lm_head.output[:, -1].save()
    return body


def _local(tiny_local, prompt, layer=1):
    with tiny_local.trace(prompt):
        h = tiny_local.model.layers[layer].output.save()
        logits = tiny_local.lm_head.output[:, -1].save()
    return [h.value, logits.value]


def _values(message):
    values = decode_values(message["_payload"])
    return [values[k] for k in sorted(values, key=int)]


def _run(client, graph, request_id=None):
    client.submit(graph, request_id=request_id)
    accepted = client.until(lambda m: m["type"] in ("accepted", "error"))
    assert accepted["type"] == "accepted", accepted
    result = client.until(lambda m: m.get("job_id") == accepted["job_id"] and (
        m["type"] == "result" or m.get("status") in ("error", "cancelled")))
    return accepted["job_id"], result


def test_remote_job_equals_local_bit_for_bit(jupyter_host, graph_of, tiny_local):
    client = jupyter_host.socket("token-alice")
    job_id, result = _run(client, graph_of(_save_layer(PROMPTS[0])))
    assert result["type"] == "result" and result["rows"] == [0, 1]
    for remote, local in zip(_values(result), _local(tiny_local, PROMPTS[0])):
        assert torch.equal(remote, local)
    job = jupyter_host.get(f"nnsight/api/jobs/{job_id}", token="token-alice")
    assert job["status"] == "done" and job["batch_id"] == result["batch_id"]
    assert [h[0] for h in job["history"]] == ["queued", "running", "done"]


def test_eight_users_at_once_share_at_most_two_forward_passes(jupyter_host, graph_of, tiny_local, keep_worker_busy):
    users = [f"token-{n}" for n in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")]
    clients = [jupyter_host.socket(token) for token in users]
    graphs = [graph_of(_save_layer(p)) for p in PROMPTS]

    busy, blocker = keep_worker_busy(jupyter_host, "token-alice")     # the eight arrive "at once"
    for client, graph in zip(clients, graphs):
        client.submit(graph)
    results = [client.until(lambda m: m["type"] in ("result", "error") or m.get("status") == "error")
               for client in clients]
    assert all(r["type"] == "result" for r in results), results
    assert len({r["batch_id"] for r in results}) <= 2
    merged = [r for r in results if sum(x["batch_id"] == r["batch_id"] for x in results) > 1]
    assert merged, "no two users shared a forward pass"
    for prompt, result in zip(PROMPTS, results):
        for remote, local in zip(_values(result), _local(tiny_local, prompt)):
            torch.testing.assert_close(remote, local, atol=1e-5, rtol=1e-4)
    for client in clients:
        client.close()
    busy.until(lambda m: m.get("job_id") == blocker and m["type"] == "result")


def test_eight_clients_times_25_jobs_none_lost_none_mixed(jupyter_host, graph_of, tiny_local):
    users = [f"token-{n}" for n in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")]
    expected = {p: _local(tiny_local, p, layer=2) for p in PROMPTS}
    graphs = {p: graph_of(_save_layer(p, layer=2)) for p in PROMPTS}
    failures, done = [], []

    def user(index, token):
        client = jupyter_host.socket(token)
        prompts, jobs = {}, {}
        for j in range(25):                       # pipelined: all 25 in flight at once
            prompts[f"{index}-{j}"] = PROMPTS[(index + j) % len(PROMPTS)]
            client.submit(graphs[prompts[f"{index}-{j}"]], request_id=f"{index}-{j}")
        finished = 0
        while finished < 25:
            message = client.recv(timeout=120)
            if message["type"] == "accepted":
                jobs[message["job_id"]] = prompts[message["request_id"]]
            elif message["type"] == "error" or message.get("status") in ("error", "cancelled"):
                failures.append(message)
                finished += 1
            elif message["type"] == "result":
                for remote, local in zip(_values(message), expected[jobs[message["job_id"]]]):
                    if not torch.allclose(remote, local, atol=1e-5, rtol=1e-4):
                        failures.append(("mixed up", message["job_id"]))
                done.append(message["job_id"])
                finished += 1
        client.close()

    threads = [threading.Thread(target=user, args=(i, t)) for i, t in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert failures == []
    assert len(done) == len(set(done)) == 200
    status = jupyter_host.get("nnsight/api/status")
    assert status["models"]["tiny"]["queued"] == 0


def test_disconnect_and_reattach(jupyter_host, graph_of, tiny_local, wait_until):
    client = jupyter_host.socket("token-bob")
    client.submit(graph_of(_save_layer(PROMPTS[3])))
    job_id = client.until(lambda m: m["type"] == "accepted")["job_id"]
    client.close()                         # gone before the result: the job goes on
    wait_until(lambda: jupyter_host.get(f"nnsight/api/jobs/{job_id}", token="token-bob")["status"] == "done",
               60, "the job finishing with nobody listening")
    again = jupyter_host.socket("token-bob")
    again.send({"type": "attach", "job_id": job_id})
    result = again.until(lambda m: m["type"] == "result")
    for remote, local in zip(_values(result), _local(tiny_local, PROMPTS[3])):
        assert torch.equal(remote, local)
    # Another user can neither attach nor cancel it; the answer is the same as for a made-up id.
    thief = jupyter_host.socket("token-carol")
    thief.send({"type": "attach", "job_id": job_id})
    stolen = thief.until(lambda m: m["type"] == "error")
    thief.send({"type": "cancel", "job_id": "0" * 32})
    forged = thief.until(lambda m: m["type"] == "error")
    assert stolen["code"] == forged["code"] == "not_found"
    assert stolen["error"]["message"].replace(job_id, "X") == forged["error"]["message"].replace("0" * 32, "X")


def test_cancel_queued_and_running(jupyter_host, graph_of):
    client = jupyter_host.socket("token-dave")

    def long_generation(model, tracer):
        with tracer.invoke("hello"):
            tracer.result.save()

    client.submit(graph_of(long_generation, kind="generate", max_new_tokens=3000))
    running = client.until(lambda m: m["type"] == "accepted")["job_id"]
    client.until(lambda m: m.get("job_id") == running and m.get("status") == "running")
    client.submit(graph_of(_save_layer("hello")))
    queued = client.until(lambda m: m["type"] == "accepted")["job_id"]
    client.send({"type": "cancel", "job_id": queued})
    assert client.until(lambda m: m.get("job_id") == queued and m["type"] == "status"
                        and m["status"] != "queued")["status"] == "cancelled"
    client.send({"type": "cancel", "job_id": running})
    assert client.until(lambda m: m.get("job_id") == running and m.get("status") == "cancelled")
    # The host goes on serving.
    job_id, result = _run(client, graph_of(_save_layer("hello")))
    assert result["type"] == "result"
    client.send({"type": "cancel", "job_id": job_id})
    assert client.until(lambda m: m["type"] == "error")["code"] == "finished"


def test_results_are_kept_until_fetched_plus_ttl(make_host, graph_of, wait_until):
    host = make_host(result_ttl=1)
    client = host.socket("token-erin")
    job_id, result = _run(client, graph_of(_save_layer("hello")))
    assert result["type"] == "result"
    client.send({"type": "attach", "job_id": job_id})          # fetched once already: still there
    assert client.until(lambda m: m.get("job_id") == job_id)["type"] == "result"
    wait_until(lambda: host.get(f"nnsight/api/jobs/{job_id}", token="token-erin")["result_bytes"] is None,
               30, "the fetched result being purged after its TTL")
    client.send({"type": "attach", "job_id": job_id})
    expired = client.until(lambda m: m.get("job_id") == job_id)
    assert expired["type"] == "error" and "expired" in expired["error"]["message"]


def test_a_resent_submit_is_the_same_job_even_after_a_reconnect(jupyter_host, graph_of, tiny_local):
    graph = graph_of(_save_layer(PROMPTS[1]))
    first = jupyter_host.socket("token-erin")
    job_id, result = _run(first, graph, request_id="resend-1")
    first.close()                                         # the socket drops; the client resends
    again = jupyter_host.socket("token-erin")
    resent, repeat = _run(again, graph, request_id="resend-1")
    assert resent == job_id and repeat["type"] == "result"
    for remote, local in zip(_values(repeat), _local(tiny_local, PROMPTS[1])):
        assert torch.equal(remote, local)
    jobs = jupyter_host.get("nnsight/api/jobs", token="token-erin")["jobs"]
    assert [j["id"] for j in jobs if j["request_id"] == "resend-1"] == [job_id]
    other = jupyter_host.socket("token-frank")            # another user's same request id: another job
    theirs, _ = _run(other, graph, request_id="resend-1")
    assert theirs != job_id


def test_a_request_id_reused_for_another_graph_is_refused(jupyter_host, graph_of):
    client = jupyter_host.socket("token-erin")
    job_id, _ = _run(client, graph_of(_save_layer(PROMPTS[2])), request_id="reused-1")
    client.submit(graph_of(_save_layer(PROMPTS[3])), request_id="reused-1")
    refused = client.until(lambda m: m["type"] == "error")
    assert refused["code"] == "protocol" and refused["request_id"] == "reused-1"
    assert "already used for another graph" in refused["error"]["message"] and job_id in refused["error"]["message"]
