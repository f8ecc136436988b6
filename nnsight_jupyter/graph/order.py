"""A model's module execution order: data that travels with a hosted model's description.

An *event* is ``(module_path, call_index, kind)`` with kind ``"input"`` (the forward pre-hook)
or ``"output"`` (the forward hook). `ExecutionOrder` is the list of events of one forward pass,
in the order they happen (recorded by `execution.order`), with the lengths of tuple outputs and,
once recorded, each event's layout (`graph.layout`). It travels to clients with the hosted
model's description (`to_json` / `from_json`; optional key ``"layouts"``), and every trace is
checked against it before the model runs (`execution.planner.check_order`).
"""

from __future__ import annotations

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
