"""Running a graph against a torch model.

For each run of the graph: build the batch from the invokes (`batching`), place every node at its
event (`planner`), install forward hooks on exactly the modules the run touches, run the model
(a forward pass, or `generate`), then remove every hook, whatever happened. Nodes run inside the
hooks in program order; values live in one table for the whole graph. A session's later trace gets
an earlier trace's value as that trace left it, every time (`_hand_over`): a private copy for each
run that uses it when the value is an object a run may change (a KV cache, which the forward pass
extends; a container of them), and for tensors when the run writes anything in place; other
tensors are shared as they are. Gradients: after the forward, `backward` registers tensor
hooks on the values whose `.grad` the graph reads or writes and calls `torch.autograd.grad` with
those values as inputs, so weights never receive a gradient.

The model's weights are never changed: a graph is validated before it runs (`graph.validate`,
unless it already was: decoded by the host, or validated by the tracer), every argument an op may
write (`graph.ops.Op.written`) is refused at run time when it shares storage with a parameter or
buffer, parameters are read detached, and hooks are gone when `execute` returns.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch

from ..errors import ExecutionError, NNsightError, OutOfOrderError, ShapeMismatchError, SharedValueError, WeightWriteError
from ..graph.layout import Items
from ..graph.nodes import Graph, Node, Ref
from ..graph.ops import MODEL_OPS, OPS
from ..graph.result import Result
from ..graph.validate import is_validated, validate
from .batching import Batch, ModuleTarget, Span, view, write
from .limits import new_budget
from .planner import RunPlan, plan


class _Frame:
    """The value a hook is looking at: a module's output, or its (args, kwargs)."""

    __slots__ = ("kind", "value", "args", "kwargs", "changed", "where")

    def __init__(self, kind: str, where: str, value: Any = None, args: tuple = (), kwargs: dict | None = None):
        self.kind = kind
        self.where = where
        self.value = value
        self.args = args
        self.kwargs = kwargs
        self.changed = False


class _GradFrame:
    __slots__ = ("target", "grad")

    def __init__(self, target: int, grad: torch.Tensor):
        self.target = target
        self.grad = grad


def execute(graph: Graph, target: ModuleTarget, *, echo_logs: bool = True,
            on_step: Callable[[int], None] | None = None,
            on_log: Callable[[str, str], None] | None = None) -> Result:
    """Run every run of `graph` on `target`; raise NNsightError (nothing left hooked) on failure.

    `on_step(step)` is called as each generation step starts (progress; it may raise to stop);
    `on_log(line, text)` as each `print()` of the trace runs (instead of printing it).
    A graph that was not validated yet (built by hand) is validated first."""
    if not is_validated(graph):
        validate(graph)
    return _Executor(graph, target, echo_logs, on_step=on_step, on_log=on_log).run()


