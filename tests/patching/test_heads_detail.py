"""`patching.patch_one_head`: one head patched at one position, against plain PyTorch.

The next-token probabilities before / after the patch equal a forward-pre-hook patch of the attention
output projection's input on the raw model; the attention pattern from the patched position equals the
model's own attention weights (eager attention, `output_attentions=True`), for Llama (rotary,
grouped-query heads) and GPT-2. Bad layers, heads, positions and unknown attention layouts fail before
the model runs.
"""

from __future__ import annotations

import copy

import pytest
import torch

from nnsight_jupyter import LanguageModel
from nnsight_jupyter import patching as P
from nnsight_jupyter.patching import ArchitectureError, PatchingError, PositionError, patch_one_head

CLEAN = "when mary and john went to the store john gave a book to"
CORRUPT = "when mary and john went to the store mary gave a book to"
PROJECTIONS = {"llama": "model.layers.{}.self_attn.o_proj", "gpt2": "transformer.h.{}.attn.c_proj"}


def reference(raw, clean_ids, corrupt_ids, layer, head, position, head_dim, projection):
    """(probs before, probs after, clean pattern, corrupt pattern) by hand: hooks and eager attention."""
    proj = raw.get_submodule(projection.format(layer))
    part = slice(head * head_dim, (head + 1) * head_dim)
    grabbed = {}
    handle = proj.register_forward_pre_hook(lambda m, args: grabbed.update(x=args[0][:, position, part].clone()))
    with torch.no_grad():
        raw(input_ids=clean_ids)
    handle.remove()

    def put(module, args):
        x = args[0].clone()
        x[:, position, part] = grabbed["x"]
        return (x,)

    with torch.no_grad():
        before = raw(input_ids=corrupt_ids).logits[0, -1].softmax(-1)
        handle = proj.register_forward_pre_hook(put)
        after = raw(input_ids=corrupt_ids).logits[0, -1].softmax(-1)
        handle.remove()
        eager = copy.deepcopy(raw)
        eager.set_attn_implementation("eager")
        patterns = [eager(input_ids=ids, output_attentions=True).attentions[layer][0, head, position, : position + 1]
                    for ids in (clean_ids, corrupt_ids)]
    return before, after, *patterns


@pytest.mark.parametrize("arch, layer, head, position",
                         [("llama", 1, 3, 8), ("llama", 3, 0, -1), ("gpt2", 1, 1, 10), ("gpt2", 2, 3, -1)])
def test_patch_one_head_equals_plain_pytorch(arch, layer, head, position, raw_llama, raw_gpt2, tokenizer):
    raw = raw_llama if arch == "llama" else raw_gpt2
    model = LanguageModel(copy.deepcopy(raw), tokenizer=tokenizer)
    pairs = P.pairs(model, CLEAN, CORRUPT, "mary", "john")
    detail = patch_one_head(model, pairs, layer, head, position, k=5)

    seq = pairs.corrupt_ids.shape[1]
    before, after, clean_pattern, corrupt_pattern = reference(raw, pairs.clean_ids, pairs.corrupt_ids, layer, head,
                                                              position % seq, 16, PROJECTIONS[arch])
    torch.testing.assert_close(detail.probs_before, before, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(detail.probs_after, after, atol=1e-6, rtol=1e-5)
    assert not torch.equal(detail.probs_before, detail.probs_after)      # the patch changed something
    torch.testing.assert_close(detail.pattern_clean, clean_pattern, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(detail.pattern_corrupt, corrupt_pattern, atol=1e-6, rtol=1e-5)

    assert detail.position == position % seq and len(detail.key_tokens) == position % seq + 1
    top = after.topk(5)
    assert [t for t, _ in detail.after] == [tokenizer.decode([int(i)]) for i in top.indices]
    assert [p for _, p in detail.after] == pytest.approx(top.values.tolist(), abs=1e-6)
    answer, distractor = int(pairs.answer_ids[0]), int(pairs.distractor_ids[0])
    with torch.no_grad():
        logits = raw(input_ids=pairs.corrupt_ids).logits[0, -1]
    assert detail.logit_diff["before"] == pytest.approx(float(logits[answer] - logits[distractor]), abs=1e-5)


def test_bad_layer_head_and_position_fail_before_the_model_runs(llama):
    pairs = P.pairs(llama, CLEAN, CORRUPT, "mary", "john")
    with pytest.raises(PositionError, match=r"position 13 is outside the prompt of 13 tokens.*from 0 to 12"):
        patch_one_head(llama, pairs, 0, 0, 13)
    with pytest.raises(PatchingError, match=r"head 4 is outside the 4 heads of layer 0.*from 0 to 3"):
        patch_one_head(llama, pairs, 0, 4, -1)
    with pytest.raises(PatchingError, match=r"layer 7 is outside the model's 4 layers"):
        patch_one_head(llama, pairs, 7, 0, -1)


def test_an_attention_layout_without_known_query_keys_is_refused(tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    model = LanguageModel(Qwen3ForCausalLM(config).eval(), tokenizer=tokenizer)
    pairs = P.pairs(model, CLEAN, CORRUPT, "mary", "john")
    with pytest.raises(ArchitectureError, match=r"model\.layers\.0\.self_attn.*not an attention layout.*Llama-family"):
        patch_one_head(model, pairs, 0, 0, -1)
