"""Attribution patching: the gradient approximation of head patching, from one clean pass and one corrupt
forward + backward.

For head h of layer L at the patched positions, patching changes the metric by about
(clean_h - corrupt_h) . d metric / d corrupt_h (first-order Taylor expansion around the corrupt run). Both
passes run in one session; what comes back is the difference and the gradient at the patched positions
only. Scores are in the units of `head_patching` (the metric of the patched run, or the fraction
recovered), so the two can be compared entry by entry; `exact` is False on the result.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .architecture import layout
from .cost import Meter
from .metrics import normalise, resolve
from .pairs import normalize_positions
from .result import PatchingResult
from .sweeps import Positions, _as_pairs


def attribution_patching(model: Any, pairs: Any, positions: Positions = -1, metric: Any = "logit_diff",
                         progress: Callable[[int, int], None] | None = None,
                         remote: bool | None = None) -> PatchingResult:
    """Approximate head patching scores [layers, heads] from gradients (two passes per pair)."""
    found = layout(model)
    pair_set = _as_pairs(model, pairs)
    n_heads, head_dim = found.heads_shape()
    name, fn, normalised = resolve(metric)
    meter = Meter()
    projections = [found.head_projection(layer) for layer in range(found.n_layers)]
    saved = []
    for pair in pair_set:   # a session each: a second backward trace in one session loses its saves (docs/patching.md)
        session = model.session(remote=remote)
        session.runner = meter.wrap(session.runner)
        chosen = normalize_positions(positions, pair.length)
        with session:
            with model.trace(pair.clean[None]):
                clean_inputs = [p.input[:, chosen] for p in projections]
                clean_score = fn(found.lm_head.output[:, -1], pair.answer, pair.distractor).save()
            with model.trace(pair.corrupt[None]):
                inputs = [p.input for p in projections]
                deltas = [(c - x[:, chosen]).save() for c, x in zip(clean_inputs, inputs)]
                score = fn(found.lm_head.output[:, -1], pair.answer, pair.distractor)
                corrupt_score = score.save()
                with score.sum().backward():          # gradients arrive later layers first
                    grads = [x.grad[:, chosen].save() for x in reversed(inputs)][::-1]
            saved.append((len(chosen), clean_score, corrupt_score, deltas, grads))
    per_pair, cleans, corrupts = [], [], []
    for done, (n_positions, clean_score, corrupt_score, deltas, grads) in enumerate(saved, 1):
        rows = []
        for delta, grad in zip(deltas, grads):
            product = (delta.value.float() * grad.value.float()).reshape(1, n_positions, n_heads, head_dim)
            rows.append(product.sum(dim=(0, 1, 3)))
        effect = torch.stack(rows)
        clean, corrupt = float(clean_score.value.reshape(-1)[0]), float(corrupt_score.value.reshape(-1)[0])
        scores = normalise(corrupt + effect, clean, corrupt) if normalised else corrupt + effect
        per_pair.append(scores)
        cleans.append(clean)
        corrupts.append(corrupt)
        if progress is not None:
            progress(done, len(pair_set))
    stacked = torch.stack(per_pair)
    labels = {"layer": [str(layer) for layer in range(found.n_layers)], "head": [str(h) for h in range(n_heads)]}
    return PatchingResult(stacked.mean(0), ("layer", "head"), labels, meter.cost(), "attribution", name,
                          "attribution patching", stacked, {"clean": cleans, "corrupt": corrupts}, exact=False)
