"""The operation allow-list: the one table of everything a graph may do.

A graph node names an op from `OPS`; anything else is refused when the graph is built (client)
and when it is decoded (host), with the op named. Ops come in kinds:

* ``model``    reads and writes of module inputs/outputs, cache entries, module calls, skips,
               parameter reads, gradients, saves, logs: carried out by the executor itself, each
               declaring what the planner, validator, merger and limits need (`Op`, `MODEL_OPS`);
* ``operator`` Python operators (``operator.add`` ...), ``getitem``/``setitem``/``getattr``;
* ``torch``    functions of ``torch`` / ``torch.nn.functional`` / ``torch.linalg``;
* ``method``   ``torch.Tensor`` methods, called only on real tensors.

Each op also says what it may change and what its result may alias, so that writes reach only
activations and job-owned tensors, never the model's parameters or buffers:

* `Op.writes` (`Writes`): the arguments it writes in place: ``setitem`` and the ``i*`` operators
  their first argument, ``Tensor.*_`` methods ``self``, ``F.relu/silu/dropout(..., inplace=True)``
  their input, ``F.embedding(..., max_norm=...)`` its *weight* (it renormalises rows in place),
  ``torch.norm`` / ``F.normalize`` their positional ``out``; the ``module.set_*`` / ``skip`` /
  ``set_grad`` model ops write the module value or gradient they are anchored at (an activation);
* `Op.view_of`: the arguments its result may share storage with (``getitem``, ``getattr`` such as
  ``.T`` / ``.mT`` / ``.data``, ``view``, ``expand``, ``detach``, ``einsum`` ...), so that a write
  into a view is a write into what it views.

`graph.validate` refuses, before anything runs, a write whose target is a ``module.param`` node
or a view of one; the executor refuses, at run time, a write into any tensor sharing storage with
a parameter or buffer. Keyword arguments are checked against `graph.keywords` (no ``out=``).

Never on the list: dunder attributes other than the operators, imports, file and network
functions, ``torch.load``/``torch.save``, global RNG seeding, ``requires_grad_``, ``set_``,
``resize_``, ``as_strided``, ``index_put_``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import OpNotAllowedError
from . import sampling
from .nodes import Ref


@dataclass(frozen=True)
class Param:
    """One argument of an op: at position `index`, or by keyword `name`; `rest`: this position
    and every later one (``einsum``'s operands)."""

    index: int
    name: str = ""
    rest: bool = False

    def values(self, args: Any, kwargs: dict) -> list:
        """The values given for this argument (none if it was not given)."""
        if self.rest:
            return list(args[self.index:])
        if len(args) > self.index:
            return [args[self.index]]
        if self.name and self.name in kwargs:
            return [kwargs[self.name]]
        return []


@dataclass(frozen=True)
class Switch:
    """The argument that turns an op's write on: `param`; on when its value is truthy (``inplace``)
    or, with `when_set`, when it is not None (``max_norm``). A value computed by the graph (a Ref)
    counts as on: it is unknown until the graph runs."""

    param: Param
    when_set: bool = False

    def on(self, args: Any, kwargs: dict) -> bool:
        values = self.param.values(args, kwargs)
        if not values:
            return False
        value = values[0]
        if type(value) is Ref:
            return True
        if self.when_set:
            return value is not None
        try:
            return bool(value)
        except Exception:  # noqa: BLE001 - a value without a truth value: the op itself will refuse it
            return True


@dataclass(frozen=True)
class Writes:
    """What an op changes in place: the arguments `params` (always, or only while `switch` is on),
    or, with `frame`, the module value / gradient it is anchored at (model ops: an activation)."""

    params: tuple[Param, ...] = ()
    switch: Switch | None = None
    frame: bool = False


#: What a model op is anchored at (`Op.anchor`): a module's input or output event of the forward
#: pass, the moment the gradient of its first argument arrives during backward, the end of the
#: forward pass, or nothing (the op runs where its values are ready, in program order).
ANCHORS = ("input", "output", "gradient", "end", "")
#: Which part of a module's value a model op reads or writes (`Op.part`): its output, its first
#: argument, all of (args, kwargs), or its forward call (skipped: the value is its output).
PARTS = ("output", "input", "inputs", "forward", "")
#: What a literal argument of an op names (`Check.what`); `graph.validate` has one rule for each.
NAMES = ("module path", "parameter name", "attribute name")


@dataclass(frozen=True)
class Check:
    """An argument that names something: at position `index`, a literal str that must be a valid
    `what` (one of `NAMES`)."""

    index: int
    what: str


@dataclass(frozen=True)
class Op:
    """One allowed operation: its `name`, `kind`, the callable (`fn`) for non-model ops, what it
    `writes` in place (None: nothing), and which arguments its result may be a view of.

    What the planner, validator, merger, executor and memory limits need to know of an op is
    declared here, and read from here (`tests/graph/test_op_table.py` pins it):

    * `anchor` / `part` (model ops): where it runs (`ANCHORS`) and which part of the module's value it
      reads or writes (`PARTS`); `ordered`: it follows its invoke's program order (anchored no
      earlier than the node before it, moving that cursor, refused if the forward pass reaches its
      module first); an unordered op (a cache entry) is read whenever the forward pass gets there;
    * `merges`: a job with this op may share a forward pass with other jobs (gradients and
      generation results may not); `runs_backward`: it runs autograd (``backward``);
    * `checks` / `arity`: the literal names among its arguments (`Check`) and its (min, max) number
      of arguments (max None: any), checked by the validator; `keywords`: the section of
      `graph.keywords.KEYWORDS` its keyword arguments are checked against ("" : by its kind);
    * `weight`: its result is a model parameter or buffer (read-only: writes into it, or into a
      view of it, are refused); `borrows`: its result is not an allocation of the job (the model's
      own value, a view of it, or nothing), so memory limits do not charge it;
    * `saves`: its value comes back with the result, under the node's id;
    * `sample`: it draws random numbers; the executor calls ``sample(generator, *args, **kwargs)``
      with the job's own `torch.Generator` (`graph.sampling`), never the process-wide one.
    """

    name: str
    kind: str
    fn: Callable[..., Any] | None = None
    writes: Writes | None = None
    view_of: tuple[Param, ...] = ()
    anchor: str = ""
    part: str = ""
    ordered: bool = True
    merges: bool = True
    runs_backward: bool = False
    checks: tuple[Check, ...] = ()
    arity: tuple[int, int | None] | None = None
    keywords: str = ""
    weight: bool = False
    borrows: bool = False
    saves: bool = False
    sample: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS or self.part not in PARTS or any(c.what not in NAMES for c in self.checks):
            raise ValueError(f"op {self.name!r}: anchor {self.anchor!r} must be one of {ANCHORS}, part "
                             f"{self.part!r} one of {PARTS}, and every check one of {NAMES}")
        if self.checks and self.arity is None:
            raise ValueError(f"op {self.name!r} checks named arguments: declare its arity too")

    @property
    def mutates(self) -> bool:
        """True if the op can change something in place."""
        return self.writes is not None

    def written(self, args: Any, kwargs: dict) -> list:
        """The argument values this call writes in place: Refs when checking a graph, tensors when
        it runs. Empty for model ops (they write the value they are anchored at)."""
        w = self.writes
        if w is None or not w.params or (w.switch is not None and not w.switch.on(args, kwargs)):
            return []
        return [v for p in w.params for v in p.values(args, kwargs)]

    def aliased(self, args: Any, kwargs: dict) -> list:
        """The argument values this call's result may share storage with: those it views, and
        those it writes in place (an in-place op returns what it wrote)."""
        views = [v for p in self.view_of for v in p.values(args, kwargs)]
        return views + self.written(args, kwargs) if self.writes is not None else views


_FIRST = (Param(0, "input"),)
_SELF = (Param(0, "self"),)
_WRITES_FIRST = Writes(_FIRST)
_WRITES_SELF = Writes(_SELF)


# ----------------------------------------------------------------------------- model ops
# Carried out by the executor (one handler each); the node's `module`, `call` and `step` fields say
# where. An op that writes `_FRAME` writes the module value (or gradient) it is anchored at: an
# activation, never a parameter. A new model op is one line here plus its executor handler.
_FRAME = Writes(frame=True)


def _model(name: str, **declared: Any) -> Op:
    return Op(name, "model", **declared)


MODEL_OPS: dict[str, Op] = {op.name: op for op in (
    # reads and writes of module values (the invoke's rows), in program order
    _model("module.output", anchor="output", part="output", borrows=True),
    _model("module.input", anchor="input", part="input", borrows=True),      # first positional (or keyword) argument
    _model("module.inputs", anchor="input", part="inputs", borrows=True),    # (args, kwargs)
    _model("module.set_output", anchor="output", part="output", writes=_FRAME, borrows=True),
    _model("module.set_input", anchor="input", part="input", writes=_FRAME, borrows=True),
    _model("module.set_inputs", anchor="input", part="inputs", writes=_FRAME, borrows=True),
    # do not run the module: the value is its output
    _model("module.skip", anchor="input", part="forward", writes=_FRAME, borrows=True),
    # tracer.cache(): a copy of a module's output / (args, kwargs), kept past the trace, taken
    # whenever the forward pass reaches the module (out of program order: never refused for it)
    _model("cache.output", anchor="output", part="output", ordered=False, saves=True),
    _model("cache.inputs", anchor="input", part="inputs", ordered=False, saves=True),
    # calls and parameters: (module path, *arguments) / (module path, parameter or buffer name)
    _model("module.call", checks=(Check(0, "module path"),), arity=(1, None), keywords="model"),
    _model("module.param", checks=(Check(0, "module path"), Check(1, "parameter name")), arity=(2, 2),
           weight=True, borrows=True),
    # gradients (inside `with loss.backward():`): they run alone
    _model("grad", anchor="gradient", merges=False, borrows=True),                     # read a value's gradient
    _model("set_grad", anchor="gradient", writes=_FRAME, merges=False, borrows=True),  # replace it, further back
    _model("backward", anchor="end", runs_backward=True, merges=False, borrows=True,   # (loss, gradient,
           arity=(1, 3)),                                                              # retain_graph)
    _model("grad.require", merges=False, borrows=True, arity=(1, 1)),   # requires_grad_(): the value itself
    # retain_grad(): a copy of a value's gradient as it finally arrives (after the block's writes)
    _model("grad.keep", anchor="gradient", ordered=False, merges=False, saves=True, arity=(1, 1)),
    # results
    _model("save", saves=True),                      # keep a value past the trace (recorded where it is saved)
    # a value stored in a saved list or dict (tracing.containers): kept where it is computed
    _model("collect", ordered=False, saves=True),
    _model("log", borrows=True),                     # print() inside a trace: text comes back with the result
    _model("tracer.result", anchor="end", merges=False, borrows=True),  # generate(): prompt ids + new ids
)}

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
    # added from nnsight's docs and tests and TransformerLens-style analysis code
    "logspace", "scatter", "scatter_add", "scatter_reduce", "index_add", "index_copy", "index_fill",
    "take_along_dim", "masked_select", "masked_scatter", "argwhere", "nonzero", "unique", "unique_consecutive",
    "cumprod", "cummax", "cummin", "logcumsumexp", "log1p", "expm1", "log2", "log10", "exp2", "sinh", "cosh",
    "tan", "asin", "acos", "atan", "asinh", "acosh", "atanh", "logit", "erfinv", "erfc", "lgamma",
    "digamma", "baddbmm", "addmm", "addbmm", "addmv", "inner", "cross", "select", "narrow",
    "movedim", "moveaxis", "swapaxes", "swapdims", "t", "repeat_interleave", "tile", "broadcast_to",
    "broadcast_tensors", "unbind", "tensor_split", "dstack", "column_stack", "ravel", "take", "histc",
    "bincount", "quantile", "nanquantile", "median", "nanmedian", "kthvalue", "nanmean", "nansum", "var_mean",
    "std_mean", "allclose", "equal", "lerp", "addcmul", "addcdiv", "fmod", "remainder", "trunc", "frac",
    "clamp_min", "clamp_max", "logaddexp", "sgn", "signbit", "isfinite", "isposinf", "isneginf", "isreal",
    "numel", "diag", "diag_embed", "block_diag", "corrcoef", "cov", "dist", "as_tensor", "atleast_1d",
    "atleast_2d", "atleast_3d", "meshgrid", "cartesian_prod", "combinations", "rot90", "fliplr", "flipud",
    "true_divide", "floor_divide", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
    "gt", "ge", "lt", "le", "eq", "ne", "greater", "less", "vander", "trapezoid", "hypot", "float_power",
    "xlogy", "mv", "pinverse", "det", "logdet", "slogdet", "matrix_power", "renorm", "mode",
    "result_type", "promote_types", "can_cast", "is_tensor", "is_floating_point", "is_complex",
)
#: torch functions that draw random numbers (from the job's generator: `Op.sample`).
RANDOM_FUNCTIONS = (
    "randn", "rand", "randint", "randperm", "normal", "bernoulli", "multinomial", "poisson",
    "rand_like", "randn_like", "randint_like",
)
FUNCTIONAL = (
    "softmax", "log_softmax", "gelu", "relu", "silu", "sigmoid", "tanh", "layer_norm", "rms_norm",
    "normalize", "cross_entropy", "kl_div", "mse_loss", "nll_loss", "one_hot", "cosine_similarity",
    "pad", "linear", "embedding", "softplus", "logsigmoid",
    "softmin", "glu", "elu", "selu", "celu", "leaky_relu", "hardtanh", "relu6", "mish", "hardswish",
    "hardsigmoid", "hardshrink", "softshrink", "tanhshrink", "softsign", "threshold", "prelu", "group_norm",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "l1_loss", "smooth_l1_loss", "huber_loss",
    "poisson_nll_loss", "gaussian_nll_loss", "margin_ranking_loss", "cosine_embedding_loss",
    "pairwise_distance", "pdist", "bilinear", "unfold", "fold", "interpolate", "avg_pool1d", "max_pool1d",
    "adaptive_avg_pool1d", "conv1d", "conv2d",
)
#: nn.functional ops that draw random numbers (seeded versions in `graph.sampling`).
RANDOM_FUNCTIONAL = tuple(sampling.FUNCTIONAL)
LINALG = ("norm", "vector_norm", "matrix_norm", "svd", "svdvals", "qr", "eigh", "pinv", "lstsq",
          "det", "slogdet", "inv", "matrix_rank", "eigvalsh", "eigvals", "eig", "cross", "vecdot", "matmul",
          "solve", "cholesky", "matrix_power", "multi_dot", "diagonal", "matrix_exp", "cond", "vander")

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
    # added from nnsight's docs and tests and TransformerLens-style analysis code
    "scatter", "scatter_add", "scatter_reduce", "index_add", "index_copy", "index_fill", "take_along_dim",
    "masked_select", "masked_scatter", "argwhere", "unique", "unique_consecutive", "cumprod", "cummax",
    "cummin", "logcumsumexp", "log1p", "expm1", "log2", "log10", "exp2", "sinh", "cosh", "tan", "asin",
    "acos", "atan", "erf", "erfinv", "logit", "select", "movedim", "moveaxis", "swapaxes", "swapdims",
    "repeat_interleave", "tile", "broadcast_to", "unbind", "tensor_split", "ravel", "take", "histc",
    "bincount", "quantile", "nanquantile", "median", "nanmedian", "kthvalue", "mode", "nanmean", "nansum",
    "lerp", "addcmul", "addcdiv", "fmod", "remainder", "trunc", "frac", "clamp_min", "clamp_max",
    "logaddexp", "sgn", "signbit", "isfinite", "diag", "diag_embed", "dist", "atan2", "hypot", "mm", "bmm",
    "mv", "baddbmm", "addmm", "cross", "inner",
    "true_divide", "floor_divide", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "greater",
    "less", "element_size", "is_floating_point", "is_complex", "is_contiguous", "stride", "ndimension",
    "nelement", "type", "sum_to_size", "float_power", "xlogy", "renorm", "det", "logdet", "slogdet",
    "inverse", "pinverse", "matrix_power",
)
#: Tensor methods that draw random numbers (from the job's generator: `Op.sample`).
RANDOM_METHODS = ("bernoulli", "multinomial")
RANDOM_INPLACE_METHODS = ("normal_", "uniform_", "bernoulli_", "random_", "exponential_", "log_normal_",
                          "cauchy_", "geometric_")
