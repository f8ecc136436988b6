"""The operation allow-list: the one table of everything a graph may do.

A graph node names an op from `OPS`; anything else is refused when the graph is built (client)
and when it is decoded (host), with the op named. Ops come in kinds:

* ``model``    reads and writes of module inputs/outputs, module calls, skips, parameter reads,
               gradients, saves, logs: carried out by the executor itself;
* ``operator`` Python operators (``operator.add`` ...), ``getitem``/``setitem``/``getattr``;
* ``torch``    functions of ``torch`` / ``torch.nn.functional`` / ``torch.linalg``;
* ``method``   ``torch.Tensor`` methods, called only on real tensors.

Never on the list: dunder attributes other than the operators, imports, file and network
functions, ``torch.load``/``torch.save``, global RNG seeding, ``requires_grad_``, ``set_``,
``resize_``, ``out=`` arguments, and anything that writes the model's weights (in-place ops are
allowed on activations; the executor refuses them on tensors that share storage with a weight).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import OpNotAllowedError


@dataclass(frozen=True)
class Op:
    """One allowed operation. `mutates`: changes its first argument in place."""

    name: str
    kind: str
    mutates: bool = False
    fn: Callable[..., Any] | None = None


# ----------------------------------------------------------------------------- model ops
# Carried out by the executor; the node's `module`, `call` and `step` fields say where.
MODEL_OPS = {
    "module.output": False,      # read a module's output (the invoke's rows)
    "module.input": False,       # read its first positional argument (or first keyword)
    "module.inputs": False,      # read (args, kwargs)
    "module.set_output": True,   # replace the output
    "module.set_input": True,    # replace the first positional argument
    "module.set_inputs": True,   # replace (args, kwargs)
    "module.skip": True,         # do not run the module; use the value as its output
    "module.call": False,        # call a submodule on values (logit lens)
    "module.param": False,       # read a parameter (read-only)
    "grad": False,               # read the gradient of a value (inside `with loss.backward()`)
    "set_grad": True,            # replace the gradient flowing further back
    "backward": False,           # run backward from a scalar
    "save": False,               # keep a value past the trace (recorded where it is saved)
    "log": False,                # print() inside a trace: text comes back with the result
    "tracer.result": False,      # generate(): prompt ids followed by the new ids
}

# ----------------------------------------------------------------------------- operators
BINARY_OPERATORS = (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
    "and_", "or_", "xor", "lshift", "rshift", "lt", "le", "gt", "ge", "eq", "ne",
)
UNARY_OPERATORS = ("neg", "pos", "abs", "invert")
INPLACE_OPERATORS = (
    "iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul", "iand", "ior", "ixor",
)

# ----------------------------------------------------------------------------- torch.*
TORCH_FUNCTIONS = (
    "abs", "add", "sub", "mul", "div", "matmul", "mm", "bmm", "einsum", "cat", "concat", "stack",
    "hstack", "vstack", "split", "chunk", "softmax", "log_softmax", "sigmoid", "tanh", "relu", "exp",
    "log", "sqrt", "rsqrt", "mean", "sum", "prod", "std", "var", "max", "min", "amax", "amin",
    "argmax", "argmin", "topk", "sort", "argsort", "norm", "cosine_similarity", "dot", "outer",
    "where", "clamp", "clip", "zeros_like", "ones_like", "full_like", "zeros", "ones", "full",
    "arange", "linspace", "tensor", "eye", "gather", "index_select", "masked_fill", "flatten",
    "unflatten", "reshape", "transpose", "permute", "squeeze", "unsqueeze", "cumsum", "diff",
    "isclose", "logsumexp", "maximum", "minimum", "pow", "square", "sign", "round", "floor", "ceil",
    "triu", "tril", "roll", "flip", "diagonal", "trace", "kron", "nan_to_num", "isnan", "isinf",
    "logical_and", "logical_or", "logical_not", "all", "any", "count_nonzero", "searchsorted",
    "bucketize", "cdist", "erf", "neg", "reciprocal", "sin", "cos", "atan2",
)
FUNCTIONAL = (
    "softmax", "log_softmax", "gelu", "relu", "silu", "sigmoid", "tanh", "layer_norm", "rms_norm",
    "normalize", "cross_entropy", "kl_div", "mse_loss", "nll_loss", "one_hot", "cosine_similarity",
    "pad", "linear", "embedding", "dropout", "softplus", "logsigmoid",
)
LINALG = ("norm", "vector_norm", "matrix_norm", "svd", "svdvals", "qr", "eigh", "pinv", "lstsq")

# ----------------------------------------------------------------------------- Tensor methods
TENSOR_METHODS = (
    "abs", "add", "sub", "mul", "div", "pow", "matmul", "exp", "log", "sqrt", "rsqrt", "neg",
    "mean", "sum", "prod", "std", "var", "max", "min", "amax", "amin", "argmax", "argmin", "topk",
    "sort", "argsort", "norm", "softmax", "log_softmax", "sigmoid", "tanh", "relu", "transpose",
    "permute", "reshape", "view", "view_as", "reshape_as", "flatten", "unflatten", "squeeze",
    "unsqueeze", "expand", "expand_as", "repeat", "contiguous", "clone", "detach", "float",
    "double", "half", "bfloat16", "int", "long", "bool", "to", "type_as", "cpu", "size", "dim",
    "numel", "item", "tolist", "chunk", "split", "narrow", "gather", "index_select", "masked_fill",
    "where", "clamp", "clip", "cumsum", "diff", "eq", "ne", "lt", "le", "gt", "ge", "logical_and",
    "logical_or", "logical_not", "any", "all", "isnan", "isinf", "nonzero", "t", "new_zeros",
    "new_ones", "new_full", "new_tensor", "logsumexp", "square", "sign", "round", "floor", "ceil",
    "roll", "flip", "diagonal", "count_nonzero", "dot", "outer", "cos", "sin", "reciprocal",
    "nan_to_num", "triu", "tril", "maximum", "minimum", "allclose", "equal", "square",
)
INPLACE_TENSOR_METHODS = (
    "zero_", "fill_", "add_", "sub_", "mul_", "div_", "copy_", "clamp_", "masked_fill_",
    "index_fill_", "scatter_", "index_copy_", "index_add_", "neg_", "pow_", "abs_", "exp_",
)

# Keyword arguments refused on every torch function and method (writing into a given tensor).
FORBIDDEN_KWARGS = frozenset({"out"})


def _build_table() -> dict[str, Op]:
    table: dict[str, Op] = {}
    for name, mutates in MODEL_OPS.items():
        table[name] = Op(name, "model", mutates)
    table["getitem"] = Op("getitem", "operator", False, operator.getitem)
    table["setitem"] = Op("setitem", "operator", True, operator.setitem)
    table["getattr"] = Op("getattr", "operator", False, getattr)
    for name in BINARY_OPERATORS + UNARY_OPERATORS:
        table[name] = Op(name, "operator", False, getattr(operator, name))
    for name in INPLACE_OPERATORS:
        table[name] = Op(name, "operator", True, getattr(operator, name))
    for prefix, namespace, names in (
        ("torch.", torch, TORCH_FUNCTIONS),
        ("torch.nn.functional.", torch.nn.functional, FUNCTIONAL),
        ("torch.linalg.", torch.linalg, LINALG),
    ):
        for name in names:
            if hasattr(namespace, name):
                table[prefix + name] = Op(prefix + name, "torch", False, getattr(namespace, name))
    for name in TENSOR_METHODS:
        if hasattr(torch.Tensor, name):
            table["Tensor." + name] = Op("Tensor." + name, "method", False, getattr(torch.Tensor, name))
    for name in INPLACE_TENSOR_METHODS:
        table["Tensor." + name] = Op("Tensor." + name, "method", True, getattr(torch.Tensor, name))
    return table


OPS: dict[str, Op] = _build_table()

# torch callables -> op name, for __torch_function__ dispatch while tracing. Tensor dunders
# (Tensor.__add__ when a real tensor meets a proxy) map to the operator ops.
_TORCH_CALLABLES: dict[Any, str] = {}
for _op in OPS.values():
    if _op.kind in ("torch", "method") and _op.fn is not None:
        _TORCH_CALLABLES.setdefault(_op.fn, _op.name)
for _name in BINARY_OPERATORS:
    _dunder = _name.rstrip("_")
    for _spelling, _swap in ((f"__{_dunder}__", False), (f"__r{_dunder}__", True)):
        _fn = getattr(torch.Tensor, _spelling, None)
        if _fn is not None:
            _TORCH_CALLABLES.setdefault(_fn, ("r:" if _swap else "") + _name)
for _name, _dunder in (("neg", "__neg__"), ("pos", "__pos__"), ("abs", "__abs__"), ("invert", "__invert__"),
                       ("getitem", "__getitem__"), ("setitem", "__setitem__")):
    _TORCH_CALLABLES.setdefault(getattr(torch.Tensor, _dunder), _name)
for _name in INPLACE_OPERATORS:
    _fn = getattr(torch.Tensor, f"__{_name}__", None)
    if _fn is not None:
        _TORCH_CALLABLES.setdefault(_fn, _name)


def get_op(name: str) -> Op:
    """The allow-listed op called `name`, or OpNotAllowedError naming it."""
    op = OPS.get(name)
    if op is None:
        raise OpNotAllowedError(
            f"operation {name!r} is not on the allow-list. Allowed: Python operators, "
            f"{len(TORCH_FUNCTIONS)} torch functions, {len(TENSOR_METHODS)} Tensor methods and module "
            "access (see nnsight_jupyter.graph.ops.OPS). Compute it after the trace, or ask for the op "
            "to be added."
        )
    return op


def op_name_for_torch_callable(fn: Any) -> str:
    """The op name for a torch callable met through __torch_function__ ("r:" prefix: swapped args)."""
    name = _TORCH_CALLABLES.get(fn)
    if name is None:
        qualified = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
        module = getattr(fn, "__module__", None) or "torch"
        raise OpNotAllowedError(
            f"{module}.{qualified} is not on the allow-list of operations that can run inside a "
            "trace. Use an allowed equivalent (see nnsight_jupyter.graph.ops.OPS) or compute it "
            "on the saved value after the trace."
        )
    return name


def is_method(name: str) -> bool:
    """True if `Tensor.<name>` is an allowed tensor method."""
    return ("Tensor." + name) in OPS
