"""GraphBuilder: collects the nodes of one request (a trace, or every trace of a session).

The builder owns the `Graph` under construction and the proxies that were saved. Every node is
stamped with where it belongs: the innermost tracer's run and invoke, the generation step or call
index of an open `tracer.iter[...]`, the `backward` block, and the user's line. Ops are looked up
in the allow-list as nodes are made and checked by `graph.validate.NodeChecker.add_built`
(keywords, the names they read, writes into parameters or views of them), a run's options as it
opens and an invoke's inputs as it is added (`check_run_options`, `check_invoke_inputs`): each
error points at the user's line, and the structure, right by construction, is not checked again.
When the outermost context exits, `run()` seals the graph as validated, hands it to the tracer's
runner (`graph.runner.Runner`: the model's local runner, or a model host's, which checks everything
anew as it decodes) and gives each saved proxy its value. The builder names no runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TracingError
from ..graph.nodes import Graph, Invoke, Node, Run
from ..graph.ops import OPS, get_op
from ..graph.result import Result
from ..graph.runner import Observer, Runner
from ..graph.validate import NodeChecker, check_invoke_inputs, check_run_options, seal
from . import containers, context
from .proxy import MISSING, READY, Proxy, to_arg

if TYPE_CHECKING:
    from .model import NNsight
    from .tracer import Tracer


_new_node = Node.__new__


class GraphBuilder:
    """The graph of one request being written, and its saved proxies."""

    def __init__(self, model: "NNsight"):
        self.model = model
        self.graph = Graph(model=model._name)
        self.saved: list[Proxy] = []
        self.containers: list[Any] = []          # saved lists and dicts (tracing.containers)
        self.per_step: dict[int, list] = {}      # save id -> its values, one per step (repeated blocks)
        self.closed = False
        self.result: Result | None = None
        self._tracers: list["Tracer"] = []
        self._checker = NodeChecker()

    # ------------------------------------------------------------------ structure

    def tracer(self) -> "Tracer":
        if not self._tracers:
            raise TracingError("no trace is open: interventions go inside `with model.trace(...):`")
        return self._tracers[-1]

    def open_run(self, tracer: "Tracer", kind: str, options: dict) -> int:
        check_run_options(kind, options)              # KeywordNotAllowedError at the user's line
        run = Run(len(self.graph.runs), kind, [], dict(options))
        self.graph.runs.append(run)
        self._tracers.append(tracer)
        return run.id

    def close_run(self, tracer: "Tracer") -> None:
        self._tracers.remove(tracer)

    def add_invoke(self, run_id: int, args: tuple, kwargs: dict, all_rows: bool) -> int:
        run = self.graph.runs[run_id]
        invoke = Invoke(len(run.invokes), to_arg(tuple(args), self), to_arg(dict(kwargs), self), all_rows)
        if invoke.kwargs:
            check_invoke_inputs(invoke.kwargs, f"invoke {invoke.id} of run {run_id}")
        run.invokes.append(invoke)
        return invoke.id

    def require_backward(self, what: str) -> None:
        if self.tracer().backward is None:
            raise TracingError(f"{what} is only available inside `with loss.backward():`")

    # ------------------------------------------------------------------ nodes

    def add(self, op: str, args: tuple = (), kwargs: dict | None = None, *, module: str | None = None,
            length: int | None = None) -> Proxy:
        """Append a node for `op` (checked against the allow-list) and return its proxy."""
        if op not in OPS:
            get_op(op)                                   # raises OpNotAllowedError, naming the op
        tracer = self._tracers[-1] if self._tracers else self.tracer()
        nodes = self.graph.nodes
        node = _new_node(Node)               # the slots filled directly: this runs for every traced op
        node.id = len(nodes)
        node.op = op
        node.args = to_arg(args, self)
        node.kwargs = to_arg(kwargs, self) if kwargs else {}
        node.run = tracer.run_id
        node.invoke = tracer.current_invoke()
        node.module = module
        node.call = tracer.call
        node.step = tracer.step
        node.repeat = tracer.repeat
        node.backward = tracer.backward
        node.line = context.user_line()
        node.refs = None
        self._checker.add_built(node)
        nodes.append(node)
        return Proxy(self, node.id, length)

    # ------------------------------------------------------------------ running

    def run(self, runner: Runner, observer: Observer | None = None) -> Result:
        """Run the graph with `runner` and give every saved proxy its value (or the reason it has none)."""
        self.closed = True
        if not self.graph.runs:
            return Result()
        containers.collect(self)
        seal(self.graph)                               # every node was checked as it was made
        self.result = runner.run(self.graph, observer)
        nodes = self.graph.nodes
        for proxy in self.saved:
            save_id = proxy._save_id
            if save_id in self.result.saved:
                value = self.result.saved[save_id]
                node = nodes[save_id]
                if node.repeat and node.op in containers.PER_STEP_OPS:   # one value per step that ran
                    self.per_step[save_id] = value
                    value = value[-1]            # the value itself: its last step's (as nnsight)
                proxy._set(READY, value)
            elif save_id in self.result.missing:
                proxy._set(MISSING, self.result.missing[save_id])
        containers.resolve(self)
        return self.result

    def rebind(self, frame: Any) -> None:
        """At the top level of a module or notebook cell, rebind saved names to their values."""
        containers.expand_in_frame(self, frame)
        if frame is not None and frame.f_code.co_name == "<module>":
            self.rebind_names(frame.f_globals)

    def rebind_names(self, namespace: dict) -> None:
        """Rebind the names in `namespace` that hold a saved proxy of this request to its value."""
        for name, value in list(namespace.items()):
            if type(value) is Proxy and value._builder is self and value._state == READY:
                namespace[name] = value._value
