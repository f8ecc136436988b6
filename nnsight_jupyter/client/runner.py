"""`RemoteRunner`: runs graphs of one hosted model on its host (a `graph.runner.Runner`).

With the host's execution order, a graph that touches modules out of order is refused here, before
it is sent (`execution.check_order`, a pure check of graph and order; the host would refuse it too,
but only after the job's turn in the queue). The graph is encoded (`graph.codec.encode`), submitted
on the connection's websocket and waited for (`client.jobs`); with no observer, a `ProgressBar`
shows the job and prints its log lines. The observer hears ``status("done" | "error" | "cancelled")``
last, whatever happens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import JobCancelledError, NNsightError
from ..execution.planner import check_order
from ..graph.codec import encode
from ..graph.nodes import Graph
from ..graph.order import ExecutionOrder
from ..graph.result import Result
from ..graph.runner import Observer, notify
from .jobs import submit
from .progress import ProgressBar

if TYPE_CHECKING:
    from .connection import Connection


class RemoteRunner:
    """Runs graphs of the hosted model `model_name` through `connection`."""

    def __init__(self, connection: "Connection", model_name: str, order: ExecutionOrder | None = None):
        self.connection = connection
        self.model_name = model_name
        self.order = order
        self.last_job_id: str | None = None

    def __repr__(self) -> str:
        return f"<RemoteRunner {self.model_name!r} on {self.connection.url}>"

    def run(self, graph: Graph, observer: Observer | None = None) -> Result:
        if self.order is not None:
            self._check_order(graph)
        payload = encode(graph)
        self.last_job_id = None
        shown: Any = observer if observer is not None else ProgressBar(self.model_name)
        tick = shown.tick if isinstance(shown, ProgressBar) else None
        try:
            result = submit(self.connection, self.model_name, payload, shown, tick, on_job=self._job)
        except (JobCancelledError, KeyboardInterrupt) as error:
            notify(shown, "status", "cancelled", error=error)
            raise
        except BaseException as error:
            notify(shown, "status", "error", error=error)
            raise
        notify(shown, "status", "done")
        return result

    def _job(self, job_id: str) -> None:
        self.last_job_id = job_id

    def _check_order(self, graph: Graph) -> None:
        try:
            check_order(graph, self.order)
        except NNsightError:
            raise
        except Exception:   # not a verdict on the graph: let the host decide
            pass
