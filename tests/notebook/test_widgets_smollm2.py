"""The explorer on the bundled SmolLM2-135M (a trained model): an IOI pair, the whole 30 x 9 sweep, and the
strongest head's detail, against the known logit differences and the model's own attention weights."""

from __future__ import annotations

import copy

import pytest
import torch

from nnsight_jupyter import LanguageModel
from nnsight_jupyter.notebook.widgets import HeadPatchingExplorer

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture(scope="module")
def smollm2():
    return LanguageModel("smollm2-135m")


def test_ioi_sweep_and_the_strongest_head(smollm2):
    explorer = HeadPatchingExplorer(smollm2, CLEAN, CORRUPT, " Mary", " John", position=-1)
    explorer.run_button.click()
    assert explorer.status.last_error is None, explorer.status.widget.value
    z = torch.tensor(explorer.heatmap.data[0].z)
    assert z.shape == (30, 9)
    torch.testing.assert_close(z, explorer.result.scores)
    (layer, head), score = explorer.result.top(1)[0]
    explorer.heatmap._js2py_pointsCallback = {"event_type": "plotly_click", "points": {
        "xs": [head], "ys": [layer], "point_indexes": [[layer, head]], "trace_indexes": [0]}}
    detail = explorer.detail
    assert explorer.status.last_error is None, explorer.status.widget.value
    assert (detail.layer, detail.head) == (layer, head)
    # the trained model's IOI behaviour (ENVIRONMENT.md: 6.12 clean, -5.49 corrupt)
    assert detail.logit_diff["clean"] == pytest.approx(6.12, abs=0.05)
    assert detail.logit_diff["before"] == pytest.approx(-5.49, abs=0.05)
    assert explorer.result.metric == "logit_diff"
    assert detail.logit_diff["after"] == pytest.approx(score, abs=1e-3)
    assert detail.before[0][0] == " John" and " Mary" in [t for t, _ in detail.clean]
    # the pattern is the model's own attention (eager attention weights of a copy)
    eager = copy.deepcopy(smollm2._module)
    eager.set_attn_implementation("eager")
    ids = smollm2.tokenizer(CLEAN, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        weights = eager(input_ids=ids, output_attentions=True).attentions[layer][0, head, -1]
    torch.testing.assert_close(detail.pattern_clean, weights, atol=1e-5, rtol=1e-4)
