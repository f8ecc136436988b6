"""`LocalRunner`: runs graphs in this process, on the wrapped torch model (`graph.runner.Runner`).

It wraps `execution.execute`: the observer hears ``status("running")``, each generation step
(``progress(step, steps)``), each ``print()`` of the trace as it runs (``log(line, text)``; with
no observer the text is printed), and ``status("done" | "error")`` last.
"""

from __future__ import annotations

from ..errors import JobCancelledError
from ..graph.nodes import Graph
from ..graph.result import Result
from ..graph.runner import Observer, notify
from .batching import ModuleTarget
from .executor import execute


class LocalRunner:
    """Runs graphs on `target` (a `ModuleTarget` / `LanguageTarget` around the user's model)."""

    def __init__(self, target: ModuleTarget):
        self.target = target

    def __repr__(self) -> str:
        return f"<LocalRunner {type(self.target.module).__name__}>"

    def run(self, graph: Graph, observer: Observer | None = None) -> Result:
        if observer is None:
            return execute(graph, self.target)
        steps = graph.runs[-1].options.get("max_new_tokens") if graph.runs else None
        notify(observer, "status", "running")
        try:
            result = execute(graph, self.target, echo_logs=False,
                             on_step=lambda step: notify(observer, "progress", step + 1, steps),
                             on_log=lambda line, text: notify(observer, "log", line, text))
        except (JobCancelledError, KeyboardInterrupt) as error:
            notify(observer, "status", "cancelled", error=error)
            raise
        except BaseException as error:
            notify(observer, "status", "error", error=error)
            raise
        notify(observer, "status", "done")
        return result
