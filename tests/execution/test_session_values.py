"""A value one trace of a session computes is the same in every later trace that uses it.

The KV cache of a prompt prefix, passed as `past_key_values` to three later traces: the forward pass
extends a transformers cache in place, so each later trace must get its own copy of the cache as the
first trace left it (the patching library recomputes only the positions after a patch this way).
The same holds for a tensor that later traces write in place. The remote twin of these tests is
tests/server/test_session_values_remote.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from nnsight_jupyter.execution.executor import _private

PROMPT = "the cat sat on the mat and the dog"
PREFIX = 4          # tokens of PROMPT computed once; the rest is the continuation


def kv_reuse(model, ids: torch.Tensor, uses: int = 3) -> list:
    """Trace 1 computes the cache of ids[:, :PREFIX]; each of `uses` later traces continues from it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)      # transformers 5 renames past_key_values
        with model.session():
            with model.trace(ids[:, :PREFIX]):
                cache = model.output.past_key_values
            logits = []
            for _ in range(uses):
                with model.trace(ids[:, PREFIX:], past_key_values=cache):
                    logits.append(model.lm_head.output.save())
    return [saved.value for saved in logits]


def full_logits(raw, ids: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch, no cache reuse: the whole prompt at once, logits of the continuation."""
    with torch.no_grad():
        return raw(input_ids=ids).logits[:, PREFIX:]


def test_a_kv_cache_reused_by_three_traces_gives_the_same_logits_each_time(llama, raw_llama, encode):
    ids = encode(PROMPT)
    expected = full_logits(raw_llama, ids)
    logits = kv_reuse(llama, ids)
    assert len(logits) == 3
    for value in logits:
        assert value.shape == expected.shape
        torch.testing.assert_close(value, expected, atol=1e-5, rtol=1e-5)


def test_a_tensor_later_traces_write_in_place_is_fresh_in_each(llama):
    with llama.session():
        with llama.trace("hello world"):
            h = llama.model.layers[1].output[:, -1]
            first = h.save()
        bumped = []
        for _ in range(3):
            with llama.trace("the cat sat"):
                bumped.append(h.add_(1).save())          # a node of a later trace changes it in place
        with llama.trace("a dog"):
            last = h.save()
    for value in bumped:
        torch.testing.assert_close(value.value, first.value + 1)
    assert torch.equal(last.value, first.value)           # every later trace got it as trace 1 left it


def test_private_copies_tensors_only_where_the_run_writes_in_place():
    tensor = torch.ones(2, 3)
    assert _private(tensor, copy_tensors=False) is tensor          # the common case costs nothing
    copied = _private((tensor, [tensor], {"k": tensor}), copy_tensors=True)
    assert all(t is not tensor and torch.equal(t, tensor) for t in (copied[0], copied[1][0], copied[2]["k"]))
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4), 0)
    private = _private(cache, copy_tensors=False)                   # objects: always a private copy
    private.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4), 0)
    private.layers[0].keys.add_(1)                                  # tensors inside it are its own too
    assert cache.get_seq_length() == 3 and private.get_seq_length() == 4
    assert torch.equal(cache.layers[0].keys, torch.ones(1, 2, 3, 4))


def test_a_session_value_that_cannot_be_copied_is_refused_clearly(llama, monkeypatch):
    import nnsight_jupyter.execution.executor as executor
    from nnsight_jupyter import ExecutionError

    def no_copies(value, memo=None):
        raise TypeError("cannot pickle 'generator' object")

    monkeypatch.setattr(executor.copy, "copy", no_copies)
    monkeypatch.setattr(executor.copy, "deepcopy", no_copies)
    with pytest.raises(ExecutionError) as caught:
        with llama.session():
            with llama.trace("the cat sat"):
                cache = llama.model.output.past_key_values
            with llama.trace("on", past_key_values=cache):
                llama.lm_head.output.save()
    message = str(caught.value)
    assert "cannot be copied" in message and "DynamicCache" in message
    assert "in trace 1 of this session" in message and "trace 2 uses" in message
