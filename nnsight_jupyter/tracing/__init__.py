"""Tracing: user code inside `with model.trace(...)` becomes an intervention graph.

Envoys mirror the module tree, proxies record operations, tracers/invokes/sessions say which run
and rows each node belongs to. Nothing here runs the model: `execution` does.
"""

from typing import Any

from .containers import save_container
from .envoy import Envoy
from .model import LanguageModel, NNsight
from .proxy import Proxy
from .tracer import Cache, Invoker, Session, Tracer


def save(value: Any) -> Any:
    """`nj.save(x)`: the same as `x.save()` for a traced value; a list or dict is kept past the trace
    with its traced values' values (`tracing.containers`); a tuple's traced values are saved one by one;
    other values are returned as they are."""
    if isinstance(value, Proxy):
        return value.save()
    if isinstance(value, (list, dict, set, frozenset)):
        return save_container(value)
    if isinstance(value, tuple):                 # immutable: its traced values are saved one by one
        for item in value:
            save(item)
    return value


__all__ = ["Cache", "Envoy", "Invoker", "LanguageModel", "NNsight", "Proxy", "Session", "Tracer", "save"]
