"""tracer.cache() on a model host: the same entries as the local run, for trace, generate and sessions."""

import pytest
import torch

PROMPT = "the cat sat on the mat"


@pytest.fixture
def model(connect_as):
    return connect_as("token-grace").model("tiny")


def test_remote_cache_of_every_module_equals_local(model, tiny_local):
    with model.trace(PROMPT, remote=True) as tracer:
        remote = tracer.cache(include_inputs=True)
        model.model.layers[0].output[:, 0] = 0
    with tiny_local.trace(PROMPT) as tracer:
        local = tracer.cache(include_inputs=True)
        tiny_local.model.layers[0].output[:, 0] = 0
    assert list(remote) == list(local) and "model.layers" not in remote
    for path in local:
        if isinstance(local[path].output, torch.Tensor):
            assert torch.equal(remote[path].output, local[path].output), path
    assert remote.model.layers[0].output[:, 0].abs().sum() == 0
    assert torch.equal(remote.model.layers[2].input, local.model.layers[2].input)
    with pytest.raises(IndexError):
        remote.model.layers[99]


def test_remote_cache_in_generation_and_session(model, tiny_local):
    with model.generate(PROMPT, max_new_tokens=3) as tracer:
        remote = tracer.cache(modules=[model.model.layers[1]])
    with tiny_local.generate(PROMPT, max_new_tokens=3) as tracer:
        local = tracer.cache(modules=[tiny_local.model.layers[1]])
    assert len(remote["model.layers.1"]) == 3
    for a, b in zip(remote["model.layers.1"].output, local["model.layers.1"].output):
        assert torch.equal(a, b)
    with model.session():
        with model.trace("hello world"):
            clean = model.model.layers[1].output
        with model.trace("hello world") as tracer:
            model.model.layers[1].output[:] = clean * 2
            cached = tracer.cache(modules=["model.layers.1"])
    assert cached["model.layers.1"].output.shape == (1, 2, 64)
    assert torch.equal(cached["model.layers.1"].output, local_double(tiny_local))


def local_double(tiny_local):
    with tiny_local.trace("hello world"):
        h = tiny_local.model.layers[1].output.save()
    return h.value * 2