INPLACE_TENSOR_METHODS = (
    "zero_", "fill_", "add_", "sub_", "mul_", "div_", "copy_", "clamp_", "masked_fill_",
    "index_fill_", "scatter_", "index_copy_", "index_add_", "neg_", "pow_", "abs_", "exp_",
    "scatter_add_", "clamp_min_", "clamp_max_", "sqrt_", "log_", "sigmoid_", "tanh_", "relu_", "nan_to_num_",
    "lerp_",
)

#: nn.functional ops with an `inplace` switch: the position of that parameter (they write their input).
_INPLACE_AT = {"relu": 1, "silu": 1, "dropout": 3, "dropout1d": 3, "dropout2d": 3, "dropout3d": 3, "elu": 2,
               "selu": 1, "celu": 2, "leaky_relu": 2, "hardtanh": 3, "relu6": 1, "mish": 1, "hardswish": 1,
               "hardsigmoid": 1, "threshold": 3}
# torch functions that can write one of their arguments, and when (checked against the
# signatures and aten schemas of every op by tests/graph/test_allowlist_writes.py).
TORCH_WRITES: dict[str, Writes] = {
    **{f"torch.nn.functional.{name}": Writes(_FIRST, Switch(Param(index, "inplace")))
       for name, index in _INPLACE_AT.items()},
    # max_norm renormalises the rows of `weight` that the input looks up, in place.
    "torch.nn.functional.embedding": Writes((Param(1, "weight"),), Switch(Param(3, "max_norm"), when_set=True)),
    "torch.norm": Writes((Param(4, "out"),)),                        # out is positional here
    "torch.nn.functional.normalize": Writes((Param(4, "out"),)),
}

