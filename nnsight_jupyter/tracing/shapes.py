"""What is known of a traced value's shape while tracing: its rank, its length, the sizes the model fixes.

`len(x.shape)`, `x.view(*x.shape[:-1], n_heads, head_dim)`, `for d in x.shape`, `x.size(-1)`,
`x.ndim`, `len(h)` and `for head in h.view(9, 64)` need answers before the model runs. They come
from the shapes recorded with the model's execution order (`graph.layout.Leaf.shape`: a fake forward,
no compute), replayed here, on demand only, through the nodes the value is computed from, with fake
tensors (`FakeTensorMode`), in two imagined invokes of different sizes:

* a language model's values get 2 rows of 7 positions in one, 3 rows of 11 in the other (the dims
  recorded as batch and sequence dims); every other dim keeps its recorded size (the architecture's:
  hidden size, heads, vocabulary);
* a plain module's values get 2 rows in one and 3 in the other, and in the second every other dim
  doubled too: its inputs are the user's, so no size but the rank is known in advance.

A length or size equal in both is known: it is a Python int while tracing (the rank of `x.shape`,
`x.size(-1) == 576`, the 9 heads of `x.view(..., 9, 64)`). A size that differs (rows, positions)
**stays symbolic**: it is a traced value, computed per invoke when the graph runs, so
`x.view(*x.shape[:-1], 9, 64)` works for every invoke whatever its length, and `len(h)` over the
batch dim raises a `TracingError` that says what to write instead. A value whose shape cannot be
replayed (it comes from an op fake tensors can't run, a module call, a gradient) is unknown, and
the same errors say so. Nothing here runs the model or touches a real tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import TracingError
from ..graph.layout import Items, Leaf
from ..graph.nodes import Ref
from ..graph.ops import OPS
from ..graph.validate import _refs as refs_in

if TYPE_CHECKING:
    from .builder import GraphBuilder
    from .proxy import Proxy

UNKNOWN = object()          # a value whose shape can't be replayed
#: (rows, positions) of the two imagined invokes.
WORLDS = ((2, 7), (3, 11))
_EVENT_OF = {"module.output": "output", "module.input": "input", "module.inputs": "input"}
#: Ops whose result is a size or rank: an int while tracing when it is the same in both invokes.
SIZE_QUERIES = frozenset({"Tensor.size", "Tensor.dim", "Tensor.ndimension", "Tensor.numel", "Tensor.nelement"})


class _Record(dict):
    """A fake ModelOutput: keys and attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class ShapeOracle:
    """The two replays of one request's nodes (memoised per node)."""

    def __init__(self, builder: "GraphBuilder"):
        from torch._subclasses.fake_tensor import FakeTensorMode

        self.builder = builder
        target = builder.model._target
        self.fixed = bool(getattr(target, "fixed_dims", False))
        self.layouts = target.event_layouts()
        self.mode = FakeTensorMode()
        self.memo: tuple[dict[int, Any], dict[int, Any]] = ({}, {})

    def pair(self, node_id: int) -> tuple[Any, Any] | None:
        """The node's value in both imagined invokes, or None if it can't be replayed."""
        values = tuple(self._value(node_id, world) for world in (0, 1))
        return None if any(v is UNKNOWN for v in values) else values      # type: ignore[return-value]

    def _value(self, node_id: int, world: int) -> Any:
        memo = self.memo[world]
        if node_id in memo:
            return memo[node_id]
        nodes = self.builder.graph.nodes
        needed, stack = set(), [node_id]
        while stack:
            current = stack.pop()
            if current in needed or current in memo:
                continue
            needed.add(current)
            stack.extend(ref.id for ref in refs_in((nodes[current].args, nodes[current].kwargs), "a node"))
        with self.mode:
            for current in sorted(needed):
                memo[current] = self._replay(nodes[current], world)
        return memo[node_id]

    def _replay(self, node: Any, world: int) -> Any:
        op = OPS[node.op]
        try:
            if op.kind == "model":
                return self._model_value(node, world)
            args = self._resolve(node.args, world)
            kwargs = self._resolve(node.kwargs, world) if node.kwargs else {}
            result = op.fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - anything fake tensors can't replay is unknown, never an error here
            return UNKNOWN
        return UNKNOWN if result is UNKNOWN else result

    def _model_value(self, node: Any, world: int) -> Any:
        if node.op == "save":
            return self._resolve(node.args[0], world)
        if node.op == "module.param":
            path, name = node.args
            owner = self.builder.model._module.get_submodule(path)
            tensor = owner._parameters.get(name)
            tensor = owner._buffers.get(name) if tensor is None else tensor
            return torch.zeros(tuple(tensor.shape), dtype=tensor.dtype)
        event = _EVENT_OF.get(node.op)
        layout = self.layouts.get((node.module or "", node.call, event)) if event and self.layouts else None
        if layout is None:
            return UNKNOWN
        value = self._fake(layout, world)
        if node.op == "module.input":
            args, kwargs = value
            return args[0] if args else next(iter(kwargs.values()), UNKNOWN)
        return value

    def _fake(self, layout: Any, world: int) -> Any:
        if isinstance(layout, Items):
            if isinstance(layout.children, dict):
                return _Record({k: self._fake(v, world) for k, v in layout.children.items()})
            return tuple(self._fake(v, world) for v in layout.children)
        if not isinstance(layout, Leaf) or layout.shape is None:
            return UNKNOWN
        rows, positions = WORLDS[world]
        dims = list(layout.shape)
        if not self.fixed and world == 1:
            dims = [2 * d for d in dims]
        if layout.batch is not None:
            dims[layout.batch] = rows
        for dim in layout.seq:
            dims[dim] = positions
        return torch.zeros(dims, dtype=getattr(torch, layout.dtype or "float32", torch.float32))

    def _resolve(self, value: Any, world: int) -> Any:
        kind = type(value)
        if kind is Ref:
            found = self.memo[world][value.id]
            if found is UNKNOWN:
                raise LookupError("unknown")
            return found
        if isinstance(value, torch.Tensor):
            return self.mode.from_tensor(value)       # a user's tensor: never written by a replay
        if kind in (tuple, list):
            return kind(self._resolve(v, world) for v in value)
        if kind is dict:
            return {k: self._resolve(v, world) for k, v in value.items()}
        if kind is slice:
            return slice(self._resolve(value.start, world), self._resolve(value.stop, world),
                         self._resolve(value.step, world))
        return value


