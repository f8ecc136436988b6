"""The kernel side of the wire: a connection to the model host of a Jupyter server.

`connect()` finds the server (`discovery.find_server`), checks that the nnsight host answers, and
makes the connection current. `Connection.model(name)` builds a LanguageModel from the host's
description of a hosted model (module tree, config, execution order, tokenizer): no weights and no
model class in the kernel. Its traces run through a `Runner`, which sends the graph over the
websocket (`docs/protocol.md`) and waits for the result, showing the queue position, the running
state and generation steps, printing the trace's `print()` output as it comes, cancelling the job on
Ctrl-C, and re-attaching to the job if the socket drops. Host errors are raised as the same
`NNsightError` subclasses a local run raises.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable
from urllib.parse import quote, urlsplit, urlunsplit

from .. import errors as _errors
from .. import protocol as P
from ..errors import (
    JobCancelledError,
    ModelLoadError,
    NNsightError,
    ProtocolError,
    QueueFullError,
    RemoteError,
    TracingError,
)
from ..execution.executor import Result
from ..execution.order import ExecutionOrder
from ..graph.codec import decode_values, encode
from .discovery import find_server
from .skeleton import build_skeleton, same_tree

__all__ = ["Connection", "Runner", "connect", "current_connection", "runner_for", "remote_error",
           "tokenizer_from_description", "PROGRESS_ENV"]

#: Set to "0" to hide the progress bar of remote jobs.
PROGRESS_ENV = "NNSIGHT_JUPYTER_PROGRESS"

_current: "Connection | None" = None

#: Seconds between reconnect attempts after the socket drops while a job runs.
RECONNECT_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
#: Longest wait for the host to confirm a cancel after Ctrl-C.
CANCEL_WAIT = 5.0
#: Poll interval while waiting for messages (keeps Ctrl-C responsive).
_POLL = 0.5


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


def runner_for(model: Any) -> "Runner":
    """The runner for `model.trace(..., remote=True)` on a locally built model: the current connection
    (or `connect()`), its hosted model of the same name, after checking the module trees match."""
    connection = _current if _current is not None and not _current.closed else None
    if connection is None:
        try:
            connection = connect()
        except NNsightError as error:
            raise TracingError(f"remote=True runs the trace on a model host, and none could be connected: "
                               f"{error}") from None
    return connection.runner_for(model)


class _HTTPError(NNsightError):
    """A REST call answered with an HTTP error; `status` is its code."""

    def __init__(self, message: str, status: int):
        self.status = status
        super().__init__(message)


class _Dropped(Exception):
    """The websocket closed while waiting for a message."""


class Connection:
    """A handle on one Jupyter server's model host: REST calls, hosted models, and the job websocket."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0):
        self.url, self.token = find_server(url, token)
        parts = urlsplit(self.url)
        self.api_url = self.url + "nnsight/api/"
        self.ws_url = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc,
                                  parts.path + "nnsight/ws", "", ""))
        self.timeout = timeout
        self.welcome: dict[str, Any] | None = None
        self.server_status: dict[str, Any] | None = None
        self.closed = False
        self._ws: Any = None
        self._lock = threading.RLock()
        self._descriptions: dict[str, dict[str, Any]] = {}

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
        self.closed = True
        self._drop()
        if _current is self:
            _current = None

    # ------------------------------------------------------------------ REST

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def _request(self, method: str, path: str, *, raw: bool = False) -> Any:
        request = urllib.request.Request(self.api_url + path, method=method, headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            status, message = error.code, _server_message(error)
            hint = ""
            if status in (401, 403):
                hint = (" The token is wrong or missing: pass connect(token=...) or set NNSIGHT_JUPYTER_TOKEN "
                        "(`jupyter server list` shows the running servers and their tokens).")
            elif status == 404 and path in ("status", "models"):
                hint = (" Is the nnsight_jupyter server extension enabled on this server? "
                        "(`jupyter server extension list`)")
            raise _HTTPError(f"{method} {self.api_url}{path} failed: HTTP {status}: {message}.{hint}",
                             status) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise NNsightError(
                f"cannot reach the Jupyter server at {self.url}: {reason}. Is it running, and is this its "
                "address? (set NNSIGHT_JUPYTER_URL or pass connect(url=...))") from None
        if raw:
            return body
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError:
            raise ProtocolError(f"{method} {self.api_url}{path} answered with something that is not JSON: "
                                f"{body[:200]!r}") from None

    def status(self) -> dict[str, Any]:
        """The host's status: protocol, version, backend, models and their states, queues, limits."""
        return self._request("GET", "status")

    def models(self) -> dict[str, dict[str, Any]]:
        """The hosted models: {name: {"state", "source", "dtype", "error"}}."""
        return self._request("GET", "models")

    def jobs(self) -> list[dict[str, Any]]:
        """This user's jobs on the host, newest first."""
        answer = self._request("GET", "jobs")
        return answer.get("jobs", []) if isinstance(answer, dict) else answer

    def job(self, job_id: str) -> dict[str, Any]:
        """One job of this user: status, timestamps, batch id, rows, error, history."""
        return self._request("GET", f"jobs/{quote(job_id, safe='')}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job of this user."""
        return self._request("DELETE", f"jobs/{quote(job_id, safe='')}")

    def result(self, job_id: str) -> dict[int, Any]:
        """The saved values of a finished job (by save node id), fetched over REST."""
        payload = self._request("GET", f"jobs/{quote(job_id, safe='')}/result", raw=True)
        return {int(k): v for k, v in decode_values(payload).items()}

    # ------------------------------------------------------------------ hosted models

    def model(self, name: str, *, timeout: float = 120.0) -> Any:
        """A LanguageModel for the hosted model `name`: the host's module tree (meta parameters, no
        weights), tokenizer and execution order; its traces run on the host. Waits (up to `timeout`
        seconds) for a model that is still loading."""
        description = self._describe(name, timeout)
        self._descriptions[name] = description
        return self._build_model(name, description)

    def _build_model(self, name: str, description: dict[str, Any]) -> Any:
        from ..tracing.model import LanguageModel

        for key in ("module_tree", "execution_order", "tokenizer"):
            if key not in description:
                raise ProtocolError(f"the host's description of model {name!r} has no {key!r}: the server's "
                                    "nnsight-jupyter is probably another release; install the same on both sides")
        skeleton = build_skeleton(description["module_tree"], description.get("config"))
        tokenizer = tokenizer_from_description(description["tokenizer"])
        order = ExecutionOrder.from_json(description["execution_order"])
        return LanguageModel._hosted(skeleton, tokenizer, order, Runner(self, name, order), name)

    def _describe(self, name: str, timeout: float) -> dict[str, Any]:
        """GET models/<name>, waiting while the model loads."""
        deadline = time.monotonic() + timeout
        said = False
        while True:
            try:
                return self._request("GET", f"models/{quote(name, safe='')}")
            except _HTTPError as error:
                if error.status == 404:
                    raise self._unknown_model(name) from None
                if error.status != 409:
                    raise
            first = True
            while True:   # not ready (409): poll the status every 0.5 s until it is
                state, problem = self._model_state(name)
                if state == "failed":
                    raise ModelLoadError(f"the hosted model {name!r} failed to load on the host: {problem}")
                if state is None:
                    raise self._unknown_model(name)
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

    def _model_state(self, name: str) -> tuple[str | None, Any]:
        models = (self.status() or {}).get("models") or {}
        info = models.get(name)
        if info is None:
            return None, None
        if isinstance(info, str):
            return info, None
        return info.get("state"), info.get("error")

    def _unknown_model(self, name: str) -> NNsightError:
        try:
            names = sorted(self.models())
        except NNsightError:
            names = []
        hosted = ", ".join(repr(n) for n in names) if names else \
            "none (the server's c.NNsightHost.models is empty)"
        return NNsightError(f"the host at {self.url} has no model {name!r}; it hosts: {hosted}")

    def runner_for(self, model: Any) -> "Runner":
        """The runner for `remote=True` on a locally built model: the hosted model of the same name
        (or, failing that, the one hosted from the source of that name), if the module trees match."""
        name = model._name
        host_name = name if name in self._descriptions else None
        if host_name is None:
            hosted = self.models()
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
                        f"remote=True: the host at {self.url} has no model named {name!r} (this model's name); "
                        f"it hosts: {listed}. Use connect().model(NAME) to trace a hosted model.")
        description = self._descriptions.get(host_name)
        if description is None:
            description = self._descriptions[host_name] = self._describe(host_name, 120.0)
        difference = same_tree(model._module, description["module_tree"])
        if difference is not None:
            raise TracingError(
                f"remote=True: the local model {name!r} and the hosted model {host_name!r} have different module "
                f"trees ({difference}), so a trace of this model would not fit the host's. Trace the hosted "
                f"model itself: connect().model({host_name!r}).")
        order = description.get("execution_order")
        return Runner(self, host_name, ExecutionOrder.from_json(order) if order else None)

    # ------------------------------------------------------------------ websocket

    def _socket(self) -> Any:
        """The open websocket (opened, with the hello / welcome handshake, when there is none)."""
        if self.closed:
            raise NNsightError("this connection is closed: connect() again")
        ws = self._ws
        if ws is not None:
            from websockets.protocol import State

            if ws.state is State.OPEN:
                return ws
            self._drop()
        self._ws = self._open()
        return self._ws

    def _open(self) -> Any:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect as ws_connect

        options = {"additional_headers": self._headers(), "max_size": None, "open_timeout": self.timeout}
        try:
            try:
                ws = ws_connect(self.ws_url, legacy=True, **options)   # websockets >= 17: a plain connection
            except TypeError:
                ws = ws_connect(self.ws_url, **options)
        except InvalidStatus as error:
            status = error.response.status_code
            hint = " The token is wrong or missing: pass connect(token=...) or set NNSIGHT_JUPYTER_TOKEN." \
                if status in (401, 403) else ""
            raise NNsightError(f"the Jupyter server refused the websocket {self.ws_url}: HTTP {status}.{hint}") from None
        except (OSError, TimeoutError, InvalidHandshake) as error:
            raise NNsightError(f"cannot open the websocket {self.ws_url}: {error}. Is the Jupyter server running "
                               "with the nnsight_jupyter extension?") from None
        try:
            ws.send(json.dumps({"type": P.HELLO, "protocol": P.PROTOCOL_VERSION,
                                "client": f"nnsight-jupyter {_version()}", "python": platform.python_version()}))
            raw = ws.recv(timeout=self.timeout)
        except TimeoutError:
            ws.close()
            raise ProtocolError(f"the host sent no welcome within {self.timeout:.0f} s of hello") from None
        except ConnectionClosed as error:
            raise ProtocolError(f"the host closed the websocket during the handshake "
                                f"(code {_close_code(error)}: {_close_reason(error) or 'no reason given'})") from None
        message = _parse(raw)[0]
        if message["type"] == P.ERROR:
            ws.close()
            raise remote_error(message)
        if message["type"] != P.WELCOME:
            ws.close()
            raise ProtocolError(f"the host answered hello with {message['type']!r}, not welcome")
        try:
            P.check_version(message.get("protocol"), "client")
        except ProtocolError:
            ws.close()
            raise
        self.welcome = message
        return ws

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass

    def _send(self, message: dict[str, Any]) -> None:
        self._socket().send(json.dumps(message))

    def _next(self, timeout: float) -> tuple[dict[str, Any], bytes | None] | None:
        """The next message (header, binary payload or None); None on timeout; _Dropped if the socket closed."""
        from websockets.exceptions import ConnectionClosed

        ws = self._ws
        if ws is None:
            raise _Dropped()
        try:
            raw = ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed:
            self._drop()
            raise _Dropped() from None
        return _parse(raw)

    def _run(self, model_name: str, payload: bytes, on_job: Callable[[str], None] | None = None) -> Result:
        """Submit an encoded graph for `model_name` and wait for its result."""
        request_id = uuid.uuid4().hex
        frame = P.pack({"type": P.SUBMIT, "request_id": request_id, "model": model_name}, payload)
        with self._lock:
            wait = _JobWait(self, model_name)
            try:
                self._submit_frame(frame)
                job_id = wait.accepted(request_id)
                if on_job is not None:
                    on_job(job_id)
                return wait.result()
            except KeyboardInterrupt:
                wait.interrupted()
                raise
            finally:
                wait.close()

    def _submit_frame(self, frame: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self._socket().send(frame)
        except ConnectionClosed:   # the frame was not delivered: nothing was submitted, send it again
            self._drop()
            self._socket().send(frame)

    def attach(self, job_id: str) -> Result:
        """Wait for a job of this user (by id, e.g. from `jobs()`) and return its result (an
        execution.Result: saved values by save node id, logs, missing saves). Ctrl-C only stops
        waiting here; `cancel(job_id)` cancels the job."""
        with self._lock:
            wait = _JobWait(self, job_id)
            try:
                wait.job_id = job_id
                self._send({"type": P.ATTACH, "job_id": job_id})
                return wait.result()
            finally:
                wait.close()


class Runner:
    """Runs graphs of one hosted model: `run(graph) -> execution.Result` (what tracing calls).

    With the host's execution order, a graph that touches modules out of order is refused here,
    before it is sent (the host would refuse it too, but only after the job's turn in the queue)."""

    def __init__(self, connection: Connection, model_name: str, order: ExecutionOrder | None = None):
        self.connection = connection
        self.model_name = model_name
        self.order = order
        self.last_job_id: str | None = None

    def __repr__(self) -> str:
        return f"<Runner {self.model_name!r} on {self.connection.url}>"

    def run(self, graph: Any) -> Result:
        if self.order is not None:
            self._check_order(graph)
        payload = encode(graph)
        self.last_job_id = None
        return self.connection._run(self.model_name, payload, on_job=self._job)

    def _job(self, job_id: str) -> None:
        self.last_job_id = job_id

    def _check_order(self, graph: Any) -> None:
        from ..execution.planner import plan

        try:
            plan(graph, {run.id: self.order for run in graph.runs})
        except NNsightError:
            raise
        except Exception:   # not a verdict on the graph: let the host decide
            pass


class _Progress:
    """The progress bar of one job (tqdm.auto): queue position, running, generation steps."""

    def __init__(self, label: str):
        self.label = label
        self.enabled = os.environ.get(PROGRESS_ENV, "1").strip() != "0"
        self.bar: Any = None
        self.last = 0.0

    def _bar(self) -> Any:
        if self.bar is None and self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=None, desc=self.label, leave=False, dynamic_ncols=True,
                            bar_format="{desc} [{elapsed}]")
            self.last = time.monotonic()
        return self.bar

    def tick(self) -> None:
        """Keep the elapsed time moving while nothing happens (called between messages)."""
        if self.bar is not None and time.monotonic() - self.last >= 1.0:
            self.bar.refresh()
            self.last = time.monotonic()

    def queued(self, position: Any) -> None:
        bar = self._bar()
        if bar is not None:
            ahead = "" if not isinstance(position, int) else f", {position} ahead" if position > 0 else ", next"
            bar.set_description_str(f"{self.label}: queued{ahead}")

    def running(self, batch_id: Any) -> None:
        bar = self._bar()
        if bar is not None:
            bar.set_description_str(f"{self.label}: running")

    def step(self, step: Any, steps: Any) -> None:
        bar = self._bar()
        if bar is None or not isinstance(step, int):
            return
        if isinstance(steps, int) and steps > 0 and bar.total != steps:
            bar.bar_format = None          # now a real bar: step / steps
            bar.set_description_str(f"{self.label}: generating", refresh=False)
            bar.reset(total=steps)
        bar.n = step
        bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _JobWait:
    """Reads the messages of one job until its result; reconnects and re-attaches if the socket drops."""

    def __init__(self, connection: Connection, label: str):
        self.connection = connection
        self.progress = _Progress(label)
        self.request_id: str | None = None
        self.job_id: str | None = None
        self.logs_printed = 0
        self.done_at: float | None = None

    def close(self) -> None:
        self.progress.close()

    def accepted(self, request_id: str) -> str:
        self.request_id = request_id
        while True:
            try:
                message = self.connection._next(_POLL)
            except _Dropped:
                raise NNsightError(
                    "the connection to the host dropped before it acknowledged the job, which may or may not "
                    "have been accepted: see connection.jobs(), and connection.attach(job_id) for its "
                    "result") from None
            if message is None:
                continue
            header, _ = message
            kind = header["type"]
            if kind == P.ACCEPTED and header.get("request_id") == request_id:
                self.job_id = str(header["job_id"])
                self.progress.queued(header.get("position"))
                return self.job_id
            if kind == P.ERROR and header.get("request_id") in (request_id, None) and not header.get("job_id"):
                raise remote_error(header)

    def result(self) -> Result:
        job_id = self.job_id
        while True:
            try:
                message = self.connection._next(_POLL)
            except _Dropped:
                self._reattach()
                continue
            if message is None:
                if self.done_at is not None and time.monotonic() - self.done_at > 10.0:
                    return self._fetch_result()   # "done" but no result frame: fetch it over REST
                self.progress.tick()
                continue
            header, payload = message
            kind = header["type"]
            about = header.get("job_id")
            if kind == P.RESULT:
                if about == job_id:
                    return self._result(header, payload or b"")
                continue
            if about is not None and about != job_id:
                continue   # a message about another job of this connection
            if kind == P.STATUS:
                status = header.get("status")
                if status == "queued":
                    self.progress.queued(header.get("position"))
                elif status == "running":
                    self.progress.running(header.get("batch_id"))
                elif status == "error":
                    raise remote_error(header, job_id)
                elif status == "cancelled":
                    raise remote_error(header, job_id)
                elif status == "done" and self.done_at is None:
                    self.done_at = time.monotonic()
            elif kind == P.PROGRESS:
                self.progress.step(header.get("step"), header.get("steps"))
            elif kind == P.LOG:
                self.logs_printed += 1
                print(header.get("text", ""), flush=True)
            elif kind == P.ERROR and (about == job_id or header.get("request_id") is None):
                if header.get("code") == "not_found":
                    error = header.get("error") or {}
                    raise RemoteError(
                        f"the host does not know job {job_id} (any more): {error.get('message', 'not found')}. "
                        "Results are kept for a while after they finish; see connection.jobs().",
                        remote_type=str(error.get("type") or "NotFound"))
                raise remote_error(header, job_id)

    def _result(self, header: dict[str, Any], payload: bytes) -> Result:
        values = decode_values(payload) if payload else {}
        logs = [(str(line), str(text)) for line, text in header.get("logs") or []]
        for _, text in logs[self.logs_printed:]:
            print(text, flush=True)
        missing = {int(k): str(v) for k, v in (header.get("missing") or {}).items()}
        return Result(saved={int(k): v for k, v in values.items()}, logs=logs, missing=missing)

    def _fetch_result(self) -> Result:
        saved = self.connection.result(str(self.job_id))
        return Result(saved=saved)

    def _reattach(self) -> None:
        last: BaseException | None = None
        for delay in RECONNECT_DELAYS:
            time.sleep(delay)
            if self.connection.closed:
                raise NNsightError(f"the connection was closed while waiting for job {self.job_id}")
            try:
                self.connection._send({"type": P.ATTACH, "job_id": self.job_id})
                return
            except Exception as error:   # refused, unreachable, closed again
                self.connection._drop()
                last = error
        raise NNsightError(
            f"lost the connection to the host while waiting for job {self.job_id} and could not reconnect "
            f"({last}). The job goes on on the host: fetch its result later with "
            f"connect().attach({self.job_id!r})")

    def interrupted(self) -> None:
        """After Ctrl-C: cancel the job on the host and wait (at most CANCEL_WAIT s) for the confirmation."""
        deadline = time.monotonic() + CANCEL_WAIT
        connection = self.connection
        try:
            if self.job_id is None and self.request_id is not None:
                while self.job_id is None and time.monotonic() < deadline:
                    message = connection._next(min(_POLL, max(deadline - time.monotonic(), 0.01)))
                    if message is None:
                        continue
                    header = message[0]
                    if header.get("request_id") == self.request_id:
                        if header["type"] == P.ACCEPTED:
                            self.job_id = str(header["job_id"])
                        elif header["type"] == P.ERROR:
                            return
            if self.job_id is None:
                return
            connection._send({"type": P.CANCEL, "job_id": self.job_id})
            outcome = f"asked the host to cancel job {self.job_id}"
            while time.monotonic() < deadline:
                message = connection._next(min(_POLL, max(deadline - time.monotonic(), 0.01)))
                if message is None:
                    continue
                header = message[0]
                if header.get("job_id") != self.job_id:
                    continue
                status = header.get("status") if header["type"] == P.STATUS else None
                if status == "cancelled":
                    outcome = f"cancelled job {self.job_id} on the host"
                    break
                if header["type"] in (P.RESULT, P.ERROR) or status in P.TERMINAL:
                    outcome = f"job {self.job_id} had already finished on the host"
                    break
            print(f"nnsight_jupyter: interrupted; {outcome}", file=sys.stderr)
        except (_Dropped, NNsightError, OSError):
            if self.job_id is not None:
                try:
                    connection.cancel(self.job_id)
                except NNsightError:
                    pass
        except Exception:
            pass


# ====================================================================== helpers

def _parse(raw: Any) -> tuple[dict[str, Any], bytes | None]:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        header, payload = P.unpack(bytes(raw))
        if not isinstance(header.get("type"), str):
            raise ProtocolError('a binary frame header needs a string "type"')
        return header, payload
    return P.parse_json(raw), None


def _error_class(name: str) -> type[NNsightError] | None:
    if not name or name.startswith("_"):
        return None
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, NNsightError):
        return cls
    return None


