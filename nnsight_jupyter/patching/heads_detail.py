"""One attention head patched, in detail: what it does to the next-token distribution, and where it looks.

`patch_one_head(model, pairs, layer, head, position)` patches head `head` of layer `layer` at one
position of the corrupt prompt with its output from the clean prompt (the unit of `head_patching`),
and returns a `HeadDetail`: the top-k next tokens of the corrupt run before and after the patch (and of
the clean run), with probabilities, the logit difference (answer - distractor) of each run, and the
head's attention pattern from the patched position (the query) over the prompt (the keys), in the clean
run (what was patched in) and in the corrupt run.

Everything runs in one trace of three invokes (clean, corrupt, corrupt patched), so a hosted model
answers in one request. The pattern is computed from what the engine reads inside the model: the
query and key projections at that layer (and, for rotary models, the rotary embedding's cos / sin),
then softmax(q . k / sqrt(head_dim)) over the keys up to the query, as the model's attention does.
Known layouts: Llama-family attention (q_proj / k_proj, grouped-query heads, rotary embedding at
`model.rotary_emb`, no q/k norms) and GPT-2 (`attn.c_attn` holding q, k, v). Any other raises
`ArchitectureError` before the model runs (layers, heads and positions are checked the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .architecture import layout
from .errors import ArchitectureError, PatchingError
from .pairs import normalize_positions
from .pairs import pairs as make_pairs

__all__ = ["HeadDetail", "patch_one_head"]


@dataclass
class HeadDetail:
    """The effect of patching one head at one position, and its attention pattern from that position."""

    layer: int
    head: int
    position: int                          # the patched (query) position, counted from 0
    key_tokens: list[str]                  # the corrupt prompt's tokens 0..position (the keys)
    clean_key_tokens: list[str]            # the clean prompt's tokens 0..position
    before: list[tuple[str, float]]        # corrupt run: top-k next tokens and probabilities
    after: list[tuple[str, float]]         # corrupt run with the head patched
    clean: list[tuple[str, float]]         # clean run
    logit_diff: dict[str, float] = field(default_factory=dict)   # "clean", "before", "after" (answer - distractor)
    answer: str = ""
    distractor: str = ""
    pattern_clean: torch.Tensor = field(default_factory=lambda: torch.empty(0))    # [position + 1]
    pattern_corrupt: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # [position + 1]
    probs_before: torch.Tensor = field(default_factory=lambda: torch.empty(0))     # [vocab] next-token probs
    probs_after: torch.Tensor = field(default_factory=lambda: torch.empty(0))


# ----------------------------------------------------------------------------- attention layouts


@dataclass
class _Heads:
    """Where one layer's query and key heads are read, and how to turn them into scores."""

    attention: Any          # the attention envoy of the layer
    n_heads: int
    n_kv_heads: int
    head_dim: int
    kind: str               # "rotary" (Llama family) or "gpt2"


