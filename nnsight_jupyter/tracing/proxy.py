"""Proxies: stand-ins for values that exist only when the graph runs.

Inside a trace, every operation on a proxy (operators, indexing, tensor methods, ``torch.*``
functions through ``__torch_function__``) adds a node to the graph and returns a new proxy.
After the graph ran, a saved proxy holds its real value in `.value` (and behaves like it for
attribute access and torch functions). Python control flow on a proxy (`if`, `while`, `bool()`)
raises at once: the value does not exist yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import ControlFlowError, OpNotAllowedError, TracingError, ValueNotReadyError
from ..graph.nodes import Ref
from ..graph.ops import OPS, is_method, op_name_for_torch_callable, refuse_method
from . import shapes

if TYPE_CHECKING:
    from .builder import GraphBuilder

PENDING, READY, MISSING = 0, 1, 2


class Proxy:
    """The value of one graph node, to be computed when the trace runs."""

    __slots__ = ("_builder", "_id", "_save_id", "_value", "_state", "_length", "__weakref__")

    def __init__(self, builder: "GraphBuilder", node_id: int, length: int | None = None):
        object.__setattr__(self, "_builder", builder)
        object.__setattr__(self, "_id", node_id)
        object.__setattr__(self, "_save_id", None)
        object.__setattr__(self, "_value", None)
        object.__setattr__(self, "_state", PENDING)
        object.__setattr__(self, "_length", length)

    # ------------------------------------------------------------------ results

    def save(self) -> "Proxy":
        """Keep this value past the trace (as it is at this point of the trace)."""
        builder = self._live("save()")
        save = builder.add("save", (self,))
        object.__setattr__(self, "_save_id", save._id)
        builder.saved.append(self)
        return self

    @property
    def value(self) -> Any:
        """The real value, once the trace has run (saved proxies only)."""
        if self._state == READY:
            return self._value
        if self._state == MISSING:
            raise ValueNotReadyError(self._value)
        if self._save_id is None:
            raise ValueNotReadyError(
                f"node %{self._id} ({self._op()}) was not saved, so it has no value after the trace: "
                "call .save() on it inside the trace")
        failure = self._builder.failure
        if failure is not None:
            first = str(failure).splitlines()[0] if str(failure) else ""
            raise ValueNotReadyError(
                f"the trace this value belongs to failed ({type(failure).__name__}: {first[:300]}), so it was "
                "never computed", fix="Fix that error and run the trace again.")
        raise ValueNotReadyError("the trace has not run yet: .value is set when the outermost `with` block exits")

    def _set(self, state: int, value: Any) -> None:
        object.__setattr__(self, "_state", state)
        object.__setattr__(self, "_value", value)

    # ------------------------------------------------------------------ graph building

    def _live(self, what: str) -> "GraphBuilder":
        builder = self._builder
        if builder.closed:
            raise TracingError(
                f"{what} on a value of a trace that has already run: use it inside the trace, or .save() "
                "it there and use .value afterwards")
        return builder

    def _op(self) -> str:
        node = self._builder.graph.nodes[self._id] if self._id < len(self._builder.graph.nodes) else None
        return node.op if node is not None else "?"

    def _node(self, op: str, *args: Any, **kwargs: Any) -> Any:
        if self._state == READY and self._builder.closed:   # after the trace: act on the value
            return OPS[op].fn(*_values(args), **_values(kwargs))
        return self._live(op).add(op, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._state == READY:
            return getattr(self._value, name)
        builder = self._live(f".{name}")
        if is_method(name):
            op = "Tensor." + name

            def method(*args: Any, **kwargs: Any) -> Proxy:
                result = builder.add(op, (self, *args), kwargs)
                if op in shapes.SIZE_QUERIES and (args or op != "Tensor.size"):
                    return shapes.known_int(result)      # x.size(-1), x.dim(): ints where known
                return result

            return method
        result = builder.add("getattr", (self, name))
        return shapes.known_int(result) if name == "ndim" else result

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "grad":
            builder = self._live(".grad =")
            builder.require_backward(".grad =")
            builder.add("set_grad", (self, value))
            return
        raise TracingError(f"cannot set attribute {name!r} on a traced value; only `.grad` can be assigned "
                           "(inside `with loss.backward():`)")

    @property
    def grad(self) -> "Proxy":
        """The gradient of this value; only inside `with loss.backward():`."""
        if self._state == READY:
            return self._value.grad
        builder = self._live(".grad")
        builder.require_backward(".grad")
        return builder.add("grad", (self,))

    def backward(self, gradient: Any = None, retain_graph: bool | None = None, create_graph: bool = False,
                 inputs: Any = None) -> "BackwardContext | None":
        """Run backward from this value after the forward pass (`tracing.grads`); use it as
        `with loss.backward(): ...` to read and write `.grad` inside, or call it plainly."""
        from .grads import backward

        return backward(self, gradient, retain_graph, create_graph, inputs)

    def requires_grad_(self, requires_grad: bool = True) -> "Proxy":
        """Accepted as in torch: a value whose `.grad` is used requires grad (`tracing.grads`)."""
        from .grads import require_grad

        return require_grad(self, requires_grad)

    def retain_grad(self) -> None:
        """After the trace, this saved value's `.grad` holds its gradient (`tracing.grads`)."""
        from .grads import retain_grad

        retain_grad(self)

    # ------------------------------------------------------------------ python protocol

    def __bool__(self) -> bool:
        if self._state == READY:
            return bool(self._value)
        raise ControlFlowError(
            "Python `if`, `while`, `and`/`or` and bool() need a value, but this is a traced value "
            f"(node %{self._id}, {self._op()}) that exists only when the model runs. Use "
            "torch.where(condition, a, b) to choose between values inside the trace, or .save() the "
            "value and test it after the trace. Nothing was run.")

    def __len__(self) -> int:
        if self._state == READY:
            return len(self._value)
        if self._length is not None:
            return self._length
        return shapes.length(self)            # known from the recorded shapes, or a TracingError saying why not

    def __iter__(self):
        if self._state == READY:
            return iter(self._value)
        if self._length is not None:
            return iter([self[i] for i in range(self._length)])
        return iter(shapes.items(self))

    def __contains__(self, item: Any) -> bool:
        if self._state == READY:
            return item in self._value
        raise ControlFlowError("`in` on a traced value needs a value that exists only when the model runs")

    def __index__(self) -> int:
        if self._state == READY:
            return self._value.__index__()
        raise ControlFlowError(
            f"a traced value (node %{self._id}, {self._op()}) cannot be used as a Python number (an index, a "
            "slice bound or size of a real tensor, range(), int(), .item()) while tracing: it exists only when "
            "the model runs (a size that varies per invoke stays a traced value)",
            fix="Use it in traced ops instead (h[:, :n] or h.view(n, -1) where h is traced), or .save() it and "
                "use .value after the trace.")

    def __int__(self) -> int:
        return int(self._value) if self._state == READY else self.__index__()

    def __float__(self) -> float:
        return float(self._value) if self._state == READY else self.__index__()

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        import numpy

        if self._state == READY:
            return numpy.asarray(self._value, *args, **kwargs)
        raise ControlFlowError("a traced value has no numpy array while tracing; .save() it first")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        node = self._builder.graph.nodes[self._id]
        if node.op == "getattr" and len(node.args) > 1 and isinstance(node.args[1], str):
            if callable(getattr(torch.Tensor, node.args[1], None)):
                raise refuse_method(node.args[1])     # `h.numpy()`: named, with why and what to do
            raise OpNotAllowedError(
                f".{node.args[1]}(...) cannot run inside a trace: it is not a Tensor method on the allow-list "
                "(nnsight_jupyter.graph.ops.TENSOR_METHODS)",
                fix=f".save() the value and call .{node.args[1]}(...) on it after the trace.")
        raise TracingError("a traced value cannot be called; to call a module, call its envoy (model.lm_head(x))")

    def __repr__(self) -> str:
        if self._state == READY:
            return repr(self._value)
        return f"<Proxy %{self._id}: {self._op()}>"

    __hash__ = object.__hash__

    def __reduce_ex__(self, protocol: int) -> Any:
        raise OpNotAllowedError(
            "pickling is not on the allow-list: a traced value cannot be written to a file (torch.save, "
            "pickle) inside a trace; "
            ".save() it and write its .value after the trace")

    def __getitem__(self, key: Any) -> "Proxy":
        item = self._node("getitem", self, key)
        if type(key) is int and type(item) is Proxy and shapes.is_shape(self):
            return shapes.known_int(item)        # a size the model fixes is an int while tracing
        return item

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._state == READY and self._builder.closed:
            self._value[_values(key)] = _values(value)
            return
        self._node("setitem", self, key, value)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        builder = _find_builder(args, kwargs)
        if builder is None or builder.closed:
            return func(*_values(args), **_values(kwargs))
        name = op_name_for_torch_callable(func)
        if name.startswith("r:"):
            name = name[2:]
            args = (args[1], args[0], *args[2:])
        if name == "setitem":
            builder.add(name, args, kwargs)
            return None
        return builder.add(name, args, kwargs)


