"""Where a magic's code sits in the notebook: the cell's file, its lines, and errors raised at them.

IPython compiles each cell under a file name of its own (`shell.compile`, which maps it to the
cell's execution count), with the cell's raw text in `linecache`. A cell magic's body is compiled
under a file name of its own holding the cell's raw text (`cell_source`), padded with one newline so
that its first line is the cell's line 2: the tracebacks IPython shows then say "Cell In[n], line k"
with the source line, as for any cell.
The engine labels nodes `<file base name>:<line>`; `relabel` turns those into "Cell In[n], line k",
and `raise_at` raises an error from the cell line it names, so that the traceback ends there.
"""

from __future__ import annotations

import builtins
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, NoReturn


@dataclass
class CellSite:
    """The cell a magic runs in: its file name, execution count, and the line of the magic."""

    filename: str
    number: Any
    line: int

    @property
    def label(self) -> str:
        return f"Cell In[{self.number}], line {self.line}"


def cell_files(shell: Any) -> dict[str, Any]:
    """The file names IPython compiled cells under -> their execution counts."""
    return getattr(shell.compile, "_filename_map", {})


def find_site(shell: Any) -> CellSite:
    """The cell running this magic: the innermost frame of a cell's code, at the magic's line (a
    magic called from outside any cell, `run_cell_magic` from Python: the current execution count)."""
    files = cell_files(shell)
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if name in files:
            return CellSite(name, files[name], frame.f_lineno)
        frame = frame.f_back
    return CellSite("", shell.execution_count, 1)


def cell_source(shell: Any, site: CellSite, source: str) -> CellSite:
    """The cell's raw text `source` cached under a file name of its own, labelled with the cell's
    number: code compiled there shows the cell's own lines in tracebacks (IPython caches a cell
    magic's cell as the one line that calls the magic)."""
    return CellSite(shell.compile.cache(source, site.number), site.number, 1)


def compile_body(site: CellSite, first_line: int, body: str) -> Any:
    """`body` compiled under the cell's file name, its first line at cell line `first_line`."""
    return compile("\n" * (first_line - 1) + body, site.filename, "exec")


def relabel(shell: Any, text: str) -> str:
    """Every `<cell file base name>:<line>` in `text` written as "Cell In[n], line k"."""
    names = {os.path.basename(name): number for name, number in cell_files(shell).items()}
    if not text or not any(name in text for name in names):
        return text
    pattern = re.compile("(" + "|".join(re.escape(name) for name in names) + r"):(\d+)")
    return pattern.sub(lambda m: f"Cell In[{names[m[1]]}], line {m[2]}", text)


def locate(shell: Any, where: str | None) -> tuple[str, int] | None:
    """(cell file name, line) of a `<base name>:<line>` label that names a cell, else None."""
    match = re.fullmatch(r"(.+):(\d+)", where or "")
    if match is None:
        return None
    for name in cell_files(shell):
        if os.path.basename(name) == match[1]:
            return name, int(match[2])
    return None


def raise_at(error: BaseException, filename: str, line: int) -> NoReturn:
    """Raise `error` (its traceback dropped) from `line` of the cell compiled as `filename`."""
    __tracebackhide__ = True
    code = compile("\n" * (line - 1) + "raise __nnsight_error__", filename, "exec")
    error.__cause__, error.__suppress_context__ = None, True     # the engine's inner exceptions are noise here
    scope = {"__nnsight_error__": error.with_traceback(None), "__builtins__": builtins}
    try:
        exec(code, scope)    # noqa: S102 - one `raise` statement, placed at the user's line
    finally:
        scope.clear()
    raise AssertionError("unreachable")   # pragma: no cover
