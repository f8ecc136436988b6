"""Turning a run's invokes into one batch, and what each invoke may see of it.

Invokes carry inputs, never rows. Here the executor assigns rows: a language model's prompts are
tokenized, each invoke is padded on the left to its own longest prompt, the batch is padded on the
left to the longest invoke, and attention masks and position ids are computed so that every row
gives the results it gives alone. A `Span` says which rows an invoke owns and how many leftmost
positions (padding added for *other* invokes) it must not see.

`view` and `write` apply a span to a module's value (tensors, tuples, dicts, ModelOutputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ExecutionError, ShapeMismatchError, TracingError
from ..graph.nodes import Run
from .order import ExecutionOrder, record_order_fake


@dataclass
class Span:
    """Rows [start, stop) of the batch; `pad` leftmost positions hidden on forwards that hold the prompt."""

    start: int
    stop: int
    pad: int = 0
    full: bool = False


@dataclass
class Batch:
    """The model call for one run, and each invoke's span."""

    args: tuple
    kwargs: dict
    spans: dict[int, Span]
    size: int
    seq_len: int | None = None          # padded prompt length (language models)
    pad_left: list[int] = field(default_factory=list)   # per row: left padding in the batch


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
            raise TracingError("this trace has no input: pass one to .trace(...) or to tracer.invoke(...)")
        if len(real) == 1:
            _, args, kwargs = real[0]
            size = _batch_size(args, kwargs)
            spans = {real[0][0]: Span(0, size, 0, True)}
            batch_args, batch_kwargs = args, kwargs
        else:
            batch_args, batch_kwargs, spans, size = _concat_invokes(real)
        _all_rows_spans(inputs, spans, size, None, groups)
        return Batch(batch_args, batch_kwargs, spans, size)

    def ensure_order(self, batch: Batch) -> ExecutionOrder:
        """The module's execution order; for a plain module, recorded from this batch's shapes."""
        if self.order is None:
            self.order = _record_from_batch(self.module, batch)
        return self.order

    def generate(self, batch: Batch, options: dict) -> torch.Tensor:
        raise TracingError("generate() needs a language model (LanguageModel); NNsight modules only trace")


