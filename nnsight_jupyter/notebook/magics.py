"""The `%%trace` cell magic and the `%nnsight` line magic.

    %%trace MODEL [INPUT ...] [--remote] [--session] [--max-new-tokens N]
    h = model.model.layers[0].output.save()
    print(model.lm_head.output.argmax(-1))

MODEL and each INPUT are Python expressions evaluated in the notebook's namespace, separated by
spaces outside brackets and strings (wrap an expression with spaces in parentheses). One INPUT is the
trace's input; several are one invoke each, and the body then sees every row. `--max-new-tokens N`
makes the cell a `generate`, `--session` a session (the body opens its own traces), `--remote` runs
it on the connected host. The body is the cell text IPython hands the magic, run in the notebook's
namespace with the tracer (or session) bound to `tracer`; saved names are then rebound to their
values there. It is compiled under the cell's own file name (`shell.compile.cache`) padded with one
line for the magic line, so tracebacks and `NNsightError` messages say "Cell In[n], line k" of the
cell itself; an error found when the graph runs is raised from that line too. A `StatusLine` shows
the run inline.

    %nnsight connect [URL] [--token T] | models | status | jobs | cancel ID | attach ID

talks to the model host (`nnsight_jupyter.connect`); without `connect` first, the others connect as
`connect()` does (the server that started this kernel, or NNSIGHT_JUPYTER_URL / _TOKEN).
"""

from __future__ import annotations

import io
import time
import tokenize
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..errors import NNsightError
from ..graph.runner import TERMINAL
from . import cells
from .status import StatusLine


class MagicUsageError(NNsightError, UsageError):
    """A magic was called wrongly: an unknown option, a bad MODEL or INPUT expression, options that
    do not go together. IPython shows it as a usage error (no traceback)."""


def split_expressions(line: str) -> list[str]:
    """The words of a magic line: Python expressions (and --options), split at spaces outside
    brackets and strings. `model "a b" (x + 1) --remote` -> ['model', '"a b"', '(x + 1)', '--remote']."""
    words: list[str] = []
    depth, end = 0, None
    try:
        for token in tokenize.generate_tokens(io.StringIO(line).readline):
            if token.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.COMMENT):
                break
            if token.type == tokenize.ERRORTOKEN and not token.string.isspace():
                raise tokenize.TokenError(f"unexpected {token.string!r} at column {token.start[1] + 1}")
            start = token.start[1]
            if depth == 0 and (end is None or start > end):
                words.append(token.string)
            else:
                words[-1] += line[end:start] + token.string
            end = token.end[1]
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth = max(depth - 1, 0)
    except (tokenize.TokenError, IndentationError, SyntaxError) as error:
        raise MagicUsageError(f"cannot read the magic line {line!r}: {error}",
                              fix="Close every bracket and string; quote prompts: \"The Eiffel Tower\"") from None
    return words


