"""Tracing: user code inside `with model.trace(...)` becomes an intervention graph.

Envoys mirror the module tree, proxies record operations, tracers/invokes/sessions say which run
and rows each node belongs to. Nothing here runs the model: `execution` does.
"""

from typing import Any

from .envoy import Envoy
from .model import LanguageModel, NNsight
from .proxy import Proxy
from .tracer import Cache, Invoker, Session, Tracer


def save(value: Any) -> Any:
    """`nj.save(x)`: the same as `x.save()` for a traced value; other values are returned as they are."""
    if isinstance(value, Proxy):
        return value.save()
    return value


__all__ = ["Cache", "Envoy", "Invoker", "LanguageModel", "NNsight", "Proxy", "Session", "Tracer", "save"]
