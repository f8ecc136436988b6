"""The kernel side of the wire: find the Jupyter server, connect to its model host, run graphs there.

`connect(url=None, token=None)` finds the server (the arguments, else ``NNSIGHT_JUPYTER_URL`` /
``NNSIGHT_JUPYTER_TOKEN``, else the Jupyter server that started this kernel) and returns a
`Connection`; `Connection.model(name)` is a LanguageModel built from the host's module tree and
tokenizer (no weights, no model class here) whose traces run on the host through a `RemoteRunner`
(a `graph.runner.Runner`). `runner_for(model)` serves ``model.trace(..., remote=True)`` on a
locally built model. See docs/client.md and docs/protocol.md.
"""

from .connection import Connection, connect, current_connection, runner_for
from .runner import RemoteRunner

__all__ = ["Connection", "RemoteRunner", "connect", "current_connection", "runner_for"]
