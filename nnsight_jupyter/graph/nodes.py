"""In-memory intervention graph: nodes, references, runs and invokes.

A `Graph` is what a trace (or a session of traces) becomes. It is plain data:

* `runs`: the forward passes it asks for, in order (a trace or a generate call each), with their
  `invokes`. An invoke holds its input only; it never holds batch rows: the executor assigns rows
  when it builds the batch, so a host can merge several users' graphs without rewriting them.
* `nodes`: operations from the allow-list (`graph.ops`), in program order. Arguments are
  constants, tensors, or `Ref`s to earlier nodes. A node also says which run and invoke it belongs
  to, where it is anchored (module path, call index, generation step), and the user's line.
* `parameters`: job-owned tensors that may require grad (training inside a session). The format
  carries them from version 1; the executor refuses graphs that use them until training lands.

`graph.codec` turns a Graph into JSON + safetensors and back; `graph.validate` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GRAPH_VERSION = 1


class Ref:
    """A reference to the value of node `id` (used inside node arguments)."""

    __slots__ = ("id",)

    def __init__(self, id: int):
        self.id = id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("Ref", self.id))

    def __repr__(self) -> str:
        return f"%{self.id}"


class Node:
    """One operation of the graph.

    module/call: where a model op is anchored (named_modules path, call index within a forward).
    step/repeat: generation step (0 for a plain trace); `repeat` means every step from `step` on.
    backward:   id of the `backward` node whose block this node is in (gradient phase), else None.
    line:       the user's "file:line" that created it.
    """

    __slots__ = ("id", "op", "args", "kwargs", "run", "invoke", "module", "call", "step", "repeat",
                 "backward", "line", "refs")
    _FIELDS = ("id", "op", "args", "kwargs", "run", "invoke", "module", "call", "step", "repeat",
               "backward", "line")

    def __init__(self, id: int, op: str, args: tuple = (), kwargs: dict | None = None, *, run: int = 0,
                 invoke: int = 0, module: str | None = None, call: int = 0, step: int = 0,
                 repeat: bool = False, backward: int | None = None, line: str = ""):
        self.id = id
        self.op = op
        self.args = args
        self.kwargs = kwargs or {}
        self.run = run
        self.invoke = invoke
        self.module = module
        self.call = call
        self.step = step
        self.repeat = repeat
        self.backward = backward
        self.line = line
        self.refs: tuple[int, ...] | None = None   # ids this node uses; filled in by the planner

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._FIELDS}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and _same(self.fields(), other.fields())

    def __repr__(self) -> str:
        where = f" @{self.module}[{self.call}]" if self.module is not None else ""
        return f"%{self.id} = {self.op}{where}(args={self.args!r}, kwargs={self.kwargs!r})"


@dataclass
class Invoke:
    """One invoke: its input (args, kwargs of the model call, or a prompt), or none (= all rows)."""

    id: int
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    all_rows: bool = False

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Invoke) and self.id == other.id and self.all_rows == other.all_rows
                and _same(self.args, other.args) and _same(self.kwargs, other.kwargs))


@dataclass
class Run:
    """One forward pass (`kind="trace"`) or one generate call (`kind="generate"`)."""

    id: int
    kind: str = "trace"
    invokes: list[Invoke] = field(default_factory=list)
    options: dict = field(default_factory=dict)   # e.g. {"max_new_tokens": 4}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Run) and self.id == other.id and self.kind == other.kind
                and self.invokes == other.invokes and _same(self.options, other.options))


@dataclass
class Parameter:
    """A job-owned tensor (training inside a session); `value` is its initial value."""

    name: str
    value: Any
    requires_grad: bool = True


@dataclass
class Graph:
    """A whole request: runs in order, nodes in program order, saves, job-owned parameters."""

    runs: list[Run] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    model: str | None = None
    version: int = GRAPH_VERSION
    parameters: list[Parameter] = field(default_factory=list)
    # Set by graph.validate when the graph passed it (see validate.is_validated); not data.
    checked: tuple | None = field(default=None, repr=False, compare=False)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Graph) and self.version == other.version and self.model == other.model
                and self.runs == other.runs and self.nodes == other.nodes
                and len(self.parameters) == len(other.parameters)
                and all(a.name == b.name and a.requires_grad == b.requires_grad and _same(a.value, b.value)
                        for a, b in zip(self.parameters, other.parameters)))


def _same(a: Any, b: Any) -> bool:
    """Structural equality that compares tensors by dtype, shape and bits."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # nan == nan for round trips
    return type(a) is type(b) and a == b
