"""On a real Jupyter server: two users' merged jobs see only their own rows, and a job that reaches
what every row shares (the KV cache, the attention mask) runs in a forward pass of its own."""

import torch

from nnsight_jupyter.graph.codec import decode_values


def _values(message):
    values = decode_values(message["_payload"])
    return [values[k] for k in sorted(values, key=int)]


def _reader(prompt):
    def body(model, tracer):
        with tracer.invoke(prompt):
            return [model.model.layers[0].input.save(), model.lm_head.output.save()]
    return body


def _cache_spy(model, tracer):
    with tracer.invoke("hi"):
        return [model.output.cache.layers[0].values.save()]


def _mask_spy(model, tracer):
    with tracer.invoke(["the cat", "hello world and the big red dog"]):
        return [model.model.layers[0].self_attn.inputs[1]["attention_mask"].save()]


def _local(model, body):
    with model.trace() as tracer:
        saved = body(model, tracer)
    return [s.value for s in saved]


def test_two_users_merged_jobs_cannot_see_each_others_rows(jupyter_host, graph_of, tiny_local, keep_worker_busy):
    busy, blocker = keep_worker_busy(jupyter_host, "token-heidi")    # the four jobs below queue up together
    jobs = {"token-alice": _reader("the cat sat on the mat"), "token-bob": _reader("hello world"),
            "token-carol": _cache_spy, "token-dave": _mask_spy}
    clients = {token: jupyter_host.socket(token) for token in jobs}
    for token, body in jobs.items():
        clients[token].submit(graph_of(body))
    results = {token: client.until(lambda m: m["type"] == "result" or m.get("status") == "error")
               for token, client in clients.items()}
    assert all(r["type"] == "result" for r in results.values()), results
    alice, bob, carol, dave = (results[t] for t in jobs)
    # Alice and Bob shared one forward pass, each in rows of their own...
    assert alice["batch_id"] == bob["batch_id"]
    assert alice["rows"] != bob["rows"]
    # ...and the two spies ran in passes of their own (same dispatch, another forward pass).
    assert carol["batch_id"] not in (alice["batch_id"], dave["batch_id"])
    assert dave["batch_id"] != alice["batch_id"]
    assert carol["rows"] == [0, 1] and dave["rows"] == [0, 2]
    for token, result in results.items():
        for remote, local in zip(_values(result), _local(tiny_local, jobs[token])):
            torch.testing.assert_close(remote, local, atol=1e-5, rtol=1e-4)
    cache_values = _values(carol)[0]
    assert cache_values.shape[0] == 1 and cache_values.shape[2] == 1     # its own row, its own token
    mask = _values(dave)[0]
    assert mask.shape[-1] == mask.shape[-2] == 7                          # its own prompts' length
    busy.until(lambda m: m.get("job_id") == blocker and m["type"] == "result")
    for client in [busy, *clients.values()]:
        client.close()


def test_scheduler_merges_only_jobs_whose_invoke_keywords_agree():
    from nnsight_jupyter.server.scheduler import Pending, next_batch

    keep = '{"logits_to_keep": 1}'
    queue = [Pending("a1", "a", 0, True, 1, key=keep), Pending("b1", "b", 1, True, 1),
             Pending("c1", "c", 2, True, 1, key=keep), Pending("d1", "d", 3, True, 1)]
    assert [j.job_id for j in next_batch(queue, [])] == ["a1", "c1"]
    assert [j.job_id for j in next_batch(queue[1:2] + queue[3:], [])] == ["b1", "d1"]
