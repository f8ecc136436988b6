"""Tracing contexts: Tracer (trace / generate), invokes, iteration over steps, sessions, caches.

    with model.trace() as tracer:            # a Tracer: one run of the graph
        with tracer.invoke("prompt"):        # an invoke: its own rows of the batch
            ...
    with model.generate(p, max_new_tokens=4) as tracer:
        for step in tracer.iter[1:3]: ...    # nodes anchored at generation steps 1 and 2
        for step in tracer.all(): ...        # one block repeated at every step that runs
    with model.session():                    # several traces, one request
        ...

The graph runs when the outermost context exits without an exception; saved proxies then hold
their values, and at the top level of a module or notebook cell their names are rebound to them.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import NNsightError, TracingError
from . import containers, context
from .builder import GraphBuilder
from .cache import Cache, open_cache
from .proxy import Proxy

if TYPE_CHECKING:
    from ..graph.runner import Observer, Runner
    from .model import NNsight

_real_print = builtins.print


class _Context:
    """Shared enter/exit: the per-thread stack, print() capture, running the graph at the outermost exit."""

    is_tracer = False
    builder: GraphBuilder

    def _push(self) -> None:
        stack = context.stack()
        if not stack:
            builtins.print = _traced_print
            self._mounted = containers.mounted()      # list.save / dict.save while a trace is open
            self._mounted.__enter__()
        stack.append(self)

    def _pop(self) -> None:
        stack = context.stack()
        stack.remove(self)
        if not stack:
            builtins.print = _real_print
            self._mounted.__exit__(None, None, None)

    def _finish(self, owner: bool) -> None:
        if owner:
            self.builder.run(self.runner, self.observer)
            self.builder.rebind(context.user_frame())


def _traced_print(*args: Any, **kwargs: Any) -> None:
    """print() inside a trace: traced values become a log node (printed when the graph runs)."""
    tracer = context.current()
    if tracer is not None and any(isinstance(a, Proxy) and not a._builder.closed for a in args):
        tracer.builder.add("log", args)
        return
    _real_print(*args, **kwargs)


class Tracer(_Context):
    """One forward pass (`trace`) or one `generate` call of a model, with its invokes."""

    is_tracer = True

    def __init__(self, model: "NNsight", kind: str, args: tuple, kwargs: dict, options: dict,
                 runner: "Runner | None" = None, observer: "Observer | None" = None):
        self.model = model
        self.runner = runner         # a graph.runner.Runner (None until entered: the session's, else the model's)
        self.observer = observer     # a graph.runner.Observer (a front end's status line), or None
        self.kind = kind
        self._implicit = (args, kwargs) if (args or kwargs) else None
        self.options = options
        self.step = 0          # generation step of new nodes (-1: after an open loop ended)
        self.call = 0          # call index of new module nodes (tracer.iter in a plain trace)
        self.repeat = False    # inside tracer.all(): repeat at every step from `step` on
        self.backward: int | None = None
        self._invokes: list[int] = []
        self._default_invoke: int | None = None

    # ------------------------------------------------------------------ context

    def __enter__(self) -> "Tracer":
        session = _open_session(self.model)
        self._owner = session is None
        if session is not None:
            if self.runner is not None and self.runner is not session.runner:
                raise TracingError("a trace inside a session runs where the session runs: pass remote= to "
                                   "model.session(...), not to the traces inside it")
            self.runner = session.runner
        elif self.runner is None:
            self.runner = self.model._runner(None)
        self.builder = session.builder if session is not None else GraphBuilder(self.model)
        self.run_id = self.builder.open_run(self, self.kind, self.options)
        if self._implicit is not None:
            self._default_invoke = self.builder.add_invoke(self.run_id, *self._implicit, all_rows=False)
        self._push()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._pop()
        self.builder.close_run(self)
        if exc_type is not None:
            if self._owner:
                self.builder.fail(exc)
            context.attach_line(exc, tb)
            return False
        try:
            self._finish(self._owner)
        except NNsightError as error:
            context.attach_line(error)
            raise
        return False

    def current_invoke(self) -> int:
        if self._invokes:
            return self._invokes[-1]
        if self._default_invoke is None:
            self._default_invoke = self.builder.add_invoke(self.run_id, (), {}, all_rows=True)
        return self._default_invoke

    # ------------------------------------------------------------------ user API

    def invoke(self, *args: Any, **kwargs: Any) -> "Invoker":
        """A batch entry: its input's rows; with no input, every row of this trace."""
        return Invoker(self, args, kwargs)

    @property
    def iter(self) -> "_IterIndex":
        """`for step in tracer.iter[a:b]`: generation steps (generate) or call indices (trace) a..b-1."""
        return _IterIndex(self)

    def all(self) -> "Iteration":
        """`for step in tracer.all()`: the body applies at every generation step that runs."""
        return Iteration(self, 0, None)

    @property
    def result(self) -> Proxy:
        """generate(): the prompt ids followed by the new ids (this invoke's rows)."""
        if self.kind != "generate":
            raise TracingError("tracer.result is only set by model.generate(...)")
        return self.builder.add("tracer.result")

    def cache(self, modules: list[Any] | None = None, include_inputs: bool = False,
              include_output: bool = True) -> "Cache":
        """The outputs (and inputs) of many modules (default: every module that runs), keyed by
        named_modules() path; one entry per call (a list in generation). See `tracing.cache`."""
        return open_cache(self, modules, include_inputs, include_output)

    def log(self, *values: Any) -> None:
        """Record the values' text when the graph runs (print() inside a trace does the same)."""
        self.builder.add("log", values)


