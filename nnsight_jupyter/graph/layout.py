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
    """A tensor's batch dim and sequence dims, or a non-tensor value; `alone`: why a merged job can't see it.
    `shape` / `dtype`: a tensor's shape in the recording pass (its batch and sequence dims vary, the
    others are the architecture's) and its dtype name, when recorded (None: not a tensor, or unknown);
    the tracer uses them for `len()` and shape unpacking (`tracing.shapes`)."""

    __slots__ = ("batch", "seq", "alone", "shape", "dtype")

    def __init__(self, batch: int | None = None, seq: tuple[int, ...] = (), alone: str | None = None,
                 shape: tuple[int, ...] | None = None, dtype: str | None = None):
        self.batch = batch
        self.seq = seq
        self.alone = alone
        self.shape = shape
        self.dtype = dtype

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


# A leaf is ["leaf", batch, [seq dims], reason index or None] (+ [shape], dtype name when recorded);
# reasons are listed once in `reasons`.


def layout_to_json(layout: Layout, reasons: dict[str, int]) -> list:
    if type(layout) is Leaf:
        reason = None if layout.alone is None else reasons.setdefault(layout.alone, len(reasons))
        data = ["leaf", layout.batch, list(layout.seq), reason]
        return data if layout.shape is None else [*data, list(layout.shape), layout.dtype]
    if isinstance(layout.children, dict):
        return ["map", {str(k): layout_to_json(v, reasons) for k, v in layout.children.items()}]
    return ["seq", [layout_to_json(v, reasons) for v in layout.children]]


def layout_from_json(data: list, reasons: list[str]) -> Layout:
    tag = data[0]
    if tag == "leaf":
        shape = tuple(int(d) for d in data[4]) if len(data) > 5 and isinstance(data[4], list) else None
        dtype = str(data[5]) if shape is not None and isinstance(data[5], str) else None
        return Leaf(None if data[1] is None else int(data[1]), tuple(int(d) for d in data[2]),
                    None if data[3] is None else str(reasons[int(data[3])]), shape, dtype)
    if tag == "map":
        return Items({str(k): layout_from_json(v, reasons) for k, v in data[1].items()})
    return Items([layout_from_json(v, reasons) for v in data[1]])
