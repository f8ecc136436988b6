"""Layouts as data: which dim of each value a module sees is the batch dim, which are sequence dims.

A *layout* mirrors a module's input (``(args, kwargs)``) or output: `Items` for tuples, lists,
dicts and ModelOutputs, `Leaf` for everything else. A tensor leaf records its batch dim (or None)
and its sequence dims; `alone` says why a job that shares its forward pass with other jobs may not
see the leaf at all (None: it may). Layouts are recorded by `execution.layout` and travel with the
execution order (`graph.order.ExecutionOrder.to_json`), so they are plain data here.
"""

from __future__ import annotations

from typing import Any

Event = tuple[str, int, str]


class Leaf:
    """A tensor's batch dim and sequence dims, or a non-tensor value; `alone`: why a merged job can't see it."""

    __slots__ = ("batch", "seq", "alone")

    def __init__(self, batch: int | None = None, seq: tuple[int, ...] = (), alone: str | None = None):
        self.batch = batch
        self.seq = seq
        self.alone = alone

    def __repr__(self) -> str:
        return f"Leaf(batch={self.batch}, seq={self.seq}, alone={self.alone!r})"


class Items:
    """A container: `children` is a list (tuple / list) or a dict (dict / ModelOutput) of layouts."""

    __slots__ = ("children",)

    def __init__(self, children: list | dict):
        self.children = children

    def child(self, key: Any) -> "Leaf | Items | None":
        try:
            return self.children[key]
        except (KeyError, IndexError, TypeError):
            return None

    def __repr__(self) -> str:
        return f"Items({self.children!r})"


Layout = Leaf | Items


# A leaf is ["leaf", batch, [seq dims], reason index or None]; reasons are listed once in `reasons`.


def layout_to_json(layout: Layout, reasons: dict[str, int]) -> list:
    if type(layout) is Leaf:
        reason = None if layout.alone is None else reasons.setdefault(layout.alone, len(reasons))
        return ["leaf", layout.batch, list(layout.seq), reason]
    if isinstance(layout.children, dict):
        return ["map", {str(k): layout_to_json(v, reasons) for k, v in layout.children.items()}]
    return ["seq", [layout_to_json(v, reasons) for v in layout.children]]


def layout_from_json(data: list, reasons: list[str]) -> Layout:
    tag = data[0]
    if tag == "leaf":
        return Leaf(None if data[1] is None else int(data[1]), tuple(int(d) for d in data[2]),
                    None if data[3] is None else str(reasons[int(data[3])]))
    if tag == "map":
        return Items({str(k): layout_from_json(v, reasons) for k, v in data[1].items()})
    return Items([layout_from_json(v, reasons) for v in data[1]])
