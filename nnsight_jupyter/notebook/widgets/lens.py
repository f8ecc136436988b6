"""The logit-lens widget: every layer's prediction at every position of a prompt, as a heatmap.

`LogitLens(model)` is an ipywidgets `VBox`: a prompt field, a run button and a plotly `FigureWidget`
with layers on y and positions on x; each cell shows the top token of `patching.logit_lens` at that
layer and position, coloured by its probability, which the hover shows exactly. Local or hosted model
alike; bad input shows as a red message in the widget.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ... import patching
from . import form
from .figures import heatmap_widget, show_scores
from .markup import note


class LogitLens(widgets.VBox):
    """Logit lens, one click. `.run()` is the button; `.result` the last `LensResult`."""

    def __init__(self, model: Any, prompt: str = "", remote: bool | None = None):
        self.model, self.remote = model, remote
        self.prompt = form.text_field("prompt", prompt, "The capital of France is")
        self.run_button = widgets.Button(description="Run lens", button_style="primary", icon="play")
        self.status = form.Status()
        self.heatmap = heatmap_widget("logit lens", "position", "layer", colorscale="Viridis", width=760, height=520)
        self.result: Any = None
        self.run_button.on_click(lambda _button: self.run())
        super().__init__([self.prompt, self.run_button, self.status.widget, self.heatmap])

    def run(self) -> Any:
        """Read the prompt, run the lens, draw it; the `LensResult`, or None on error."""
        return self.status.guarded(self._lens)

    def _lens(self) -> Any:
        prompt = form.required(self.prompt)
        self.result = None
        result = patching.logit_lens(self.model, prompt, k=1, remote=self.remote)
        top = result.probs[..., 0]
        show_scores(self.heatmap, top, result.labels["position"], result.labels["layer"],
                    "logit lens: top token and its probability", text=result.top_tokens(),
                    hover="layer %{y}, position %{x}: %{text} p=%{customdata}<extra></extra>")
        self.heatmap.data[0].update(zmin=0.0, zmax=float(top.max()))
        self.result = result
        self.status.show(note(f"done: {result.cost.forward_passes} forward pass(es), {result.cost.wall_s:.2f} s"))
        return result
