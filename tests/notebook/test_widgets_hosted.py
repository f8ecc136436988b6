"""The widgets on a hosted model (`nj.connect(url, token).model("tiny")` against a real Jupyter server),
checked against the same widgets on the same model loaded locally in this process.

The host is the server tests' shared `jupyter_host` (tests/server/conftest.py, which tests/notebook/conftest.py
loads from its file as tests/graph/conftest.py does), hosting the tiny Llama of `tiny_model_dir` as "tiny".
"""

from __future__ import annotations

import pytest
import torch

from nnsight_jupyter import connect
from nnsight_jupyter.notebook.widgets import HeadPatchingExplorer, LogitLens, LogitStatistics

CLEAN = "when mary and john went to the store john gave a book to"
CORRUPT = "when mary and john went to the store mary gave a book to"


@pytest.fixture
def hosted(jupyter_host, tiny_local, monkeypatch):
    """(hosted model, the same model loaded locally); the connection closed after the test."""
    monkeypatch.setenv("NNSIGHT_JUPYTER_PROGRESS", "0")
    connection = connect(jupyter_host.url, "token-heidi")
    try:
        yield connection.model("tiny"), tiny_local
    finally:
        connection.close()


def run_explorer(model):
    explorer = HeadPatchingExplorer(model)
    explorer.clean_prompt.value, explorer.corrupt_prompt.value = CLEAN, CORRUPT
    explorer.answer_token.value, explorer.distractor_token.value, explorer.position_field.value = "mary", "john", "8"
    seen = []
    explorer.progress_bar.observe(lambda change: seen.append(change["new"]), "value")
    explorer.run_button.click()
    assert explorer.status.last_error is None, explorer.status.widget.value
    explorer.heatmap._js2py_pointsCallback = {"event_type": "plotly_click", "points": {
        "xs": [1], "ys": [2], "point_indexes": [[2, 1]], "trace_indexes": [0]}}
    assert explorer.status.last_error is None, explorer.status.widget.value
    return explorer, seen


def test_explorer_on_a_hosted_model_equals_local(hosted):
    remote_model, local_model = hosted
    remote, remote_progress = run_explorer(remote_model)
    local, _ = run_explorer(local_model)
    torch.testing.assert_close(torch.tensor(remote.heatmap.data[0].z), torch.tensor(local.heatmap.data[0].z),
                               atol=1e-5, rtol=1e-5)
    # the hosted sweep is one request; its progress arrives while it runs, step by step
    assert len(set(remote_progress)) > 2 and remote_progress == sorted(remote_progress)
    assert remote.progress_bar.value == remote.progress_bar.max
    assert remote.result.cost.requests >= 1 and remote.result.cost.bytes_received > 0
    a, b = remote.detail, local.detail
    assert (a.layer, a.head) == (b.layer, b.head) == (2, 1)
    torch.testing.assert_close(a.probs_after, b.probs_after, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.pattern_clean, b.pattern_clean, atol=1e-6, rtol=1e-5)
    assert [t for t, _ in a.after] == [t for t, _ in b.after]
    assert remote.panel.html.value.count("<tr>") == local.panel.html.value.count("<tr>") > 3


def test_lens_and_statistics_on_a_hosted_model_equal_local(hosted):
    shown = []
    for model in hosted:
        lens = LogitLens(model, prompt="the eiffel tower is in the city of")
        lens.run_button.click()
        stats = LogitStatistics(model, prompt="the eiffel tower is in the city of", answer="paris", distractor="rome")
        stats.run_button.click()
        assert lens.status.last_error is None and stats.status.last_error is None
        shown.append((lens.heatmap.data[0].z, lens.heatmap.data[0].text, stats.result))
    (z_remote, text_remote, stats_remote), (z_local, text_local, stats_local) = shown
    torch.testing.assert_close(torch.tensor(z_remote), torch.tensor(z_local), atol=1e-6, rtol=1e-5)
    assert text_remote == text_local
    assert stats_remote.tokens == stats_local.tokens and stats_remote.answer_rank == stats_local.answer_rank
    assert stats_remote.logit_diff == pytest.approx(stats_local.logit_diff, abs=1e-5)


def test_a_bad_position_on_a_hosted_model_shows_the_error(hosted):
    explorer = HeadPatchingExplorer(hosted[0], clean=CLEAN, corrupt=CORRUPT, answer="mary", distractor="john",
                                    position=30)
    explorer.run_button.click()
    assert "nnsight-error" in explorer.status.widget.value and "30" in explorer.status.widget.value
    assert explorer.result is None
