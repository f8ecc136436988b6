"""What a sweep patches at each layer, and which units its score axis runs over.

* `HeadSite`: the attention heads of a layer (`attention.heads`, [batch, seq, n_heads, head_dim]); units
  are heads, each patched at the given positions together.
* `ModuleSite`: a module's output at one position ([batch, seq, hidden]): a decoder layer (the residual
  stream after it) or its MLP; units are positions.

A site gives the value to read and write at a layer inside a trace, and `masks`: one boolean row per unit,
true where that unit's run takes the clean value (`torch.where(mask, clean, corrupt)`), so one patched run,
a batch of runs (one row each) and one run per invoke all write the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .architecture import Layout


@dataclass(frozen=True)
class HeadSite:
    """Attention heads at `positions` (patched together), one unit per head."""

    layout: Layout
    positions: tuple[int, ...]
    axis: str = "head"

    def units(self) -> list[str]:
        return [str(h) for h in range(self.layout.heads_shape()[0])]

    def read(self, layer: int) -> Any:
        return self.layout.attention(layer).heads

    def write(self, layer: int, value: Any) -> None:
        self.layout.attention(layer).heads = value

    def masks(self, length: int) -> torch.Tensor:
        n_heads = self.layout.heads_shape()[0]
        mask = torch.zeros(n_heads, length, n_heads, 1, dtype=torch.bool)
        for h in range(n_heads):
            mask[h, list(self.positions), h] = True
        return mask


@dataclass(frozen=True)
class ModuleSite:
    """The output of a decoder layer (`part=""`) or of its MLP (`part="mlp"`), one unit per position."""

    layout: Layout
    positions: tuple[int, ...]
    part: str = ""
    axis: str = "position"

    def units(self) -> list[str]:
        return [str(p) for p in self.positions]

    def module(self, layer: int) -> Any:
        return self.layout.mlp(layer) if self.part == "mlp" else self.layout.layers[layer]

    def read(self, layer: int) -> Any:
        return self.module(layer).output

    def write(self, layer: int, value: Any) -> None:
        self.module(layer).output = value

    def masks(self, length: int) -> torch.Tensor:
        mask = torch.zeros(len(self.positions), length, 1, dtype=torch.bool)
        for i, p in enumerate(self.positions):
            mask[i, p] = True
        return mask


Site = HeadSite | ModuleSite
