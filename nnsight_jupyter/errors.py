"""The one error family of nnsight_jupyter.

Every error a user can meet is an `NNsightError`. Messages say what happened, where (the user's
own file and line, the module path, the shapes involved) and how to fix it. A few subclasses are
also builtin exceptions, so ordinary Python keeps working: an unknown module attribute is an
`AttributeError` (``hasattr`` and ``getattr(x, name, default)`` behave), an index past the end
of a module list is an `IndexError`, and a traced op that fails keeps the type of its failure
(`TracedIndexError`, `TracedKeyError`, ..., `ShapeMismatchError` is a `RuntimeError`).
"""

from __future__ import annotations

from typing import Any, Mapping

Shape = tuple  # a tensor shape, as a tuple of ints

# What an error carries on the wire besides "type" and "message" (docs/protocol.md, "Errors").
FIELDS = ("reason", "line", "module", "shapes", "fix")


def extra_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The FIELDS present in a wire error dict (what a host stores and sends on with a job's error)."""
    return {key: data[key] for key in FIELDS if key in data}


class NNsightError(Exception):
    """Base of every error raised by nnsight_jupyter, and its context as data.

    Fields (each None / empty when not known):

    * `reason`: what happened (the sentence given to the constructor);
    * `where`:  the user's source line ("file.py:12"), put in front of the message so the first thing
      a user reads is their own line;
    * `module`: the module path the error is about ("model.layers.0"; "" is the root model);
    * `shapes`: named shapes involved ({"expected": (1, 6, 64), "written": (1, 6, 37)});
    * `fix`:    how to fix it.

    The message (`str(error)`) is composed from the fields in one place, `__str__`: the line, the
    reason, then the module and the shapes unless the reason names them already, then the fix. Context
    learnt as the error travels up (the node's line and module, the user's line in a trace) is
    attached one way, `error.at(...)`, which fills only fields still missing. `fields()` /
    `from_fields()` carry the same fields across the wire, so a remote error reads as the local one.
    """

    def __init__(self, message: str, *, where: str | None = None, module: str | None = None,
                 shapes: Mapping[str, Any] | None = None, fix: str | None = None):
        super().__init__(message)
        self.reason = message
        self.where = where or None
        self.module = module
        self.shapes: dict[str, Shape] = {k: tuple(v) for k, v in shapes.items()} if shapes else {}
        self.fix = fix or None

    def at(self, *, where: str | None = None, module: str | None = None,
           shapes: Mapping[str, Any] | None = None, fix: str | None = None) -> "NNsightError":
        """Fill the fields that are still missing (never overwrite one); returns the error itself."""
        if self.where is None and where:
            self.where = where
        if self.module is None and module is not None:
            self.module = module
        if not self.shapes and shapes:
            self.shapes = {k: tuple(v) for k, v in shapes.items()}
        if self.fix is None and fix:
            self.fix = fix
        return self

    def __str__(self) -> str:
        text = self.reason
        module = _module_name(self.module)
        if module is not None and module not in text:
            text += f" (module {module})"
        if self.shapes:
            missing = [f"{name} {shape}" for name, shape in self.shapes.items() if str(shape) not in text]
            if missing:
                text += f" (shapes: {', '.join(missing)})"
        if self.fix:
            text += f". {self.fix}" if not text.endswith((".", ":", "!", "?")) else f" {self.fix}"
        return f"{self.where}: {text}" if self.where else text

    def fields(self) -> dict[str, Any]:
        """The error as JSON-able data: type, message and each known field (see docs/protocol.md)."""
        data: dict[str, Any] = {"type": type(self).__name__, "message": str(self), "reason": self.reason}
        if self.where:
            data["line"] = self.where
        if self.module is not None:
            data["module"] = self.module
        if self.shapes:
            data["shapes"] = {k: [int(d) for d in v] for k, v in self.shapes.items()}
        if self.fix:
            data["fix"] = self.fix
        return data

    @classmethod
    def from_fields(cls, data: Mapping[str, Any], **extra: Any) -> "NNsightError":
        """An error of this class rebuilt from `fields()` output (unknown or malformed fields are
        dropped); `extra` goes to the constructor (RemoteError's `remote_type`)."""
        reason = data.get("reason")
        if not isinstance(reason, str):
            reason = str(data.get("message") or "")
        line, module, fix = data.get("line"), data.get("module"), data.get("fix")
        shapes = data.get("shapes")
        if not (isinstance(shapes, dict) and all(isinstance(v, (list, tuple)) and all(type(d) is int for d in v)
                                                 for v in shapes.values())):
            shapes = None
        return cls(reason, where=line if isinstance(line, str) else None,
                   module=module if isinstance(module, str) else None,
                   shapes={str(k): tuple(v) for k, v in shapes.items()} if shapes else None,
                   fix=fix if isinstance(fix, str) else None, **extra)


def _module_name(path: str | None) -> str | None:
    """How a module path reads in a message ("" is the root model)."""
    if path is None:
        return None
    return path or "model"


class GraphError(NNsightError):
    """An intervention graph is malformed: bad reference, wrong version, bad argument."""


class OpNotAllowedError(GraphError):
    """A graph uses an operation that is not on the allow-list."""


class KeywordNotAllowedError(GraphError):
    """A keyword argument (an option of trace / generate, an input of an invoke or a module call,
    a keyword of a torch op) that is not on the keyword allow-list, or of a type it does not take."""


class TracingError(NNsightError):
    """Something inside a trace cannot be turned into a graph (used outside a trace, unsupported)."""


class ControlFlowError(TracingError):
    """Python control flow (`if`, `while`, `bool()`) was applied to a traced value."""


class ModuleAttributeError(NNsightError, AttributeError):
    """An attribute that the wrapped module does not have."""


class ModuleIndexError(NNsightError, IndexError):
    """An index past the end of a module list (`layers[99]`)."""


class CacheKeyError(NNsightError, KeyError):
    """A key that a `tracer.cache()` mapping does not hold (a module not cached, or that never ran)."""


class OutOfOrderError(NNsightError):
    """A trace touches modules in an order the model cannot run them in (found before it runs)."""


class ExecutionError(NNsightError):
    """A node of the graph cannot run on this model, or failed while the model ran; names the node's
    user line, the module and the shapes involved."""


class ShapeMismatchError(ExecutionError, RuntimeError):
    """A value does not have the shape an op or a write needs (a write of the wrong shape, a view
    or reshape that does not fit, operands that do not broadcast). Also a `RuntimeError`, as torch
    raises it, so `except RuntimeError` keeps working."""


# A traced op that failed keeps the Python type of its failure (`except IndexError` / `KeyError` /
# `AttributeError` around a trace keeps working, locally and across the wire).
class TracedIndexError(ExecutionError, IndexError):
    """An index past the end of a traced value (a tensor, a tuple of module outputs)."""


class TracedKeyError(ExecutionError, KeyError):
    """A key that a traced mapping (a ModelOutput, a dict of inputs) does not have."""


class TracedAttributeError(ExecutionError, AttributeError):
    """An attribute that a traced value (a ModelOutput, a tensor) does not have."""


class TracedTypeError(ExecutionError, TypeError):
    """A traced op got a value of a type it does not take."""


class TracedValueError(ExecutionError, ValueError):
    """A traced op got a value it does not take."""


class TracedRuntimeError(ExecutionError, RuntimeError):
    """A traced torch op failed for a reason other than shapes (dtypes, devices ...)."""


class InputError(ExecutionError):
    """The invokes' inputs cannot be made into the model's call: no input, an empty prompt, a value
    the model does not take, or invokes whose inputs cannot run as one batch."""


class SharedValueError(ExecutionError):
    """One invoke tried to change a value that other invokes' rows share (not a per-row tensor)."""


class WeightWriteError(GraphError):
    """A graph tried to change the model's weights, which are read-only inside a trace."""


class ModelLoadError(NNsightError):
    """A model could not be loaded (unknown name, not in the local cache, missing package)."""


class ValueNotReadyError(NNsightError):
    """`.value` was read before the trace ran, or on a proxy that was not saved."""


class ProtocolError(NNsightError):
    """A message on the wire is malformed, too large, or of another protocol version."""


class RemoteError(NNsightError):
    """A job failed on the model host; `remote_type` is the host-side error's type name."""

    def __init__(self, message: str, *, remote_type: str = "NNsightError", **fields: Any):
        self.remote_type = remote_type
        super().__init__(message, **fields)


class QueueFullError(RemoteError):
    """The host refused a job: this user already has as many queued jobs as the host allows."""


class JobCancelledError(RemoteError):
    """The job was cancelled (by its owner, or by an interrupt in the kernel)."""


class ResourceLimitError(NNsightError):
    """A job went over one of the host's limits (memory its ops allocate, log bytes, result bytes
    kept on disk, graph size): the message names the limit, its setting and the figure."""


class WorkerCrashError(NNsightError):
    """The model worker died while this job ran (it was run alone and it died again), or this user's
    jobs stopped the worker too often and the host refuses more for a while."""
