"""A hosted model sharded with accelerate (`device_map` with CPU and disk offload, `max_memory`):
remote results equal the unsharded local model's within 1e-5, on both backends."""

import pytest
import torch

from nnsight_jupyter.graph.codec import decode_values

OFFLOAD_MAP = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
               "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "disk",
               "model.rotary_emb": "cpu", "lm_head": "disk"}


def _patch(model, tracer):
    with tracer.invoke("the cat sat on the mat"):
        clean = model.model.layers[1].output[:, -1]
        first = model.model.layers[1].output.save()
    with tracer.invoke("hello"):
        model.model.layers[3].output[:, -1] = clean
        logits = model.lm_head.output.save()
    return [first, logits]


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_sharded_hosted_model_equals_the_unsharded_one(make_host, backend, backend_config, tiny_model_dir,
                                                         tmp_path, graph_of, tiny_local):
    host = make_host({"tiny": {"source": str(tiny_model_dir), "threads": 1, "device_map": OFFLOAD_MAP,
                               "offload_dir": str(tmp_path / "offload")}}, **backend_config(backend))
    client = host.socket("token-alice")
    client.submit(graph_of(_patch))
    job = client.until(lambda m: m["type"] == "accepted")["job_id"]
    result = client.until(lambda m: m.get("job_id") == job and (m["type"] == "result" or m.get("status") == "error"))
    assert result["type"] == "result", result
    values = decode_values(result["_payload"])
    remote = [values[k] for k in sorted(values, key=int)]
    with tiny_local.trace() as tracer:
        saves = _patch(tiny_local, tracer)
    local = [v.value for v in saves]
    assert len(remote) == len(local) == 2
    for got, want in zip(remote, local):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert any((tmp_path / "offload").iterdir())          # accelerate wrote the offloaded weights there