def _make_operators() -> None:
    binary = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift")
    for name in binary:
        op = name + "_" if name in ("and", "or") else name

        def forward(self, other, op=op):
            return self._node(op, self, other)

        def reflected(self, other, op=op):
            return self._node(op, other, self)

        def inplace(self, other, op="i" + name):
            return self._node(op, self, other)

        setattr(Proxy, f"__{name}__", forward)
        setattr(Proxy, f"__r{name}__", reflected)
        setattr(Proxy, f"__i{name}__", inplace)
    for name in ("lt", "le", "gt", "ge", "eq", "ne"):
        setattr(Proxy, f"__{name}__", lambda self, other, op=name: self._node(op, self, other))
    for name in ("neg", "pos", "abs", "invert"):
        setattr(Proxy, f"__{name}__", lambda self, op=name: self._node(op, self))


_make_operators()


class BackwardContext:
    """`with loss.backward():` — the nodes inside read and write gradients."""

    def __init__(self, builder: "GraphBuilder", node_id: int):
        self.builder = builder
        self.node_id = node_id

    def __enter__(self) -> "BackwardContext":
        self.previous = self.builder.tracer().backward
        self.builder.tracer().backward = self.node_id
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.builder.tracer().backward = self.previous
        return False


def _find_builder(args: Any, kwargs: dict) -> "GraphBuilder | None":
    for value in (*args, *kwargs.values()):
        if isinstance(value, Proxy):
            return value._builder
        if isinstance(value, (list, tuple)):
            found = _find_builder(value, {})
            if found is not None:
                return found
    return None


