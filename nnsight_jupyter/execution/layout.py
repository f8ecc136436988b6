"""Which dim of each value a module sees is the batch dim and which are sequence dims: recorded, never guessed.

A *layout* mirrors a module's input (``(args, kwargs)``) or output: `Items` for tuples, lists,
dicts and ModelOutputs, `Leaf` for everything else. A tensor leaf records its batch dim (or None)
and its sequence dims (one entry per prompt position); `alone` says why a job that shares its
forward pass with other jobs may not see the leaf at all (None: it may).

Layouts are recorded by running the model under FakeTensorMode (shapes only, no compute) at two
batch sizes and two lengths, and comparing each leaf's shapes:

* a dim that goes 1 -> 2 when the batch goes 1 -> 2 rows is the batch dim;
* a dim that goes 3 -> 5 when the prompt goes 3 -> 5 tokens is a sequence dim (a 4-D attention
  mask has two); varying both separately tells them apart even when heads == tokens;
* a dim that changes in any other way (rows and positions flattened together), a leaf whose form
  changes when rows are padded (an attention mask that is None without padding, rotary tables that
  are per row only with position ids), a shared tensor indexed by position, a non-tensor value that
  changes with the batch, or an object (the KV cache) are marked `alone`: a merged job can be given
  neither its own slice of them nor a faithful private copy.

A tensor with neither a batch nor a sequence dim is shared by every row: a merged job gets a
private copy (`batching.view`). Immutable constants (None, bools, ints equal in every pass) are
shared as they are.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

from ..graph.layout import Event, Items, Layout, Leaf

UNRECORDED = "its layout was not recorded for this model"


def first_alone(layout: Layout | None, where: str) -> str | None:
    """`where` plus the reason of the first leaf (depth first) a merged job may not see, or None."""
    if layout is None:
        return f"{where}: {UNRECORDED}"
    if type(layout) is Leaf:
        return f"{where}: {layout.alone}" if layout.alone else None
    items = layout.children.items() if isinstance(layout.children, dict) else enumerate(layout.children)
    for key, child in items:
        found = first_alone(child, f"{where}[{key!r}]")
        if found:
            return found
    return None


# ----------------------------------------------------------------------------- recording


def describe(value: Any) -> tuple:
    """A value's structure and shapes, for comparing passes: ("t", shape) / ("c", v) / ("s", [...]) /
    ("m", {...}) / ("o", type name)."""
    if isinstance(value, torch.Tensor):
        return ("t", tuple(value.shape), str(value.dtype).removeprefix("torch."))
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, torch.Size)):
        return ("c", value)
    if isinstance(value, (tuple, list)):
        return ("s", [describe(v) for v in value])
    if isinstance(value, dict):
        return ("m", {k: describe(v) for k, v in value.items()})
    return ("o", type(value).__name__)


@contextlib.contextmanager
def describing(module: torch.nn.Module) -> Iterator[dict[Event, tuple]]:
    """Inside the block, every module call's input and output are described, keyed by event."""
    seen: dict[Event, tuple] = {}
    counts: dict[tuple[str, str], int] = {}
    handles = []

    def note(path: str, kind: str, value: Any) -> None:
        call = counts.get((path, kind), 0)
        counts[(path, kind)] = call + 1
        seen[(path, call, kind)] = describe(value)

    try:
        for path, sub in module.named_modules():
            handles.append(sub.register_forward_pre_hook(
                lambda mod, args, kwargs, path=path: note(path, "input", (args, kwargs)), with_kwargs=True))
            handles.append(sub.register_forward_hook(
                lambda mod, args, output, path=path: note(path, "output", output)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def describe_fake(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict[Event, tuple]:
    """Describe every event of one forward under FakeTensorMode."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .devices import unhooked

    with unhooked(module), describing(module) as seen, torch.no_grad():
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = lambda x: mode.from_tensor(x) if isinstance(x, torch.Tensor) else x  # noqa: E731
            module(*[fake(a) for a in args], **{k: fake(v) for k, v in kwargs.items()})
    return seen


class Passes:
    """The described passes a layout is computed from, and the sizes they ran at."""

    def __init__(self, base: dict, more_rows: dict, rows: tuple[int, int], longer: dict | None = None,
                 lengths: tuple[int, int] | None = None, unpadded: dict | None = None):
        self.base, self.more_rows, self.rows = base, more_rows, rows
        self.longer, self.lengths, self.unpadded = longer, lengths, unpadded


def record_language_layouts(module: torch.nn.Module, extra: dict | None = None) -> dict[Event, Layout]:
    """Layouts of a causal LM called as a merged batch is: input_ids, attention_mask, position_ids
    (+ `extra` keyword arguments), at (1, 3), (2, 3) and (1, 5) tokens; plus (2, 3) without mask and
    position ids, to find the leaves whose form depends on padding."""
    extra = extra or {}

    def inputs(rows: int, length: int, padded: bool) -> dict:
        kwargs: dict = {"input_ids": torch.zeros(rows, length, dtype=torch.long)}
        if padded:
            mask = torch.ones(rows, length, dtype=torch.long)
            mask[0, 0] = 0 if rows > 1 else 1
            kwargs["attention_mask"] = mask
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        return {**kwargs, **extra}

    run = lambda rows, length, padded: describe_fake(module, (), inputs(rows, length, padded))  # noqa: E731
    passes = Passes(run(1, 3, True), run(2, 3, True), (1, 2), run(1, 5, True), (3, 5), run(2, 3, False))
    return combine_passes(passes)


_MEMO: dict[tuple, dict[Event, Layout]] = {}
_MEMO_LIMIT = 64


def language_layouts(module: torch.nn.Module, extra: dict | None = None) -> dict[Event, Layout]:
    """`record_language_layouts`, memoised by architecture (module class, config, module tree) and
    by the extra keyword arguments: layouts depend on shapes only, never on weights."""
    import json

    config = getattr(module, "config", None)
    try:
        config_text = config.to_json_string(use_diff=False) if config is not None else ""
        extra_text = json.dumps(extra or {}, sort_keys=True)
    except (TypeError, ValueError):
        return record_language_layouts(module, extra)
    key = (type(module).__qualname__, config_text, extra_text,
           tuple((path, type(sub).__qualname__) for path, sub in module.named_modules()))
    found = _MEMO.get(key)
    if found is None:
        found = record_language_layouts(module, extra)
        if len(_MEMO) >= _MEMO_LIMIT:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = found
    return found


def record_module_layouts(module: torch.nn.Module, args: tuple, kwargs: dict, rows: int) -> dict[Event, Layout]:
    """Layouts of a plain module from its own batch and the batch doubled along dim 0 (the dim its
    invokes are concatenated along); plain modules have no sequence dims."""
    double = lambda v: torch.cat([v, v]) if isinstance(v, torch.Tensor) and v.dim() > 0 else v  # noqa: E731
    base = describe_fake(module, args, kwargs)
    more = describe_fake(module, tuple(double(a) for a in args), {k: double(v) for k, v in kwargs.items()})
    return combine_passes(Passes(base, more, (rows, 2 * rows)))


def combine_passes(passes: Passes) -> dict[Event, Layout]:
    """One layout per event of the base pass."""
    return {event: _combine(desc, passes, lambda p, e=event: p.get(e) if p is not None else None)
            for event, desc in passes.base.items()}


_PADDING = "its form depends on whether rows of the batch are padded (e.g. an attention mask, rotary tables)"


def _combine(base: tuple, passes: Passes, pick: Callable[[dict | None], tuple | None]) -> Layout:
    more, longer, unpadded = pick(passes.more_rows), pick(passes.longer), pick(passes.unpadded)
    kind = base[0]
    others = [more] + ([longer] if passes.longer is not None else [])
    if any(o is None or o[0] != kind for o in others):
        return Leaf(alone="its form depends on the batch's size or length")
    if passes.unpadded is not None and (unpadded is None or unpadded[0] != kind):
        return Leaf(alone=_PADDING)
    if kind == "t":
        return _tensor_leaf(base[1], more[1], longer[1] if longer else None, passes,
                            unpadded[1] if unpadded else None, base[2])
    if kind == "c":
        if any(o[1] != base[1] for o in others) or (unpadded is not None and unpadded[1] != base[1]):
            return Leaf(alone="it depends on the batch's size or length")
        return Leaf()
    if kind == "o":
        return Leaf(alone=f"a {base[1]} object shared by every row of the batch: it can be neither "
                          "sliced to a job's rows nor copied")
    if kind == "s":
        if any(len(o[1]) != len(base[1]) for o in others):
            return Leaf(alone="its length depends on the batch")
        return Items([_combine(child, passes, lambda p, i=i, pk=pick: _child(pk(p), i))
                      for i, child in enumerate(base[1])])
    return Items({key: _combine(child, passes, lambda p, k=key, pk=pick: _child(pk(p), k))
                  for key, child in base[1].items()})


def _child(desc: tuple | None, key: Any) -> tuple | None:
    """A child's description inside a described container, as a pseudo-pass dict lookup result."""
    if desc is None or desc[0] not in ("s", "m"):
        return None
    try:
        return desc[1][key]
    except (IndexError, KeyError):
        return None


def _tensor_leaf(base: tuple, more: tuple, longer: tuple | None, passes: Passes, unpadded: tuple | None,
                 dtype: str | None = None) -> Leaf:
    if len(more) != len(base) or (longer is not None and len(longer) != len(base)):
        return Leaf(alone="its rank depends on the batch")
    rows_a, rows_b = passes.rows
    batch_dims = [i for i, (a, b) in enumerate(zip(base, more)) if a != b]
    seq_dims = [i for i, (a, c) in enumerate(zip(base, longer)) if a != c] if longer is not None else []
    batch = batch_dims[0] if len(batch_dims) == 1 else None
    if len(batch_dims) > 1 or (batch is not None and (base[batch], more[batch]) != (rows_a, rows_b)):
        return Leaf(alone=f"its dims {batch_dims} mix the batch with other dims (shapes {base} and {more})")
    if seq_dims:
        len_a, len_b = passes.lengths
        if batch in seq_dims or any((base[i], longer[i]) != (len_a, len_b) for i in seq_dims):
            return Leaf(alone=f"its dims {seq_dims} mix prompt positions with other dims (shapes {base} "
                              f"and {longer})")
    leaf = Leaf(batch, tuple(seq_dims), shape=tuple(base), dtype=dtype)
    if unpadded is not None and unpadded != more:
        leaf.alone = _PADDING
    elif batch is None and seq_dims:
        leaf.alone = "it is shared by every row and indexed by position: its values depend on the batch's length"
    return leaf


# ----------------------------------------------------------------------------- JSON
