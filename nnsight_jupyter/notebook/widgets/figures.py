"""The plotly `FigureWidget`s the widgets draw into: score heatmaps and attention-pattern strips.

A heatmap's x and y are the integer indices of its axes (so a click says which cell, whatever the
tick labels), its tick labels the result's labels, its colours diverge around 0 (`zmid=0`), and its
hover text is each cell's exact float32 value (the shortest decimal that reads back as that float).
"""

from __future__ import annotations

from typing import Sequence

import numpy
import plotly.graph_objects as go
import torch

DIVERGING = "RdBu"


def exact(value: float) -> str:
    """A float32 value as the shortest decimal that reads back to the same float32."""
    return str(numpy.float32(value))


def heatmap_widget(title: str, x_title: str, y_title: str, colorscale: str = DIVERGING,
                   width: int = 520, height: int = 460) -> go.FigureWidget:
    """An empty heatmap FigureWidget, ready for `show_scores` (one trace, data[0])."""
    figure = go.FigureWidget(data=[go.Heatmap(z=[], colorscale=colorscale, zmid=0 if colorscale == DIVERGING else None)])
    figure.update_layout(title=title, width=width, height=height, margin=dict(l=60, r=20, t=50, b=50),
                         xaxis=dict(title=x_title), yaxis=dict(title=y_title, autorange="reversed"))
    return figure


def show_scores(figure: go.FigureWidget, scores: torch.Tensor, x_labels: Sequence[str], y_labels: Sequence[str],
                title: str, text: list[list[str]] | None = None, hover: str | None = None) -> None:
    """Draw a [rows, columns] score tensor: rows on y, columns on x, exact values on hover.

    `text` (optional, per cell) is written in the cells; `hover` replaces the default hover template
    (it may use %{customdata}, the exact value, and %{text})."""
    values = scores.detach().to(torch.float32).cpu()
    rows, columns = values.shape
    limit = float(values.abs().max()) if values.numel() else 0.0
    with figure.batch_update():
        trace = figure.data[0]
        trace.z = values.tolist()
        trace.x = list(range(columns))
        trace.y = list(range(rows))
        trace.customdata = [[exact(v) for v in row] for row in values.tolist()]
        if text is not None:
            trace.text = text
            trace.texttemplate = "%{text}"
        if trace.zmid is not None and limit > 0:
            trace.zmin, trace.zmax = -limit, limit
        trace.hovertemplate = hover or (f"{figure.layout.yaxis.title.text} %{{y}}, {figure.layout.xaxis.title.text} "
                                        "%{x}: %{customdata}<extra></extra>")
        figure.layout.title.text = title
        figure.layout.xaxis.update(tickmode="array", tickvals=list(range(columns)), ticktext=list(x_labels))
        figure.layout.yaxis.update(tickmode="array", tickvals=list(range(rows)), ticktext=list(y_labels))


def clear(figure: go.FigureWidget, title: str = "") -> None:
    with figure.batch_update():
        figure.data[0].z = []
        figure.data[0].text = None
        figure.layout.title.text = title

