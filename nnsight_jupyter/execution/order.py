"""Recording a model's module execution order (the data, `graph.order.ExecutionOrder`, lives with the graph).

The order is recorded

* for a language model, from a forward of a dummy prompt under `FakeTensorMode` (shapes only,
  no real compute), when the model is wrapped or loaded by the host (`record_order_fake`);
* for any other module, from its first real forward (`record_order_during` wraps that call).

Each event's *layout* (`execution.layout`) is recorded with it on the model host and on first
need locally, and travels to clients with the order.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

from ..graph.layout import Event
from ..graph.order import ExecutionOrder


class _Recording(list):
    """Events in time order, plus the lengths of tuple outputs."""

    def __init__(self):
        super().__init__()
        self.lengths: dict[Event, int] = {}

    def order(self) -> ExecutionOrder:
        return ExecutionOrder(list(self), self.lengths)


@contextlib.contextmanager
def record_order_during(module: torch.nn.Module) -> Iterator[_Recording]:
    """Record the events of every forward run inside the block (hooks on all submodules)."""
    events = _Recording()
    counts_in: dict[str, int] = {}
    counts_out: dict[str, int] = {}
    handles = []

    def pre(path: str) -> Callable:
        def hook(mod, args, kwargs):
            call = counts_in.get(path, 0)
            counts_in[path] = call + 1
            events.append((path, call, "input"))
        return hook

    def post(path: str) -> Callable:
        def hook(mod, args, output):
            call = counts_out.get(path, 0)
            counts_out[path] = call + 1
            events.append((path, call, "output"))
            if type(output) is tuple:
                events.lengths[(path, call, "output")] = len(output)
        return hook

    try:
        for path, sub in module.named_modules():
            handles.append(sub.register_forward_pre_hook(pre(path), with_kwargs=True))
            handles.append(sub.register_forward_hook(post(path)))
        yield events
    finally:
        for handle in handles:
            handle.remove()


def record_order_fake(module: torch.nn.Module, kwargs: dict[str, Any], args: tuple = ()) -> ExecutionOrder:
    """Record the order from a forward under FakeTensorMode: shapes propagate, nothing computes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .devices import unhooked

    with unhooked(module), record_order_during(module) as events, torch.no_grad():
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = lambda x: mode.from_tensor(x) if isinstance(x, torch.Tensor) else x  # noqa: E731
            module(*[fake(a) for a in args], **{k: fake(v) for k, v in kwargs.items()})
    return events.order()
