"""The random generators a job owns: one per job, run and device, seeded from the run's ``seed=``.

Random ops (`graph.ops.Op.sample`) draw from these, never from torch's process-wide generator, so
a job's numbers depend only on its own seed and its own ops: co-tenants in the same worker process
(or in the same merged forward pass) neither see nor disturb them, and the same seed gives the
same numbers locally and on a host. A run without a seed (a graph built by hand) gets a fresh one
from the operating system's randomness. The tracer chooses the seed when the user gives none
(`tracing`: one draw from the client's own torch generator, so `torch.manual_seed` in the notebook
makes traces reproducible, as it does with nnsight).
"""

from __future__ import annotations

import secrets
from typing import Any

import torch

from ..graph.sampling import device_of

#: The run option that seeds a run's generators (`model.trace(prompt, seed=0)`).
SEED_OPTION = "seed"


class JobGenerators:
    """Generators by (job, run, device); `seeds[(job, run)]` is the seed of each (None: fresh)."""

    def __init__(self, seeds: dict[tuple[int, int], int | None]):
        self.seeds = seeds
        self.made: dict[tuple[int, int, str], torch.Generator] = {}

    def get(self, job: int, run: int, args: tuple, kwargs: dict) -> torch.Generator:
        device = device_of(args, kwargs)
        key = (job, run, str(device))
        generator = self.made.get(key)
        if generator is None:
            seed = self.seeds.get((job, run))
            generator = torch.Generator(device=device)
            generator.manual_seed(seed if seed is not None else secrets.randbits(63))
            self.made[key] = generator
        return generator


def run_seeds(graph: Any, job: int = 0) -> dict[tuple[int, int], int | None]:
    """The seed of each run of a job's graph (its ``seed=`` option, or None)."""
    return {(job, run.id): run.options.get(SEED_OPTION) for run in graph.runs}