def _query_key_layout(model: Any, layer: int) -> _Heads:
    found = layout(model)
    if not 0 <= layer < found.n_layers:
        raise PatchingError(f"layer {layer} is outside the model's {found.n_layers} layers ({found.layers_path})",
                            fix=f"Pass a layer from 0 to {found.n_layers - 1}.")
    n_heads, head_dim = found.heads_shape()
    attention = found.attention(layer)
    parts = attention._module._modules
    if "q_proj" in parts and "k_proj" in parts and "q_norm" not in parts and "k_norm" not in parts \
            and found.layers_path == "model.layers" and "rotary_emb" in model.model._module._modules:
        return _Heads(attention, n_heads, _features(parts["k_proj"]) // head_dim, head_dim, "rotary")
    if "c_attn" in parts and _features(parts["c_attn"]) == 3 * n_heads * head_dim:
        return _Heads(attention, n_heads, n_heads, head_dim, "gpt2")
    raise ArchitectureError(
        f"{type(attention._module).__name__} at {attention._path} is not an attention layout whose query and key "
        "heads are known (Llama-family q_proj / k_proj without q/k norms and a rotary embedding at "
        "model.rotary_emb, or GPT-2 c_attn)", module=attention._path,
        fix="The head detail (attention pattern) supports Llama-family and GPT-2 attention; head_patching itself "
            "works on this model, and a trace can read its attention weights.")


def _features(linear: torch.nn.Module) -> int:
    """Output width of a Linear (out_features) or of a GPT-2 Conv1D (weight [in, out])."""
    width = getattr(linear, "out_features", None) or getattr(linear, "nf", None)
    return int(width if width is not None else linear.weight.shape[-1])


# ----------------------------------------------------------------------------- the trace


def _read_query_keys(model: Any, heads: _Heads, head: int, position: int) -> tuple[Any, Any, Any]:
    """Inside an invoke: the head's query at `position` [1, head_dim], its keys 0..position [1, position+1,
    head_dim], and for rotary models (cos, sin) of those positions; all saved."""
    d, kv = heads.head_dim, head // (heads.n_heads // heads.n_kv_heads)
    attention = heads.attention
    rotary = None
    if heads.kind == "rotary":
        cos_sin = model.model.rotary_emb.output
        rotary = (cos_sin[0][:, : position + 1].save(), cos_sin[1][:, : position + 1].save())
        query = attention.q_proj.output[:, position, head * d:(head + 1) * d].save()
        keys = attention.k_proj.output[:, : position + 1, kv * d:(kv + 1) * d].save()
    else:
        width = heads.n_heads * d
        qkv = attention.c_attn.output
        query = qkv[:, position, head * d:(head + 1) * d].save()
        keys = qkv[:, : position + 1, width + head * d:width + (head + 1) * d].save()
    return query, keys, rotary


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _pattern(query: torch.Tensor, keys: torch.Tensor, rotary: tuple | None, position: int) -> torch.Tensor:
    """softmax(q . k / sqrt(d)) of one query over keys 0..position, as float32 [position + 1]."""
    query, keys = query.float()[0], keys.float()[0]               # [d], [p+1, d]
    if rotary is not None:
        cos, sin = (t.float()[0] for t in rotary)                 # [p+1, d]
        query = query * cos[position] + _rotate_half(query) * sin[position]
        keys = keys * cos + _rotate_half(keys) * sin
    scores = keys @ query / math.sqrt(query.shape[-1])
    return torch.softmax(scores, dim=-1)


def patch_one_head(model: Any, pairs: Any, layer: int, head: int, position: int = -1, k: int = 5,
                   pair: int = 0, remote: bool | None = None) -> HeadDetail:
    """Patch head (`layer`, `head`) at `position` of pair `pair`'s corrupt prompt with its clean output.

    `pairs` is a `PairSet` (`patching.pairs(...)`) or a (clean, corrupt, answer, distractor) tuple.
    Returns a `HeadDetail` (top-k next tokens before / after, logit differences, attention patterns).
    """
    if isinstance(pairs, tuple):
        pairs = make_pairs(model, *pairs)
    clean_ids, corrupt_ids = pairs.clean_ids[pair:pair + 1], pairs.corrupt_ids[pair:pair + 1]
    answer, distractor = int(pairs.answer_ids[pair]), int(pairs.distractor_ids[pair])
    (position,) = normalize_positions(position, corrupt_ids.shape[1])
    heads = _query_key_layout(model, layer)
    if not 0 <= head < heads.n_heads:
        raise PatchingError(f"head {head} is outside the {heads.n_heads} heads of layer {layer}",
                            module=heads.attention._path, fix=f"Pass a head from 0 to {heads.n_heads - 1}.")
    attention = heads.attention
    with model.trace(remote=remote) as tracer:
        with tracer.invoke(clean_ids):
            clean_qk = _read_query_keys(model, heads, head, position)
            clean_head = attention.heads[:, position, head]
            clean_logits = model.lm_head.output[:, -1].save()
        with tracer.invoke(corrupt_ids):
            corrupt_qk = _read_query_keys(model, heads, head, position)
            corrupt_logits = model.lm_head.output[:, -1].save()
        with tracer.invoke(corrupt_ids):
            heads = attention.heads
            heads[:, position, head] = clean_head
            attention.heads = heads
            patched_logits = model.lm_head.output[:, -1].save()
    logits = {name: _value(v)[0].float() for name, v in
              (("clean", clean_logits), ("before", corrupt_logits), ("after", patched_logits))}
    probs = {name: torch.softmax(v, dim=-1) for name, v in logits.items()}
    decode = _decoder(model)

    def top(name: str) -> list[tuple[str, float]]:
        values, ids = probs[name].topk(min(k, probs[name].shape[-1]))
        return [(decode(i), float(v)) for v, i in zip(values.tolist(), ids.tolist())]

    return HeadDetail(
        layer=layer, head=head, position=position,
        key_tokens=[decode(i) for i in corrupt_ids[0, : position + 1].tolist()],
        clean_key_tokens=[decode(i) for i in clean_ids[0, : position + 1].tolist()],
        before=top("before"), after=top("after"), clean=top("clean"),
        logit_diff={name: float(v[answer] - v[distractor]) for name, v in logits.items()},
        answer=decode(answer), distractor=decode(distractor),
        pattern_clean=_pattern(*_values(clean_qk), position), pattern_corrupt=_pattern(*_values(corrupt_qk), position),
        probs_before=probs["before"], probs_after=probs["after"])


def _value(saved: Any) -> torch.Tensor:
    return saved.value if hasattr(saved, "value") else saved


def _values(read: tuple) -> tuple:
    query, keys, rotary = read
    return _value(query), _value(keys), None if rotary is None else tuple(_value(t) for t in rotary)


def _decoder(model: Any):
    tokenizer = model.tokenizer
    return lambda token_id: tokenizer.decode([int(token_id)])
