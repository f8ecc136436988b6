"""The logit-lens and logit-statistics widgets, driven from Python, against plain PyTorch.

The lens heatmap's cells are each layer's top token through the final norm and unembedding at each
position (hooks on the raw model), with the exact probability on hover; the statistics table shows
the top-k next tokens and probabilities, the answer's rank and the logit difference.
"""

from __future__ import annotations

import re

import numpy
import pytest
import torch

from nnsight_jupyter.notebook.widgets import LogitLens, LogitStatistics

PROMPT = "the eiffel tower is in the city of"


def lens_reference(raw, ids):
    """[layers, positions] top-1 probabilities and token ids of the logit lens, by hand."""
    blocks, norm = (raw.model.layers, raw.model.norm) if hasattr(raw, "model") else (raw.transformer.h, raw.transformer.ln_f)
    outputs = []
    handles = [b.register_forward_hook(lambda m, a, o: outputs.append(o[0] if isinstance(o, tuple) else o)) for b in blocks]
    with torch.no_grad():
        raw(input_ids=ids)
        for h in handles:
            h.remove()
        probs = torch.stack([raw.lm_head(norm(h))[0].softmax(-1) for h in outputs])
    return probs.max(-1)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lens_cells_are_each_layers_top_token(arch, request, tokenizer):
    model = request.getfixturevalue(arch)
    raw = model._module
    lens = LogitLens(model)
    lens.prompt.value = PROMPT
    lens.run_button.click()
    assert lens.status.last_error is None, lens.status.widget.value

    top, ids = lens_reference(raw, tokenizer(PROMPT, return_tensors="pt")["input_ids"])
    trace = lens.heatmap.data[0]
    torch.testing.assert_close(torch.tensor(trace.z, dtype=torch.float32), top, atol=1e-6, rtol=1e-5)
    assert [list(row) for row in trace.text] == [[tokenizer.decode([int(i)]) for i in row] for row in ids]
    assert [[numpy.float32(v) for v in row] for row in trace.customdata] == [[numpy.float32(v) for v in row]
                                                                              for row in trace.z]
    assert "%{text}" in trace.texttemplate and "p=%{customdata}" in trace.hovertemplate
    assert len(lens.heatmap.layout.xaxis.ticktext) == 8 and "eiffel" in lens.heatmap.layout.xaxis.ticktext[1]


def test_lens_with_an_empty_prompt_says_so(llama):
    lens = LogitLens(llama)
    lens.run_button.click()
    assert "the &#x27;prompt&#x27; field is empty" in lens.status.widget.value and lens.result is None


def test_statistics_table_shows_top_k_rank_and_logit_difference(llama, tokenizer):
    stats = LogitStatistics(llama, k=5)
    stats.prompt.value, stats.answer_token.value, stats.distractor_token.value = PROMPT, "paris", "rome"
    stats.run_button.click()
    assert stats.status.last_error is None, stats.status.widget.value

    with torch.no_grad():
        logits = llama._module(input_ids=tokenizer(PROMPT, return_tensors="pt")["input_ids"]).logits[0, -1]
    probs = logits.softmax(-1)
    top = probs.topk(5)
    paris, rome = tokenizer.convert_tokens_to_ids("paris"), tokenizer.convert_tokens_to_ids("rome")
    result = stats.result
    assert result.tokens == [tokenizer.decode([int(i)]) for i in top.indices]
    assert result.probs == pytest.approx(top.values.tolist(), abs=1e-6)
    assert result.answer_rank == int((logits > logits[paris]).sum()) + 1
    assert result.logit_diff == pytest.approx(float(logits[paris] - logits[rome]), abs=1e-5)
    table = stats.table.value
    assert "<table" in table
    for token in result.tokens:
        assert token in table
    assert str(result.answer_rank) in table and f"{result.logit_diff:+.4f}"[:5] in table


def test_statistics_with_a_two_token_answer_shows_the_tokens(llama):
    stats = LogitStatistics(llama)
    stats.prompt.value, stats.answer_token.value = PROMPT, "paris france"
    stats.run_button.click()
    shown = stats.status.widget.value
    assert "nnsight-error" in shown and re.search(r"paris.*france", shown), shown
    assert stats.table.value == "" and stats.result is None
