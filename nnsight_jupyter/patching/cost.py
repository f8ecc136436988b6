"""What a sweep cost: requests, forward passes, bytes of results received, wall time.

`Meter` wraps the model's runner (`graph.runner.Runner`, local or a host's) and counts as graphs go
through it: one request per `run` call, one forward pass per run of the graph (a trace; a session holds
several), and the bytes of the tensors that come back (the saved values: what a host sends).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Cost:
    """The cost of one experiment."""

    requests: int
    forward_passes: int
    bytes_received: int
    wall_s: float

    def __str__(self) -> str:
        return (f"{self.requests} request{'s' * (self.requests != 1)}, {self.forward_passes} forward passes, "
                f"{_size(self.bytes_received)} received, {self.wall_s:.2f} s")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def nbytes(value: Any) -> int:
    """Bytes of the tensors in a value (containers walked)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    return 0


class Meter:
    """Counts what goes through runners it wraps (`meter.wrap(runner)`); `cost()` when done."""

    def __init__(self) -> None:
        self.requests = 0
        self.forward_passes = 0
        self.bytes_received = 0
        self.started = time.perf_counter()

    def wrap(self, runner: Any) -> "_Counted":
        return _Counted(runner, self)

    def cost(self) -> Cost:
        return Cost(self.requests, self.forward_passes, self.bytes_received, time.perf_counter() - self.started)


class _Counted:
    """A runner that counts, then hands the graph on."""

    def __init__(self, runner: Any, meter: Meter):
        self.runner = runner
        self.meter = meter

    def run(self, graph: Any, observer: Any = None) -> Any:
        result = self.runner.run(graph, observer)
        meter = self.meter
        meter.requests += 1
        meter.forward_passes += len(graph.runs)
        meter.bytes_received += sum(nbytes(v) for v in result.saved.values())
        return result
