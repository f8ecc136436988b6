"""Which `NNsightError` a failing traced op becomes: the one that keeps the Python type of its failure.

A torch or Python op that raises inside a graph is reported as an `ExecutionError` naming the user's
line, the module and the shapes (`executor._Executor._op_failed`); this module picks the subclass, so
that `except IndexError` / `except KeyError` / `except RuntimeError` around a trace keep working, as
they do around plain PyTorch code, locally and across the wire (the class name travels with the
error's fields): an index past the end is a `TracedIndexError`, a missing key a `TracedKeyError`, a
torch `RuntimeError` about sizes a `ShapeMismatchError` (also a `RuntimeError`).
"""

from __future__ import annotations

import re

from ..errors import (
    ExecutionError,
    ShapeMismatchError,
    TracedAttributeError,
    TracedIndexError,
    TracedKeyError,
    TracedRuntimeError,
    TracedTypeError,
    TracedValueError,
)

#: Builtin failure type -> the error it becomes (first match wins: subclasses before their bases).
_TYPED: tuple[tuple[type[BaseException], type[ExecutionError]], ...] = (
    (IndexError, TracedIndexError),
    (KeyError, TracedKeyError),
    (AttributeError, TracedAttributeError),
    (TypeError, TracedTypeError),
    (ValueError, TracedValueError),
)
#: How torch words a RuntimeError about shapes ("shape '[3, 7]' is invalid", "The size of tensor a
#: (5) must match", "mat1 and mat2 shapes cannot be multiplied", "number of dims don't match").
_SHAPE_WORDS = re.compile(r"shape|size|dimension|\bdims?\b|broadcast|numel", re.IGNORECASE)


def failure_class(error: BaseException) -> type[ExecutionError]:
    """The ExecutionError subclass for an op that raised `error`."""
    for builtin, typed in _TYPED:
        if isinstance(error, builtin):
            return typed
    if isinstance(error, RuntimeError):
        return ShapeMismatchError if _SHAPE_WORDS.search(str(error)) else TracedRuntimeError
    return ExecutionError