@magics_class
class NNsightMagics(Magics):
    """`%%trace` and `%nnsight` (registered by `%load_ext nnsight_jupyter`)."""

    def __init__(self, shell: Any):
        super().__init__(shell)
        self.connection: Any = None
        self.status_line = StatusLine          # the status display of a %%trace cell (a graph.runner.Observer)
        self.unfinished: dict[str, tuple[Any, Any]] = {}     # job id -> (context, namespace) of a cell that lost it

    # ------------------------------------------------------------------ %%trace

    @magic_arguments()
    @argument("model", metavar="MODEL", help="the model: a Python expression (a LanguageModel, NNsight, or "
              "connect().model(name))")
    @argument("inputs", metavar="INPUT", nargs="*", help="Python expressions: the trace's input; several: one "
              "invoke each (the body then sees every row)")
    @argument("--remote", action="store_true", help="run on the connected model host (remote=True)")
    @argument("--session", action="store_true", help="run the body as a session: it opens its own traces "
              "(`with model.trace(...)`), which run as one request")
    @argument("--max-new-tokens", type=int, metavar="N", default=None,
              help="generate N new tokens (model.generate) instead of one forward pass")
    @cell_magic
    def trace(self, line: str, cell: str) -> None:
        """Run the cell body as a trace of MODEL, with the tracer bound to `tracer`.

        The body is ordinary trace code (`.output`, `.save()`, writes, `print(...)` of traced values,
        which prints when the graph runs). Saved names land in the notebook namespace as their values.
        An inline status line shows queued / running / done (wall time, forward passes, bytes
        received) or the error. Errors name the cell's own lines.
        """
        __tracebackhide__ = True
        site = cells.cell_source(self.shell, cells.find_site(self.shell), f"%%trace {line}\n{cell}")
        status = None
        try:
            args = self._trace_args(line)
            namespace = self.shell.user_ns
            model = self._evaluate(args.model, "MODEL", namespace)
            self._check_model(model, args)
            inputs = [self._evaluate(expr, f"INPUT {n}", namespace) for n, expr in enumerate(args.inputs, 1)]
            code = cells.compile_body(site, site.line + 1, cell)
            context = self._open(model, inputs, args)
            status = self.status_line(str(getattr(model, "_name", type(model).__name__)))
            context.observer = status
            self._run(context, inputs, site, code, namespace, status)
        except NNsightError as error:
            self._raise_in_cell(error, site, status)

    def _trace_args(self, line: str) -> Any:
        __tracebackhide__ = True
        words = split_expressions(line)
        if not words or words[0].startswith("--"):
            raise MagicUsageError("%%trace needs a MODEL: %%trace MODEL [INPUT ...] [--remote] [--session] "
                                  "[--max-new-tokens N]", fix="Name the model first: %%trace model \"prompt\"")
        try:
            args = self.trace.parser.parse_intermixed_args(words)
        except UsageError as error:
            raise MagicUsageError(f"%%trace {line.strip()}: {error}",
                                  fix="See %%trace? for the options") from None
        if args.session and (args.inputs or args.max_new_tokens is not None):
            raise MagicUsageError("%%trace --session runs the body as a session, which opens its own traces: it "
                                  "takes no INPUT and no --max-new-tokens",
                                  fix="Write `with model.trace(prompt):` (or model.generate) inside the cell")
        if args.max_new_tokens is not None and args.max_new_tokens < 1:
            raise MagicUsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
        return args

    def _evaluate(self, expression: str, what: str, namespace: dict) -> Any:
        __tracebackhide__ = True
        try:
            return eval(expression, namespace)     # noqa: S307 - the user's own expression, in their own kernel
        except Exception as error:  # noqa: BLE001 - any failure of the user's expression is reported as such
            raise MagicUsageError(f"%%trace: the {what} expression `{expression}` failed: "
                                  f"{type(error).__name__}: {error}",
                                  fix="MODEL and INPUT are Python expressions evaluated in the notebook; quote "
                                      "prompts (\"The Eiffel Tower\") and parenthesise expressions with spaces") from None

    @staticmethod
    def _check_model(model: Any, args: Any) -> None:
        from ..tracing import NNsight

        if not isinstance(model, NNsight):
            raise MagicUsageError(f"%%trace: MODEL `{args.model}` is a {type(model).__name__}, not a model "
                                  "wrapped by nnsight_jupyter",
                                  fix="Use a LanguageModel(...), NNsight(module) or connect().model(name)")
        if args.max_new_tokens is not None and not hasattr(model, "generate"):
            raise MagicUsageError(f"%%trace --max-new-tokens generates text, and MODEL `{args.model}` is a "
                                  f"{type(model).__name__}, which only traces",
                                  fix="Use a LanguageModel, or leave out --max-new-tokens")

    @staticmethod
    def _open(model: Any, inputs: list, args: Any) -> Any:
        remote = True if args.remote else None
        if args.session:
            return model.session(remote=remote)
        first = inputs[:1] if len(inputs) == 1 else []
        if args.max_new_tokens is not None:
            return model.generate(*first, max_new_tokens=args.max_new_tokens, remote=remote)
        return model.trace(*first, remote=remote)

    def _run(self, context: Any, inputs: list, site: cells.CellSite, code: Any, namespace: dict,
             status: StatusLine) -> None:
        """Open the context in a one-line driver compiled at the cell's line 1 (so errors that name no
        line of the body name the magic line, and saved names are rebound in the notebook namespace
        as at the top level of a cell), add the invokes, and run the body inside."""
        __tracebackhide__ = True

        def lost(job_id: str) -> None:
            self.unfinished[job_id] = (context, namespace)

        def body(tracer: Any) -> None:
            __tracebackhide__ = True
            if tracer.is_tracer:
                tracer.runner = _Metered(tracer.runner, status, lost)
                if len(inputs) > 1:
                    for value in inputs:
                        with tracer.invoke(value):
                            pass
            exec(code, namespace)      # noqa: S102 - the cell's own body, as IPython would run it

        if not context.is_tracer:                    # a session: its runner is set already
            context.runner = _Metered(context.runner, status, lost)
        driver = cells.compile_body(site, site.line, "with __nnsight_cell__[0] as tracer: __nnsight_cell__[1](tracer)")
        namespace["__nnsight_cell__"] = (context, body)
        try:
            exec(driver, namespace)    # noqa: S102 - our own one-line driver
        finally:
            namespace.pop("__nnsight_cell__", None)

    # ------------------------------------------------------------------ errors at the cell's lines

    def _raise_in_cell(self, error: NNsightError, site: cells.CellSite, status: StatusLine | None) -> None:
        """Re-raise `error` from the cell line it names (else the magic's line), so that IPython's
        traceback ends at that line with its source; its text says "Cell In[n], line k"."""
        __tracebackhide__ = True
        at = cells.locate(self.shell, error.where)
        if at is None and (error.where is not None or not site.filename):
            raise error                        # a line outside the notebook's cells: its own traceback
        error.reason = cells.relabel(self.shell, error.reason)
        error.fix = cells.relabel(self.shell, error.fix) if error.fix else error.fix
        if at is None:
            at = (site.filename, site.line)
        error.where = f"Cell In[{cells.cell_files(self.shell).get(at[0], site.number)}], line {at[1]}"
        if error.args and isinstance(error.args[0], str):
            error.args = (error.reason, *error.args[1:])
        if status is not None and status.state == "error":
            status.error = error
            status.draw(force=True)            # the status line names the cell's line too
        cells.raise_at(error, *at)

    # ------------------------------------------------------------------ %nnsight

    @magic_arguments()
    @argument("command", metavar="COMMAND", choices=["connect", "models", "status", "jobs", "cancel", "attach"],
              help="connect [URL] [--token T]: connect to a model host; models: the hosted models and their "
                   "state; status: the host's status, queues and limits; jobs: your jobs, newest first; "
                   "cancel ID: cancel a job; attach ID: wait for a job and show its result (a %%trace cell's "
                   "lost job: its saved names land in the notebook)")
    @argument("target", metavar="URL|ID", nargs="?", default=None, help="the server URL (connect) or a job id "
              "(cancel, attach)")
    @argument("--token", metavar="T", default=None, help="the Jupyter server's token (connect)")
    @line_magic
    def nnsight(self, line: str) -> Any:
        """Talk to the model host of a Jupyter server.

        %nnsight connect [URL] [--token T]   connect (no URL: this kernel's server, or NNSIGHT_JUPYTER_URL)
        %nnsight models                      the hosted models and their state
        %nnsight status                      the host: models, queues, limits
        %nnsight jobs                        your jobs on the host, newest first
        %nnsight cancel ID                   cancel a queued or running job
        %nnsight attach ID                   wait for a job; returns its Result
        """
        __tracebackhide__ = True
        site = cells.find_site(self.shell)
        try:
            return self._host_command(line)
        except NNsightError as error:
            self._raise_in_cell(error, site, None)

    def _host_command(self, line: str) -> Any:
        __tracebackhide__ = True
        try:
            args = parse_argstring(self.nnsight, line)
        except UsageError as error:
            raise MagicUsageError(f"%nnsight {line.strip()}: {error}", fix="See %nnsight? for the commands") from None
        from . import host_commands

        needs_id = args.command in ("cancel", "attach")
        if needs_id and not args.target:
            raise MagicUsageError(f"%nnsight {args.command} needs a job id: %nnsight {args.command} ID",
                                  fix="%nnsight jobs lists your jobs and their ids")
        if args.command != "connect" and (args.token or (args.target and not needs_id)):
            raise MagicUsageError(f"%nnsight {args.command} takes "
                                  f"{'a job id' if needs_id else 'no argument'}; URL and --token go with connect")
        return host_commands.run(self, args)


