"""The attention-head patching explorer: a form, a live sweep, a clickable layers x heads heatmap.

`HeadPatchingExplorer(model)` is an ipywidgets `VBox`: clean and corrupt prompt fields, answer and
distractor tokens, the position to patch, a run button, a progress bar fed by the sweep's
`progress=` callback (a hosted sweep reports it as the job runs), a plan menu (`plan=`: the fastest exact
plan by default, or any rung of the ladder), and a plotly `FigureWidget` heatmap of `patching.head_patching`'s scores
(diverging colours centred on 0, the exact value on hover). Clicking a cell runs
`patching.patch_one_head` for that head and shows beside the heatmap the top-k next tokens before and
after the patch and the head's attention pattern from the patched position (`detail.HeadDetailPanel`).
The model may be local or hosted (`nj.connect().model(name)`): the same calls run either way. Bad input
shows as a red message in the widget (`form.Status`); the widget stays usable.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from ... import patching
from . import form
from .detail import HeadDetailPanel
from .figures import clear, heatmap_widget, show_scores
from .markup import note


class HeadPatchingExplorer(widgets.VBox):
    """Head patching, clicked through. `.run()` is the button; `.select(layer, head)` is a click."""

    def __init__(self, model: Any, clean: str = "", corrupt: str = "", answer: str = "", distractor: str = "",
                 position: int = -1, metric: str = "logit_diff", plan: str | None = None, k: int = 5,
                 remote: bool | None = None):
        self.model, self.metric, self.k, self.remote = model, metric, k, remote
        self.clean_prompt = form.text_field("clean", clean, "When Mary and John went to the store, John gave a drink to")
        self.corrupt_prompt = form.text_field("corrupt", corrupt,
                                              "When Mary and John went to the store, Mary gave a drink to")
        self.answer_token = form.text_field("answer", answer, "' Mary' (a leading space matters), or #id", wide=False)
        self.distractor_token = form.text_field("distractor", distractor, "' John', or #id", wide=False)
        self.position_field = form.text_field("position", str(position), "-1 = last token", wide=False)
        self.plan_choice = widgets.Dropdown(options=[("fastest exact", None)] + [(name, name) for name in patching.PLANS],
                                            value=plan, description="plan", layout=widgets.Layout(width="220px"))
        self.run_button = widgets.Button(description="Run sweep", button_style="primary", icon="play")
        self.progress_bar = widgets.IntProgress(value=0, min=0, max=1, description="", bar_style="info",
                                                layout=widgets.Layout(width="260px"))
        self.progress_text = widgets.Label(value="")
        self.status = form.Status()
        self.heatmap = heatmap_widget(f"head patching ({metric})", "head", "layer")
        self.heatmap.data[0].on_click(self._clicked)
        self.panel = HeadDetailPanel()
        self.result: Any = None          # the last sweep's result (patching.head_patching)
        self.pairs: Any = None           # its pairs
        self.detail: Any = None          # the last clicked head's HeadDetail
        self._patched_position: int | None = None
        self.run_button.on_click(lambda _button: self.run())
        tokens = widgets.HBox([self.answer_token, self.distractor_token, self.position_field])
        controls = widgets.HBox([self.plan_choice, self.run_button, self.progress_bar, self.progress_text])
        super().__init__([self.clean_prompt, self.corrupt_prompt, tokens, controls, self.status.widget,
                          widgets.HBox([self.heatmap, self.panel.widget])])

    # ------------------------------------------------------------------ the sweep (the run button)

    def run(self) -> Any:
        """Read the fields, run the sweep with live progress, draw the heatmap; the result, or None on error."""
        self.run_button.disabled = True
        try:
            return self.status.guarded(self._sweep)
        finally:
            self.run_button.disabled = False

    def _sweep(self) -> Any:
        clean, corrupt = form.required(self.clean_prompt), form.required(self.corrupt_prompt)
        answer, distractor = form.token(self.answer_token), form.token(self.distractor_token)
        position = form.whole_number(self.position_field)
        pairs = patching.pairs(self.model, clean, corrupt, answer, distractor)
        # the inputs are good: what the last sweep showed goes (an error before this point keeps it)
        self.result = self.pairs = self.detail = None
        self.panel.clear()
        clear(self.heatmap, "head patching: running...")
        self._progress(0, 1)
        result = patching.head_patching(self.model, pairs, positions=position, metric=self.metric, plan=self.plan_choice.value,
                                        progress=self._progress, remote=self.remote)
        self.result, self.pairs, self._patched_position = result, pairs, position
        show_scores(self.heatmap, result.scores, result.labels[result.axes[1]], result.labels[result.axes[0]],
                    f"head patching: {result.metric} (plan {result.plan})")
        cost = result.cost
        self.status.show(note(f"done: {cost.forward_passes} forward passes, {cost.requests} request(s), "
                              f"{cost.wall_s:.2f} s. Click a head for its detail."))
        return result

    def _progress(self, done: int, total: int) -> None:
        self.progress_bar.max = max(int(total), 1)
        self.progress_bar.value = min(int(done), self.progress_bar.max)
        self.progress_text.value = f"{done} / {total}"

    # ------------------------------------------------------------------ one head (a click on the heatmap)

    def _clicked(self, trace: go.Heatmap, points: Any, state: Any = None) -> None:
        if not points.xs or not points.ys:
            return
        self.select(int(points.ys[0]), int(points.xs[0]))

    def select(self, layer: int, head: int) -> Any:
        """Patch one head and show its detail beside the heatmap; the `HeadDetail`, or None on error."""
        return self.status.guarded(lambda: self._select(layer, head))

    def _select(self, layer: int, head: int) -> Any:
        if self.pairs is None:
            raise form.WidgetInputError("no sweep has run yet", fix="Press 'Run sweep' first, then click a head.")
        self.status.show(note(f"patching layer {layer}, head {head}..."))
        detail = patching.patch_one_head(self.model, self.pairs, layer, head, self._patched_position, k=self.k,
                                         remote=self.remote)
        self.detail = detail
        score = float(self.result.scores[layer, head])
        self.panel.show(detail, score, self.result.metric)
        self.status.show(note(f"layer {layer}, head {head}: score {score:.6g}"))
        return detail