class LanguageTarget(ModuleTarget):
    """A causal language model with its tokenizer: prompts are tokenized and padded on the left."""

    def __init__(self, module: torch.nn.Module, tokenizer: Any):
        super().__init__(module)
        self.tokenizer = tokenizer

    def pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.tokenizer, "eos_token_id", None)
        return int(pad or 0)

    def record_order(self) -> ExecutionOrder:
        ids = torch.zeros(1, 3, dtype=torch.long)
        self.order = record_order_fake(self.module, {"input_ids": ids})
        return self.order

    def ensure_order(self, batch: Batch) -> ExecutionOrder:
        return self.order or self.record_order()

    def _rows(self, args: tuple, kwargs: dict) -> list[list[int]]:
        """Token-id rows (no padding) of one invoke's input."""
        if not args and "input_ids" in kwargs:
            args = (kwargs,)
        if len(args) != 1:
            raise TracingError(
                "a LanguageModel invoke takes one input: a prompt, a list of prompts, a tensor of "
                f"token ids or a dict with input_ids; got {len(args)} positional arguments"
            )
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
        raise TracingError(
            f"cannot use {type(item).__name__} as a LanguageModel input: pass a string, a list of "
            "strings, a [batch, seq] tensor of token ids or a dict with input_ids"
        )

    def _encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def build_batch(self, run: Run, inputs: list[tuple[int, tuple, dict, bool]],
                    groups: dict[int, int] | None = None) -> Batch:
        fast = self._tensor_batch(inputs, groups)
        if fast is not None:
            return fast
        invoke_rows: list[tuple[int, list[list[int]]]] = []
        extra: dict = {}
        for i, args, kwargs, all_rows in inputs:
            if all_rows:
                continue
            rows = self._rows(args, kwargs)
            if not rows or any(len(r) == 0 for r in rows):
                raise TracingError(f"invoke {i} has an empty prompt: every row needs at least one token")
            invoke_rows.append((i, rows))
            extra.update({k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")})
        if not invoke_rows:
            raise TracingError("this trace has no input: pass a prompt to .trace(...) or to tracer.invoke(...)")
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
            spans[i] = Span(start, len(ids), seq_len - width, False)
        size = len(ids)
        for span in spans.values():
            span.full = span.start == 0 and span.stop == size and span.pad == 0
        _all_rows_spans(inputs, spans, size, seq_len, groups)
        input_ids = torch.tensor(ids, dtype=torch.long)
        kwargs: dict = {"input_ids": input_ids}
        if any(pad_left):
            attention = torch.tensor(mask, dtype=torch.long)
            kwargs["attention_mask"] = attention
            if run.kind != "generate":
                kwargs["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0)
        kwargs.update(extra)
        return Batch((), kwargs, spans, size, seq_len, pad_left)

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
            raise TracingError("an invoke with no input needs another invoke with input in the same trace")
        start, stop = min(s.start for s in own), max(s.stop for s in own)
        pad = min(s.pad for s in own) if seq_len is not None else 0
        spans[i] = Span(start, stop, pad, start == 0 and stop == size and pad == 0)


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
            raise TracingError(
                "invokes of an NNsight module must pass the same arguments to be batched; "
                f"invoke {i} differs from invoke {real[0][0]}"
            )
        size = _batch_size(args, kwargs)
        spans[i] = Span(start, start + size)
        start += size

    def merge(values: list[Any]) -> Any:
        if isinstance(values[0], torch.Tensor):
            return torch.cat(values, dim=0)
        if any(v != values[0] for v in values[1:]):
            raise TracingError("non-tensor arguments of batched invokes must be equal")
        return values[0]

    args = tuple(merge([r[1][j] for r in real]) for j in range(len(first_args)))
    kwargs = {k: merge([r[2][k] for r in real]) for k in first_kwargs}
    return args, kwargs, spans, start


# ----------------------------------------------------------------------------- views


def view(value: Any, span: Span, size: int, seq_len: int | None) -> Any:
    """What the invoke owning `span` sees of a module's value: its rows, without foreign padding.

    `seq_len` is the sequence length of the current forward when it holds the prompt (step 0 of
    generation, every plain trace), else None (cached generation steps hide nothing)."""
    if span.full:
        return value
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] != size:
            return value
        out = value[span.start:span.stop]
        if span.pad and seq_len is not None and value.dim() >= 2 and value.shape[1] == seq_len:
            out = out[:, span.pad:]
        return out
    if isinstance(value, tuple):
        items = [view(v, span, size, seq_len) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [view(v, span, size, seq_len) for v in value]
    if isinstance(value, dict):
        viewed = {k: view(v, span, size, seq_len) for k, v in value.items()}
        try:
            return type(value)(**viewed) if type(value) is not dict else viewed
        except TypeError:
            return viewed
    return value


def write(current: Any, new: Any, span: Span, size: int, seq_len: int | None, where: str) -> Any:
    """Replace the invoke's part of `current` by `new`; returns the (possibly new) full value.

    A full span replaces the value outright (shapes must match); a partial one copies into the
    invoke's rows in place."""
    if isinstance(current, torch.Tensor):
        if not isinstance(new, torch.Tensor):
            if isinstance(new, (int, float, bool)):
                new = torch.full_like(view(current, span, size, seq_len), new)
            else:
                raise ShapeMismatchError(
                    f"{where} is a tensor of shape {tuple(current.shape)}; cannot replace it by a "
                    f"{type(new).__name__}. Assign a tensor of the same shape.")
        target = view(current, span, size, seq_len)
        if tuple(new.shape) != tuple(target.shape):
            raise ShapeMismatchError(
                f"{where} has shape {tuple(target.shape)} but the value written has shape "
                f"{tuple(new.shape)}. Write a tensor of shape {tuple(target.shape)} (slice or reshape "
                "it), or index the part you mean to change, e.g. `.output[:, -1] = v`.")
        if span.full:
            return new.to(dtype=current.dtype, device=current.device)
        target.copy_(new)
        return current
    if isinstance(current, (tuple, list)) and isinstance(new, (tuple, list)):
        if len(new) != len(current):
            raise ShapeMismatchError(f"{where} is a {type(current).__name__} of {len(current)} items; "
                                     f"the value written has {len(new)}")
        items = [write(c, n, span, size, seq_len, f"{where}[{i}]") if isinstance(c, torch.Tensor) else n
                 for i, (c, n) in enumerate(zip(current, new))]
        return type(current)(items) if isinstance(current, list) else tuple(items)
    if span.full:
        return new
    raise ExecutionError(f"cannot write a {type(new).__name__} into {where} for one invoke of a batch")
