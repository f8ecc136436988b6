"""Turning a run's invokes into one batch, and what each invoke may see of it.

Invokes carry inputs, never rows. Here the executor assigns rows: a language model's prompts are
tokenized, each invoke is padded on the left to its own longest prompt, the batch is padded on the
left to the longest invoke, and attention masks and position ids are computed so that every row
gives the results it gives alone. A `Span` says which rows an invoke owns and how many leftmost
positions (padding added for *other* invokes) it must not see.

`view` and `write` apply a span to a module's value (tensors, tuples, dicts, ModelOutputs), by the
batch and sequence dims recorded for that module (`execution.layout`), never by comparing sizes.
When several jobs share the batch (`Span.shared`), the batch is always called with an attention
mask and position ids (the call its layouts were recorded for), a job sees private copies of
tensors that every row shares, and values it may see neither sliced nor copied are withheld.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ExecutionError, InputError, ShapeMismatchError, SharedValueError
from ..graph.layout import Event, Items, Layout, Leaf
from ..graph.nodes import Run
from ..graph.order import ExecutionOrder
from .layout import UNRECORDED, language_layouts, record_module_layouts
from .order import record_order_fake


@dataclass
class Span:
    """Rows [start, stop) of the batch; `pad` leftmost positions hidden on forwards that hold the prompt;
    `shared`: other jobs (other users) have rows in the same batch."""

    start: int
    stop: int
    pad: int = 0
    full: bool = False
    shared: bool = False


@dataclass
class Batch:
    """The model call for one run, and each invoke's span."""

    args: tuple
    kwargs: dict
    spans: dict[int, Span]
    size: int
    seq_len: int | None = None          # padded prompt length (language models)
    pad_left: list[int] = field(default_factory=list)   # per row: left padding in the batch
    extra: dict = field(default_factory=dict)           # the invokes' keyword arguments besides the input


# ----------------------------------------------------------------------------- targets


class ModuleTarget:
    """Any nn.Module: invokes' tensor arguments are concatenated along dim 0."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.order: ExecutionOrder | None = None
        self._weights: tuple[int, frozenset[int]] | None = None
        self._submodules: dict[str, torch.nn.Module] = {}

    def submodule(self, path: str) -> torch.nn.Module:
        """The module at a named_modules() path (cached)."""
        found = self._submodules.get(path)
        if found is None:
            found = self.module.get_submodule(path) if path else self.module
            self._submodules[path] = found
        return found

    # -- weights are read-only: in-place ops on tensors sharing their storage are refused
    def weight_storages(self) -> frozenset[int]:
        first = next(self.module.parameters(), None)
        key = first.data_ptr() if first is not None else 0
        if self._weights is None or self._weights[0] != key:
            ptrs = {p.untyped_storage().data_ptr() for p in self.module.parameters()}
            ptrs.update(b.untyped_storage().data_ptr() for b in self.module.buffers())
            self._weights = (key, frozenset(ptrs))
        return self._weights[1]

    def build_batch(self, run: Run, inputs: list[tuple[int, tuple, dict, bool]],
                    groups: dict[int, int] | None = None) -> Batch:
        """The model call for `inputs` [(invoke id, args, kwargs, all_rows)]. `groups` maps invoke ids
        to jobs when several jobs share the batch: an all-rows invoke then sees its own job's rows."""
        real = [(i, a, k) for i, a, k, all_rows in inputs if not all_rows]
        if not real:
            raise InputError("this trace has no input", fix="Pass one to .trace(...) or to tracer.invoke(...).")
        if len(real) == 1:
            _, args, kwargs = real[0]
            size = _batch_size(args, kwargs)
            spans = {real[0][0]: Span(0, size, 0, True)}
            batch_args, batch_kwargs = args, kwargs
        else:
            batch_args, batch_kwargs, spans, size = _concat_invokes(real)
        if groups is not None and len(set(groups.values())) > 1:
            for span in spans.values():
                span.shared, span.full = True, False
        _all_rows_spans(inputs, spans, size, None, groups)
        return Batch(batch_args, batch_kwargs, spans, size)

    def ensure_order(self, batch: Batch) -> ExecutionOrder:
        """The module's execution order; for a plain module, recorded from this batch's shapes."""
        if self.order is None:
            self.order = _record_from_batch(self.module, batch)
        return self.order

    def layouts_for(self, batch: Batch) -> dict[Event, Layout]:
        """Each event's layout (batch / sequence dims); for a plain module, recorded from the first
        batch that needs them and that batch doubled along dim 0 (empty if fake tensors can't run it)."""
        order = self.ensure_order(batch)
        if order.layouts is None:
            try:
                order.layouts = record_module_layouts(self.module, batch.args, batch.kwargs, batch.size)
            except Exception:  # noqa: BLE001 - an op without fake support: nothing recorded, merged jobs see nothing
                order.layouts = {}
        return order.layouts

    def generate(self, batch: Batch, options: dict) -> torch.Tensor:
        raise ExecutionError("generate() needs a language model (LanguageModel); NNsight modules only trace",
                             fix="Use .trace(...), or wrap a causal language model in LanguageModel.")


