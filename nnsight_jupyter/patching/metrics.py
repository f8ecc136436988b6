"""Metrics of a patched run, computed from the last position's logits ([rows, vocab]).

A metric is a function `(logits, answer, distractor) -> [rows]`; it runs where the model runs on traced
values (plans that send back only scalars) or here on real tensors (plans that send back logits), so it
uses only indexing and arithmetic. `"logit_diff"` is the answer's logit minus the distractor's;
`"recovered"` is the same, normalised per pair to the fraction of the clean-minus-corrupt difference
that the patch recovers (0: as corrupt, 1: as clean).
"""

from __future__ import annotations

from typing import Any, Callable

from .errors import PatchingError

Metric = Callable[[Any, int, int], Any]


def logit_diff(logits: Any, answer: int, distractor: int) -> Any:
    """logit[answer] - logit[distractor], per row."""
    return logits[:, answer] - logits[:, distractor]


def resolve(metric: str | Metric) -> tuple[str, Metric, bool]:
    """(name, function, normalised?) of a metric given by name or as a function."""
    if metric in ("logit_diff", None):
        return "logit_diff", logit_diff, False
    if metric == "recovered":
        return "recovered", logit_diff, True
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric, False
    raise PatchingError(f"unknown metric {metric!r}",
                        fix="Use 'logit_diff', 'recovered' or a function (logits, answer, distractor) -> [rows].")


def normalise(scores: Any, clean: float, corrupt: float) -> Any:
    """Fraction of the clean - corrupt metric difference recovered."""
    gap = clean - corrupt
    if abs(gap) < 1e-5 * max(1.0, abs(clean)):        # float noise between two runs of one prompt
        raise PatchingError(f"the clean and corrupt runs score the same ({clean:.4g}): nothing to recover",
                            fix="Use metric='logit_diff', or a pair whose corruption changes the answer.")
    return (scores - corrupt) / gap
