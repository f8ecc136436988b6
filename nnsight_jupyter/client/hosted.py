"""Hosted models in the kernel: the host's description of a model becomes a weightless LanguageModel.

`describe` fetches the description (``GET models/<name>``: module tree, config, execution order,
tokenizer), waiting while the model loads; `build_model` makes the LanguageModel (a skeleton with
meta parameters, the rebuilt tokenizer, the host's order, a `RemoteRunner`); `runner_for` finds
the hosted model for ``remote=True`` on a locally built model and checks the module trees match.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import ModelLoadError, NNsightError, ProtocolError, TracingError
from ..graph.order import ExecutionOrder
from ..tracing.model import LanguageModel
from .rest import HTTPError
from .runner import RemoteRunner
from .skeleton import build_skeleton, same_tree
from .tokenizer import tokenizer_from_description

if TYPE_CHECKING:
    from .connection import Connection


def build_model(connection: "Connection", name: str, description: dict[str, Any]) -> Any:
    """A LanguageModel from the host's description: skeleton, tokenizer, execution order, a RemoteRunner."""
    for key in ("module_tree", "execution_order", "tokenizer"):
        if key not in description:
            raise ProtocolError(f"the host's description of model {name!r} has no {key!r}: the server's "
                                "nnsight-jupyter is probably another release; install the same on both sides")
    skeleton = build_skeleton(description["module_tree"], description.get("config"))
    tokenizer = tokenizer_from_description(description["tokenizer"])
    order = ExecutionOrder.from_json(description["execution_order"])
    return LanguageModel._hosted(skeleton, tokenizer, order, RemoteRunner(connection, name, order), name)


def describe(connection: "Connection", name: str, timeout: float) -> dict[str, Any]:
    """GET models/<name>, waiting while the model loads."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            return connection.request("GET", f"models/{quote(name, safe='')}")
        except HTTPError as error:
            if error.status == 404:
                raise _unknown_model(connection, name) from None
            if error.status != 409:
                raise
        first = True
        while True:   # not ready (409): poll the status every 0.5 s until it is
            state, problem = _model_state(connection, name)
            if state == "failed":
                raise ModelLoadError(f"the hosted model {name!r} failed to load on the host: {problem}")
            if state is None:
                raise _unknown_model(connection, name)
            if state == "ready" and not first:
                break
            if time.monotonic() >= deadline:
                raise NNsightError(
                    f"the hosted model {name!r} is still {state} after {timeout:.0f} s; try again later, or "
                    "wait longer with connection.model(name, timeout=...)")
            if not said and state != "ready":
                print(f"nnsight_jupyter: {name!r} is {state} on the host; waiting for it "
                      f"(up to {timeout:.0f} s)...", flush=True)
                said = True
            time.sleep(0.5)
            first = False

def _model_state(connection: "Connection", name: str) -> tuple[str | None, Any]:
    models = (connection.status() or {}).get("models") or {}
    info = models.get(name)
    if info is None:
        return None, None
    if isinstance(info, str):
        return info, None
    return info.get("state"), info.get("error")

def _unknown_model(connection: "Connection", name: str) -> NNsightError:
    try:
        names = sorted(connection.models())
    except NNsightError:
        names = []
    hosted = ", ".join(repr(n) for n in names) if names else \
        "none (the server's c.NNsightHost.models is empty)"
    return NNsightError(f"the host at {connection.url} has no model {name!r}; it hosts: {hosted}")


def runner_for(connection: "Connection", model: Any) -> RemoteRunner:
    """The runner for `remote=True` on a locally built model: the hosted model of the same name
    (or, failing that, the one hosted from the source of that name), if the module trees match."""
    name = model._name
    host_name = name if name in connection.descriptions else None
    if host_name is None:
        hosted = connection.models()
        if name in hosted:
            host_name = name
        else:
            same_source = [n for n, info in hosted.items() if isinstance(info, dict)
                           and info.get("source") in (name, f"bundled:{name}")]
            if len(same_source) == 1:
                host_name = same_source[0]
            else:
                listed = ", ".join(repr(n) for n in sorted(hosted)) or "none"
                raise TracingError(
                    f"remote=True: the host at {connection.url} has no model named {name!r} (this model's name); "
                    f"it hosts: {listed}. Use connect().model(NAME) to trace a hosted model.")
    description = connection.descriptions.get(host_name)
    if description is None:
        description = connection.descriptions[host_name] = describe(connection, host_name, 120.0)
    difference = same_tree(model._module, description["module_tree"])
    if difference is not None:
        raise TracingError(
            f"remote=True: the local model {name!r} and the hosted model {host_name!r} have different module "
            f"trees ({difference}), so a trace of this model would not fit the host's. Trace the hosted "
            f"model itself: connect().model({host_name!r}).")
    order = description.get("execution_order")
    return RemoteRunner(connection, host_name, ExecutionOrder.from_json(order) if order else None)
