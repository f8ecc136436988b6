"""`model.scan(input)`: a trace run under fake tensors, for shapes without real compute.

    with model.scan("The Eiffel Tower is in") as scan:      # nnsight's form
        d = model.model.layers[0].output.shape.save()       # saved values: torch.Size, meta tensors
        model.model.layers[0].output[:, 99] = 0             # shape errors show here, nothing computed
    scan.shapes["model.layers.0"]                           # every module's output shape
    model.scan("The Eiffel Tower is in").shapes              # the same, without a `with` block

The body is traced like any trace and runs on this machine through `execution.scan.ScanRunner`
(the model's own code, under `FakeTensorMode`): nothing is sent. A model from `connect().model()`
has its module tree here but not its code, so it cannot be scanned (a clear error says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TracingError
from . import context
from .tracer import Tracer

if TYPE_CHECKING:
    from ..graph.runner import Runner
    from .model import NNsight


class ScanTracer(Tracer):
    """A trace whose graph runs under fake tensors; `.shapes` holds every module's output shape."""

    def __init__(self, model: "NNsight", args: tuple, kwargs: dict, runner: "Runner"):
        if not args and not kwargs:
            raise TracingError("model.scan(...) needs an input: model.scan(\"The Eiffel Tower is in\")")
        if model._host is not None:
            raise TracingError(
                f"model.scan(...) runs the model's own code under fake tensors, and {model._name} lives on a "
                "host: this kernel has its module tree but not its code",
                fix="Scan a local copy of the model (LanguageModel(\"<dir or name>\").scan(...)), or run a "
                    "trace on the host and save the shapes you need (h.shape.save()).")
        super().__init__(model, "trace", args, kwargs, {}, runner)
        self._scanned = False

    def __enter__(self) -> "ScanTracer":
        for ctx in context.stack():
            if getattr(ctx, "model", None) is self.model:
                raise TracingError("model.scan(...) runs on its own, not inside a trace or session of the "
                                   "same model", fix="Open the scan before or after the session.")
        return super().__enter__()  # type: ignore[return-value]

    def _finish(self, owner: bool) -> None:
        super()._finish(owner)
        self._scanned = True

    @property
    def shapes(self) -> dict[str, Any]:
        """Every module's output shape (path -> torch.Size, or the structure of shapes of a tuple or
        ModelOutput; a list of them for a module called several times). Scans if not done yet."""
        if not self._scanned:
            with self:
                pass
        return dict(self.runner.shapes)
