"""`ScanRunner`: runs a graph under fake tensors (`model.scan(...)`): shapes, no real compute.

The graph runs as a trace does (batching, hooks, every node), inside torch's `FakeTensorMode`:
tensors carry shape and dtype but no data, so nothing is computed and no memory is allocated for
activations. While it runs, every module's output shape is recorded (`shapes`: path -> the shape,
a tuple / dict of shapes for tuple or `ModelOutput` outputs, a list when a module runs several
times). Saved values come back as meta tensors (shape, dtype, no data). A model loaded on the
meta device (weights not materialised) scans too: its inputs are moved to meta.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from ..errors import ExecutionError, NNsightError
from ..graph.nodes import Graph
from ..graph.result import Result
from ..graph.runner import Observer
from .batching import ModuleTarget
from .executor import execute


class ScanRunner:
    """A `graph.runner.Runner` that runs graphs on `target` under fake tensors."""

    def __init__(self, target: ModuleTarget):
        self.target = target
        self.shapes: dict[str, Any] = {}

    def run(self, graph: Graph, observer: Observer | None = None) -> Result:
        from torch._subclasses.fake_tensor import FakeTensorMode

        module = self.target.module
        if self.target.order is None and graph.runs:      # a plain module's order: recorded before the hooks
            run = graph.runs[0]
            with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
                self.target.ensure_order(self.target.build_batch(
                    run, [(inv.id, inv.args, inv.kwargs, inv.all_rows) for inv in run.invokes]))
        shapes: dict[str, list[Any]] = {}
        handles = [sub.register_forward_hook(_recorder(path, shapes)) for path, sub in module.named_modules()]
        on_meta = next((p.is_meta for p in module.parameters()), False)
        build_batch = self.target.build_batch
        try:
            if on_meta:
                self.target.build_batch = lambda *a, **k: _to_meta(build_batch(*a, **k))  # type: ignore[method-assign]
            with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*data pointer of FakeTensor")   # the weight-write check
                result = execute(graph, self.target, echo_logs=observer is None)
        except NNsightError:
            raise
        except Exception as error:  # noqa: BLE001 - an op fake tensors cannot run: say so
            raise ExecutionError(f"model.scan could not run this model under fake tensors: "
                                 f"{type(error).__name__}: {error}",
                                 fix="Use model.trace(...) for this model (it computes for real).") from None
        finally:
            self.target.__dict__.pop("build_batch", None)
            for handle in handles:
                handle.remove()
        self.shapes = {path: calls[0] if len(calls) == 1 else calls for path, calls in shapes.items()}
        result.saved = {key: _meta(value) for key, value in result.saved.items()}
        return result


def _recorder(path: str, shapes: dict[str, list[Any]]) -> Callable:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        shapes.setdefault(path, []).append(shape_of(output))
    return hook


def shape_of(value: Any) -> Any:
    """The shape of a value: torch.Size for a tensor, the same structure of shapes for containers,
    the type's name for anything else (a KV cache object)."""
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, dict):
        return {key: shape_of(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(shape_of(item) for item in value) if type(value) in (tuple, list) else \
            tuple(shape_of(item) for item in value)
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return type(value).__name__


def _meta(value: Any) -> Any:
    """A fake tensor as a meta tensor (shape, dtype, no data), containers rebuilt."""
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(tuple(value.shape), tuple(value.stride()), dtype=value.dtype, device="meta")
    if isinstance(value, dict):
        return {key: _meta(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_meta(item) for item in value) if type(value) in (tuple, list) else value
    return value


def _to_meta(batch: Any) -> Any:
    """A batch for a weightless model: its tensors on the meta device."""
    move = lambda v: v.to("meta") if isinstance(v, torch.Tensor) else v  # noqa: E731
    batch.args = tuple(move(a) for a in batch.args)
    batch.kwargs = {k: move(v) for k, v in batch.kwargs.items()}
    return batch
