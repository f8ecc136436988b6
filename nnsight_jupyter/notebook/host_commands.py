"""What `%nnsight connect | models | status | jobs | cancel ID | attach ID` do, and how they show it.

Each answer is shown as one display with HTML (a table) and a `text/plain` twin, so a saved
notebook reopened without its kernel still reads it. The commands other than `connect` use the
magic's connection, else the current one (`nnsight_jupyter.connect`), else connect as `connect()`
does. `attach ID` of a job whose `%%trace` cell lost its connection finishes that cell: its saved
names land in the notebook namespace; any other job's `Result` is returned.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

from ..graph.runner import notify
from .status import StatusLine

if TYPE_CHECKING:
    from .magics import NNsightMagics


def run(magics: "NNsightMagics", args: Any) -> Any:
    """Run one `%nnsight` command (arguments already checked by the magic)."""
    __tracebackhide__ = True
    command = args.command
    if command == "connect":
        return connect(magics, args.target, args.token)
    connection = connection_of(magics)
    if command == "models":
        models = connection.models()
        show_table(f"models on {connection.url}", ["model", "state", "source", "dtype", "error"],
                   [[name, m.get("state"), m.get("source"), m.get("dtype"), m.get("error") or ""]
                    for name, m in models.items()], empty="no models hosted")
    elif command == "status":
        show_status(connection)
    elif command == "jobs":
        jobs = connection.jobs()
        show_table(f"your jobs on {connection.url}", ["job", "model", "kind", "status", "created", "batch", "error"],
                   [[j.get("id"), j.get("model"), j.get("kind"), j.get("status"), _when(j.get("created")),
                     j.get("batch_id") or "", _error(j)] for j in jobs], empty="no jobs")
    elif command == "cancel":
        record = connection.cancel(args.target)
        print(f"job {args.target}: {record.get('status', 'cancelled')}")
    elif command == "attach":
        return attach(magics, connection, args.target)
    return None


def connect(magics: "NNsightMagics", url: str | None, token: str | None) -> None:
    """`%nnsight connect [URL] [--token T]`: connect, make the connection current, say what is hosted."""
    __tracebackhide__ = True
    from ..client import connect as client_connect

    connection = client_connect(url, token)
    magics.connection = connection
    models = (connection.server_status or {}).get("models") or {}
    hosted = ", ".join(f"{name} ({m.get('state')})" for name, m in models.items()) or "no models"
    print(f"connected to {connection.url}: {hosted}")


def connection_of(magics: "NNsightMagics") -> Any:
    """The magic's connection if still open, else the current one, else a new `connect()`."""
    from ..client import connect as client_connect
    from ..client import current_connection

    for connection in (magics.connection, current_connection()):
        if connection is not None and not connection.closed:
            return connection
    magics.connection = client_connect()
    return magics.connection


def attach(magics: "NNsightMagics", connection: Any, job_id: str) -> Any:
    """Wait for job `job_id` with a status line; finish its `%%trace` cell if this kernel ran it."""
    __tracebackhide__ = True
    status = StatusLine(f"job {job_id}")
    status.runs = ["trace"]
    socket, before = connection.socket, connection.socket.received
    status.received = lambda: socket.received - before
    unfinished = magics.unfinished.pop(job_id, None)
    runner = _Attach(connection, job_id)
    try:
        if unfinished is None:
            return runner.run(None, status)
        context, namespace = unfinished
        status.runs = [run.kind for run in context.builder.graph.runs]
        context.builder.run(runner, status)
    except BaseException:
        if unfinished is not None and status.state not in ("done", "error", "cancelled"):
            magics.unfinished[job_id] = unfinished     # still not finished: attach again later
        raise
    context.builder.rebind_names(namespace)
    return None


class _Attach:
    """A runner (`graph.runner.Runner`) that waits for a job already on the host instead of sending one."""

    def __init__(self, connection: Any, job_id: str):
        self.connection = connection
        self.job_id = job_id

    def run(self, graph: Any, observer: Any = None) -> Any:
        __tracebackhide__ = True
        notify(observer, "status", "running")
        try:
            result = self.connection.attach(self.job_id, observer)
        except BaseException as error:
            notify(observer, "status", "error", error=error)
            raise
        notify(observer, "status", "done")
        return result


# ----------------------------------------------------------------------------- showing answers


def show_status(connection: Any) -> None:
    status = connection.status()
    limits = status.get("limits") or {}
    rows = [[name, m.get("state"), m.get("queued", 0), m.get("running", 0), m.get("batches", 0), m.get("error") or ""]
            for name, m in (status.get("models") or {}).items()]
    title = (f"host {connection.url} · protocol {status.get('protocol')}"
             + (f" · {status['message']}" if status.get("message") else ""))
    show_table(title, ["model", "state", "queued", "running", "batches", "error"], rows, empty="no models hosted",
               footer=", ".join(f"{k}={v}" for k, v in limits.items()))


def show_table(title: str, columns: list[str], rows: list[list[Any]], *, empty: str, footer: str = "") -> None:
    """One display: an HTML table and the same as aligned text."""
    from IPython.display import display

    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [title]
    if cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    else:
        lines.append(empty)
    if footer:
        lines.append(footer)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in cells)
    table = (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if cells
             else f"<p>{html.escape(empty)}</p>")
    note = f"<p><small>{html.escape(footer)}</small></p>" if footer else ""
    display({"text/plain": "\n".join(lines),
             "text/html": f'<div class="nnsight-table"><b>{html.escape(title)}</b>{table}{note}</div>'}, raw=True)


def _when(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _error(job: dict) -> str:
    if job.get("status") != "error":
        return ""
    return f"{job.get('error_type')}: {job.get('error_message')}"
