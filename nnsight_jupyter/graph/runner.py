"""The runner protocol: the one seam between code that builds graphs and code that runs them.

`tracing` hands every finished graph to a `Runner` and knows nothing else about who runs it:

* `execution.runner.LocalRunner` runs it in this process, on the wrapped torch model;
* `client.runner.RemoteRunner` sends it to a model host and waits for the result;
* a Ray backend, a test's recording runner or a notebook front end's runner plug in the same way.

`Runner.run(graph, observer)` returns a `graph.result.Result` (saved values by save-node id, log
lines, saves that never ran) or raises an `NNsightError`. While it runs it reports to the
`Observer`, if one is given (else the runner shows what it shows by default: the local runner
prints `print()` lines, the remote one a progress bar and the lines):

* ``status(state, **detail)``: ``"queued"`` (``position=`` jobs ahead), ``"running"``
  (``batch_id=`` the forward pass it runs in, remotely), then exactly one of ``"done"``,
  ``"error"`` (``error=`` the exception), ``"cancelled"`` as the last call of every run;
* ``progress(step, steps)``: generation step ``step`` of ``steps`` (None when unknown) started;
* ``log(line, text)``: a ``print()`` inside the trace ran; ``line`` is the user's ``file:line``.

An observer may implement any subset: `notify(observer, ...)` skips what it lacks.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .nodes import Graph
from .result import Result

#: The states a run reports through `Observer.status`; the last three end a run.
STATES = ("queued", "running", "done", "error", "cancelled")
TERMINAL = ("done", "error", "cancelled")


@runtime_checkable
class Observer(Protocol):
    """Hears how a run goes: its status, generation progress, and the trace's log lines as they come."""

    def status(self, state: str, **detail: Any) -> None: ...

    def progress(self, step: int, steps: int | None) -> None: ...

    def log(self, line: str, text: str) -> None: ...


@runtime_checkable
class Runner(Protocol):
    """Runs an intervention graph: locally, on a model host, on a cluster."""

    def run(self, graph: Graph, observer: Observer | None = None) -> Result: ...


def notify(observer: Any, event: str, *args: Any, **kwargs: Any) -> None:
    """Call `observer.<event>(...)` if the observer has that method (observers may be partial)."""
    method = getattr(observer, event, None) if observer is not None else None
    if method is not None:
        method(*args, **kwargs)
