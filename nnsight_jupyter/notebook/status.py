"""The inline status line of a `%%trace` cell: one display, updated in place (a `graph.runner.Observer`).

`StatusLine` hears a run's status, generation progress and `print()` lines and shows them as one
IPython display (`display_id`), updated in place, never a growing log and never a widget: each
update carries HTML and a `text/plain` twin, so a saved notebook reopened without its kernel still
reads the final status as text. States: queued (jobs ahead), running (generation step done / steps,
elapsed time), done (wall time, forward passes, bytes received from a host) or the error, in red.
Progress updates are drawn at most every `min_interval` seconds; state changes always.
"""

from __future__ import annotations

import html
import time
from typing import Any, Callable

from ..execution.limits import format_bytes
from ..graph.runner import TERMINAL

_COLOURS = {"queued": "#8a6d00", "running": "#0b5cad", "done": "#1a7f37", "error": "#c62828",
            "cancelled": "#6e6e6e"}


class StatusLine:
    """One run's status as a display updated in place; a `graph.runner.Observer`.

    `runs`: the graph's run kinds (set by the magic's runner before it runs: each non-generate run
    is one forward pass, each generation step reported by `progress` another); `received`: a
    callable giving the bytes received from the host so far in this run (None: a local run)."""

    min_interval = 0.2

    def __init__(self, label: str, *, echo: Callable[[str], None] = print):
        self.label = label
        self.echo = echo
        self.started = time.monotonic()
        self.state = "starting"
        self.position: int | None = None
        self.step: int | None = None
        self.steps: int | None = None
        self.steps_done = 0
        self.runs: list[str] = []
        self.received: Callable[[], int] | None = None
        self.error: BaseException | None = None
        self.handle: Any = None
        self._drawn = 0.0

    # ------------------------------------------------------------------ the Observer protocol

    def status(self, state: str, **detail: Any) -> None:
        self.state = state
        if state == "queued":
            self.position = detail.get("position")
        if "error" in detail:
            self.error = detail["error"]
        self.draw(force=True)

    def progress(self, step: Any, steps: Any) -> None:
        if isinstance(step, int):
            self.step = step
            self.steps_done += 1
        if isinstance(steps, int) and steps > 0:
            self.steps = steps
        if self.state not in TERMINAL:
            self.state = "running"
        self.draw()

    def log(self, line: str, text: str) -> None:
        self.echo(text)

    # ------------------------------------------------------------------ what it shows

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def forward_passes(self) -> int:
        """Forward passes the run made: one per trace, one per generation step reported."""
        return sum(1 for kind in self.runs if kind != "generate") + self.steps_done

    def text(self) -> str:
        """The status as one line of plain text (also the `text/plain` of the display)."""
        head = f"nnsight · {self.label}"
        if self.state == "queued":
            ahead = self.position
            where = "" if not isinstance(ahead, int) else ", next" if ahead <= 0 else f", {ahead} ahead"
            return f"{head}: queued{where} · {self.elapsed:.1f} s"
        if self.state == "starting":
            return f"{head}: starting · {self.elapsed:.1f} s"
        if self.state == "running":
            step = ""
            if self.step is not None:
                step = f" · step {self.step}/{self.steps}" if self.steps else f" · step {self.step}"
            return f"{head}: running{step} · {self.elapsed:.1f} s"
        if self.state == "done":
            passes = self.forward_passes
            parts = [f"done in {self.elapsed:.2f} s", f"{passes} forward pass{'es' if passes != 1 else ''}"]
            if self.received is not None:
                parts.append(f"{format_bytes(self.received())} received")
            return f"{head}: " + " · ".join(parts)
        if self.state == "cancelled":
            return f"{head}: cancelled after {self.elapsed:.1f} s"
        error = self.error
        what = f"{type(error).__name__}: {error}" if error is not None else "failed"
        return f"{head}: error after {self.elapsed:.1f} s · {what}"

    def bundle(self) -> dict[str, str]:
        text = self.text()
        colour = _COLOURS.get(self.state, "#0b5cad")
        body = html.escape(text)
        html_text = (f'<div class="nnsight-status nnsight-status-{self.state}" style="font-family: monospace; '
                     f'white-space: pre-wrap; color: {colour}">{body}</div>')
        return {"text/plain": text, "text/html": html_text}

    def draw(self, force: bool = False) -> None:
        """Show the status: the first call makes the display, later ones update it in place."""
        now = time.monotonic()
        if not force and now - self._drawn < self.min_interval:
            return
        self._drawn = now
        from IPython.display import display

        if self.handle is None:
            self.handle = display(self.bundle(), raw=True, display_id=True)
        else:
            self.handle.update(self.bundle(), raw=True)