def _values(value: Any) -> Any:
    """Replace finished proxies by their values (torch functions called after the trace)."""
    if isinstance(value, Proxy):
        return value.value
    if isinstance(value, (list, tuple)):
        return type(value)(_values(v) for v in value)
    if isinstance(value, dict):
        return {k: _values(v) for k, v in value.items()}
    return value


_PLAIN = frozenset({int, float, str, bool, type(None), torch.Tensor})


def to_arg(value: Any, builder: "GraphBuilder") -> Any:
    """A node argument: proxies of this graph become Refs, finished saved proxies their values."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is Proxy:
        if value._builder is builder:
            return Ref(value._id)
        return value.value
    if kind is tuple:
        return tuple([to_arg(v, builder) for v in value])
    if kind is list:
        return [to_arg(v, builder) for v in value]
    if kind is dict:
        return {k: to_arg(v, builder) for k, v in value.items()}
    if kind is slice:
        if type(value.start) in _PLAIN and type(value.stop) in _PLAIN and type(value.step) in _PLAIN:
            return value
        return slice(to_arg(value.start, builder), to_arg(value.stop, builder), to_arg(value.step, builder))
    if isinstance(value, Proxy):
        return to_arg(value, builder)
    from .envoy import Envoy

    if isinstance(value, Envoy):
        raise TracingError(
            f"a module ({value._path or 'model'}) was used as a value; use its .output, .input or call it")
    return value
