"""The head-patching explorer, driven from its Python side as a user drives it in the page.

Fields are set, the button is pressed (`button.click()`), a heatmap cell is clicked by sending the
FigureWidget the message the browser sends (`_js2py_pointsCallback`, a plotly_click), and what the
widget shows (the heatmap's data, its hover values, the progress bar, the detail panel's table and
attention figure, the status line) is checked against the patching library and plain PyTorch.
"""

from __future__ import annotations

import copy

import numpy
import pytest
import torch

from nnsight_jupyter import LanguageModel
from nnsight_jupyter import patching as P
from nnsight_jupyter.notebook.widgets import HeadPatchingExplorer

CLEAN = "when mary and john went to the store john gave a book to"
CORRUPT = "when mary and john went to the store mary gave a book to"


def fill(explorer, clean=CLEAN, corrupt=CORRUPT, answer="mary", distractor="john", position="-1"):
    explorer.clean_prompt.value, explorer.corrupt_prompt.value = clean, corrupt
    explorer.answer_token.value, explorer.distractor_token.value = answer, distractor
    explorer.position_field.value = position


def click(figure, layer: int, head: int) -> None:
    """What the browser sends when a heatmap cell is clicked (plotly's FigureWidget front end)."""
    figure._js2py_pointsCallback = {"event_type": "plotly_click", "device_state": None, "selector": None,
                                    "points": {"xs": [head], "ys": [layer], "point_indexes": [[layer, head]],
                                               "trace_indexes": [0]}}


def progress_seen(explorer) -> list[tuple[int, int]]:
    seen = []
    explorer.progress_bar.observe(lambda change: seen.append((change["new"], explorer.progress_bar.max)), "value")
    return seen


@pytest.fixture(params=["llama", "gpt2"])
def model(request, llama, gpt2):
    return llama if request.param == "llama" else gpt2


def test_run_button_draws_the_library_scores_with_live_progress(model):
    explorer = HeadPatchingExplorer(model)
    fill(explorer, position="9")
    seen = progress_seen(explorer)
    explorer.run_button.click()

    assert explorer.status.last_error is None, explorer.status.widget.value
    expected = P.head_patching(model, P.pairs(model, CLEAN, CORRUPT, "mary", "john"), positions=9)
    trace = explorer.heatmap.data[0]
    z = torch.tensor(trace.z, dtype=torch.float32)
    assert z.shape == expected.scores.shape == (model._module.config.num_hidden_layers, 4)
    torch.testing.assert_close(z, expected.scores, atol=1e-6, rtol=1e-5)
    assert not torch.equal(z, torch.zeros_like(z))
    # hover: the exact float32 value of each cell; colours diverge around 0, symmetric limits
    assert [[numpy.float32(v) for v in row] for row in trace.customdata] == [[numpy.float32(v) for v in row]
                                                                              for row in trace.z]
    assert "%{customdata}" in trace.hovertemplate and "layer %{y}" in trace.hovertemplate
    assert trace.zmid == 0 and trace.zmin == -trace.zmax == -float(z.abs().max())
    assert trace.colorscale[0][1] != trace.colorscale[-1][1]
    assert list(explorer.heatmap.layout.yaxis.ticktext) == expected.labels["layer"]
    # the bar moved during the sweep, step by step, and ended full
    steps = [value for value, _ in seen]
    assert len(set(steps)) > 2 and steps == sorted(steps)
    assert explorer.progress_bar.value == explorer.progress_bar.max == seen[-1][1]
    assert "forward passes" in explorer.status.widget.value
    # what a cell shows: the widget view (the heatmap a plotly FigureWidget inside it)
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()
    assert explorer.heatmap in explorer.children[-1].children


def test_clicking_a_head_shows_its_patch_and_attention_pattern(model):
    explorer = HeadPatchingExplorer(model, k=4)
    fill(explorer)
    explorer.run_button.click()
    click(explorer.heatmap, 1, 2)

    detail = explorer.detail
    assert explorer.status.last_error is None, explorer.status.widget.value
    assert (detail.layer, detail.head, detail.position) == (1, 2, 12)
    pairs = P.pairs(model, CLEAN, CORRUPT, "mary", "john")
    again = P.patch_one_head(model, pairs, 1, 2, -1, k=4)
    torch.testing.assert_close(detail.probs_after, again.probs_after)
    assert detail.after == again.after and detail.before == again.before
    # the heatmap's cell and the detail agree: the sweep's logit difference is the patched run's
    assert explorer.result.metric == "logit_diff"
    assert detail.logit_diff["after"] == pytest.approx(float(explorer.result.scores[1, 2]), abs=1e-5)
    panel = explorer.panel.html.value
    assert "layer 1, head 2" in panel
    for token, prob in detail.before + detail.after:
        assert f"&#x27;{token}&#x27;" in panel and f"{prob:.4g}" in panel
    assert f"{detail.logit_diff['after']:.4g}" in panel and f"{detail.logit_diff['before']:.4g}" in panel
    pattern = explorer.panel.pattern.data[0]
    torch.testing.assert_close(torch.tensor(pattern.z), torch.stack([detail.pattern_clean, detail.pattern_corrupt]))
    assert list(pattern.text[1]) == detail.key_tokens and len(detail.key_tokens) == 13
    assert torch.tensor(pattern.z).sum(-1).allclose(torch.ones(2))

    click(explorer.heatmap, 0, 3)                      # another head replaces the panel
    assert (explorer.detail.layer, explorer.detail.head) == (0, 3) and "layer 0, head 3" in explorer.panel.html.value