# Options are spelt out: `--remot` is an unknown option, not --remote.
NNsightMagics.trace.parser.allow_abbrev = False
NNsightMagics.nnsight.parser.allow_abbrev = False


class _Metered:
    """The cell's runner, wrapped: tells the status line the graph's runs and the bytes received, and
    reports a remote job the cell lost the connection to (`lost(job_id)`: `%nnsight attach ID` then
    finishes the cell)."""

    def __init__(self, inner: Any, status: StatusLine, lost: Callable[[str], None]):
        self.inner = inner
        self.status = status
        self.lost = lost

    def run(self, graph: Any, observer: Any = None) -> Any:
        __tracebackhide__ = True
        status = self.status
        status.runs = [run.kind for run in graph.runs]
        connection = getattr(self.inner, "connection", None)
        if connection is not None:
            socket, before = connection.socket, connection.socket.received
            status.received = lambda: socket.received - before
            status.label += f" on {connection.url}"
        status.started = time.monotonic()
        status.draw(force=True)
        try:
            return self.inner.run(graph, observer)
        except NNsightError:
            job_id = getattr(self.inner, "last_job_id", None)
            if job_id is not None and not _finished(connection, job_id):
                self.lost(job_id)            # the host still runs it: the job is not lost
            raise


def _finished(connection: Any, job_id: str) -> bool:
    """Whether the host says job `job_id` has ended (False when it cannot be asked)."""
    try:
        return connection.job(job_id).get("status") in TERMINAL
    except NNsightError:
        return False