def remote_error(message: dict[str, Any], job_id: str | None = None) -> NNsightError:
    """The exception for a host `error` message or an error / cancelled `status`: the same
    nnsight_jupyter error class as a local run would raise when the host names one, QueueFullError,
    JobCancelledError, ProtocolError, else RemoteError with `remote_type` set."""
    error = message.get("error") or {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    type_name = str(error.get("type") or "")
    text = str(error.get("message") or message.get("message") or "")
    code = message.get("code")
    job_id = job_id or message.get("job_id")
    if message.get("status") == "cancelled":
        cls: type[NNsightError] = JobCancelledError
        text = text or f"job {job_id} was cancelled"
    elif code == "queue_full":
        cls = QueueFullError
    elif code == "protocol":
        cls = ProtocolError
    else:
        cls = _error_class(type_name) or RemoteError
    text = text or f"the host reported {type_name or code or 'an error'} without a message"
    # The host's error rebuilt with its fields (line, module, shapes, fix), so that it reads as
    # the same error raised locally; a host that sends none gives the message as the reason.
    fields = {**error, "message": text} if "reason" in error else {"reason": text}
    extra = {"remote_type": type_name or cls.__name__} if issubclass(cls, RemoteError) else {}
    exc: NNsightError = cls.from_fields(fields, **extra)
    exc.job_id = job_id          # type: ignore[attr-defined]
    exc.code = code              # type: ignore[attr-defined]
    return exc


_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_TEXT_KEYS = ("json", "tokenizer_json", "tokenizer.json", "text", "tokenizer")


def _token(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def tokenizer_from_description(spec: Any) -> Any:
    """A PreTrainedTokenizerFast (left padding) from the host's `tokenizer` field.

    Accepted: the ``tokenizer.json`` text itself, or an object with that text under ``"json"``
    (or ``"tokenizer_json"``) and the special tokens either under ``"special_tokens"`` (a
    ``special_tokens_map``: ``{"pad_token": "<pad>", ...}``) or at its top level; optional
    ``"chat_template"`` and ``"model_max_length"``.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    extra: dict[str, Any] = {}
    if isinstance(spec, str):
        text, specials = spec, {}
    elif isinstance(spec, dict):
        text = next((spec[k] for k in _TEXT_KEYS if isinstance(spec.get(k), str)), None)
        specials = spec.get("special_tokens") or spec.get("special_tokens_map") or spec
        extra = spec
    else:
        text, specials = None, {}
    if not text:
        raise ProtocolError("the host sent no tokenizer.json text for this model")
    try:
        backend = Tokenizer.from_str(text)
    except Exception as error:
        raise ProtocolError(f"the host's tokenizer.json cannot be read by this kernel's tokenizers: {error}") from None
    kwargs: dict[str, Any] = {}
    for key in _SPECIAL_TOKENS:
        token = _token(specials.get(key)) if isinstance(specials, dict) else None
        if token is not None:
            kwargs[key] = token
    if isinstance(specials, dict):
        more = specials.get("additional_special_tokens") or specials.get("extra_special_tokens")
        if isinstance(more, list):
            tokens = [t for t in (_token(v) for v in more) if t is not None]
            if tokens:
                kwargs["additional_special_tokens"] = tokens
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    tokenizer.padding_side = "left"
    if isinstance(extra.get("chat_template"), str):
        tokenizer.chat_template = extra["chat_template"]
    if isinstance(extra.get("model_max_length"), int):
        tokenizer.model_max_length = extra["model_max_length"]
    return tokenizer


def _server_message(error: urllib.error.HTTPError) -> str:
    try:
        body = error.read()
    except Exception:
        body = b""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error")
        message = data.get("message") or (inner.get("message") if isinstance(inner, dict) else inner) \
            or data.get("reason")
        if message:
            return str(message)[:1000]
    text = body.decode("utf-8", "replace").strip() if body else ""
    return text[:1000] or str(error.reason)


def _close_code(error: Any) -> Any:
    frame = getattr(error, "rcvd", None)
    return getattr(frame, "code", None)


def _close_reason(error: Any) -> str:
    frame = getattr(error, "rcvd", None)
    return getattr(frame, "reason", "") or ""


def _version() -> str:
    try:
        from .. import __version__

        return str(__version__)
    except ImportError:
        return "unknown"