class Invoker:
    """`with tracer.invoke(input):` — nodes inside belong to this invoke's rows."""

    def __init__(self, tracer: Tracer, args: tuple, kwargs: dict):
        self.tracer = tracer
        self.args = args
        self.kwargs = kwargs

    def __enter__(self) -> "Invoker":
        t = self.tracer
        if t._invokes:
            raise TracingError(
                "an invoke cannot be opened inside another invoke: each invoke is its own rows of the batch",
                fix="Close the first `with tracer.invoke(...):` block before opening the next, at the same "
                    "indentation; a value read in one invoke can be used in a later one.")
        all_rows = not self.args and not self.kwargs
        self.id = t.builder.add_invoke(t.run_id, self.args, self.kwargs, all_rows)
        self._saved = (t.step, t.call, t.repeat)
        t.step, t.call, t.repeat = 0, 0, False
        t._invokes.append(self.id)
        return self

    def __exit__(self, *exc: Any) -> bool:
        t = self.tracer
        t._invokes.pop()
        t.step, t.call, t.repeat = self._saved
        return False


class _IterIndex:
    def __init__(self, tracer: Tracer):
        self.tracer = tracer

    def __getitem__(self, key: int | slice) -> "Iteration":
        if isinstance(key, int):
            return Iteration(self.tracer, key, key + 1)
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TracingError("tracer.iter takes an index or a slice with step 1: tracer.iter[1:3]")
        start = key.start or 0
        if start < 0 or (key.stop is not None and key.stop < start):
            raise TracingError(f"tracer.iter[{start}:{key.stop}] is empty or negative")
        return Iteration(self.tracer, start, key.stop)


class Iteration:
    """Unrolls `tracer.iter[a:b]`; an open slice (`[a:]`, `all()`) becomes one repeated block."""

    def __init__(self, tracer: Tracer, start: int, stop: int | None):
        self.tracer = tracer
        self.start = start
        self.stop = stop

    def __iter__(self) -> Iterator[int]:
        t = self.tracer
        field = "step" if t.kind == "generate" else "call"
        saved = (t.step, t.call, t.repeat)
        if self.stop is None and field == "call":
            raise TracingError("an open tracer.iter[a:] needs generate(); in a trace give the calls: iter[a:b]")
        try:
            if self.stop is not None:
                for i in range(self.start, self.stop):
                    setattr(t, field, i)
                    yield i
            else:
                t.step, t.repeat = self.start, True
                yield containers.StepNumber(self.start)
        finally:
            t.step, t.call, t.repeat = saved
            if self.stop is None:
                t.step = -1


class Session(_Context):
    """`with model.session():` — several traces run as one request; values flow between them."""

    def __init__(self, model: "NNsight", runner: "Runner", observer: "Observer | None" = None):
        self.model = model
        self.runner = runner
        self.observer = observer

    def __enter__(self) -> "Session":
        if _open_session(self.model) is not None or context.current() is not None:
            raise TracingError("a session cannot be opened inside another session or trace")
        self.builder = GraphBuilder(self.model)
        self._push()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._pop()
        if exc_type is not None:
            self.builder.fail(exc)
            context.attach_line(exc, tb)
            return False
        try:
            self._finish(True)
        except NNsightError as error:
            context.attach_line(error)
            raise
        return False


def _open_session(model: "NNsight") -> Session | None:
    for ctx in reversed(context.stack()):
        if isinstance(ctx, Session) and ctx.model is model:
            return ctx
        if isinstance(ctx, Tracer):
            raise TracingError("a trace cannot be opened inside another trace; use a session for several traces")
    return None
