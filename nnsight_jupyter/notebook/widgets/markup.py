"""Small HTML pieces the widgets share: token labels, tables and the red error box.

Everything a user typed or a model produced is escaped here, once, before it reaches the page.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

ERROR_STYLE = "color:#b00020;background:#fdecea;border:1px solid #f5c2c0;padding:6px 8px;border-radius:4px;"


def token_label(token: str) -> str:
    """A token as it reads in a table: quoted, with its whitespace visible ('␣Paris')."""
    shown = token.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t")
    return html.escape(f"'{shown}'")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None) -> str:
    """An HTML table; cells are already-safe HTML strings, or numbers (formatted to 4 significant digits)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<table class="nnsight-table">{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else html.escape(str(value))


def error_box(error: BaseException) -> str:
    """An error as the widgets show it: its type and whole message, in red."""
    name = type(error).__name__
    return f'<div class="nnsight-error" style="{ERROR_STYLE}"><b>{html.escape(name)}</b>: ' \
           f'{html.escape(str(error))}</div>'


def note(text: str) -> str:
    return f'<div class="nnsight-note" style="color:#555">{html.escape(text)}</div>'
