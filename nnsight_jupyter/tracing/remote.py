"""How `remote=True` on a locally built model finds its runner, without `tracing` naming the client.

The client installs a provider when it is imported (`provide_remote_runners`): a function from a
model to the `graph.runner.Runner` of the current connection's hosted model of the same name, or
None when there is no current connection. `tracing` asks `remote_runner(model)` and otherwise
knows nothing of connections, sockets or hosts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..errors import TracingError

if TYPE_CHECKING:
    from ..graph.runner import Runner
    from .model import NNsight

RemoteRunners = Callable[["NNsight"], "Runner | None"]

_provider: RemoteRunners | None = None


def provide_remote_runners(provider: RemoteRunners | None) -> None:
    """Install (or, with None, remove) the source of remote runners: the client calls this."""
    global _provider
    _provider = provider


def remote_runner(model: "NNsight") -> "Runner":
    """The runner of `model.trace(..., remote=True)`: the current connection's hosted model."""
    runner = _provider(model) if _provider is not None else None
    if runner is None:
        raise TracingError(
            f"remote=True runs the trace of {model._name} on a model host, and this kernel is not connected "
            "to one: call nnsight_jupyter.connect() first (it finds the Jupyter server from its arguments, "
            "NNSIGHT_JUPYTER_URL / NNSIGHT_JUPYTER_TOKEN, or the server that started this kernel)")
    return runner