def test_the_detail_matches_a_hand_written_patch(raw_llama, tokenizer):
    model = LanguageModel(copy.deepcopy(raw_llama), tokenizer=tokenizer)
    explorer = HeadPatchingExplorer(model)
    fill(explorer, position="8")
    explorer.run()
    explorer.select(2, 1)
    ids = {name: tokenizer(p, return_tensors="pt")["input_ids"] for name, p in (("clean", CLEAN), ("corrupt", CORRUPT))}
    proj = raw_llama.model.layers[2].self_attn.o_proj
    grabbed = {}
    handle = proj.register_forward_pre_hook(lambda m, a: grabbed.update(x=a[0][:, 8, 16:32].clone()))
    with torch.no_grad():
        raw_llama(input_ids=ids["clean"])
    handle.remove()

    def put(m, a):
        x = a[0].clone()
        x[:, 8, 16:32] = grabbed["x"]
        return (x,)

    handle = proj.register_forward_pre_hook(put)
    with torch.no_grad():
        after = raw_llama(input_ids=ids["corrupt"]).logits[0, -1].softmax(-1)
    handle.remove()
    torch.testing.assert_close(explorer.detail.probs_after, after, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fields, message", [
    (dict(clean=""), r"the &#x27;clean&#x27; field is empty"),
    (dict(position="last"), r"&#x27;last&#x27;, which is not a whole number"),
    (dict(position="40"), r"40.*outside"),
    (dict(corrupt="when mary went to the store mary gave a book to"), r"PairLengthError.*13.*11|PairLengthError.*11.*13"),
    (dict(answer="mary john"), r"AnswerTokenError.*mary.*john"),
])
def test_bad_input_shows_a_message_and_the_widget_keeps_working(llama, fields, message):
    import re

    explorer = HeadPatchingExplorer(llama)
    fill(explorer, **fields)
    explorer.run_button.click()
    shown = explorer.status.widget.value
    assert "nnsight-error" in shown and re.search(message, shown, re.S), shown
    assert explorer.result is None and not explorer.run_button.disabled
    assert explorer.heatmap.data[0].z in (None, ()) or len(explorer.heatmap.data[0].z) == 0
    fill(explorer)                                     # fixed: the same widget runs
    explorer.run_button.click()
    assert explorer.status.last_error is None and "nnsight-error" not in explorer.status.widget.value
    assert explorer.result is not None


def test_bad_input_after_a_sweep_keeps_its_heatmap_clickable(llama):
    explorer = HeadPatchingExplorer(llama)
    fill(explorer)
    explorer.run_button.click()
    scores = explorer.heatmap.data[0].z
    fill(explorer, answer="mary john")
    explorer.run_button.click()
    assert "AnswerTokenError" in explorer.status.widget.value
    assert explorer.heatmap.data[0].z == scores and explorer.result is not None
    click(explorer.heatmap, 3, 1)
    assert explorer.status.last_error is None and explorer.detail.layer == 3


def test_clicking_before_any_sweep_says_what_to_do(llama):
    explorer = HeadPatchingExplorer(llama)
    click(explorer.heatmap, 0, 0)
    assert "no sweep has run yet" in explorer.status.widget.value and "Run sweep" in explorer.status.widget.value


def test_the_plan_menu_runs_that_rung_with_the_same_scores(llama):
    explorer = HeadPatchingExplorer(llama)
    fill(explorer, position="9")
    explorer.run_button.click()
    fastest = torch.tensor(explorer.heatmap.data[0].z)
    explorer.plan_choice.value = "naive"
    explorer.run_button.click()
    assert explorer.status.last_error is None, explorer.status.widget.value
    assert explorer.result.plan == "naive" and "plan naive" in explorer.heatmap.layout.title.text
    assert explorer.result.cost.forward_passes >= 16          # one patched run per head, at least
    torch.testing.assert_close(torch.tensor(explorer.heatmap.data[0].z), fastest, atol=1e-5, rtol=1e-5)


def test_a_head_whose_attention_layout_is_unknown_says_so_in_the_widget(tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LanguageModel(Qwen3ForCausalLM(config).eval(), tokenizer=tokenizer)
    explorer = HeadPatchingExplorer(model)
    fill(explorer)
    explorer.run_button.click()                          # the sweep itself works on it (heads via o_proj)
    assert explorer.status.last_error is None, explorer.status.widget.value
    click(explorer.heatmap, 1, 0)
    shown = explorer.status.widget.value
    assert "ArchitectureError" in shown and "not an attention layout" in shown and "q/k norms" in shown
    assert explorer.detail is None and explorer.result is not None     # the sweep's heatmap stays