#: Ops whose result may be (or share storage with) their first argument, so that an in-place op
#: on the result writes into that argument; `torch.einsum` may return a view of any operand. (An
#: op that writes in place returns what it wrote: its result aliases its written arguments too.)
VIEW_OPS = frozenset({
    "getitem", "getattr", "pos",
    "Tensor.view", "Tensor.view_as", "Tensor.reshape", "Tensor.reshape_as", "Tensor.transpose",
    "Tensor.permute", "Tensor.t", "Tensor.flatten", "Tensor.unflatten", "Tensor.squeeze",
    "Tensor.unsqueeze", "Tensor.expand", "Tensor.expand_as", "Tensor.narrow", "Tensor.diagonal",
    "Tensor.chunk", "Tensor.split", "Tensor.detach", "Tensor.contiguous", "Tensor.to",
    "Tensor.type_as", "Tensor.cpu", "Tensor.float", "Tensor.double", "Tensor.half",
    "Tensor.bfloat16", "Tensor.int", "Tensor.long", "Tensor.bool",
    "torch.reshape", "torch.transpose", "torch.permute", "torch.squeeze", "torch.unsqueeze",
    "torch.flatten", "torch.unflatten", "torch.split", "torch.chunk", "torch.diagonal",
    "torch.nn.functional.dropout", "torch.einsum",
    "Tensor.select", "Tensor.movedim", "Tensor.moveaxis", "Tensor.swapaxes", "Tensor.swapdims",
    "Tensor.broadcast_to", "Tensor.unbind", "Tensor.tensor_split", "Tensor.ravel", "Tensor.type",
    "Tensor.sum_to_size", "torch.select", "torch.narrow", "torch.movedim", "torch.moveaxis", "torch.swapaxes",
    "torch.swapdims", "torch.t", "torch.broadcast_to", "torch.unbind", "torch.tensor_split", "torch.ravel",
    "torch.as_tensor", "torch.atleast_1d", "torch.atleast_2d", "torch.atleast_3d", "torch.broadcast_tensors",
    "torch.meshgrid", "torch.nn.functional.dropout1d", "torch.nn.functional.dropout2d",
    "torch.nn.functional.dropout3d", "torch.linalg.diagonal",
})
_VIEW_OF = {"torch.einsum": (Param(1, rest=True),), "torch.broadcast_tensors": (Param(0, rest=True),),
            "torch.meshgrid": (Param(0, rest=True),), "torch.atleast_1d": (Param(0, rest=True),),
            "torch.atleast_2d": (Param(0, rest=True),), "torch.atleast_3d": (Param(0, rest=True),)}