class _Executor:
    def __init__(self, graph: Graph, target: ModuleTarget, echo_logs: bool, *,
                 on_step: Callable[[int], None] | None = None, groups: dict[int, int] | None = None,
                 invoke_groups: dict[int, int] | None = None, on_log: Callable[[str, str], None] | None = None):
        self.graph = graph
        self.target = target
        self.echo_logs = echo_logs
        self.on_step = on_step
        self.on_log = on_log
        # Several jobs in one graph (execution.merge): node id -> job, invoke id -> job. A failing
        # node fails its job only: the job's later nodes are skipped, the forward pass goes on.
        self.groups = groups
        self.invoke_groups = invoke_groups
        self.failed: dict[int, NNsightError] = {}
        self.group_logs: dict[int, list[tuple[str, str]]] = {}
        self.values: dict[int, Any] = {}
        self.result = Result()
        self.weights: frozenset[int] | None = None
        self.budget = new_budget()          # per-job memory and log limits (None: none set, no accounting)
        # One handler per model op of the table (`_HANDLERS`, checked against MODEL_OPS at import).
        self._dispatch: dict[str, Callable[[Node, Any], Any]] = {
            name: getattr(self, _HANDLERS[name]) for name in MODEL_OPS}

    # ------------------------------------------------------------------ runs

    def run(self) -> Result:
        if self.graph.parameters:
            raise ExecutionError("job-owned parameters (training inside a session) are not supported yet",
                                 fix="Train outside the trace: keep the parameters in your own code.")
        first = self.graph.runs[0]
        batches = {first.id: self._batch(first)}
        order = self.target.ensure_order(batches[first.id])
        plans = plan(self.graph, {run.id: order for run in self.graph.runs})
        crossings = _crossings(self.graph) if len(self.graph.runs) > 1 else {}
        kept: dict[int, Any] = {}        # values later runs use, as the run that made them left them
        for run_plan in plans:
            if run_plan.run.id in crossings:
                self._hand_over(run_plan.run.id, crossings[run_plan.run.id], kept)
            batch = batches.get(run_plan.run.id) or self._batch(run_plan.run)
            self._run(run_plan, batch)
        return self.result

    def _hand_over(self, run_id: int, crossing: tuple[frozenset[int], bool], kept: dict[int, Any]) -> None:
        """Give run `run_id` the earlier runs' values it uses as those runs left them: objects it may
        change (caches the forward pass extends, containers) as private copies, and tensors too when
        the run writes in place; the values made by earlier runs stay untouched for later uses."""
        used, writes = crossing
        for node_id in used:
            if node_id not in kept:
                if node_id not in self.values:
                    continue                  # never computed (a step that did not run): reported where used
                kept[node_id] = self.values[node_id]
            try:
                self.values[node_id] = _private(kept[node_id], writes)
            except Exception as error:  # noqa: BLE001 - a value that cannot be copied is refused, clearly
                node = self.graph.nodes[node_id]
                number = {run.id: n for n, run in enumerate(self.graph.runs, 1)}
                raise ExecutionError(
                    f"{node.op} in trace {number[node.run]} of this session makes a "
                    f"{type(kept[node_id]).__name__} that trace {number[run_id]} uses; it cannot be copied "
                    f"({type(error).__name__}: {error}), so every later trace could not get it as it was made",
                    where=node.line, module=node.module,
                    fix="Pass tensors (e.g. the cache's key and value tensors) instead") from None

    def _batch(self, run) -> Batch:
        inputs = [(inv.id, self._resolve(inv.args), self._resolve(inv.kwargs), inv.all_rows) for inv in run.invokes]
        return self.target.build_batch(run, inputs, self.invoke_groups)

    def _run(self, run_plan: RunPlan, batch: Batch) -> None:
        self.plan = run_plan
        self.batch = batch
        self.result.rows = batch.size
        self.step = 0
        self.forwards = 0            # forward passes of the model in this run (generation steps)
        self.seq_len = batch.seq_len
        self.count_in: dict[str, int] = {}
        self.count_out: dict[str, int] = {}
        self.suspended = 0
        self.pending_skips: dict[tuple[str, int], list[tuple[Span, Any]]] = {}
        self.output_ids = None
        # Batch / sequence dims of every module's values, needed only when some invoke sees part of the batch.
        self.layouts = None if all(s.full for s in batch.spans.values()) else self.target.layouts_for(batch)
        self.copies: list[tuple[Node, torch.Tensor, int]] = []   # private copies given to jobs sharing the batch
        self.grad_targets = set(run_plan.grads)
        if run_plan.needs_grad and any(not span.full for span in batch.spans.values()):
            raise ExecutionError(
                "gradients in a trace with several invokes (or padded rows) are not supported yet",
                fix="Use one invoke per trace for backward().")
        for node in run_plan.before:
            self._exec(node, None)
        module = self.target.module
        handles: list[Any] = []
        forwards: list[tuple[torch.nn.Module, Any]] = []
        try:
            if run_plan.run.kind == "generate":
                handles.append(module.register_forward_pre_hook(self._step_hook))
            pre, post = run_plan.hooked()
            for path in pre:
                handles.append(self.target.submodule(path).register_forward_pre_hook(self._pre_hook(path), with_kwargs=True))
            for path in post:
                handles.append(self.target.submodule(path).register_forward_hook(self._post_hook(path)))
            for path in run_plan.skips:
                sub = self.target.submodule(path)
                forwards.append((sub, sub.__dict__.get("forward")))
                sub.forward = self._skipping_forward(path, sub.forward)
            with torch.set_grad_enabled(run_plan.needs_grad):
                if run_plan.run.kind == "generate":
                    self.output_ids = self.target.generate(batch, dict(run_plan.run.options))
                else:
                    module(*batch.args, **batch.kwargs)
            for node in run_plan.after:
                self._exec(node, None)
            if self.copies:
                self._check_copies()
        finally:
            for handle in handles:
                handle.remove()
            for sub, original in forwards:
                if original is None:
                    sub.__dict__.pop("forward", None)
                else:
                    sub.forward = original
        self._report_missing(run_plan)

    def _report_missing(self, run_plan: RunPlan) -> None:
        for node in self.graph.nodes:
            if node.run == run_plan.run.id and OPS[node.op].saves and node.id not in self.values:
                self.result.missing[node.id] = (
                    f"{node.line}: this value was never computed: generation stopped after step "
                    f"{self.step} (end of sequence) before step {node.step} ran")

    # ------------------------------------------------------------------ hooks

    def _step_hook(self, module, args):
        if self.suspended:
            return None
        if self.forwards:            # every forward of the model after the first is the next step
            self.step += 1
            self.count_in.clear()
            self.count_out.clear()
        self.forwards += 1
        if self.step > 0 and self.plan.run.options.get("use_cache") is not False:
            self.seq_len = None
        elif self.step > 0:
            self.seq_len = (self.batch.seq_len or 0) + self.step
        if self.on_step is not None:
            self.on_step(self.step)
        return None

    def _nodes_at(self, path: str, call: int, kind: str) -> list[Node]:
        nodes = self.plan.events.get((self.step, path, call, kind), ())
        repeat = self.plan.repeat.get((path, call, kind))
        if repeat:
            nodes = [*nodes, *(n for n in repeat if n.step <= self.step)]
            nodes.sort(key=lambda n: n.id)
        return nodes

    def _pre_hook(self, path: str):
        def hook(module, args, kwargs):
            if self.suspended:
                return None
            call = self.count_in.get(path, 0)
            self.count_in[path] = call + 1
            nodes = self._nodes_at(path, call, "input")
            if not nodes:
                return None
            frame = _Frame("input", path or "model", args=args, kwargs=kwargs)
            for node in nodes:
                self._exec(node, frame)
            if self.copies:
                self._check_copies()
            return (frame.args, frame.kwargs) if frame.changed else None
        return hook

    def _post_hook(self, path: str):
        def hook(module, args, output):
            if self.suspended:
                return None
            call = self.count_out.get(path, 0)
            self.count_out[path] = call + 1
            frame = _Frame("output", path or "model", value=output)
            for span, value in self.pending_skips.pop((path, call), ()):
                if not span.full:
                    frame.value = write(frame.value, value, span, self.batch.size, self.seq_len,
                                        f"{frame.where}.output", self.layouts.get((path, call, "output")))
                    frame.changed = True
            for node in self._nodes_at(path, call, "output"):
                self._exec(node, frame)
            if self.copies:
                self._check_copies()
            return frame.value if frame.changed else None
        return hook

    def _skipping_forward(self, path: str, forward: Callable) -> Callable:
        def skipping(*args, **kwargs):
            if not self.suspended:
                pending = self.pending_skips.get((path, self.count_in.get(path, 1) - 1), ())
                for span, value in pending:
                    if span.full:
                        return value
            return forward(*args, **kwargs)
        return skipping

    # ------------------------------------------------------------------ nodes

    def _exec(self, node: Node, frame: Any) -> None:
        if self.groups is None:
            self._run_node(node, frame)
            return
        group = self.groups[node.id]
        if group in self.failed:
            return
        try:
            self._run_node(node, frame)
        except NNsightError as error:
            self.failed[group] = error

    def _run_node(self, node: Node, frame: Any) -> None:
        budget, args = self.budget, None
        try:
            handler = self._dispatch.get(node.op)
            if handler is not None:
                if node.op in _SETS:
                    self._check_frame_not_weight(node, frame)
                value = handler(node, frame)
            else:
                op = OPS[node.op]
                if node.refs:
                    args = self._resolve(node.args)
                    kwargs = self._resolve(node.kwargs) if node.kwargs else {}
                else:                                   # nothing to look up (planned nodes only)
                    args, kwargs = node.args, node.kwargs
                if op.kind == "method" and not isinstance(args[0], torch.Tensor):
                    raise ExecutionError(f"{node.op} needs a tensor, got {type(args[0]).__name__}",
                                         fix=f"Call {node.op.split('.')[-1]} on a tensor (a module's output, "
                                             "or torch.tensor(...) of the value).")
                if op.writes is not None:
                    for written in op.written(args, kwargs):
                        self._check_not_weight(written, node)
                if budget is not None:
                    budget.before(node, args, kwargs, self.groups[node.id] if self.groups else 0)
                value = op.fn(*args, **kwargs)
            if budget is not None:
                budget.after(node, value, args, self.groups[node.id] if self.groups else 0)
        except NNsightError as error:
            error.at(where=node.line, module=self._module_of(node))
            raise
        except Exception as error:  # noqa: BLE001 - every failure inside a node names its line
            raise self._op_failed(node, error) from error
        self.values[node.id] = value
        if node.id in self.grad_targets and isinstance(value, torch.Tensor) and not value.requires_grad:
            if value.grad_fn is None and value.is_floating_point():
                value.requires_grad_(True)

    def _source_of(self, node: Node) -> Node | None:
        """The module access a node is about: itself, else the one the value it works on comes from
        (followed back through first arguments: `h = layers[0].output; h[:, 0] = v` is about
        layers.0's output)."""
        by_id = None
        for _ in range(16):
            if node.module is not None:
                return node
            first = node.args[0] if node.args else None
            if type(first) is not Ref:
                return None
            if by_id is None:
                by_id = {n.id: n for n in self.graph.nodes}
            node = by_id.get(first.id)
            if node is None:
                return None
        return None

    def _module_of(self, node: Node) -> str | None:
        source = self._source_of(node)
        return source.module if source is not None else None

    def _op_failed(self, node: Node, error: Exception) -> ExecutionError:
        """The error for a torch / Python op that raised: its line, the module of the value it worked
        on, the shapes of its tensor arguments and the fix; a ShapeMismatchError for an in-place write
        (`h[:, 0] = v`) of a value that does not fit the indexed part."""
        try:
            args = self._resolve(node.args)
        except NNsightError:
            args = ()
        source = self._source_of(node)
        module = source.module if source is not None else None
        if node.op == "setitem" and len(args) == 3 and isinstance(args[0], torch.Tensor):
            mismatch = _setitem_mismatch(node, source, args)
            if mismatch is not None:
                return mismatch
        shapes = {f"argument {i}": tuple(a.shape) for i, a in enumerate(args) if isinstance(a, torch.Tensor)}
        if isinstance(error, IndexError) and args and isinstance(args[0], torch.Tensor):
            fix = f"Index within the value's shape {tuple(args[0].shape)}."
        else:
            fix = (f"Make the values passed to {node.op} fit each other (their shapes and dtypes), e.g. "
                   "slice, reshape or .to() them first.")
        return ExecutionError(f"{node.op} failed: {type(error).__name__}: {error}", where=node.line,
                              module=module, shapes=shapes, fix=fix)

    def _resolve(self, value: Any) -> Any:
        kind = type(value)
        if kind in _CONSTANT:
            return value
        if kind is Ref:
            try:
                return self.values[value.id]
            except KeyError:
                raise ExecutionError(f"value %{value.id} is used before it was computed",
                                     fix="Use a value only after the line that computes it.") from None
        if kind is tuple:
            return tuple([v if type(v) in _CONSTANT else self._resolve(v) for v in value])
        if kind is list:
            return [v if type(v) in _CONSTANT else self._resolve(v) for v in value]
        if kind is dict:
            return {k: self._resolve(v) for k, v in value.items()}
        if kind is slice:
            if type(value.start) in _CONSTANT and type(value.stop) in _CONSTANT and type(value.step) in _CONSTANT:
                return value
            return slice(self._resolve(value.start), self._resolve(value.stop), self._resolve(value.step))
        return value

    def _check_not_weight(self, tensor: Any, node: Node) -> None:
        """Refuse a write into `tensor` if it shares storage with a parameter or buffer (any view:
        `.data`, `.T`, `detach()`, `expand`, an index ...)."""
        if not isinstance(tensor, torch.Tensor):
            return
        if self.weights is None:
            self.weights = self.target.weight_storages()
        if tensor.untyped_storage().data_ptr() in self.weights:
            raise WeightWriteError(
                f"{node.op} would change the model's weights, which are read-only inside a trace",
                shapes={"weight": tuple(tensor.shape)},
                fix="Work on a copy: `w = model.lm_head.weight.clone()`.")

    def _check_frame_not_weight(self, node: Node, frame: Any) -> None:
        """A module.set_* for part of the batch copies into the module's value in place: refuse it
        if that value is (a view of) a weight (a module that returns a parameter or buffer)."""
        if not isinstance(frame, _Frame) or self.batch.spans[node.invoke].full:
            return
        inputs = (*(frame.args or ()), *(frame.kwargs or {}).values())
        part = OPS[node.op].part
        if part == "output":
            written: tuple = (frame.value,)
        elif part == "input":
            written = inputs[:1]
        else:
            written = inputs
        for value in written:
            if isinstance(value, (tuple, list)):
                for item in value:
                    self._check_not_weight(item, node)
            else:
                self._check_not_weight(value, node)

    def _span(self, node: Node) -> Span:
        return self.batch.spans[node.invoke]

    def _layout(self, node: Node, kind: str) -> Any:
        """The recorded layout of the value at a node's event (`execution.layout`), if any."""
        return self.layouts.get((node.module or "", node.call, kind))

    def _first_input_layout(self, node: Node, frame: _Frame) -> Any:
        layout = self._layout(node, "input")          # Items([args, kwargs])
        part = layout.child(0 if frame.args else 1) if isinstance(layout, Items) else None
        if not isinstance(part, Items):
            return None
        return part.child(0 if frame.args else next(iter(frame.kwargs)))

    def _view(self, node: Node, value: Any, layout: Any = None) -> Any:
        span = self.batch.spans[node.invoke]
        if span.full:
            return value
        if not span.shared:
            return view(value, span, self.batch.size, self.seq_len, layout)
        fresh: list[torch.Tensor] = []
        out = view(value, span, self.batch.size, self.seq_len, layout, fresh)
        self.copies.extend((node, copy, copy._version) for copy in fresh)
        return out

    def _check_copies(self) -> None:
        """A job sharing the batch got private copies of values every row shares; writing into one
        would silently change nothing the model uses, so it fails that job (its neighbours go on)."""
        kept = []
        for node, private, version in self.copies:
            if private._version == version or self.groups is None:
                kept.append((node, private, version))
            else:
                self.failed.setdefault(self.groups[node.id], SharedValueError(
                    f"{node.op}: this value is shared by every row of the batch (shape "
                    f"{tuple(private.shape)}); this job, which shares its forward pass with other jobs, got "
                    "a private copy, and an in-place write into it would change nothing",
                    where=node.line, module=self._module_of(node), shapes={"value": tuple(private.shape)},
                    fix="Write into per-row values (module outputs) instead."))
        self.copies = kept

    # -- module reads and writes
    def _read_output(self, node: Node, frame: _Frame) -> Any:
        if self.batch.spans[node.invoke].full:
            return frame.value
        return self._view(node, frame.value, self._layout(node, "output"))

    def _read_input(self, node: Node, frame: _Frame) -> Any:
        if not frame.args and not frame.kwargs:
            raise ExecutionError(f"{frame.where} was called without arguments: it has no .input",
                                 fix="Read the .output of this module, or the .input of one called with an argument.")
        value = frame.args[0] if frame.args else next(iter(frame.kwargs.values()))
        if self.batch.spans[node.invoke].full:
            return value
        return self._view(node, value, self._first_input_layout(node, frame))

    def _read_inputs(self, node: Node, frame: _Frame) -> Any:
        both = (tuple(frame.args), dict(frame.kwargs or {}))
        if self.batch.spans[node.invoke].full:
            return both
        return self._view(node, both, self._layout(node, "input"))

    def _set_output(self, node: Node, frame: _Frame) -> None:
        new = self._resolve(node.args[0])
        span = self._span(node)
        layout = None if span.full else self._layout(node, "output")
        frame.value = write(frame.value, new, span, self.batch.size, self.seq_len, f"{frame.where}.output", layout)
        frame.changed = True

    def _set_input(self, node: Node, frame: _Frame) -> None:
        new = self._resolve(node.args[0])
        span, where = self._span(node), f"{frame.where}.input"
        if not frame.args and not frame.kwargs:
            raise ExecutionError(f"{frame.where} was called without arguments: it has no .input to replace",
                                 fix="Replace the .output of this module, or the .input of one called "
                                     "with an argument.")
        layout = None if span.full else self._first_input_layout(node, frame)
        if frame.args:
            frame.args = (write(frame.args[0], new, span, self.batch.size, self.seq_len, where, layout), *frame.args[1:])
        else:
            key = next(iter(frame.kwargs))
            frame.kwargs = {**frame.kwargs, key: write(frame.kwargs[key], new, span, self.batch.size, self.seq_len,
                                                       where, layout)}
        frame.changed = True

    def _set_inputs(self, node: Node, frame: _Frame) -> None:
        new = self._resolve(node.args[0])
        if not (isinstance(new, (tuple, list)) and len(new) == 2 and isinstance(new[1], dict)):
            raise ShapeMismatchError(f"{frame.where}.inputs must be set to (args, kwargs), got {type(new).__name__}",
                                     fix="Assign a pair: `.inputs = ((x, *rest), {**kwargs})`.")
        args, kwargs = new
        span = self._span(node)
        if not span.full:      # only this invoke's rows of tensors change; shared values only unchanged
            args, kwargs = write((tuple(frame.args), dict(frame.kwargs or {})), (tuple(args), dict(kwargs)), span,
                                 self.batch.size, self.seq_len, f"{frame.where}.inputs", self._layout(node, "input"))
        frame.args, frame.kwargs, frame.changed = tuple(args), dict(kwargs), True

    def _skip(self, node: Node, frame: _Frame) -> None:
        call = self.count_in.get(node.module or "", 1) - 1
        self.pending_skips.setdefault((node.module or "", call), []).append(
            (self._span(node), self._resolve(node.args[0])))

    def _call_module(self, node: Node, frame: Any) -> Any:
        path, *args = self._resolve(node.args)
        module = self.target.submodule(path)
        self.suspended += 1
        try:
            return module(*args, **self._resolve(node.kwargs))
        finally:
            self.suspended -= 1

    def _param(self, node: Node, frame: Any) -> Any:
        path, name = node.args
        owner = self.target.submodule(path)
        tensor = owner._parameters.get(name)
        if tensor is None:
            tensor = owner._buffers.get(name)
        if tensor is None:
            raise ExecutionError(f"{path or 'model'} has no parameter or buffer {name!r}",
                                 fix="See its .named_parameters() / .named_buffers() for the names it has.")
        return tensor.detach()

    def _cache_output(self, node: Node, frame: _Frame) -> Any:
        value = self.result.saved[node.id] = _snapshot(self._read_output(node, frame))
        return value

    def _cache_inputs(self, node: Node, frame: _Frame) -> Any:
        value = self.result.saved[node.id] = _snapshot(self._read_inputs(node, frame))
        return value

    # -- results
    def _save(self, node: Node, frame: Any) -> Any:
        """Keep a copy of the value; in a repeated block, one per step that runs, in step order."""
        value = _snapshot(self._resolve(node.args[0]))
        if node.repeat:
            self.result.saved.setdefault(node.id, []).append(value)
        else:
            self.result.saved[node.id] = value
        return value

    def _log(self, node: Node, frame: Any) -> None:
        text = " ".join(str(_snapshot(a)) for a in self._resolve(node.args))
        if self.budget is not None:
            self.budget.charge_log(node, node.line, text, self.groups[node.id] if self.groups else 0)
        self.result.logs.append((node.line, text))
        if self.groups is not None:
            self.group_logs.setdefault(self.groups[node.id], []).append((node.line, text))
        if self.on_log is not None:
            self.on_log(node.line, text)
        elif self.echo_logs:
            print(text)

    def _result(self, node: Node, frame: Any) -> Any:
        if self.output_ids is None:
            raise ExecutionError("tracer.result is only set by model.generate(...)",
                                 fix="Use model.generate(...) to get the generated ids, or read .output.")
        span = self._span(node)
        ids = self.output_ids
        if span.full:
            return ids
        return ids[span.start:span.stop, span.pad:]

    # -- gradients
    def _backward(self, node: Node, frame: Any) -> None:
        loss = self._resolve(node.args[0])
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            raise ExecutionError(
                "backward() needs a tensor that depends on the model's activations; this one does not "
                "require grad", shapes={"loss": tuple(loss.shape)} if isinstance(loss, torch.Tensor) else None,
                fix="Compute the loss from module outputs inside the trace, not from a saved copy.")
        targets = [t for t, nodes in self.plan.grads.items() if any(n.backward == node.id for n in nodes)]
        handles = []
        self.grads: dict[int, torch.Tensor] = {}
        try:
            for target in targets:
                tensor = self.values[target]
                if not isinstance(tensor, torch.Tensor) or not tensor.requires_grad:
                    raise ExecutionError(f"the value of node %{target} does not take part in the gradient",
                                         fix="Read .grad only of values the loss is computed from.")
                handles.append(tensor.register_hook(self._grad_hook(target, self.plan.grads[target])))
            torch.autograd.grad(loss, [self.values[t] for t in targets] or [loss], allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
        return None

    def _grad_hook(self, target: int, nodes: list[Node]):
        def hook(grad):
            frame = _GradFrame(target, grad)
            self.grads[target] = grad
            for node in nodes:
                self._exec(node, frame)
            self.grads[target] = frame.grad
            return frame.grad
        return hook

    def _grad(self, node: Node, frame: _GradFrame) -> Any:
        target = node.args[0].id
        if frame is not None and frame.target == target:
            return frame.grad
        if target in self.grads:
            return self.grads[target]
        raise OutOfOrderError("this gradient has not arrived yet",
                              fix="Read .grad of later layers first: gradients flow back from the loss.")

    def _set_grad(self, node: Node, frame: _GradFrame) -> None:
        target = node.args[0].id
        if frame is None or frame.target != target:
            raise OutOfOrderError("a gradient can only be replaced while it flows back",
                                  fix="Write `h.grad = ...` before reading the .grad of earlier values.")
        new = self._resolve(node.args[1])
        if not isinstance(new, torch.Tensor) or new.shape != frame.grad.shape:
            is_tensor = isinstance(new, torch.Tensor)
            written = tuple(new.shape) if is_tensor else type(new).__name__
            raise ShapeMismatchError(
                f"the gradient has shape {tuple(frame.grad.shape)}; the value written is {written}",
                shapes={"expected": tuple(frame.grad.shape), **({"written": written} if is_tensor else {})},
                fix=f"Write a tensor of shape {tuple(frame.grad.shape)} to .grad.")
        frame.grad = new


_CONSTANT = frozenset({int, float, str, bool, type(None), torch.Tensor})
# Model ops that may copy into the module value they are anchored at (for part of the batch): they
# write the part of the module's value their hook holds (a skip writes an output it has not yet).
_HELD = {("output", "output"), ("input", "input"), ("input", "inputs")}     # (Op.anchor, Op.part)
_SETS = frozenset(op.name for op in MODEL_OPS.values()
                  if op.writes is not None and op.writes.frame and (op.anchor, op.part) in _HELD)
#: The handler (an `_Executor` method) of each model op.
_HANDLERS = {
    "module.output": "_read_output", "module.input": "_read_input", "module.inputs": "_read_inputs",
    "module.set_output": "_set_output", "module.set_input": "_set_input", "module.set_inputs": "_set_inputs",
    "module.skip": "_skip", "cache.output": "_cache_output", "cache.inputs": "_cache_inputs",
    "module.call": "_call_module", "module.param": "_param", "grad": "_grad", "set_grad": "_set_grad",
    "backward": "_backward", "save": "_save", "collect": "_save", "log": "_log", "tracer.result": "_result",
}
if set(_HANDLERS) != set(MODEL_OPS) or not all(hasattr(_Executor, m) for m in _HANDLERS.values()):
    raise ImportError("execution.executor: the model ops of graph.ops.MODEL_OPS and their handlers "
                      f"differ: {sorted(set(_HANDLERS) ^ set(MODEL_OPS))}")


_IMMUTABLE = frozenset({int, float, str, bool, complex, bytes, type(None), torch.Size, torch.dtype, torch.device,
                        slice, range})


def _crossings(graph: Graph) -> dict[int, tuple[frozenset[int], bool]]:
    """For each run that uses values of earlier runs (in its invokes' inputs or in its nodes): those
    node ids, and whether the run writes anything in place (then tensors are copied too)."""
    made_in = {node.id: node.run for node in graph.nodes}
    used: dict[int, set[int]] = {}
    writes: set[int] = set()
    for run in graph.runs:
        for invoke in run.invokes:
            for ref in _refs(invoke.args, invoke.kwargs):
                if made_in.get(ref, run.id) != run.id:
                    used.setdefault(run.id, set()).add(ref)
    for node in graph.nodes:
        if OPS[node.op].writes is not None:
            writes.add(node.run)
        refs = node.refs if node.refs is not None else _refs(node.args, node.kwargs)
        for ref in refs:
            if made_in.get(ref, node.run) != node.run:
                used.setdefault(node.run, set()).add(ref)
    return {run: (frozenset(ids), run in writes) for run, ids in used.items()}


def _refs(*values: Any) -> list[int]:
    """Ids of every Ref inside `values` (tuples, lists, dicts and slices searched)."""
    found: list[int] = []
    stack = list(values)
    while stack:
        value = stack.pop()
        if type(value) is Ref:
            found.append(value.id)
        elif isinstance(value, (tuple, list)):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, slice):
            stack.extend((value.start, value.stop, value.step))
    return found


