"""nnsight_jupyter: interventions on language models from Jupyter.

The public API (fixed in DESIGN.md), re-exported here and nothing else. The names are loaded on
first use (PEP 562 `__getattr__`), so importing a part of the package (`nnsight_jupyter.graph`,
`nnsight_jupyter.server`) does not import the rest. Two hooks that Jupyter looks up by convention
live here too: `load_ipython_extension` (`%load_ext nnsight_jupyter`) and
`_jupyter_server_extension_points` (`jupyter server extension enable nnsight_jupyter`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from . import errors as _errors
from ._version import __version__  # noqa: F401 - nnsight_jupyter.__version__

#: The API names and the module each lives in (loaded on first use).
_API = {"connect": ".client", "LanguageModel": ".tracing", "NNsight": ".tracing", "Proxy": ".tracing",
        "save": ".tracing"}
#: The error family (DESIGN.md: `NNsightError` and its subclasses): every one defined in `errors`.
_ERRORS = [name for name, value in vars(_errors).items() if isinstance(value, type)
           and issubclass(value, _errors.NNsightError) and value.__module__ == _errors.__name__]
_PUBLIC = {**_API, **dict.fromkeys(_ERRORS, ".errors")}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'nnsight_jupyter' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value          # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext nnsight_jupyter`: the notebook front end (the %%trace and %nnsight magics) is imported only here."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The server extension, for `jupyter server extension enable nnsight_jupyter`."""
    from .server.app import NNsightHost

    return [{"module": "nnsight_jupyter.server", "app": NNsightHost}]
