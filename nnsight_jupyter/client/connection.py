"""The kernel side of the wire: a connection to the model host of a Jupyter server.

`connect()` finds the server (`discovery.find_server`), checks that the nnsight host answers, and
makes the connection current. A `Connection` holds the server's addresses and token and composes
the parts of the client, each in a module of its own: REST calls (`rest`), the job websocket
(`transport`), hosted models (`hosted`: `Connection.model(name)` is a weightless LanguageModel),
the remote runner (`runner`), waiting for jobs (`jobs`), the default progress display
(`progress`) and errors from the wire (`wire_errors`). Importing the client lets `remote=True` on
a locally built model use the current connection (`tracing.remote`).
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from ..graph.codec import decode_values
from ..graph.result import Result
from ..graph.runner import Observer
from ..tracing.remote import provide_remote_runners, remote_runner
from . import hosted, jobs, rest
from .discovery import find_server
from .progress import ProgressBar
from .runner import RemoteRunner
from .transport import Socket

__all__ = ["Connection", "connect", "current_connection", "runner_for"]

_current: "Connection | None" = None


def connect(url: str | None = None, token: str | None = None, *, timeout: float = 30.0) -> "Connection":
    """Connect to the model host of a Jupyter server and make it the current connection.

    The server is the one named by the arguments, else by ``NNSIGHT_JUPYTER_URL`` /
    ``NNSIGHT_JUPYTER_TOKEN``, else the Jupyter server that started this kernel. Checks that the host
    answers (``GET nnsight/api/status``); `Connection.model(name)` then gives a hosted model.
    """
    global _current
    connection = Connection(url, token, timeout=timeout)
    connection.server_status = connection.status()
    _current = connection
    return connection


def current_connection() -> "Connection | None":
    """The connection made by the last `connect()` (None before, or after it was closed)."""
    return _current


def runner_for(model: Any) -> RemoteRunner:
    """The runner for `model.trace(..., remote=True)` on a locally built model: the current
    connection's hosted model of the same name, after checking the module trees match."""
    return remote_runner(model)


def _remote_runner(model: Any) -> RemoteRunner | None:
    """`tracing.remote`'s provider: None without a current connection (tracing then says to connect)."""
    if _current is None or _current.closed:
        return None
    return _current.runner_for(model)


provide_remote_runners(_remote_runner)


class Connection:
    """A handle on one Jupyter server's model host: REST calls, hosted models, and the job websocket."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0):
        self.url, self.token = find_server(url, token)
        parts = urlsplit(self.url)
        self.api_url = self.url + "nnsight/api/"
        ws_url = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc,
                             parts.path + "nnsight/ws", "", ""))
        self.timeout = timeout
        self.server_status: dict[str, Any] | None = None
        self.socket = Socket(ws_url, self._headers(), timeout)
        self.lock = threading.RLock()           # one job waited for at a time on the socket
        self.descriptions: dict[str, dict[str, Any]] = {}

    @property
    def ws_url(self) -> str:
        return self.socket.ws_url

    @property
    def welcome(self) -> dict[str, Any] | None:
        """The host's answer to hello (user, protocol, models), once the websocket was opened."""
        return self.socket.welcome

    @property
    def closed(self) -> bool:
        return self.socket.closed

    def __repr__(self) -> str:
        user = f" user={self.welcome.get('user')!r}" if self.welcome else ""
        return f"<nnsight_jupyter Connection {self.url}{user}{' closed' if self.closed else ''}>"

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the websocket; a current connection stops being current."""
        global _current
        self.socket.close()
        if _current is self:
            _current = None

    # ------------------------------------------------------------------ REST

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def request(self, method: str, path: str, *, raw: bool = False) -> Any:
        """A REST call to ``nnsight/api/<path>``: its JSON answer (or bytes, with `raw`)."""
        return rest.request(self.url, self.api_url, self._headers(), method, path, timeout=self.timeout, raw=raw)

    def status(self) -> dict[str, Any]:
        """The host's status: protocol, version, backend, models and their states, queues, limits."""
        return self.request("GET", "status")

    def models(self) -> dict[str, dict[str, Any]]:
        """The hosted models: {name: {"state", "source", "dtype", "error"}}."""
        return self.request("GET", "models")

    def jobs(self) -> list[dict[str, Any]]:
        """This user's jobs on the host, newest first."""
        answer = self.request("GET", "jobs")
        return answer.get("jobs", []) if isinstance(answer, dict) else answer

    def job(self, job_id: str) -> dict[str, Any]:
        """One job of this user: status, timestamps, batch id, rows, error, history."""
        return self.request("GET", f"jobs/{quote(job_id, safe='')}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job of this user."""
        return self.request("DELETE", f"jobs/{quote(job_id, safe='')}")

    def result(self, job_id: str) -> dict[int, Any]:
        """The saved values of a finished job (by save node id), fetched over REST."""
        payload = self.request("GET", f"jobs/{quote(job_id, safe='')}/result", raw=True)
        return {int(k): v for k, v in decode_values(payload).items()}

    # ------------------------------------------------------------------ hosted models and jobs

    def model(self, name: str, *, timeout: float = 120.0) -> Any:
        """A LanguageModel for the hosted model `name`: the host's module tree (meta parameters, no
        weights), tokenizer and execution order; its traces run on the host. Waits (up to `timeout`
        seconds) for a model that is still loading."""
        description = hosted.describe(self, name, timeout)
        self.descriptions[name] = description
        return hosted.build_model(self, name, description)

    def runner_for(self, model: Any) -> RemoteRunner:
        """The runner for `remote=True` on a locally built model: the hosted model of the same name
        (or, failing that, the one hosted from the source of that name), if the module trees match."""
        return hosted.runner_for(self, model)

    def attach(self, job_id: str, observer: Observer | None = None) -> Result:
        """Wait for a job of this user (by id, e.g. from `jobs()`) and return its result (a
        graph.result.Result: saved values by save node id, logs, missing saves). Ctrl-C only stops
        waiting here; `cancel(job_id)` cancels the job."""
        shown: Any = observer if observer is not None else ProgressBar(job_id)
        try:
            return jobs.attach(self, job_id, shown, shown.tick if isinstance(shown, ProgressBar) else None)
        finally:
            if isinstance(shown, ProgressBar):
                shown.close()