class LanguageTarget(ModuleTarget):
    """A causal language model with its tokenizer: prompts are tokenized and padded on the left."""

    def __init__(self, module: torch.nn.Module, tokenizer: Any):
        super().__init__(module)
        self.tokenizer = tokenizer
        self._keyed_layouts: dict[str, dict[Event, Layout]] = {}   # by invoke keyword arguments

    def pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.tokenizer, "eos_token_id", None)
        return int(pad or 0)

    def record_order(self, layouts: bool = False) -> ExecutionOrder:
        """Record the execution order (a fake forward of 3 tokens); with `layouts`, each event's batch
        and sequence dims too (a model host does, so that they travel to clients with the order;
        locally they are recorded when a trace first needs them)."""
        ids = torch.zeros(1, 3, dtype=torch.long)
        self.order = record_order_fake(self.module, {"input_ids": ids})
        if layouts:
            self.order.layouts = language_layouts(self.module)
        return self.order

    def ensure_order(self, batch: Batch) -> ExecutionOrder:
        return self.order or self.record_order()

    def layouts_for(self, batch: Batch) -> dict[Event, Layout]:
        """Each event's layout for a batch called with these extra keyword arguments (recorded once
        per model architecture and set of arguments; see `execution.layout`)."""
        order = self.ensure_order(batch)
        try:
            key = kwargs_key(batch.extra) if batch.extra else None
            if key is not None:
                found = self._keyed_layouts.get(key)
                if found is None:
                    found = self._keyed_layouts[key] = language_layouts(self.module, batch.extra)
                return found
            if order.layouts is None:
                order.layouts = language_layouts(self.module)
            return order.layouts
        except Exception:  # noqa: BLE001 - fake tensors can't run this call: nothing recorded, merged jobs see nothing
            return {}

    def _rows(self, args: tuple, kwargs: dict) -> list[list[int]]:
        """Token-id rows (no padding) of one invoke's input."""
        if not args and "input_ids" in kwargs:
            args = (kwargs,)
        if len(args) != 1:
            raise InputError(
                f"a LanguageModel invoke takes one input; got {len(args)} positional arguments",
                fix="Pass a prompt, a list of prompts, a tensor of token ids or a dict with input_ids.")
        item = args[0]
        if isinstance(item, str):
            return [self._encode(item)]
        if isinstance(item, (list, tuple)) and item and all(isinstance(p, str) for p in item):
            return [self._encode(p) for p in item]
        if isinstance(item, (list, tuple)) and item and all(isinstance(t, int) for t in item):
            return [list(item)]
        if isinstance(item, torch.Tensor):
            ids = item if item.dim() == 2 else item.reshape(1, -1)
            return [row.tolist() for row in ids]
        if isinstance(item, dict) and "input_ids" in item:
            ids = torch.as_tensor(item["input_ids"])
            ids = ids if ids.dim() == 2 else ids.reshape(1, -1)
            mask = item.get("attention_mask")
            if mask is None:
                return [row.tolist() for row in ids]
            mask = torch.as_tensor(mask).reshape(ids.shape).bool()
            return [row[m].tolist() for row, m in zip(ids, mask)]
        raise InputError(
            f"cannot use {type(item).__name__} as a LanguageModel input",
            fix="Pass a string, a list of strings, a [batch, seq] tensor of token ids or a dict with input_ids.")

    def _encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def build_batch(self, run: Run, inputs: list[tuple[int, tuple, dict, bool]],
                    groups: dict[int, int] | None = None) -> Batch:
        shared = groups is not None and len(set(groups.values())) > 1
        fast = None if shared else self._tensor_batch(inputs, groups)
        if fast is not None:
            return fast
        invoke_rows: list[tuple[int, list[list[int]]]] = []
        extra: dict | None = None
        first = None
        for i, args, kwargs, all_rows in inputs:
            if all_rows:
                continue
            rows = self._rows(args, kwargs)
            if not rows or any(len(r) == 0 for r in rows):
                raise InputError(f"invoke {i} has an empty prompt: every row needs at least one token",
                                 fix="Give every prompt at least one token.")
            invoke_rows.append((i, rows))
            own = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}
            if extra is None:
                extra, first = own, i
            elif not same_kwargs(own, extra):
                raise InputError(
                    f"invokes {first} and {i} of this trace pass different keyword arguments "
                    f"({sorted(extra)} vs {sorted(own)}): they run as one forward pass, so one call's "
                    "arguments would apply to both.",
                    fix="Pass the same keyword arguments to every invoke, or use separate traces.")
        if not invoke_rows:
            raise InputError("this trace has no input", fix="Pass a prompt to .trace(...) or to tracer.invoke(...).")
        seq_len = max(len(r) for _, rows in invoke_rows for r in rows)
        pad_id = self.pad_id()
        ids, mask, pad_left, spans = [], [], [], {}
        for i, rows in invoke_rows:
            width = max(len(r) for r in rows)
            start = len(ids)
            for row in rows:
                pad = seq_len - len(row)
                ids.append([pad_id] * pad + row)
                mask.append([0] * pad + [1] * len(row))
                pad_left.append(pad)
            spans[i] = Span(start, len(ids), seq_len - width, False, shared)
        size = len(ids)
        for span in spans.values():
            span.full = not shared and span.start == 0 and span.stop == size and span.pad == 0
        _all_rows_spans(inputs, spans, size, seq_len, groups)
        input_ids = torch.tensor(ids, dtype=torch.long)
        kwargs: dict = {"input_ids": input_ids}
        if any(pad_left) or shared:          # a shared batch is always called as its layouts were recorded
            attention = torch.tensor(mask, dtype=torch.long)
            kwargs["attention_mask"] = attention
            if run.kind != "generate":
                kwargs["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0)
        kwargs.update(extra or {})
        broadcast_cache(kwargs.get("past_key_values"), size)
        return Batch((), kwargs, spans, size, seq_len, pad_left, extra or {})

    def _tensor_batch(self, inputs: list[tuple[int, tuple, dict, bool]],
                      groups: dict[int, int] | None) -> Batch | None:
        """Fast path: every invoke's input is a [rows, seq] id tensor of one length: no padding at all."""
        real = [entry for entry in inputs if not entry[3]]
        if not real:
            return None
        tensors = []
        for _, args, kwargs, _ in real:
            ids = args[0] if len(args) == 1 and not kwargs else None
            if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype != torch.long:
                return None
            tensors.append(ids)
        seq_len = int(tensors[0].shape[1])
        if seq_len == 0 or any(int(t.shape[1]) != seq_len for t in tensors):
            return None
        ids = tensors[0] if len(tensors) == 1 else torch.cat(tensors)
        size, spans, start = int(ids.shape[0]), {}, 0
        for (i, _, _, _), t in zip(real, tensors):
            rows = int(t.shape[0])
            spans[i] = Span(start, start + rows, 0, start == 0 and rows == size)
            start += rows
        _all_rows_spans(inputs, spans, size, seq_len, groups)
        return Batch((), {"input_ids": ids}, spans, size, seq_len, [0] * size)

    def generate(self, batch: Batch, options: dict) -> torch.Tensor:
        kwargs = dict(batch.kwargs)
        if "attention_mask" not in kwargs:
            kwargs["attention_mask"] = torch.ones_like(kwargs["input_ids"])
        kwargs.setdefault("pad_token_id", self.pad_id())
        kwargs.update(options)
        return self.module.generate(**kwargs)


def broadcast_cache(cache: Any, rows: int) -> None:
    """A key/value cache of one row serves every row of a larger batch: its keys and values are
    expanded to `rows` (views: nothing is copied; a forward appends to them with `torch.cat`). The
    patching library computes a shared prefix once this way and continues many patched runs from it."""
    layers = getattr(cache, "layers", None)
    if rows <= 1 or not isinstance(layers, list):
        return
    for layer in layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor) and tensor.dim() == 4 and tensor.shape[0] == 1:
                setattr(layer, name, tensor.expand(rows, *tensor.shape[1:]))


