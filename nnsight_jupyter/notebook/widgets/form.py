"""Reading the widgets' text fields, and running an action so that a bad input shows as a message.

A field left empty or a position that is not a whole number raises `WidgetInputError` (an
`NNsightError`) naming the field; `guarded(status, action)` runs an action (a sweep, a lens) and puts
any error it raises into the widget's status line instead of letting the widget's callback die, and
keeps it in `.last_error` for a closer look.
"""

from __future__ import annotations

from typing import Any, Callable

import ipywidgets as widgets

from ...errors import NNsightError
from .markup import error_box


class WidgetInputError(NNsightError):
    """A widget field holds something the experiment cannot use (empty, not a number, ...)."""


def text_field(description: str, value: str = "", placeholder: str = "", wide: bool = True) -> widgets.Text:
    return widgets.Text(value=value, description=description, placeholder=placeholder,
                        style={"description_width": "90px"},
                        layout=widgets.Layout(width="100%" if wide else "260px"))


def required(field: widgets.Text) -> str:
    """The field's text (as typed: a token's leading space matters), or an error naming the empty field."""
    if not field.value.strip():
        raise WidgetInputError(f"the {field.description!r} field is empty",
                               fix=f"Type the {field.description} into its field, then press the button again.")
    return field.value


def token(field: widgets.Text) -> str | int:
    """A token field: the text as typed, or a token id written as '#123'."""
    text = required(field)
    if text.strip().startswith("#") and text.strip()[1:].isdigit():
        return int(text.strip()[1:])
    return text


def optional_token(field: widgets.Text) -> str | int | None:
    """A token field that may be left empty (None)."""
    return token(field) if field.value.strip() else None


def whole_number(field: widgets.Text) -> int:
    """A position field: a whole number (negative counts from the end)."""
    text = required(field).strip()
    try:
        return int(text)
    except ValueError:
        raise WidgetInputError(f"the {field.description!r} field holds {text!r}, which is not a whole number",
                               fix="Type a token position such as 5, or -1 for the last token.") from None


class Status:
    """A one-line status under a widget's form: a note, or an error in red; remembers the last error."""

    def __init__(self) -> None:
        self.widget = widgets.HTML(value="")
        self.last_error: BaseException | None = None

    def show(self, html: str) -> None:
        self.widget.value = html

    def guarded(self, action: Callable[[], Any]) -> Any:
        """`action()`'s value, or None after showing the error it raised (the widget stays usable)."""
        self.last_error = None
        try:
            return action()
        except Exception as error:      # noqa: BLE001 - a widget callback must never die; the error is shown
            self.last_error = error
            self.widget.value = error_box(error)
            return None