def oracle(builder: "GraphBuilder") -> ShapeOracle | None:
    """The request's oracle (made on first use), or None if its model has no recorded shapes."""
    found = builder.__dict__.get("_shape_oracle")
    if found is None:
        try:
            found = ShapeOracle(builder)
        except Exception:  # noqa: BLE001 - no target, no recording: nothing is known
            return None
        builder.__dict__["_shape_oracle"] = found
    return found


def _pair_of(proxy: "Proxy") -> tuple[Any, Any] | None:
    found = oracle(proxy._builder)
    return found.pair(proxy._id) if found is not None and found.layouts else None


def _size(value: Any) -> int | None:
    if isinstance(value, torch.Tensor):
        return int(value.shape[0]) if value.dim() else None
    if isinstance(value, (tuple, list, dict, torch.Size)):
        return len(value)
    return None


def length(proxy: "Proxy") -> int:
    """`len(proxy)` while tracing: known when it is the same in both imagined invokes; else a
    TracingError that says why and what to write instead."""
    pair = _pair_of(proxy)
    if pair is None:
        raise TracingError(
            f"len() of a traced value (node %{proxy._id}, {proxy._op()}) is not known while tracing: its shape "
            "can't be worked out before the model runs",
            fix="Use x.shape[0] or x.size(0) (a traced value, computed when the model runs), or .save() it "
                "and call len() after the trace.")
    a, b = (_size(v) for v in pair)
    if a is None or b is None:
        raise TracingError(f"len() of a traced {type(pair[0]).__name__} (node %{proxy._id}, {proxy._op()}): it "
                           "has no length (a 0-d tensor or a number)", fix="Index or reduce it instead.")
    if a != b:
        raise TracingError(
            f"len() of this traced value (node %{proxy._id}, {proxy._op()}) is its first dim, which depends on the "
            "invoke (its rows or prompt length), so it is not a Python int while tracing",
            fix="Use x.shape[0] or x.size(0): a traced value that holds it when the model runs (view and "
                "reshape take it); loop over a dim the model fixes (heads, hidden size) instead.")
    return a


def items(proxy: "Proxy") -> list[Any]:
    """`iter(proxy)` while tracing: one entry per item of a known length; the entries of a shape
    are ints where the model fixes the size, traced values where it varies per invoke."""
    n = length(proxy)
    pair = _pair_of(proxy)
    if pair is not None and all(isinstance(v, (torch.Size, tuple)) and all(type(d) is int for d in v) for v in pair):
        return [pair[0][i] if pair[0][i] == pair[1][i] else proxy[i] for i in range(n)]
    return [proxy[i] for i in range(n)]


def known_int(proxy: "Proxy") -> Any:
    """The proxy of a size or rank as a Python int when both invokes agree on it, else the proxy."""
    pair = _pair_of(proxy)
    if pair is not None and type(pair[0]) is int and pair[0] == pair[1]:
        return pair[0]
    return proxy


def is_shape(proxy: "Proxy") -> bool:
    """True if the proxy's node is `x.shape`, `x.size()` or a slice of one (cheap: the node alone)."""
    nodes = proxy._builder.graph.nodes
    node = nodes[proxy._id]
    for _ in range(8):
        if node.op == "getattr" and node.args[1:2] == ("shape",):
            return True
        if node.op == "Tensor.size" and len(node.args) == 1 and not node.kwargs:
            return True
        if node.op != "getitem" or type(node.args[0]) is not Ref or not isinstance(node.args[1], slice):
            return False
        node = nodes[node.args[0].id]
    return False