def _all_rows_spans(inputs: list, spans: dict[int, Span], size: int, seq_len: int | None,
                    groups: dict[int, int] | None) -> None:
    """Spans of invokes with no input: every row of their own job (every row, with no groups)."""
    for i, _, _, all_rows in inputs:
        if not all_rows:
            continue
        if groups is None:
            spans[i] = Span(0, size, 0, True)
            continue
        own = [spans[j] for j, _, _, other in inputs if not other and groups.get(j) == groups.get(i)]
        if not own:
            raise InputError("an invoke with no input needs another invoke with input in the same trace",
                             fix="Give this job an invoke with an input.")
        start, stop = min(s.start for s in own), max(s.stop for s in own)
        pad = min(s.pad for s in own) if seq_len is not None else 0
        shared = own[0].shared
        spans[i] = Span(start, stop, pad, not shared and start == 0 and stop == size and pad == 0, shared)


def kwargs_key(kwargs: dict) -> str | None:
    """A canonical text of keyword arguments made of plain values (None if any is a tensor or an
    object): jobs whose invokes have the same key may share a forward pass."""
    import json

    try:
        return json.dumps(kwargs, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None


def same_kwargs(a: dict, b: dict) -> bool:
    """Two invokes' keyword arguments are the same (tensors compared by dtype, shape and values)."""
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, torch.Tensor) or isinstance(other, torch.Tensor):
            if not (isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor)
                    and value.dtype == other.dtype and value.shape == other.shape and torch.equal(value, other)):
                return False
        elif not _same(value, other):
            return False
    return True


