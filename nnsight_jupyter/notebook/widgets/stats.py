"""The logit-statistics widget: the next-token distribution after a prompt, as a table.

`LogitStatistics(model)` is an ipywidgets `VBox`: prompt, answer and distractor fields (both optional),
top-k, a run button, and the table `patching.logit_stats` renders (top-k tokens and probabilities, the
answer's rank and probability, the answer - distractor logit difference). The result itself
(`patching.LogitStats`) renders the same table inline when it is a cell's value.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ... import patching
from . import form


class LogitStatistics(widgets.VBox):
    """Logit statistics of one prompt. `.run()` is the button; `.result` the last `LogitStats`."""

    def __init__(self, model: Any, prompt: str = "", answer: str = "", distractor: str = "", k: int = 10,
                 remote: bool | None = None):
        self.model, self.remote = model, remote
        self.prompt = form.text_field("prompt", prompt, "The capital of France is")
        self.answer_token = form.text_field("answer", answer, "optional: ' Paris', or #id", wide=False)
        self.distractor_token = form.text_field("distractor", distractor, "optional: ' London'", wide=False)
        self.top_k = widgets.BoundedIntText(value=k, min=1, max=100, description="top k",
                                            layout=widgets.Layout(width="160px"))
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.status = form.Status()
        self.table = widgets.HTML(value="")
        self.result: Any = None
        self.run_button.on_click(lambda _button: self.run())
        super().__init__([self.prompt, widgets.HBox([self.answer_token, self.distractor_token, self.top_k]),
                          self.run_button, self.status.widget, self.table])

    def run(self) -> Any:
        """Read the fields, compute the statistics, show the table; the `LogitStats`, or None on error."""
        return self.status.guarded(self._stats)

    def _stats(self) -> Any:
        prompt = form.required(self.prompt)
        answer, distractor = form.optional_token(self.answer_token), form.optional_token(self.distractor_token)
        self.result = None
        self.table.value = ""
        result = patching.logit_stats(self.model, prompt, answer, distractor, k=int(self.top_k.value),
                                      remote=self.remote)
        self.table.value = result._repr_mimebundle_()["text/html"]
        self.status.show("")
        self.result = result
        return result
