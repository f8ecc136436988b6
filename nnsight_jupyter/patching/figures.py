"""Figures and inline HTML for the patching results.

`heatmap` / `lens_heatmap` build plotly figures (plotly is imported only here, only when called). The
HTML renderers need no JavaScript: a heatmap drawn as a table of coloured cells (the exact value on
hover, as a tooltip) and the top entries as a table, so a saved notebook shows them anywhere; the
plotly JSON goes beside them in the mime bundle for front ends that render it interactively.
"""

from __future__ import annotations

import html
from typing import Any

import torch

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def heatmap(scores: torch.Tensor, axes: tuple[str, str], labels: dict[str, list[str]], title: str) -> Any:
    import plotly.graph_objects as go

    z = scores.tolist()
    bound = float(scores.abs().max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=labels[axes[1]], y=labels[axes[0]], colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound,
        hovertemplate=f"{axes[0]} %{{y}}, {axes[1]} %{{x}}: %{{z:.6f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=axes[1], yaxis_title=axes[0], yaxis_autorange="reversed",
                      height=max(320, 18 * len(z) + 120))
    return fig


def lens_heatmap(probs: torch.Tensor, tokens: list[list[str]], labels: dict[str, list[str]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(
        z=probs.tolist(), x=labels["position"], y=labels["layer"], text=tokens, texttemplate="%{text}",
        colorscale="Blues", zmin=0, zmax=1,
        hovertemplate="layer %{y}, position %{x}: %{text} p=%{z:.4f}<extra></extra>"))
    fig.update_layout(title="logit lens (top token, probability)", xaxis_title="position", yaxis_title="layer",
                      yaxis_autorange="reversed", height=max(320, 18 * len(tokens) + 120))
    return fig


def mime_bundle(text: str, html_text: str, figure: Any, include: Any, exclude: Any) -> dict[str, Any]:
    """What `_repr_mimebundle_` returns: plain text, HTML, and the plotly figure's JSON when plotly is
    installed (`figure`: a function building it, or None)."""
    bundle: dict[str, Any] = {"text/plain": text, "text/html": html_text}
    if figure is not None:
        try:
            bundle[PLOTLY_MIME] = as_json(figure())
        except ImportError:
            pass
    return filter_bundle(bundle, include, exclude)


def filter_bundle(bundle: dict[str, Any], include: Any, exclude: Any) -> dict[str, Any]:
    if include:
        bundle = {k: v for k, v in bundle.items() if k in include}
    if exclude:
        bundle = {k: v for k, v in bundle.items() if k not in exclude}
    return bundle


def _colour(value: float, bound: float) -> str:
    """Diverging red (negative) / blue (positive), white at 0."""
    t = max(-1.0, min(1.0, value / bound)) if bound else 0.0
    fade = int(255 * (1 - abs(t)))
    return f"rgb({fade},{fade},255)" if t > 0 else f"rgb(255,{fade},{fade})"


def table_heatmap(scores: torch.Tensor, axes: tuple[str, str], labels: dict[str, list[str]]) -> str:
    bound = float(scores.abs().max()) or 1.0
    head = "".join(f"<th>{html.escape(x)}</th>" for x in labels[axes[1]])
    body = []
    for i, row in enumerate(scores.tolist()):
        cells = "".join(
            f'<td title="{axes[0]} {labels[axes[0]][i]}, {axes[1]} {labels[axes[1]][j]}: {v:.6f}" '
            f'style="background:{_colour(v, bound)};width:14px;height:12px"></td>' for j, v in enumerate(row))
        body.append(f"<tr><th>{html.escape(labels[axes[0]][i])}</th>{cells}</tr>")
    return (f'<table class="nj-heatmap" style="border-collapse:collapse;font-size:9px">'
            f"<tr><th>{axes[0]} \\ {axes[1]}</th>{head}</tr>{''.join(body)}</table>")


def _rows_table(header: list[str], rows: list[tuple]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="nj-top">{"<tr>" + head + "</tr>"}{body}</table>'


def _fmt(value: Any) -> str:
    return f"{value:+.4f}" if isinstance(value, float) else str(value)


def result_html(axes: tuple[str, str], rows: list[tuple], caption: str, scores: torch.Tensor,
                labels: dict[str, list[str]]) -> str:
    parts = [f"<div class='nj-patching'><div><b>{html.escape(caption)}</b></div>",
             table_heatmap(scores, axes, labels)]
    parts.append(_rows_table([axes[0], axes[1], "score"], rows))
    parts.append("</div>")
    return "".join(parts)


def lens_html(lens: Any) -> str:
    head = "".join(f"<th>{html.escape(x)}</th>" for x in lens.labels["position"])
    body = []
    for lab, row, probs in zip(lens.labels["layer"], lens.tokens, lens.probs):
        cells = "".join(f'<td title="p={float(p[0]):.4f}" style="background:rgba(30,90,200,{float(p[0]):.2f})">'
                        f"{html.escape(cell[0])}</td>" for cell, p in zip(row, probs))
        body.append(f"<tr><th>{html.escape(lab)}</th>{cells}</tr>")
    return (f"<div class='nj-lens'><b>{html.escape(repr(lens))}</b><table style='font-size:10px'>"
            f"<tr><th>layer \\ position</th>{head}</tr>{''.join(body)}</table></div>")


def stats_html(stats: Any) -> str:
    table = _rows_table(["rank", "token", "probability", "logit"], stats.rows())
    return f"<div class='nj-logit-stats'>{table}<div>{html.escape(stats.summary())}</div></div>"


def as_json(fig: Any) -> dict:
    """A figure as plain JSON data (what a mime bundle may carry)."""
    import json

    return json.loads(fig.to_json())