def _record_from_batch(module: torch.nn.Module, batch: Batch) -> ExecutionOrder:
    """Record a plain module's order with fake tensors; fall back to a recording real forward."""
    from .order import record_order_during

    try:
        return record_order_fake(module, batch.kwargs, batch.args)
    except Exception:  # noqa: BLE001 - an op without fake support: record from a real forward
        with record_order_during(module) as events, torch.no_grad():
            module(*batch.args, **batch.kwargs)
        return events.order()


def _batch_size(args: tuple, kwargs: dict) -> int:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


def _concat_invokes(real: list[tuple[int, tuple, dict]]):
    """Concatenate several invokes' tensor arguments along dim 0 (same structure required)."""
    first_args, first_kwargs = real[0][1], real[0][2]
    spans, start = {}, 0
    for i, args, kwargs in real:
        if len(args) != len(first_args) or kwargs.keys() != first_kwargs.keys():
            raise InputError(
                "invokes of an NNsight module must pass the same arguments to be batched; "
                f"invoke {i} differs from invoke {real[0][0]}",
                fix="Pass the same positional and keyword arguments to every invoke, or use separate traces.")
        size = _batch_size(args, kwargs)
        spans[i] = Span(start, start + size)
        start += size

    def merge(values: list[Any]) -> Any:
        if isinstance(values[0], torch.Tensor):
            return torch.cat(values, dim=0)
        if any(v != values[0] for v in values[1:]):
            raise InputError("non-tensor arguments of batched invokes must be equal",
                             fix="Pass equal non-tensor arguments to every invoke, or use separate traces.")
        return values[0]

    args = tuple(merge([r[1][j] for r in real]) for j in range(len(first_args)))
    kwargs = {k: merge([r[2][k] for r in real]) for k in first_kwargs}
    return args, kwargs, spans, start


