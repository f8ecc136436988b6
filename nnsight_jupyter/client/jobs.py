"""Waiting for one job on the websocket: submit, acceptance, status, progress, logs, result, re-attach, Ctrl-C.

`submit` sends an encoded graph and returns its `graph.result.Result`; `attach` waits for a job
by id. Both read the job's messages through a `JobWait`, which reports to a `graph.runner.Observer`
(queue position, running, generation steps, log lines), re-attaches to the job if the socket
drops, and on Ctrl-C cancels the job on the host (waiting at most `CANCEL_WAIT` s to confirm).
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

from .. import protocol as P
from ..errors import NNsightError, RemoteError
from ..graph.codec import decode_values
from ..graph.result import Result
from ..graph.runner import notify
from .transport import Dropped
from .wire_errors import remote_error

if TYPE_CHECKING:
    from .connection import Connection

#: Seconds between reconnect attempts after the socket drops while a job runs.
RECONNECT_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
#: Longest wait for the host to confirm a cancel after Ctrl-C.
CANCEL_WAIT = 5.0
#: Poll interval while waiting for messages (keeps Ctrl-C responsive).
_POLL = 0.5


def submit(connection: "Connection", model_name: str, payload: bytes, observer: Any,
           tick: Callable[[], None] | None = None, on_job: Callable[[str], None] | None = None) -> Result:
    """Submit an encoded graph for `model_name` and wait for its result (`on_job(job_id)` once accepted)."""
    request_id = uuid.uuid4().hex
    frame = P.pack({"type": P.SUBMIT, "request_id": request_id, "model": model_name}, payload)
    with connection.lock:
        wait = JobWait(connection, observer, tick)
        try:
            connection.socket.send_frame(frame)
            job_id = wait.accepted(request_id)
            if on_job is not None:
                on_job(job_id)
            return wait.result()
        except KeyboardInterrupt:
            wait.interrupted()
            raise


def attach(connection: "Connection", job_id: str, observer: Any,
           tick: Callable[[], None] | None = None) -> Result:
    """Wait for the job `job_id` of this user and return its result (Ctrl-C only stops waiting)."""
    with connection.lock:
        wait = JobWait(connection, observer, tick)
        wait.job_id = job_id
        connection.socket.send({"type": P.ATTACH, "job_id": job_id})
        return wait.result()


class JobWait:
    """Reads the messages of one job until its result; reconnects and re-attaches if the socket drops."""

    def __init__(self, connection: "Connection", observer: Any, tick: Callable[[], None] | None = None):
        self.connection = connection
        self.socket = connection.socket
        self.observer = observer
        self.tick = tick
        self.request_id: str | None = None
        self.job_id: str | None = None
        self.logs_printed = 0
        self.done_at: float | None = None

    def accepted(self, request_id: str) -> str:
        self.request_id = request_id
        while True:
            try:
                message = self.socket.next(_POLL)
            except Dropped:
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
                notify(self.observer, "status", "queued", position=header.get("position"))
                return self.job_id
            if kind == P.ERROR and header.get("request_id") in (request_id, None) and not header.get("job_id"):
                raise remote_error(header)

    def result(self) -> Result:
        job_id = self.job_id
        while True:
            try:
                message = self.socket.next(_POLL)
            except Dropped:
                self._reattach()
                continue
            if message is None:
                if self.done_at is not None and time.monotonic() - self.done_at > 10.0:
                    return self._fetch_result()   # "done" but no result frame: fetch it over REST
                if self.tick is not None:
                    self.tick()
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
                    notify(self.observer, "status", "queued", position=header.get("position"))
                elif status == "running":
                    notify(self.observer, "status", "running", batch_id=header.get("batch_id"))
                elif status == "error":
                    raise remote_error(header, job_id)
                elif status == "cancelled":
                    raise remote_error(header, job_id)
                elif status == "done" and self.done_at is None:
                    self.done_at = time.monotonic()
            elif kind == P.PROGRESS:
                notify(self.observer, "progress", header.get("step"), header.get("steps"))
            elif kind == P.LOG:
                self.logs_printed += 1
                notify(self.observer, "log", str(header.get("line", "")), str(header.get("text", "")))
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
        for line, text in logs[self.logs_printed:]:
            notify(self.observer, "log", line, text)
        missing = {int(k): str(v) for k, v in (header.get("missing") or {}).items()}
        return Result(saved={int(k): v for k, v in values.items()}, logs=logs, missing=missing)

    def _fetch_result(self) -> Result:
        saved = self.connection.result(str(self.job_id))
        return Result(saved=saved)

    def _reattach(self) -> None:
        last: BaseException | None = None
        for delay in RECONNECT_DELAYS:
            time.sleep(delay)
            if self.socket.closed:
                raise NNsightError(f"the connection was closed while waiting for job {self.job_id}")
            try:
                self.socket.send({"type": P.ATTACH, "job_id": self.job_id})
                return
            except Exception as error:   # refused, unreachable, closed again
                self.socket.drop()
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
                    message = connection.socket.next(min(_POLL, max(deadline - time.monotonic(), 0.01)))
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
            connection.socket.send({"type": P.CANCEL, "job_id": self.job_id})
            outcome = f"asked the host to cancel job {self.job_id}"
            while time.monotonic() < deadline:
                message = connection.socket.next(min(_POLL, max(deadline - time.monotonic(), 0.01)))
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
        except (Dropped, NNsightError, OSError):
            if self.job_id is not None:
                try:
                    connection.cancel(self.job_id)
                except NNsightError:
                    pass
        except Exception:
            pass