def _private(value: Any, copy_tensors: bool) -> Any:
    """A copy of `value` that a run may change without changing `value`: tensors cloned only if
    `copy_tensors`, plain containers rebuilt, immutable constants (and classes) shared. Any other
    object (a transformers `Cache` and its layers, a model output) is copied attribute by attribute
    with every tensor in it cloned (its owner may write them in place: a static cache does), which
    costs a tenth of `copy.deepcopy`; objects without a `__dict__` are deep-copied."""
    kind = type(value)
    if kind in _IMMUTABLE or isinstance(value, type):
        return value
    if isinstance(value, torch.Tensor):
        return value.clone() if copy_tensors else value
    if kind is tuple or kind is list:
        return kind([_private(v, copy_tensors) for v in value])
    if kind is dict:
        return {k: _private(v, copy_tensors) for k, v in value.items()}
    if isinstance(value, (tuple, list)) or not hasattr(value, "__dict__"):
        return copy.deepcopy(value)
    new = copy.copy(value)
    if isinstance(value, dict):                          # a dict subclass (a transformers ModelOutput)
        for key, item in value.items():
            dict.__setitem__(new, key, _private(item, True))
    new.__dict__.update({name: _private(item, True) for name, item in vars(value).items()})
    return new


def _snapshot(value: Any) -> Any:
    """The value at the point it is saved: tensors are detached and copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, torch.Size):
        return value
    if isinstance(value, tuple):
        items = [_snapshot(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_snapshot(v) for v in value]
    if isinstance(value, dict):
        snap = {k: _snapshot(v) for k, v in value.items()}
        try:
            return type(value)(**snap) if type(value) is not dict else snap
        except TypeError:
            return snap
    return value


def _setitem_mismatch(node: Node, source: Node | None, args: tuple) -> ShapeMismatchError | None:
    """A ShapeMismatchError if `target[index] = value` failed because value does not broadcast to
    the indexed part (None when the index itself is what is wrong)."""
    target, index, value = args
    try:
        part = tuple(target[index].shape)
    except Exception:  # noqa: BLE001 - a bad index: not a shape mismatch
        return None
    written = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
    try:
        if tuple(torch.broadcast_shapes(part, written)) == part:
            return None
    except RuntimeError:
        pass
    op = OPS.get(source.op) if source is not None else None
    kind = op.part if op is not None and op.borrows and op.writes is None and op.part else "value"
    name = f"{source.module or 'model'}.{kind}" if source is not None else "the value"
    return ShapeMismatchError(
        f"an in-place write into {name} has the wrong shape: the indexed part has shape {part}, the "
        f"value written has shape {written}", where=node.line,
        module=source.module if source is not None else None,
        shapes={"target": tuple(target.shape), "indexed part": part, "written": written},
        fix=f"Write a tensor of shape {part} (or one that broadcasts to it): slice or reshape it, or "
            "change the index.")
