"""The sweep, once, with the rungs of the optimisation ladder as `plan=` (docs/patching.md).

A sweep scores every (layer, unit) of a site (heads of a layer, or positions) on one contrastive pair:
the corrupt prompt runs with the unit's clean value written in, and the metric is read from the last
position's logits. Every plan computes the same scores; they differ in how much work reaches the model
and what comes back:

* ``naive``    one request per run: a clean trace per layer, one corrupt trace per unit, whole logits back;
* ``session``  the same traces in one session (one request); clean values flow without being saved;
* ``scalars``  the metric computed where the model runs: one number per run comes back;
* ``cached``   the clean values of every layer from one clean pass;
* ``batched``  one forward pass per layer, one invoke (its own row) per unit;
* ``skip``     one forward pass per layer, one invoke of one row per unit, layers before the patched one
               skipped with the corrupt run's cached outputs;
* ``kv``       ``skip``, and for a patch at one position p only positions p.. run: the corrupt run's
               key/value cache of the positions before p (one trace's `past_key_values`, handed to the
               later traces of the session) serves every row.

`run_sweeps` runs the sweeps of every pair (one session for them all, except with ``naive``) and returns
for each the per-layer score rows and the clean / corrupt baseline scores, counting the cost on the
`Meter` of the sweeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .architecture import Layout
from .cost import Meter
from .errors import PlanError
from .pairs import Pair
from .sites import HeadSite, Site

PLANS = ("naive", "session", "scalars", "cached", "batched", "skip", "kv")
PROGRESS = "nnsight-patching progress"


def choose_plan(plan: str | None, site: Site) -> str:
    """The plan to run: the one asked for (checked), else the fastest exact one for this request."""
    single = len(site.positions) == 1
    if plan is None:
        return "kv" if single else "skip"
    if plan not in PLANS:
        raise PlanError(f"unknown plan {plan!r}", fix=f"Use one of {', '.join(PLANS)} (or None: the fastest).")
    if plan == "kv" and not single:
        what = "heads patched at" if isinstance(site, HeadSite) else "a sweep over"
        raise PlanError(
            f"plan 'kv' reuses the key/value cache of the positions before one patch position, but this request "
            f"has {what} {len(site.positions)} positions {list(site.positions)}",
            fix="Use plan='skip' (the fastest plan for several positions; the default), or patch one position.")
    return plan


@dataclass
class SweepOutcome:
    scores: torch.Tensor        # [swept layers, n_units]
    clean: float
    corrupt: float


Pending = Callable[[], SweepOutcome]     # a sweep's outcome, readable once its session has run


class _Quiet:
    """Observer of the sweep's runs: turns its progress log lines into `progress(done, total)` calls
    and keeps them from being printed."""

    def __init__(self, progress: Callable[[int, int], None] | None, total: int):
        self.progress, self.total = progress, total

    def log(self, line: str, text: str) -> None:
        if text.startswith(PROGRESS) and self.progress is not None:
            self.progress(int(text.split()[-1]), self.total)


@dataclass
class Sweep:
    """One pair's sweep of one site, run with one plan."""

    model: Any
    layout: Layout
    site: Site
    pair: Pair
    metric: Callable
    meter: Meter
    remote: bool | None = None
    progress: Callable[[int, int], None] | None = None
    progress_offset: int = 0
    progress_total: int = 0
    layers: tuple[int, ...] | None = None      # the layers to sweep (None: all)

    def __post_init__(self) -> None:
        self.layer_ids = list(self.layers) if self.layers is not None else list(range(self.layout.n_layers))
        self.masks = self.site.masks(self.pair.length)
        self.n_units = int(self.masks.shape[0])
        self.clean_ids = self.pair.clean[None]
        self.corrupt_ids = self.pair.corrupt[None]
        self.observer = _Quiet(self.progress, self.progress_total)

    # ------------------------------------------------------------------ helpers

    def _score(self, rows_logits: Any) -> Any:
        return self.metric(rows_logits, self.pair.answer, self.pair.distractor)

    def _last_logits(self) -> Any:
        return self.layout.lm_head.output[:, -1]

    def _patch(self, layer: int, clean: Any, masks: torch.Tensor) -> None:
        value = self.site.read(layer)
        self.site.write(layer, torch.where(masks, clean, value))

    def _tick(self, tracer: Any, done: int) -> None:
        if self.progress is not None:
            tracer.log(f"{PROGRESS} {self.progress_offset + done}")

    def open_session(self):
        session = self.model.session(remote=self.remote)
        session.runner = self.meter.wrap(session.runner)
        session.observer = self.observer
        return session

    def _trace(self, *args: Any, **kwargs: Any):
        """A trace that is a request of its own (naive), counted."""
        tracer = self.model.trace(*args, **kwargs)
        tracer.runner = self.meter.wrap(self.model._runner(self.remote))
        tracer.observer = self.observer
        return tracer

    def _local(self, logits: torch.Tensor) -> float:
        return float(self._score(logits[:, -1].float()).reshape(-1)[0])

    def _baselines_traces(self, trace) -> tuple[Any, Any]:
        """Whole logits of a clean and a corrupt run (naive, session)."""
        with trace(self.clean_ids):
            clean = self.layout.lm_head.output.save()
        with trace(self.corrupt_ids):
            corrupt = self.layout.lm_head.output.save()
        return clean, corrupt

    def _clean_cache(self, start: int = 0) -> tuple[list, Any]:
        """One clean pass: the site value of every swept layer (positions start..) and the clean score."""
        with self.model.trace(self.clean_ids):
            values = {layer: self.site.read(layer)[:, start:] for layer in self.layer_ids}
            score = self._score(self._last_logits()).save()
        return values, score

    # ------------------------------------------------------------------ plans

    def naive(self) -> Pending:
        return self._one_by_one(self._trace, scalars=False, cached=False)

    def session(self) -> Pending:
        return self._one_by_one(self.model.trace, scalars=False, cached=False, deferred=True)

    def scalars(self) -> Pending:
        return self._one_by_one(self.model.trace, scalars=True, cached=False, deferred=True)

    def cached(self) -> Pending:
        return self._one_by_one(self.model.trace, scalars=True, cached=True, deferred=True)

    def _one_by_one(self, trace, *, scalars: bool, cached: bool, deferred: bool = False) -> Pending:
        """One corrupt trace per (layer, unit): the first four rungs."""
        if scalars:
            clean_values, clean_score = self._clean_cache() if cached else (None, None)
            if not cached:
                with trace(self.clean_ids):
                    clean_score = self._score(self._last_logits()).save()
            with trace(self.corrupt_ids):
                corrupt_score = self._score(self._last_logits()).save()
        else:
            clean_logits, corrupt_logits = self._baselines_traces(trace)
        runs = []
        for done, layer in enumerate(self.layer_ids, 1):
            if cached:
                clean = clean_values[layer]
            else:
                with trace(self.clean_ids):
                    clean = self.site.read(layer)
                    if not deferred:
                        clean = clean.save()
                if not deferred:
                    clean = clean.value
            row = []
            for unit in range(self.n_units):
                with trace(self.corrupt_ids) as tracer:
                    self._patch(layer, clean, self.masks[unit:unit + 1])
                    out = self._score(self._last_logits()) if scalars else self.layout.lm_head.output
                    row.append(out.save())
                    if unit == self.n_units - 1:
                        self._tick(tracer, done)
            runs.append(row)

        def outcome() -> SweepOutcome:
            if scalars:
                scores = torch.tensor([[float(v.value.reshape(-1)[0]) for v in row] for row in runs])
                return SweepOutcome(scores, float(clean_score.value.reshape(-1)[0]),
                                    float(corrupt_score.value.reshape(-1)[0]))
            scores = torch.tensor([[self._local(v.value) for v in row] for row in runs])
            return SweepOutcome(scores, self._local(clean_logits.value), self._local(corrupt_logits.value))

        return outcome

    def batched(self) -> Pending:
        clean_values, clean_score = self._clean_cache()
        with self.model.trace(self.corrupt_ids):
            corrupt_score = self._score(self._last_logits()).save()
        rows = []
        for done, layer in enumerate(self.layer_ids, 1):
            with self.model.trace() as tracer:
                row = []
                for unit in range(self.n_units):
                    with tracer.invoke(self.corrupt_ids):
                        self._patch(layer, clean_values[layer], self.masks[unit:unit + 1])
                        row.append(self._score(self._last_logits()).save())
                self._tick(tracer, done)
            rows.append(row)
        return lambda: SweepOutcome(torch.tensor([[float(v.value.reshape(-1)[0]) for v in row] for row in rows]),
                                    float(clean_score.value), float(corrupt_score.value))

    def skip(self) -> Pending:
        return self._skipping(start=0)

    def kv(self) -> Pending:
        return self._skipping(start=self.site.positions[0])

    def _skipping(self, start: int) -> Pending:
        """One trace per layer of n_units rows; layers below it skipped with the corrupt run's outputs; only
        positions start.. computed (the corrupt run's key/value cache stands for the ones before)."""
        n, ids = self.n_units, self.corrupt_ids[:, start:]
        masks = self.masks[:, start:]
        clean_values, clean_score = self._clean_cache(start)
        kwargs = {}
        if start > 0:
            with self.model.trace(self.corrupt_ids[:, :start]):
                kwargs["past_key_values"] = self.model.output.past_key_values
        with self.model.trace(ids, **kwargs):
            corrupt_outputs = [self.layout.layers[layer].output for layer in range(max(self.layer_ids))]
            corrupt_score = self._score(self._last_logits()).save()
        batch = ids.expand(n, -1)
        scores = []
        for done, layer in enumerate(self.layer_ids, 1):
            with self.model.trace(batch, **kwargs) as tracer:
                for below in range(layer):
                    self.layout.layers[below].skip(corrupt_outputs[below].expand(n, -1, -1))
                self._patch(layer, clean_values[layer], masks)
                scores.append(self._score(self._last_logits()).save())
                self._tick(tracer, done)
        return lambda: SweepOutcome(torch.stack([s.value.float() for s in scores]), float(clean_score.value),
                                    float(corrupt_score.value))


def run_sweeps(sweeps: list[Sweep], plan: str) -> list[SweepOutcome]:
    """Every pair's sweep with `plan`: one request per run (naive), else one session for them all."""
    if plan == "naive":
        return [sweep.naive()() for sweep in sweeps]
    with sweeps[0].open_session():
        pending = [getattr(sweep, plan)() for sweep in sweeps]
    return [outcome() for outcome in pending]
