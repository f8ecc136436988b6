"""The patching library's errors: bad pairs, answers, positions, models and plans, found before anything runs.

Each is an `NNsightError` (and, where ordinary Python expects it, a `ValueError`), carrying what was given
and how to fix it (`NNsightError.fix`), like every error of the package.
"""

from __future__ import annotations

from ..errors import NNsightError


class PatchingError(NNsightError, ValueError):
    """A patching experiment cannot be run as asked (base of the errors below)."""


class PairLengthError(PatchingError):
    """Clean and corrupt prompts tokenize to different lengths, so patched positions would not align."""


class AnswerTokenError(PatchingError):
    """An answer or distractor is not exactly one token of the model's vocabulary."""


class PositionError(PatchingError, IndexError):
    """A patch position outside the prompt."""


class ArchitectureError(PatchingError):
    """The model's layers, attention heads or unembedding are not where any known layout puts them."""


class PlanError(PatchingError):
    """The requested plan cannot serve this request (or is not a plan at all)."""
