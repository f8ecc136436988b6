"""The one error family of nnsight_jupyter.

Every error a user can meet is an `NNsightError`. Messages say what happened, where (the user's
own file and line, the module path, the shapes involved) and how to fix it. A few subclasses are
also builtin exceptions, so ordinary Python keeps working: an unknown module attribute is an
`AttributeError` (``hasattr`` and ``getattr(x, name, default)`` behave), an index past the end
of a module list is an `IndexError`.
"""

from __future__ import annotations


class NNsightError(Exception):
    """Base of every error raised by nnsight_jupyter.

    `where` is the user's source location ("file.py:12") when one is known; it is put in
    front of the message so the first thing a user reads is their own line.
    """

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        self.reason = message
        super().__init__(f"{where}: {message}" if where else message)


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


class OutOfOrderError(NNsightError):
    """A trace touches modules in an order the model cannot run them in (found before it runs)."""


class ShapeMismatchError(NNsightError):
    """A value written into the model does not have the shape of what it replaces."""


class ExecutionError(NNsightError):
    """A node of the graph failed while the model ran; names the node's user line."""


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

    def __init__(self, message: str, *, remote_type: str = "NNsightError", where: str | None = None):
        self.remote_type = remote_type
        super().__init__(message, where=where)


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
