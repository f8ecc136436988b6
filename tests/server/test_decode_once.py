"""A graph is decoded and validated once, by the host: the worker runs the host's decoded graph."""

import torch

from nnsight_jupyter.graph.codec import decode_values
from nnsight_jupyter.server import worker
from nnsight_jupyter.server.host import Host
from nnsight_jupyter.server.jobs import JobStore


def _trace(model, tracer):
    with tracer.invoke("the cat sat on the mat"):
        model.model.layers[1].output.save()


def _generation(model, tracer):         # a generate job runs alone (execute), not merged
    with tracer.invoke("hello world"):
        model.lm_head.output[:, -1].save()


class _Pipe:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def test_the_worker_neither_decodes_nor_validates_a_graph_the_host_decoded(tmp_path, graph_of, tiny_local,
                                                                            monkeypatch):
    import importlib

    from nnsight_jupyter.execution import executor
    from nnsight_jupyter.execution.batching import LanguageTarget

    codec = importlib.import_module("nnsight_jupyter.graph.codec")
    validate = importlib.import_module("nnsight_jupyter.graph.validate")

    host = Host(JobStore(tmp_path / "jobs.sqlite"), {})
    graphs = {"a": graph_of(_trace), "b": graph_of(_generation, kind="generate", max_new_tokens=2)}
    jobs = []
    for job_id, data in graphs.items():
        kind, invokes, key, prepared = host._inspect(data)       # the host's one decode
        assert prepared is not None
        jobs.append({"job_id": job_id, "graph": b"", "prepared": prepared, "solo": False})
    host.stop()

    def again(*args, **kwargs):
        raise AssertionError("the worker decoded or validated a graph a second time")

    monkeypatch.setattr(codec, "decode", again)
    monkeypatch.setattr(validate, "validate", again)
    monkeypatch.setattr(executor, "validate", again)
    target = LanguageTarget(tiny_local._module, tiny_local.tokenizer)
    target.record_order(layouts=True)
    report = worker.run_batch({"type": "batch", "batch_id": "b1", "jobs": jobs}, target,
                              worker.ModelSpec("tiny", "unused"), _Pipe(), set())
    assert all(job["ok"] for job in report["jobs"].values()), report
    with tiny_local.trace("the cat sat on the mat"):
        h = tiny_local.model.layers[1].output.save()
    (value,) = decode_values(report["jobs"]["a"]["payload"]).values()
    assert torch.equal(value, h.value)


def test_a_graph_over_the_prepared_limit_is_sent_as_bytes_and_decoded_by_the_worker(graph_of, tiny_local,
                                                                                       monkeypatch):
    data = graph_of(_trace)
    monkeypatch.setattr(worker, "PREPARED_MAX_BYTES", len(data) - 1)
    from nnsight_jupyter.graph.codec import decode

    assert worker.prepare(decode(data), len(data)) is None
    graph = worker.graph_for({"job_id": "a", "graph": data, "prepared": None})
    assert len(graph.nodes) == len(decode(data).nodes)


def test_a_prepared_graph_is_stamped_validated_and_equal_to_the_decoded_one(graph_of):
    from nnsight_jupyter.graph.codec import decode
    from nnsight_jupyter.graph.validate import is_validated

    data = graph_of(_trace)
    graph = worker.graph_for({"job_id": "a", "graph": b"", "prepared": worker.prepare(decode(data), len(data))})
    assert is_validated(graph) and graph == decode(data)
