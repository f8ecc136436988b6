"""Result objects: named axes, top entries, a plotly heatmap centred on 0, and inline rendering."""

from __future__ import annotations

import json

import pytest
import torch

from nnsight_jupyter import patching as P

from .conftest import PAIR


@pytest.fixture
def result(llama):
    return P.head_patching(llama, PAIR, metric="recovered")


def test_scores_have_named_axes_labels_and_a_cost(result):
    assert result.scores.dtype == torch.float32 and result.scores.device.type == "cpu"
    assert result.axes == ("layer", "head") and result.labels == {"layer": list("0123"), "head": list("0123")}
    assert result.cost.requests == 1 and result.cost.forward_passes == 7 and result.cost.wall_s > 0
    assert result.cost.bytes_received == 4 * 4 * 4 + 2 * 4         # 4 layers x 4 heads + the baselines, float32
    assert "1 request, 7 forward passes" in str(result.cost)


def test_top_lists_the_largest_magnitudes_first(result):
    top = result.top(5)
    values = [abs(v) for _, v in top]
    assert values == sorted(values, reverse=True) and len(top) == 5
    (layer, head), value = top[0]
    assert result.scores[layer, head] == value and abs(value) == result.scores.abs().max()


def test_the_figure_is_a_diverging_heatmap_centred_on_zero_with_exact_hover(result):
    figure = result.figure()
    heat = figure.data[0]
    assert heat.type == "heatmap" and heat.zmid == 0 and heat.zmin == -heat.zmax
    assert [list(row) for row in heat.z] == result.scores.tolist()
    assert list(heat.y) == result.labels["layer"] and list(heat.x) == result.labels["head"]
    assert "%{z:.6f}" in heat.hovertemplate
    assert "recovered" in figure.layout.title.text and "kv" in figure.layout.title.text


def test_the_mime_bundle_holds_text_html_heatmap_top_table_and_plotly_json(result):
    bundle = result._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", "application/vnd.plotly.v1+json"}
    (layer, head), value = result.top(1)[0]
    assert f"layer {layer}, head {head}: {value:+.4f}" in bundle["text/plain"]
    html = bundle["text/html"]
    assert html.count("<td title=") == 16 and f"{value:+.4f}" in html and "nj-top" in html
    json.dumps(bundle)                                               # what Jupyter stores in the notebook
    assert result._repr_mimebundle_(include=["text/plain"]).keys() == {"text/plain"}
    assert "text/html" not in result._repr_mimebundle_(exclude=["text/html"])


def test_attribution_patching_approximates_head_patching(llama):
    approx = P.attribution_patching(llama, PAIR)
    exact = P.head_patching(llama, PAIR)
    assert approx.exact is False and approx.plan == "attribution" and approx.axes == ("layer", "head")
    assert approx.cost.forward_passes == 2 and approx.cost.requests == 1
    r = torch.corrcoef(torch.stack([approx.scores.flatten(), exact.scores.flatten()]))[0, 1]
    assert r > 0.9           # a tiny random model is nearly linear in one head's value
    torch.testing.assert_close(approx.baselines, exact.baselines, atol=1e-5, rtol=0)


def test_logit_stats_ranks_the_answer_against_plain_pytorch(llama, raw_llama, tokenizer):
    stats = P.logit_stats(llama, PAIR[0], answer="mary", distractor="john", k=5)
    ids = torch.tensor([tokenizer(PAIR[0])["input_ids"]])
    with torch.no_grad():
        logits = raw_llama(ids).logits[0, -1]
    probs = logits.softmax(-1)
    top = probs.topk(5)
    assert stats.token_ids == top.indices.tolist()
    torch.testing.assert_close(torch.tensor(stats.probs), top.values)
    mary, john = (tokenizer(w)["input_ids"][0] for w in ("mary", "john"))
    assert stats.answer_rank == int((logits > logits[mary]).sum()) + 1
    assert stats.logit_diff == pytest.approx(float(logits[mary] - logits[john]), abs=1e-5)
    assert stats.answer == "mary" and "logit difference" in stats._repr_mimebundle_()["text/html"]


def test_logit_lens_equals_the_norm_and_unembedding_of_each_layer(llama, raw_llama, tokenizer):
    lens = P.logit_lens(llama, "the cat sat on the mat", positions=[1, -1], k=3)
    assert lens.probs.shape == (4, 2, 3) and lens.labels["position"] == ["1 'cat'", "5 'mat'"]
    ids = torch.tensor([tokenizer("the cat sat on the mat")["input_ids"]])
    with torch.no_grad():
        hidden = raw_llama(ids, output_hidden_states=True).hidden_states     # embeddings, then each layer
    for layer in range(3):                                   # the last hidden state is already normed
        probs = raw_llama.lm_head(raw_llama.model.norm(hidden[layer + 1][0, [1, 5]])).softmax(-1)
        torch.testing.assert_close(lens.probs[layer], probs.topk(3).values, atol=1e-5, rtol=0)
    heat = lens.figure().data[0]
    assert [list(r) for r in heat.text] == lens.top_tokens()
    assert set(lens._repr_mimebundle_()) >= {"text/plain", "text/html"}