def _build_table() -> dict[str, Op]:
    table: dict[str, Op] = {}

    def add(name: str, kind: str, fn: Any, writes: Writes | None = None, **declared: Any) -> None:
        first = _SELF if kind == "method" else _FIRST
        view_of = _VIEW_OF.get(name, first) if name in VIEW_OPS else ()
        table[name] = Op(name, kind, fn, writes, view_of, **declared)

    table.update(MODEL_OPS)
    add("getitem", "operator", operator.getitem)
    add("setitem", "operator", operator.setitem, _WRITES_FIRST)
    add("getattr", "operator", getattr, checks=(Check(1, "attribute name"),), arity=(2, 3))
    for name in BINARY_OPERATORS + UNARY_OPERATORS:
        add(name, "operator", getattr(operator, name))
    for name in INPLACE_OPERATORS:
        add(name, "operator", getattr(operator, name), _WRITES_FIRST)
    for prefix, namespace, names in (
        ("torch.", torch, TORCH_FUNCTIONS),
        ("torch.nn.functional.", torch.nn.functional, FUNCTIONAL),
        ("torch.linalg.", torch.linalg, LINALG),
    ):
        for name in names:
            if hasattr(namespace, name):
                add(prefix + name, "torch", getattr(namespace, name), TORCH_WRITES.get(prefix + name))
    for name in TENSOR_METHODS:
        if hasattr(torch.Tensor, name):
            add("Tensor." + name, "method", getattr(torch.Tensor, name))
    for name in INPLACE_TENSOR_METHODS:
        add("Tensor." + name, "method", getattr(torch.Tensor, name), _WRITES_SELF)
    # random ops: called with the job's generator (graph.sampling), never the process-wide one
    for name in RANDOM_FUNCTIONS:
        add("torch." + name, "torch", getattr(torch, name), sample=sampling.native(getattr(torch, name)))
    for name in RANDOM_FUNCTIONAL:
        full = "torch.nn.functional." + name
        add(full, "torch", getattr(torch.nn.functional, name), TORCH_WRITES.get(full), sample=sampling.FUNCTIONAL[name])
    for name in RANDOM_METHODS:
        add("Tensor." + name, "method", getattr(torch.Tensor, name), sample=sampling.native(getattr(torch.Tensor, name)))
    for name in RANDOM_INPLACE_METHODS:
        add("Tensor." + name, "method", getattr(torch.Tensor, name), _WRITES_SELF,
            sample=sampling.native(getattr(torch.Tensor, name)))
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


