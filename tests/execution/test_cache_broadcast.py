"""A key/value cache of one row serves a batch of several rows (`execution.batching.broadcast_cache`): each
row continues the shared prefix as if it had computed it itself (the patching library's `kv` plan)."""

from __future__ import annotations

import warnings

import torch
from transformers import DynamicCache

from nnsight_jupyter.execution.batching import broadcast_cache

PREFIX = "the cat sat on the"
ENDINGS = ["mat", "dog", "city"]


def test_three_rows_continue_one_prefix_as_three_full_forwards(llama, raw_llama, tokenizer):
    prefix = torch.tensor([tokenizer(PREFIX)["input_ids"]])
    endings = torch.tensor([tokenizer(e)["input_ids"] for e in ENDINGS])       # [3, 1]
    with torch.no_grad():
        expected = raw_llama(torch.cat([prefix.expand(3, -1), endings], 1)).logits[:, -1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with llama.session():
            with llama.trace(prefix):
                cache = llama.output.past_key_values
            with llama.trace(endings, past_key_values=cache):
                logits = llama.lm_head.output[:, -1].save()
    torch.testing.assert_close(logits.value, expected, atol=1e-5, rtol=1e-5)


def test_the_cache_is_expanded_as_views_and_only_from_one_row():
    cache = DynamicCache()
    keys = torch.randn(1, 2, 5, 4)
    cache.update(keys, keys.clone(), 0)
    stored = cache.layers[0].keys.data_ptr()
    broadcast_cache(cache, 3)
    assert cache.layers[0].keys.shape == (3, 2, 5, 4)
    assert cache.layers[0].keys.data_ptr() == stored           # a view, nothing copied
    two = DynamicCache()
    two.update(torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4), 0)
    broadcast_cache(two, 4)                                            # two rows: left as it is
    assert two.layers[0].keys.shape[0] == 2
    broadcast_cache(None, 3)                                           # no cache: nothing to do
