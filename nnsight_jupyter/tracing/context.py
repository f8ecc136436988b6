"""Which trace is open, and which line of user code is running.

Tracing contexts (traces, sessions) push themselves on a per-thread stack; envoys and proxies ask
it for the innermost one. `user_line()` walks out of this package's (and torch's) frames to the
user's own "file:line", recorded on every node so errors can point at it; `line_of(traceback)` is the
same for an exception's traceback (the user's line that raised it), and `attach_line` puts it on an
`NNsightError` leaving a trace or session (`NNsightError.at`, the one way context is attached).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import torch

from ..errors import NNsightError

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_SKIP = (_PACKAGE_DIR + os.sep, _TORCH_DIR + os.sep, "<frozen", "<string>_nnsight")

_local = threading.local()


def stack() -> list[Any]:
    """The open tracing contexts of this thread, innermost last."""
    try:
        return _local.stack
    except AttributeError:
        _local.stack = []
        return _local.stack


def current() -> Any | None:
    """The innermost open tracer (not a session), or None outside traces."""
    for ctx in reversed(stack()):
        if getattr(ctx, "is_tracer", False):
            return ctx
    return None


_skip_file: dict[str, bool] = {}     # file path -> is it this package's or torch's (str hashes are cached)
_short_name: dict[str, str] = {}     # file path -> its base name


def user_line() -> str:
    """'file.py:12' of the innermost frame that is neither this package's nor torch's."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        skip = _skip_file.get(path)
        if skip is None:
            skip = _skip_file[path] = path.startswith(_SKIP)
        if not skip:
            break
        frame = frame.f_back
    if frame is None:
        return ""
    name = _short_name.get(path)
    if name is None:
        name = _short_name[path] = os.path.basename(path)
    return f"{name}:{frame.f_lineno}"


def line_of(tb: Any) -> str:
    """'file.py:12' of the innermost user frame of a traceback ("" if there is none)."""
    found = None
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        skip = _skip_file.get(path)
        if skip is None:
            skip = _skip_file[path] = path.startswith(_SKIP)
        if not skip:
            found = tb
        tb = tb.tb_next
    if found is None:
        return ""
    path = found.tb_frame.f_code.co_filename
    return f"{_short_name.get(path) or os.path.basename(path)}:{found.tb_lineno}"


def attach_line(error: BaseException | None, tb: Any = None) -> None:
    """Give an NNsightError the user's line it was raised at (from `tb`), else the line running now
    (the `with` statement it leaves), unless it has one."""
    if isinstance(error, NNsightError) and error.where is None:
        error.at(where=(line_of(tb) if tb is not None else "") or user_line())


def user_frame():
    """The innermost user frame (used to rebind saved names at the top level of a cell or module)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP):
        frame = frame.f_back
    return frame
