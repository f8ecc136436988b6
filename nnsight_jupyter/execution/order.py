"""A model's module execution order, recorded once and used to check every trace before it runs.

An *event* is ``(module_path, call_index, kind)`` with kind ``"input"`` (the forward pre-hook)
or ``"output"`` (the forward hook). `ExecutionOrder` is the list of events of one forward pass,
in the order they happen. It is recorded

* for a language model, from a forward of a dummy prompt under `FakeTensorMode` (shapes only,
  no real compute), when the model is wrapped or loaded by the host;
* for any other module, from its first real forward (`record_order_during` wraps that call).

It may also carry each event's *layout* (`execution.layout`: which dim of each value is the batch
dim, which are sequence dims), recorded with it on the model host and on first need locally; it
travels to clients with the order (`to_json` / `from_json`, optional key ``"layouts"``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

from .layout import Event, Layout, layout_from_json, layout_to_json


class ExecutionOrder:
    """Events of one forward pass in time order, with O(1) position lookup."""

    def __init__(self, events: list[Event], lengths: dict[Event, int] | None = None,
                 layouts: dict[Event, Layout] | None = None):
        self.events = list(events)
        self.layouts = layouts           # event -> layout, once recorded (None: not yet)
        self.lengths = dict(lengths or {})   # output events whose value is a tuple: its length
        self.position = {event: i for i, event in enumerate(self.events)}
        self.calls: dict[str, int] = {}
        for path, call, kind in self.events:
            if kind == "output":
                self.calls[path] = max(self.calls.get(path, 0), call + 1)

    def __len__(self) -> int:
        return len(self.events)

    def describe(self, path: str) -> str:
        """'called 2 times per forward pass' / 'never called' for error messages."""
        n = self.calls.get(path, 0)
        if n == 0:
            return "is never called in a forward pass"
        return f"is called {n} time{'s' if n != 1 else ''} per forward pass"

    def to_json(self) -> dict:
        data = {"events": [list(event) for event in self.events],
                "lengths": [[*event, n] for event, n in self.lengths.items()]}
        if self.layouts is not None:
            reasons: dict[str, int] = {}
            data["layouts"] = [[*event, layout_to_json(layout, reasons)] for event, layout in self.layouts.items()]
            data["layout_reasons"] = list(reasons)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "ExecutionOrder":
        events = [(str(p), int(c), str(k)) for p, c, k in data["events"]]
        lengths = {(str(p), int(c), str(k)): int(n) for p, c, k, n in data.get("lengths", [])}
        layouts = None
        if data.get("layouts") is not None:
            reasons = [str(r) for r in data.get("layout_reasons", [])]
            layouts = {(str(p), int(c), str(k)): layout_from_json(v, reasons) for p, c, k, v in data["layouts"]}
        return cls(events, lengths, layouts)


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

    with record_order_during(module) as events, torch.no_grad():
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = lambda x: mode.from_tensor(x) if isinstance(x, torch.Tensor) else x  # noqa: E731
            module(*[fake(a) for a in args], **{k: fake(v) for k, v in kwargs.items()})
    return events.order()
