"""Reading the model's predictions: the logit lens across layers, and the next-token statistics of a prompt.

`logit_lens(model, prompt)` runs one trace: each decoder layer's output, through the final norm and the
unembedding, becomes a distribution over the vocabulary; only its top-k tokens and probabilities come back.
`logit_stats(model, prompt, answer, distractor)` reads the last position's logits: top-k tokens and
probabilities, the answer's rank and probability, and the answer - distractor logit difference.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .architecture import layout
from .cost import Meter
from .pairs import answer_id, normalize_positions, token_ids
from .result import LensResult, LogitStats


def _trace(model: Any, meter: Meter, ids: torch.Tensor, remote: bool | None):
    tracer = model.trace(ids[None])
    tracer.runner = meter.wrap(model._runner(remote))
    return tracer


def logit_lens(model: Any, prompt: Any, positions: int | Sequence[int] | None = None, k: int = 1,
               remote: bool | None = None) -> LensResult:
    """Top-k tokens (and probabilities) of every layer's residual stream at `positions` (None: all)."""
    found = layout(model)
    ids = token_ids(model.tokenizer, prompt)
    chosen = normalize_positions(positions, len(ids))
    meter = Meter()
    saved = []
    with _trace(model, meter, ids, remote):
        for layer in found.layers:
            hidden = layer.output[:, chosen]
            probs = found.lm_head(found.norm(hidden)).softmax(-1)
            top = probs.topk(k, dim=-1)
            saved.append((top[0].save(), top[1].save()))
    probs = torch.stack([p.value[0].float() for p, _ in saved])
    indices = torch.stack([i.value[0] for _, i in saved])
    decode = model.tokenizer.decode
    tokens = [[[decode([int(t)]) for t in cell] for cell in row] for row in indices]
    labels = {"layer": [str(i) for i in range(found.n_layers)],
              "position": [f"{p} {decode([int(ids[p])])!r}" for p in chosen]}
    return LensResult(probs, indices, tokens, labels, meter.cost())


def logit_stats(model: Any, prompt: Any, answer: Any = None, distractor: Any = None, k: int = 10,
                remote: bool | None = None) -> LogitStats:
    """The next-token distribution after `prompt`: top-k, and the answer's rank / the logit difference."""
    found = layout(model)
    tokenizer = model.tokenizer
    ids = token_ids(tokenizer, prompt)
    a = answer_id(tokenizer, answer) if answer is not None else None
    d = answer_id(tokenizer, distractor, "distractor") if distractor is not None else None
    meter = Meter()
    with _trace(model, meter, ids, remote):
        logits = found.lm_head.output[0, -1]
        probs = logits.softmax(-1)
        top = probs.topk(k)
        top_probs, top_ids = top[0].save(), top[1].save()
        top_logits = logits[top[1]].save()
        picked = [i for i in (a, d) if i is not None]
        extra = None
        if picked:
            index = torch.tensor(picked)
            extra = (logits[index].save(), probs[index].save(), (logits > logits[index[0]]).sum().save())
    ids_list = [int(i) for i in top_ids.value]
    stats = LogitStats([tokenizer.decode([i]) for i in ids_list], ids_list,
                       [float(p) for p in top_probs.value], [float(v) for v in top_logits.value], meter.cost())
    if extra is not None:
        chosen_logits, chosen_probs, above = (e.value for e in extra)
        if a is not None:
            stats.answer, stats.answer_prob, stats.answer_rank = tokenizer.decode([a]), float(chosen_probs[0]), int(above) + 1
        if d is not None:
            j = 1 if a is not None else 0
            stats.distractor, stats.distractor_prob = tokenizer.decode([d]), float(chosen_probs[j])
        if a is not None and d is not None:
            stats.logit_diff = float(chosen_logits[0] - chosen_logits[1])
    return stats
