"""The notebook front end: the `%%trace` and `%nnsight` magics (`magics`), their status line (`status`).

Importing this package imports nothing heavy; `%load_ext nnsight_jupyter` calls
`load_ipython_extension`, which registers the magics (and imports IPython) only then.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """Register `%%trace` and `%nnsight` on the IPython shell `ipython`."""
    from .magics import NNsightMagics

    ipython.register_magics(NNsightMagics(ipython))
