"""Notebook widgets (ipywidgets 8 + plotly FigureWidget) over the patching library.

`HeadPatchingExplorer(model)`: clean / corrupt prompts, answer / distractor, position, a live sweep and a
clickable layers x heads heatmap with each head's detail. `LogitLens(model)`: layers x positions, the top
token in each cell. `LogitStatistics(model)`: top-k tokens, probabilities, the answer's rank and the logit
difference. Each works with a local `LanguageModel` and a hosted one (`nj.connect().model(name)`).
"""

from __future__ import annotations

from .explorer import HeadPatchingExplorer
from .form import WidgetInputError
from .lens import LogitLens
from .stats import LogitStatistics

__all__ = ["HeadPatchingExplorer", "LogitLens", "LogitStatistics", "WidgetInputError"]
