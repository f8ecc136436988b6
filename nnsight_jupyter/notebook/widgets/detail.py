"""The explorer's detail panel: one patched head's effect on the top-k tokens, and its attention pattern.

`HeadDetailPanel.show(detail, score, metric)` fills an HTML table (rank, the corrupt run's top tokens
and probabilities before the patch, after it, and the clean run's, with the logit differences) and a
two-row heatmap: the head's attention from the patched position over the prompt's tokens, in the
clean run (what was patched in) and in the corrupt run.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import torch

from .figures import heatmap_widget, show_scores
from .markup import table, token_label


def top_k_table(detail: Any) -> str:
    """The before / after / clean top-k next tokens of a `HeadDetail`, as an HTML table."""
    rows = [[rank + 1, token_label(b[0]), b[1], token_label(a[0]), a[1], token_label(c[0]), c[1]]
            for rank, (b, a, c) in enumerate(zip(detail.before, detail.after, detail.clean))]
    return table(["#", "before", "p", "after", "p", "clean", "p"], rows,
                 caption=f"next token at the last position, layer {detail.layer} head {detail.head} "
                         f"patched at position {detail.position}")


def logit_diff_line(detail: Any) -> str:
    diff = detail.logit_diff
    pair = f"{token_label(detail.answer)} - {token_label(detail.distractor)}"
    return (f'<div class="nnsight-logit-diff">logit difference {pair}: before {diff["before"]:.4g}, '
            f'after <b>{diff["after"]:.4g}</b>, clean {diff["clean"]:.4g}</div>')


class HeadDetailPanel:
    """HTML (title, top-k table, logit differences) above the attention-pattern heatmap."""

    def __init__(self) -> None:
        self.html = widgets.HTML(value="")
        self.pattern = heatmap_widget("attention pattern", "key position", "run", colorscale="Blues",
                                      width=460, height=240)
        self.widget = widgets.VBox([self.html, self.pattern], layout=widgets.Layout(min_width="420px"))

    def clear(self) -> None:
        self.html.value = '<div class="nnsight-note" style="color:#555">Click a head of the heatmap.</div>'
        with self.pattern.batch_update():
            self.pattern.data[0].z = []
            self.pattern.data[0].text = None

    def show(self, detail: Any, score: float, metric: str) -> None:
        title = (f"<h4>layer {detail.layer}, head {detail.head} &mdash; {html.escape(str(metric))} "
                 f"{score:.4g}</h4>")
        self.html.value = title + top_k_table(detail) + logit_diff_line(detail)
        keys = [f"{i}: {t}" for i, t in enumerate(detail.key_tokens)]
        text = [[t for t in detail.clean_key_tokens], [t for t in detail.key_tokens]]
        show_scores(self.pattern, torch.stack([detail.pattern_clean, detail.pattern_corrupt]), keys,
                    ["clean", "corrupt"], f"attention from position {detail.position}, layer {detail.layer} "
                    f"head {detail.head}", text=text,
                    hover="%{text} (key %{x}), %{y}: weight %{customdata}<extra></extra>")
