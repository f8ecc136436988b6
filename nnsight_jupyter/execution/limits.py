"""Per-job budgets inside the executor: bytes a job's ops allocate, and bytes of its log output.

A host configures the limits once per worker process (`configure`); local runs have none, and then
`new_budget()` is None and the executor does no accounting at all. With limits set, the executor
calls `Budget.before` just before an op runs and `Budget.after` on the value it produced, in one
place (`_Executor._run_node`), and `Budget.charge_log` for each log line:

* `before` refuses an op whose allocation is predictable from its arguments (Python sequence
  repetition and concatenation, huge int powers and shifts, `tolist`, tensor constructors, `repeat`,
  copies such as `contiguous` of an expanded view, broadcasting elementwise ops, outer products,
  matrix products) *before* it allocates, so a two-node graph cannot take the worker down;
* `after` charges what the op did allocate: tensors whose storage is new (not a view, not one of
  the op's inputs), strings, bytes and containers. The executor keeps every node's value until the
  job ends, so the sum is the job's live memory, not a running total of temporaries.

Each job of a merged batch has its own account (`group`), so one job's refusal fails it alone.
Refusals are `ResourceLimitError`s naming the op, the user's line, the limit and the figure.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from ..errors import ResourceLimitError
from ..graph.ops import OPS

__all__ = ["Budget", "configure", "new_budget", "format_bytes"]

_settings: dict[str, int | None] = {"max_job_memory_bytes": None, "max_log_bytes": None}

# Bytes per element of a Python list built by `tolist()` (a pointer plus a boxed float or int).
_PY_ITEM_BYTES = 32
# Ops whose result is the module's own value (or a view of it), never an allocation of the job.
_BORROWED = frozenset(op.name for op in OPS.values() if op.borrows)      # graph.ops.Op.borrows
_ELEMENTWISE = frozenset({
    "add", "sub", "mul", "div", "truediv", "floordiv", "mod", "pow", "and_", "or_", "xor", "lt", "le",
    "gt", "ge", "eq", "ne", "maximum", "minimum", "where", "atan2", "logical_and", "logical_or",
    "masked_fill", "isclose", "iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow"})
_CONSTRUCTORS = frozenset({"torch.zeros", "torch.ones", "torch.full", "Tensor.new_zeros", "Tensor.new_ones",
                           "Tensor.new_full", "torch.randn", "torch.rand"})
_LIKE = frozenset({"torch.zeros_like", "torch.ones_like", "torch.full_like", "torch.randn_like", "torch.rand_like",
                   "torch.randint_like"})
_CONVERSIONS = {"Tensor.float": 4, "Tensor.double": 8, "Tensor.half": 2, "Tensor.bfloat16": 2, "Tensor.int": 4,
                "Tensor.long": 8, "Tensor.bool": 1, "Tensor.to": 8}


# Every op `_estimate` knows (by full name, or by the name after the last dot): others skip it.
_ESTIMATED_BASES = _ELEMENTWISE | {"lshift", "tolist", "arange", "linspace", "eye", "tensor", "new_tensor", "repeat",
                                   "contiguous", "clone", "outer", "kron", "matmul", "mm", "bmm", "one_hot",
                                   "zeros_like", "ones_like", "full_like", "logspace", "randint", "randperm",
                                   "randn_like", "rand_like", "randint_like"}
_ESTIMATED = frozenset(_CONSTRUCTORS | set(_CONVERSIONS))


def configure(*, max_job_memory_bytes: int | None = None, max_log_bytes: int | None = None) -> None:
    """Set this process's per-job limits (a host worker calls it once; None: no limit)."""
    _settings["max_job_memory_bytes"] = max_job_memory_bytes or None
    _settings["max_log_bytes"] = max_log_bytes or None


def new_budget() -> "Budget | None":
    """A fresh budget for one execution, or None when this process has no limits."""
    memory, logs = _settings["max_job_memory_bytes"], _settings["max_log_bytes"]
    if memory is None and logs is None:
        return None
    return Budget(memory, logs)


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"   # pragma: no cover