#: Ops that are refused on purpose, with why and what to write instead (named in the error).
REFUSED: dict[str, str] = {
    "torch.empty": "it returns uninitialised memory (on a shared host, bytes another job left there); "
                   "use torch.zeros(...) instead",
    "torch.empty_like": "it returns uninitialised memory; use torch.zeros_like(...) instead",
    "torch.empty_strided": "it returns uninitialised memory; use torch.zeros(...) instead",
    "torch.Tensor.new_empty": "it returns uninitialised memory; use .new_zeros(...) instead",
    "torch.manual_seed": "it reseeds the random generator every job of the process shares; give the "
                         "trace a seed instead: model.trace(..., seed=0)",
    "torch.seed": "it reseeds the process-wide random generator; give the trace a seed instead: "
                  "model.trace(..., seed=0)",
    "torch.load": "it unpickles a file", "torch.save": "it writes a file",
}
#: Tensor methods that need the real value, which exists only when the model runs.
NEEDS_VALUE = frozenset({"numpy", "__array__", "data_ptr", "storage", "untyped_storage", "register_hook",
                         "pin_memory", "share_memory_", "apply_", "map_", "tolist_", "is_set_to"})

_NAMESPACES = (("torch.nn.functional", torch.nn.functional), ("torch.linalg", torch.linalg),
               ("torch.special", torch.special), ("torch.fft", torch.fft), ("torch", torch),
               ("torch.Tensor", torch.Tensor))