# ----------------------------------------------------------------------------- views


class Withheld:
    """What a job sharing its forward pass gets in place of a value it may not see. Planning runs any
    graph that would reach one alone (`merge.why_not_mergeable`), so a merged job never meets it."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"<withheld from a merged job: {self.reason}>"


def _own_rows(value: torch.Tensor, leaf: Leaf | None, span: Span, size: int, seq_len: int | None) -> Any:
    """The span's rows and positions of a per-row tensor (a view into it); None if the tensor has no
    batch dim of this batch; a `Withheld` where a merged job may not see it."""
    if leaf is None:
        if span.shared:
            return Withheld(UNRECORDED)
        batch, seq = 0, ()           # not recorded: the dim plain modules' invokes are concatenated along
    else:
        if span.shared and leaf.alone:
            return Withheld(leaf.alone)
        batch, seq = leaf.batch, leaf.seq
    if batch is None or value.dim() <= batch or value.shape[batch] != size:
        if span.shared and batch is not None:
            return Withheld(f"its shape {tuple(value.shape)} does not match its recorded layout")
        return None
    out = value[span.start:span.stop] if batch == 0 else value.narrow(batch, span.start, span.stop - span.start)
    if span.pad and seq_len is not None:
        for dim in seq:
            if value.shape[dim] == seq_len:
                out = out.narrow(dim, span.pad, seq_len - span.pad)
            elif span.shared:
                return Withheld(f"its shape {tuple(value.shape)} does not match its recorded layout")
    return out


def view(value: Any, span: Span, size: int, seq_len: int | None, layout: Layout | None = None,
         copies: list | None = None) -> Any:
    """What the invoke owning `span` sees of a module's value: its rows, without foreign padding.

    Tensors are sliced by the batch and sequence dims recorded in `layout` (`execution.layout`).
    In a batch shared with other jobs (`span.shared`), a tensor without a batch dim is a private
    copy (appended to `copies`, so that a write into it can be reported), and a value the job may not
    see (see `Leaf.alone`) is `Withheld`. `seq_len` is the
    sequence length of the current forward when it holds the prompt (step 0 of generation, every
    plain trace), else None (cached generation steps hide nothing)."""
    if span.full:
        return value
    if isinstance(value, torch.Tensor):
        leaf = layout if type(layout) is Leaf else None
        out = _own_rows(value, leaf, span, size, seq_len)
        if out is None:
            if not span.shared:
                return value
            out = value.clone()               # every row shares it: this job gets a private copy
            if copies is not None:
                copies.append(out)
        return out
    children = layout.children if type(layout) is Items else None
    if isinstance(value, tuple):
        items = [view(v, span, size, seq_len, _child(children, i), copies) for i, v in enumerate(value)]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [view(v, span, size, seq_len, _child(children, i), copies) for i, v in enumerate(value)]
    if isinstance(value, dict):
        viewed = {k: view(v, span, size, seq_len, _child(children, k), copies) for k, v in value.items()}
        try:
            return type(value)(**viewed) if type(value) is not dict else viewed
        except TypeError:
            return viewed
    if span.shared:
        if type(layout) is not Leaf:
            return Withheld(UNRECORDED)
        if layout.alone:
            return Withheld(layout.alone)
    return value


def _child(children: list | dict | None, key: Any) -> Layout | None:
    if children is None:
        return None
    try:
        return children[key]
    except (KeyError, IndexError, TypeError):
        return None


def write(current: Any, new: Any, span: Span, size: int, seq_len: int | None, where: str,
          layout: Layout | None = None) -> Any:
    """Replace the invoke's part of `current` by `new`; returns the (possibly new) full value.

    A full span replaces the value outright (shapes must match); a partial one copies into the
    invoke's rows in place, and never changes what other rows share: a shared tensor or a non-tensor
    value may only be written back unchanged (else `SharedValueError`)."""
    if isinstance(current, torch.Tensor):
        leaf = layout if type(layout) is Leaf else None
        if not isinstance(new, torch.Tensor):
            if isinstance(new, (int, float, bool)):
                new = torch.full_like(view(current, span, size, seq_len, leaf), new)
            else:
                raise ShapeMismatchError(
                    f"{where} is a tensor of shape {tuple(current.shape)}; cannot replace it by a "
                    f"{type(new).__name__}", shapes={"expected": tuple(current.shape)},
                    fix="Assign a tensor of the same shape.")
        if span.full:
            target = current
        else:
            target = _own_rows(current, leaf, span, size, seq_len)
            if target is None or isinstance(target, Withheld):
                if new.shape == current.shape and torch.equal(new.to(current.dtype), current):
                    return current           # written back unchanged
                reason = target.reason if isinstance(target, Withheld) else (
                    f"it has no batch dim (shape {tuple(current.shape)}): every row of the batch shares it")
                raise SharedValueError(
                    f"{where} cannot be changed by one invoke of a batch: {reason}",
                    shapes={"value": tuple(current.shape), "written": tuple(new.shape)},
                    fix="Change a per-row value instead, or run this trace with a single invoke.")
        if tuple(new.shape) != tuple(target.shape):
            raise ShapeMismatchError(
                f"{where} has shape {tuple(target.shape)} but the value written has shape {tuple(new.shape)}",
                shapes={"expected": tuple(target.shape), "written": tuple(new.shape)},
                fix=f"Write a tensor of shape {tuple(target.shape)} (slice or reshape it), or index the part "
                    "you mean to change, e.g. `.output[:, -1] = v`.")
        if span.full:
            return new.to(dtype=current.dtype, device=current.device)
        target.copy_(new)
        return current
    children = layout.children if type(layout) is Items else None
    if isinstance(current, (tuple, list)) and isinstance(new, (tuple, list)):
        if len(new) != len(current):
            raise ShapeMismatchError(f"{where} is a {type(current).__name__} of {len(current)} items; "
                                     f"the value written has {len(new)}",
                                     fix=f"Write a {type(current).__name__} of {len(current)} items.")
        items = [write(c, n, span, size, seq_len, f"{where}[{i}]", _child(children, i))
                 for i, (c, n) in enumerate(zip(current, new))]
        return type(current)(items) if isinstance(current, list) else tuple(items)
    if span.full:
        return new
    if isinstance(current, dict) and isinstance(new, dict):
        if new.keys() != current.keys():
            raise SharedValueError(
                f"{where} has the keys {sorted(current)}; one invoke of a batch cannot add or remove "
                f"keys ({sorted(new)}): that would change every row", fix="Keep its keys and change tensors.")
        written = {k: write(current[k], new[k], span, size, seq_len, f"{where}[{k!r}]", _child(children, k))
                   for k in current}
        try:
            return type(current)(**written) if type(current) is not dict else written
        except TypeError:
            return written
    if new is current or isinstance(new, Withheld) or _same(new, current):
        return current                       # written back unchanged
    raise SharedValueError(
        f"{where} is a {type(current).__name__} shared by every row of the batch; one invoke cannot "
        f"replace it by a {type(new).__name__} (that would change every row)",
        fix="Change per-row tensors, or run this trace with a single invoke.")


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - values that cannot be compared are not the same
        return False