class Budget:
    """The memory and log accounts of the jobs of one execution (one per `group`)."""

    def __init__(self, max_memory: int | None, max_logs: int | None):
        self.max_memory = max_memory
        self.max_logs = max_logs
        self.memory: dict[int, int] = {}
        self.logs: dict[int, int] = {}
        self._estimate: int | None = None

    # -- memory
    def before(self, node: Any, args: tuple, kwargs: dict, group: int) -> None:
        """Refuse the op if what it will allocate is predictable and over the budget."""
        self._estimate = None
        op = node.op
        if self.max_memory is None or (op not in _ESTIMATED and op.rsplit(".", 1)[-1] not in _ESTIMATED_BASES):
            return
        try:
            estimate = _estimate(node.op, args, kwargs)
        except Exception:  # noqa: BLE001 - an argument the estimator does not understand: the op decides
            estimate = None
        if estimate is not None:
            self._check(node, estimate, group, "would allocate")
            self._estimate = estimate

    def after(self, node: Any, value: Any, args: Any, group: int) -> None:
        """Charge what the op allocated to the job's account."""
        if self.max_memory is None or node.op in _BORROWED:
            return
        size = _new_bytes(value, args)
        if not isinstance(value, torch.Tensor):      # a container's own size hides its items'
            size = max(size or 0, self._estimate or 0)
        if size:
            self._check(node, size, group, "allocated")
            self.memory[group] = self.memory.get(group, 0) + size

    def _check(self, node: Any, size: int, group: int, verb: str) -> None:
        held = self.memory.get(group, 0)
        if held + size > self.max_memory:
            raise ResourceLimitError(
                f"{node.op} {verb} {format_bytes(size)} ({size} bytes); with the {format_bytes(held)} this "
                f"job already holds that is over this host's per-job memory limit of "
                f"{format_bytes(self.max_memory)} (c.NNsightHost.max_job_memory_bytes = {self.max_memory})",
                fix="Work on smaller pieces (a slice, a mean), or ask the host's owner for a higher limit.")

    # -- logs
    def charge_log(self, node: Any, line: str, text: str, group: int) -> None:
        """Count a log line as it travels (JSON-escaped); refuse the job past the log limit."""
        if self.max_logs is None:
            return
        size = len(json.dumps(line)) + len(json.dumps(text)) + 4
        total = self.logs.get(group, 0) + size
        if total > self.max_logs:
            raise ResourceLimitError(
                f"the job's log output (print inside the trace) reached {total} bytes, over this host's "
                f"limit of {self.max_logs} bytes per job (c.NNsightHost.max_log_bytes)",
                fix="Print less, or save the values instead.")
        self.logs[group] = total


# ----------------------------------------------------------------------------- estimates


def _estimate(op: str, args: tuple, kwargs: dict) -> int | None:
    """Bytes the op will allocate, when its arguments say so; None when they don't."""
    base = op.rsplit(".", 1)[-1]
    if op in ("mul", "imul", "add", "iadd") and len(args) == 2:
        sequence = _sequence_estimate(op, *args)
        if sequence is not None:
            return sequence
    if op in ("pow", "ipow", "lshift") and len(args) == 2 and all(type(a) is int for a in args):
        base_value, exponent = args
        if op == "lshift":
            return (abs(base_value).bit_length() + max(exponent, 0)) // 8
        if abs(base_value) > 1 and exponent > 0:
            return abs(base_value).bit_length() * exponent // 8
        return None
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if op == "Tensor.tolist":
        return args[0].numel() * _PY_ITEM_BYTES
    if op in _CONSTRUCTORS or op in _LIKE:
        return _constructor_estimate(op, args, kwargs)
    if op == "torch.randint":                     # (high, size) or (low, high, size)
        size = args[-1] if args and isinstance(args[-1], (list, tuple, torch.Size)) else kwargs.get("size", ())
        return math.prod(_sizes((size,))) * _itemsize(kwargs, 8)
    if op == "torch.randperm":
        return int(args[0] if args else kwargs.get("n", 0)) * _itemsize(kwargs, 8)
    if op == "torch.arange":
        numbers = [*args, *(kwargs[k] for k in ("start", "end", "step") if k in kwargs)]
        start, end, step = (0, numbers[0], 1) if len(numbers) == 1 else (*numbers[:2], numbers[2] if len(numbers) > 2 else 1)
        return max(0, math.ceil((float(end) - float(start)) / float(step))) * _itemsize(kwargs, 8)
    if op in ("torch.linspace", "torch.logspace"):
        steps = args[2] if len(args) > 2 else kwargs.get("steps", 0)
        return int(steps) * _itemsize(kwargs, 4)
    if op == "torch.eye":
        n = int(args[0])
        m = int(args[1]) if len(args) > 1 and isinstance(args[1], int) else int(kwargs.get("m", n))
        return n * m * _itemsize(kwargs, 4)
    if op in ("torch.tensor", "Tensor.new_tensor"):
        data = args[1] if op == "Tensor.new_tensor" else args[0]
        return _nested_len(data) * 8
    if op == "Tensor.repeat" and tensors:
        sizes = _sizes(args[1:])
        return args[0].numel() * math.prod(sizes) * args[0].element_size()
    if op in ("Tensor.contiguous", "Tensor.clone", "torch.clone") and tensors:
        return args[0].numel() * args[0].element_size()
    if op in _CONVERSIONS and tensors:
        return args[0].numel() * _CONVERSIONS[op]
    if base in ("outer", "kron") and len(tensors) == 2:
        return tensors[0].numel() * tensors[1].numel() * max(t.element_size() for t in tensors)
    if base in ("matmul", "mm", "bmm") and len(tensors) == 2 and min(t.dim() for t in tensors) >= 2:
        a, b = tensors
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        return math.prod(batch) * a.shape[-2] * b.shape[-1] * max(a.element_size(), b.element_size())
    if base == "one_hot" and tensors:
        classes = args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
        return tensors[0].numel() * max(int(classes), 0) * 8
    if base in _ELEMENTWISE and len(tensors) >= 2:
        shape = torch.broadcast_shapes(*(t.shape for t in tensors))
        return math.prod(shape) * max(t.element_size() for t in tensors)
    return None


