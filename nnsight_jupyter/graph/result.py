"""`Result`: what a run of a graph gives back, locally or over the wire.

Saved values by save-node id, the log lines (`(user line, text)`) of `print()` inside the trace,
the saves that never ran (a generation step that was not reached) with the reason, and the batch
size of the last forward pass. A runner (`graph.runner.Runner`) returns one; the wire carries the
same fields (`docs/protocol.md`: the `result` frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """What comes back: saved values by save-node id, log lines, and saves that never ran."""

    saved: dict[int, Any] = field(default_factory=dict)
    logs: list[tuple[str, str]] = field(default_factory=list)
    missing: dict[int, str] = field(default_factory=dict)
    rows: int = 0   # batch size of the last forward pass