def public_name(fn: Any) -> str:
    """The name a user wrote for a torch callable: ``torch.logspace``, ``torch.Tensor.numpy``,
    ``torch.nn.functional.gelu`` (not ``torch._VariableFunctionsClass.logspace``)."""
    name = getattr(fn, "__name__", None)
    if isinstance(name, str):
        for prefix, namespace in _NAMESPACES:
            short = name.removeprefix(prefix.rsplit(".", 1)[-1] + "_")    # linalg_vector_norm -> vector_norm
            for candidate in (name, short):
                if getattr(namespace, candidate, None) is fn:
                    return f"{prefix}.{candidate}"
        owner = getattr(fn, "__objclass__", None) or getattr(fn, "__self__", None)
        if owner is torch.Tensor or owner is torch._C.TensorBase:
            return f"torch.Tensor.{name}"
    qualified = getattr(fn, "__qualname__", None) or name or repr(fn)
    return f"{getattr(fn, '__module__', None) or 'torch'}.{qualified}"


def _refused(public: str) -> str:
    """The message for an op that is not on the list, by its public name."""
    why = REFUSED.get(public)
    if why is not None:
        return f"{public} is refused inside a trace (it is kept off the allow-list): {why}."
    method = public[len("torch.Tensor."):] if public.startswith("torch.Tensor.") else None
    if method in NEEDS_VALUE:
        return (f"{public} cannot run inside a trace: it needs the real value, which exists only when the "
                f"model runs. .save() the value and call .{method}() on it after the trace.")
    return (f"{public} is not on the allow-list of operations that can run inside a trace "
            f"({len(TORCH_FUNCTIONS) + len(FUNCTIONAL) + len(LINALG)} torch functions, {len(TENSOR_METHODS)} "
            "Tensor methods: see nnsight_jupyter.graph.ops.OPS). Use an allowed equivalent, or compute it on "
            "the saved value after the trace.")


def refusal(name: str) -> str | None:
    """Why op `name` (not on the list) is refused and what to write instead, for ops refused on
    purpose and Tensor methods; None for any other name."""
    public = "torch." + name if name.startswith("Tensor.") else name
    if public in REFUSED or public.startswith("torch.Tensor."):
        return _refused(public)
    return None


def get_op(name: str) -> Op:
    """The allow-listed op called `name`, or OpNotAllowedError naming it."""
    op = OPS.get(name)
    if op is None:
        why = refusal(name)
        if why is not None:
            raise OpNotAllowedError(why)
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
        raise OpNotAllowedError(_refused(public_name(fn)))
    return name


def refuse_method(name: str) -> OpNotAllowedError:
    """The error for `proxy.<name>(...)` where `name` is a Tensor method not on the list."""
    return OpNotAllowedError(_refused(f"torch.Tensor.{name}"))


def is_method(name: str) -> bool:
    """True if `Tensor.<name>` is an allowed tensor method."""
    return ("Tensor." + name) in OPS
