"""The public sweeps: head, residual and MLP patching over contrastive pairs (one implementation each,
sharing `plans.Sweep`).

    res = head_patching(model, pairs, positions=-1, metric="logit_diff", plan=None)

`model` is a local LanguageModel or a hosted one (`nj.connect().model(name)`): the same call; with a
session plan the whole sweep of a pair is one request. Scores are the mean over pairs.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .architecture import layout
from .cost import Meter
from .errors import PatchingError
from .metrics import normalise, resolve
from .pairs import PairSet, normalize_positions
from .pairs import pairs as make_pairs
from .plans import Sweep, choose_plan, run_sweeps
from .result import PatchingResult
from .sites import HeadSite, ModuleSite

Positions = int | Sequence[int] | None


def _as_pairs(model: Any, data: Any) -> PairSet:
    if isinstance(data, PairSet):
        return data
    return make_pairs(model, data)


def _layers(found: Any, layers: Sequence[int] | None) -> tuple[int, ...]:
    n = found.n_layers
    if layers is None:
        return tuple(range(n))
    chosen = tuple(sorted({int(x) % n if -n <= int(x) < n else _bad_layer(int(x), n) for x in layers}))
    if not chosen:
        raise PatchingError("no layers to sweep", fix="Give a list of layer indices, or None for all.")
    return chosen


def _bad_layer(layer: int, n: int) -> int:
    raise PatchingError(f"layer {layer} is outside the model's {n} layers",
                        fix=f"Use layers from 0 to {n - 1} (or -1 to -{n}).")


def _run(model: Any, data: Any, make_site: Callable, title: str, *, metric: Any, plan: str | None,
         progress: Callable[[int, int], None] | None, remote: bool | None,
         layers: Sequence[int] | None) -> PatchingResult:
    found = layout(model)
    pair_set = _as_pairs(model, data)
    name, fn, normalised = resolve(metric)
    sites = [make_site(found, pair) for pair in pair_set]
    chosen = choose_plan(plan, sites[0])
    for site in sites[1:]:
        choose_plan(chosen, site)
    swept = _layers(found, layers)
    meter = Meter()
    total = len(pair_set) * len(swept)
    sweeps = [Sweep(model, found, site, pair, fn, meter, remote, progress, i * len(swept), total, swept)
              for i, (pair, site) in enumerate(zip(pair_set, sites))]
    per_pair, cleans, corrupts = [], [], []
    for outcome in run_sweeps(sweeps, chosen):
        scores = outcome.scores.float()
        if normalised:
            scores = normalise(scores, outcome.clean, outcome.corrupt)
        per_pair.append(scores)
        cleans.append(outcome.clean)
        corrupts.append(outcome.corrupt)
    stacked = torch.stack(per_pair)
    units = sites[0].units()
    labels = {"layer": [str(layer) for layer in swept], sites[0].axis: units}
    return PatchingResult(stacked.mean(0), ("layer", sites[0].axis), labels, meter.cost(), chosen, name, title,
                          stacked, {"clean": cleans, "corrupt": corrupts})


def head_patching(model: Any, pairs: Any, positions: Positions = -1, metric: Any = "logit_diff",
                  plan: str | None = None, progress: Callable[[int, int], None] | None = None,
                  remote: bool | None = None, layers: Sequence[int] | None = None) -> PatchingResult:
    """Patch each attention head of each layer (clean into corrupt) at `positions` (patched together);
    scores [layers, heads]."""
    def site(found, pair):
        found.heads_shape()
        return HeadSite(found, tuple(normalize_positions(positions, pair.length)))

    return _run(model, pairs, site, "head patching", metric=metric, plan=plan, progress=progress, remote=remote, layers=layers)


def residual_patching(model: Any, pairs: Any, positions: Positions = None, metric: Any = "logit_diff",
                      plan: str | None = None, progress: Callable[[int, int], None] | None = None,
                      remote: bool | None = None, layers: Sequence[int] | None = None) -> PatchingResult:
    """Patch the residual stream after each decoder layer at each position; scores [layers, positions]."""
    def site(found, pair):
        return ModuleSite(found, tuple(normalize_positions(positions, pair.length)))

    return _run(model, pairs, site, "residual patching", metric=metric, plan=plan, progress=progress,
                remote=remote, layers=layers)


def mlp_patching(model: Any, pairs: Any, positions: Positions = None, metric: Any = "logit_diff",
                 plan: str | None = None, progress: Callable[[int, int], None] | None = None,
                 remote: bool | None = None, layers: Sequence[int] | None = None) -> PatchingResult:
    """Patch each layer's MLP output at each position; scores [layers, positions]."""
    def site(found, pair):
        return ModuleSite(found, tuple(normalize_positions(positions, pair.length)), part="mlp")

    return _run(model, pairs, site, "MLP patching", metric=metric, plan=plan, progress=progress, remote=remote, layers=layers)