def _sequence_estimate(op: str, a: Any, b: Any) -> int | None:
    if op in ("add", "iadd"):
        if isinstance(a, (str, bytes, list, tuple)) and type(a) is type(b):
            return (len(a) + len(b)) * _item_bytes(a)
        return None
    sequence, count = (a, b) if isinstance(a, (str, bytes, list, tuple)) else (b, a)
    if isinstance(sequence, (str, bytes, list, tuple)) and type(count) is int:
        return len(sequence) * max(count, 0) * _item_bytes(sequence)
    return None


def _item_bytes(sequence: Any) -> int:
    return 1 if isinstance(sequence, (str, bytes)) else 8


def _constructor_estimate(op: str, args: tuple, kwargs: dict) -> int:
    if op.endswith("_like"):
        like = args[0]
        return like.numel() * _itemsize(kwargs, like.element_size())
    if op.startswith("Tensor."):
        owner, rest = args[0], args[1:]
        default = owner.element_size()
    else:
        rest, default = args, 4
    if op.endswith("full"):
        rest = rest[:1]              # (size, fill_value)
    sizes = _sizes(rest) if rest else _sizes((kwargs.get("size", ()),))
    return math.prod(sizes) * _itemsize(kwargs, default)


def _sizes(values: tuple) -> list[int]:
    if len(values) == 1 and isinstance(values[0], (list, tuple, torch.Size)):
        values = tuple(values[0])
    return [max(int(v), 0) for v in values]


def _itemsize(kwargs: dict, default: int) -> int:
    dtype = kwargs.get("dtype")
    return dtype.itemsize if isinstance(dtype, torch.dtype) else default


def _nested_len(data: Any) -> int:
    """Elements of a nested list, from the first element of each level (no full walk)."""
    count = 1
    while isinstance(data, (list, tuple)):
        count *= len(data)
        if not data:
            return 0
        data = data[0]
    return count


# ----------------------------------------------------------------------------- measurements


def _new_bytes(value: Any, args: Any) -> int | None:
    """Bytes of `value` that the op allocated; None for values it cannot size (use the estimate)."""
    if isinstance(value, torch.Tensor):
        return _tensor_bytes(value, _storages(args))
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (tuple, list)):
        if value and all(isinstance(v, torch.Tensor) for v in value):
            inputs, seen, total = _storages(args), set(), 0
            for tensor in value:
                pointer = tensor.untyped_storage().data_ptr()
                if pointer not in seen:
                    seen.add(pointer)
                    total += _tensor_bytes(tensor, inputs)
            return total
        return None if not value else 8 * len(value)
    return None


def _tensor_bytes(tensor: torch.Tensor, inputs: set[int]) -> int:
    storage = tensor.untyped_storage()
    return 0 if storage.data_ptr() in inputs else storage.nbytes()


def _storages(args: Any) -> set[int]:
    if isinstance(args, torch.Tensor):
        return {args.untyped_storage().data_ptr()}
    if isinstance(args, (tuple, list)):
        return {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
    return set()
