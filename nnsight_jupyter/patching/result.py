"""Result objects of the patching library: scores with named axes, the run's cost, a figure, inline rendering.

`PatchingResult` (head / residual / MLP / attribution patching) holds `scores` ([layers, units], CPU float32,
the mean over pairs), `axes`, tick `labels`, `cost`, `plan` and `metric`; `top(k)` lists the largest
entries; `figure()` is a plotly heatmap; `_repr_mimebundle_` renders it inline in Jupyter (heatmap and a
table of the top entries), with a plain-text fallback where plotly or HTML are not shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from . import figures
from .cost import Cost


@dataclass
class PatchingResult:
    """Scores of a patching sweep."""

    scores: torch.Tensor
    axes: tuple[str, str]
    labels: dict[str, list[str]]
    cost: Cost
    plan: str
    metric: str
    title: str = "patching"
    per_pair: torch.Tensor | None = None          # [n_pairs, layers, units]
    baselines: dict[str, list[float]] = field(default_factory=dict)   # {"clean": [...], "corrupt": [...]}
    exact: bool = True

    def top(self, k: int = 10) -> list[tuple[tuple[int, ...], float]]:
        """The k entries of largest |score|: ((layer, unit), value), largest first."""
        flat = self.scores.flatten()
        order = flat.abs().argsort(descending=True)[:k]
        width = self.scores.shape[1]
        return [((int(i) // width, int(i) % width), float(flat[i])) for i in order]

    def figure(self) -> Any:
        """A plotly heatmap: diverging colours centred on 0, the exact value on hover."""
        return figures.heatmap(self.scores, self.axes, self.labels, f"{self.title} ({self.metric}, plan {self.plan})")

    def __repr__(self) -> str:
        return (f"<PatchingResult {self.title}: {self.axes[0]} x {self.axes[1]} = {tuple(self.scores.shape)}, "
                f"metric {self.metric}, plan {self.plan}; {self.cost}>")

    def _top_rows(self, k: int = 10) -> list[tuple[str, str, float]]:
        return [(self.labels[self.axes[0]][i], self.labels[self.axes[1]][j], v) for (i, j), v in self.top(k)]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        rows = self._top_rows()
        text = repr(self) + "\n" + "\n".join(f"  {self.axes[0]} {a}, {self.axes[1]} {b}: {v:+.4f}" for a, b, v in rows)
        html = figures.result_html(self.axes, rows, repr(self), self.scores, self.labels)
        return figures.mime_bundle(text, html, self.figure, include, exclude)


@dataclass
class LensResult:
    """Logit lens: at each layer (rows) and position (columns), the top-k tokens through the final norm
    and unembedding, with their probabilities."""

    probs: torch.Tensor                  # [layers, positions, k]
    token_ids: torch.Tensor              # [layers, positions, k]
    tokens: list[list[list[str]]]        # [layers][positions][k]
    labels: dict[str, list[str]]
    cost: Cost
    axes: tuple[str, str] = ("layer", "position")

    def top_tokens(self) -> list[list[str]]:
        return [[cell[0] for cell in row] for row in self.tokens]

    def figure(self) -> Any:
        """Heatmap of the top token's probability, the token written in each cell."""
        return figures.lens_heatmap(self.probs[..., 0], self.top_tokens(), self.labels)

    def __repr__(self) -> str:
        return f"<LensResult {self.axes[0]} x {self.axes[1]} = {tuple(self.probs.shape[:2])}, k={self.probs.shape[2]}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        last = [f"  layer {lab}: {row[-1][0]!r} p={float(p[-1, 0]):.3f}"
                for lab, row, p in zip(self.labels["layer"], self.tokens, self.probs)]
        text = repr(self) + "\n" + "\n".join(last)
        return figures.mime_bundle(text, figures.lens_html(self), self.figure, include, exclude)


@dataclass
class LogitStats:
    """The next-token distribution after a prompt: top-k tokens and probabilities, and for an answer
    (and distractor) its rank, probability and the logit difference."""

    tokens: list[str]
    token_ids: list[int]
    probs: list[float]
    logits: list[float]
    cost: Cost
    answer: str | None = None
    answer_rank: int | None = None
    answer_prob: float | None = None
    distractor: str | None = None
    distractor_prob: float | None = None
    logit_diff: float | None = None

    def rows(self) -> list[tuple[int, str, float, float]]:
        return [(i + 1, t, p, lg) for i, (t, p, lg) in enumerate(zip(self.tokens, self.probs, self.logits))]

    def summary(self) -> str:
        parts = []
        if self.answer is not None:
            parts.append(f"answer {self.answer!r}: rank {self.answer_rank}, p={self.answer_prob:.4f}")
        if self.distractor is not None:
            parts.append(f"distractor {self.distractor!r}: p={self.distractor_prob:.4f}")
        if self.logit_diff is not None:
            parts.append(f"logit difference {self.logit_diff:+.4f}")
        return "; ".join(parts)

    def __repr__(self) -> str:
        top = ", ".join(f"{t!r} {p:.3f}" for t, p in zip(self.tokens[:5], self.probs[:5]))
        summary = self.summary()
        return f"<LogitStats top: {top}{'; ' + summary if summary else ''}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return figures.mime_bundle(repr(self), figures.stats_html(self), None, include, exclude)
