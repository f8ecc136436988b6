"""nnsight idioms with remote=True (issue 8, items 5, 6, 8): shape unpacking from the host's recorded
shapes, seeded random ops equal to the local run, and errors that keep their Python type."""

import pytest
import torch

import nnsight_jupyter as nj

PROMPT = "the cat sat on the mat"


@pytest.fixture
def hosted(connect_as):
    return connect_as("token-heidi").model("tiny")


def _heads_and_noise(model, **options):
    with model.trace(PROMPT, seed=11, **options):
        x = model.model.layers[1].self_attn.o_proj.input
        assert len(x.shape) == 3 and x.shape[-1] == 64          # known while tracing, from the recorded shapes
        heads = x.view(*x.shape[:-1], 4, x.shape[-1] // 4).save()
        noise = torch.randn_like(heads).save()
        dropped = torch.nn.functional.dropout(model.model.layers[2].output, 0.3).save()
    return heads.value, noise.value, dropped.value


def test_shapes_and_seeded_random_ops_remote_equal_local(hosted, tiny_local):
    remote = _heads_and_noise(hosted)
    local = _heads_and_noise(tiny_local)
    assert remote[0].shape == (1, 6, 4, 16)
    for a, b in zip(remote, local):
        assert torch.equal(a, b)
    again = _heads_and_noise(tiny_local, remote=True)           # remote=True on the local model: same
    assert all(torch.equal(a, b) for a, b in zip(again, local))


def test_remote_errors_keep_their_python_type(hosted):
    with pytest.raises(IndexError) as info:
        with hosted.trace(PROMPT):
            hosted.model.layers[1].output[0, 99].save()
    assert isinstance(info.value, nj.TracedIndexError) and info.value.module == "model.layers.1"
    assert "test_compat_remote.py" in info.value.where
    with pytest.raises(KeyError) as info:
        with hosted.trace(PROMPT):
            hosted.output["no_such_key"].save()
    assert isinstance(info.value, nj.TracedKeyError) and "logits" in str(info.value)
    with pytest.raises(RuntimeError) as info:
        with hosted.trace(PROMPT):
            hosted.model.layers[1].output.view(5, 7).save()
    assert isinstance(info.value, nj.ShapeMismatchError)
    with pytest.raises(nj.OutOfOrderError, match="is skipped"):          # refused in the kernel, before sending
        with hosted.trace(PROMPT):
            hosted.model.layers[1].skip(hosted.model.layers[0].output)
            hosted.model.layers[1].mlp.output.save()
