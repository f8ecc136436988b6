"""The default observer of a remote job in a kernel: a progress bar (tqdm.auto) and the trace's print lines.

`ProgressBar` is a `graph.runner.Observer`: the queue position, the running state and the
generation steps on one bar, closed when the job ends; `print()` lines of the trace printed as
they arrive. ``NNSIGHT_JUPYTER_PROGRESS=0`` hides the bar (the lines are still printed).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..graph.runner import TERMINAL

#: Set to "0" to hide the progress bar of remote jobs.
PROGRESS_ENV = "NNSIGHT_JUPYTER_PROGRESS"


class ProgressBar:
    """A job's progress bar: queued (with position), running, generating step / steps."""

    def __init__(self, label: str):
        self.label = label
        self.enabled = os.environ.get(PROGRESS_ENV, "1").strip() != "0"
        self.bar: Any = None
        self.last = 0.0

    def _bar(self) -> Any:
        if self.bar is None and self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=None, desc=self.label, leave=False, dynamic_ncols=True,
                            bar_format="{desc} [{elapsed}]")
            self.last = time.monotonic()
        return self.bar

    def tick(self) -> None:
        """Keep the elapsed time moving while nothing happens (called between messages)."""
        if self.bar is not None and time.monotonic() - self.last >= 1.0:
            self.bar.refresh()
            self.last = time.monotonic()

    def status(self, state: str, **detail: Any) -> None:
        if state in TERMINAL:
            self.close()
            return
        bar = self._bar()
        if bar is None:
            return
        if state == "queued":
            position = detail.get("position")
            ahead = "" if not isinstance(position, int) else f", {position} ahead" if position > 0 else ", next"
            bar.set_description_str(f"{self.label}: queued{ahead}")
        elif state == "running":
            bar.set_description_str(f"{self.label}: running")

    def progress(self, step: Any, steps: Any) -> None:
        bar = self._bar()
        if bar is None or not isinstance(step, int):
            return
        if isinstance(steps, int) and steps > 0 and bar.total != steps:
            bar.bar_format = None          # now a real bar: step / steps
            bar.set_description_str(f"{self.label}: generating", refresh=False)
            bar.reset(total=steps)
        bar.n = step
        bar.refresh()

    def log(self, line: str, text: str) -> None:
        print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
