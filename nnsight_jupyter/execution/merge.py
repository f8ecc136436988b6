"""Several jobs in one forward pass (co-tenancy): merge compatible graphs, run once, split the results.

Compatible jobs are forward-only traces on the same model: one run of kind "trace", no gradients,
no job-owned parameters, invokes with the same keyword arguments (`merge_key`), and no access to a
value a merged job could see neither sliced to its own rows nor as a private copy (`why_not_mergeable`
with the model's recorded layouts: the KV cache, attention masks, rotary tables). Each job is
planned and its inputs checked on its own first, so a job whose module order is impossible, or whose
prompt is empty, fails alone; a job that may not share runs alone, without an error. The survivors
become one graph: their invokes side by side (each job's
rows contiguous, an invoke with no input sees only its own job's rows), their nodes renumbered.
A node that fails fails its job only; the others' values come back as if they had run alone
(within float tolerance: a batch is padded to its longest prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ExecutionError, NNsightError
from ..graph.layout import Event, Items, Layout
from ..graph.nodes import Graph, Invoke, Node, Ref, Run
from ..graph.ops import OPS
from ..graph.result import Result
from .batching import Batch, ModuleTarget, kwargs_key
from .executor import _Executor
from .generators import run_seeds
from .layout import first_alone
from .planner import MODULE_EVENTS, plan, refs_of

_INPUT_KWARGS = ("input_ids", "attention_mask")


@dataclass
class JobOutcome:
    """What one job of a merged batch got: a Result, or the error that failed it; its batch rows, and
    `part`: the forward pass it ran in (jobs with the same part shared one; a job that ran alone has
    a part of its own)."""

    result: Result | None = None
    error: NNsightError | None = None
    rows: tuple[int, int] | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)
    part: int = 0


def job_kind(graph: Graph) -> str:
    """ "trace" for a graph that can share a forward pass; else what makes it run alone:
    "session", "generate", "training" or "backward"."""
    if len(graph.runs) != 1:
        return "session"
    if graph.runs[0].kind != "trace":
        return "generate"
    if graph.parameters:
        return "training"
    if any(not OPS[node.op].merges for node in graph.nodes):    # graph.ops.Op.merges: gradients ...
        return "backward"
    return "trace"


_ALONE = {"session": "a session runs alone", "generate": "generation runs alone",
          "training": "training runs alone", "backward": "gradients run alone"}


def invoke_kwargs(graph: Graph) -> dict:
    """The keyword arguments (besides the input) of the graph's first invoke with an input."""
    for invoke in graph.runs[0].invokes:
        if not invoke.all_rows:
            return {k: v for k, v in invoke.kwargs.items() if k not in _INPUT_KWARGS}
    return {}


def merge_key(graph: Graph) -> str | None:
    """Jobs share a forward pass only if their keys are equal; None: the job runs alone. The key is
    the canonical text of its invokes' keyword arguments (`logits_to_keep=1` ...)."""
    if job_kind(graph) != "trace":
        return None
    return kwargs_key(invoke_kwargs(graph))


def why_not_mergeable(graph: Graph, layouts: dict[Event, Layout] | None = None) -> str | None:
    """None if the graph can share a forward pass with other jobs, else the reason it runs alone.
    With `layouts` (the model's recorded batch / sequence dims), also every value the graph reads or
    writes is checked: one a merged job could see neither sliced to its rows nor as a private copy
    (the KV cache, an attention mask, rotary tables) makes the graph run alone."""
    reason = _ALONE.get(job_kind(graph))
    if reason is not None:
        return reason
    if merge_key(graph) is None:
        names = sorted(invoke_kwargs(graph))
        return (f"its invokes pass keyword arguments that are not plain values ({', '.join(names)}): "
                "a job with tensor or object arguments runs alone")
    if layouts is not None:
        issue = _reached_issue(graph, layouts)
        if issue is not None:
            return f"it reaches a value other jobs' rows share ({issue}): it runs alone"
    return None


def _reached_issue(graph: Graph, layouts: dict[Event, Layout]) -> str | None:
    """The first value a module access reaches that a merged job may not see, or None.

    A module access reaches its whole value unless every use of it is `getattr` / `getitem` with a
    constant key (`model.output.logits`, `attn.output[0]`), which narrows it to that item."""
    consumers: dict[int, list[Node]] = {}
    for node in graph.nodes:
        refs = node.refs if node.refs is not None else refs_of(node.kwargs, refs_of(node.args, []))
        for ref in set(refs):
            consumers.setdefault(ref, []).append(node)
    for node in graph.nodes:
        op = OPS[node.op]
        kind = op.anchor
        if kind not in MODULE_EVENTS:
            continue
        layout: Any = layouts.get((node.module or "", node.call, kind))
        where = f"{node.module or 'model'}.{'output' if kind == 'output' else 'inputs'}"
        if op.part == "input" and isinstance(layout, Items):
            args = layout.child(0)
            kwargs = layout.child(1)
            if isinstance(args, Items) and args.children:
                layout, where = args.child(0), f"{where}[0][0]"
            elif isinstance(kwargs, Items) and kwargs.children:
                key = next(iter(kwargs.children))
                layout, where = kwargs.child(key), f"{where}[1][{key!r}]"
        if op.writes is not None:
            issue = first_alone(layout, where)
        else:
            issue = _reach(node, layout, consumers, where)
        if issue is not None:
            return f"{node.line}: {issue}" if node.line else issue
    return None


def _reach(node: Node, layout: Any, consumers: dict[int, list[Node]], where: str) -> str | None:
    if not isinstance(layout, Items):
        return first_alone(layout, where)
    for use in consumers.get(node.id, ()):
        args = use.args
        if (use.op in ("getattr", "getitem") and len(args) == 2 and isinstance(args[0], Ref)
                and args[0].id == node.id and type(args[1]) in (str, int)):
            key = args[1]
            issue = _reach(use, layout.child(key), consumers, f"{where}[{key!r}]")
        else:
            issue = first_alone(layout, where)
        if issue is not None:
            return issue
    return None


def execute_batch(graphs: list[Graph], target: ModuleTarget) -> list[JobOutcome]:
    """Run forward-only graphs, sharing forward passes where isolation allows; one outcome per graph.

    Each job is planned and its inputs built on its own first (an impossible order, an empty prompt
    or invokes that disagree fail that job alone). Jobs then share a forward pass only with jobs of
    the same `merge_key`, and only if they reach no value a merged job may not see; the others run
    alone (a forward pass of their own, as if run locally). `JobOutcome.part` tells them apart."""
    outcomes = [JobOutcome() for _ in graphs]
    order = target.order
    checked: dict[int, Batch | None] = {}
    for index, graph in enumerate(graphs):
        reason = _ALONE.get(job_kind(graph))
        if reason is not None:
            outcomes[index].error = ExecutionError(f"this job cannot share a forward pass: {reason}",
                                                   fix="Run it alone (execute), not in execute_batch.")
            continue
        try:
            if order is None:
                raise ExecutionError("the model's execution order is not recorded yet",
                                     fix="Record it first (target.ensure_order) or run the job alone.")
            plan(graph, {graph.runs[0].id: order})
            checked[index] = _own_batch(graph, target) if len(graphs) > 1 else None
        except NNsightError as error:
            outcomes[index].error = error
    by_key: dict[str, list[int]] = {}
    parts: list[list[int]] = []
    for index in checked:
        key = merge_key(graphs[index])
        (parts.append([index]) if key is None else by_key.setdefault(key, []).append(index))
    for members in by_key.values():
        if len(members) > 1:
            layouts = target.layouts_for(checked[members[0]])
            alone = [i for i in members if why_not_mergeable(graphs[i], layouts) is not None]
            parts.extend([i] for i in alone)
            members = [i for i in members if i not in alone]
        if members:
            parts.append(members)
    parts.sort(key=lambda members: members[0])
    for part, members in enumerate(parts):
        for index in members:
            outcomes[index].part = part
        if len(members) == 1:
            _run_alone(graphs[members[0]], target, outcomes[members[0]])
        else:
            _run_merged([graphs[i] for i in members], target, [outcomes[i] for i in members])
    return outcomes


def _own_batch(graph: Graph, target: ModuleTarget) -> Batch:
    """The job's inputs built on their own: a bad input (an empty prompt, invokes whose keyword
    arguments disagree) fails this job here, before any shared batch is built."""
    run = graph.runs[0]
    return target.build_batch(run, [(inv.id, inv.args, inv.kwargs, inv.all_rows) for inv in run.invokes])


def _run_alone(graph: Graph, target: ModuleTarget, outcome: JobOutcome) -> None:
    executor = _Executor(graph, target, echo_logs=False)
    try:
        outcome.result = executor.run()
    except NNsightError as error:
        outcome.error = error
        return
    outcome.rows = (0, outcome.result.rows)


def _run_merged(graphs: list[Graph], target: ModuleTarget, outcomes: list[JobOutcome]) -> None:
    merged, groups, invoke_groups, node_maps = _merge(graphs)
    seeds = {key: seed for group, graph in enumerate(graphs) for key, seed in run_seeds(graph, group).items()}
    executor = _Executor(merged, target, echo_logs=False, groups=groups, invoke_groups=invoke_groups, seeds=seeds)
    try:
        result = executor.run()
    except NNsightError as error:          # the forward pass itself failed: every job in it fails
        for outcome in outcomes:
            outcome.error = error
        return
    spans = executor.batch.spans
    for group, outcome in enumerate(outcomes):
        if group in executor.failed:
            outcome.error = executor.failed[group]
            continue
        back = {new: old for old, new in node_maps[group].items()}
        own = [spans[i] for i, g in invoke_groups.items() if g == group]
        outcome.rows = (min(s.start for s in own), max(s.stop for s in own))
        outcome.result = Result(
            saved={back[k]: v for k, v in result.saved.items() if k in back},
            logs=executor.group_logs.get(group, []),
            missing={back[k]: v for k, v in result.missing.items() if k in back},
        )


def _merge(graphs: list[Graph]) -> tuple[Graph, dict[int, int], dict[int, int], list[dict[int, int]]]:
    """One graph holding every job's invokes and nodes, renumbered; node/invoke -> job maps."""
    run = Run(0, "trace", [], {})
    merged = Graph(runs=[run], model=graphs[0].model)
    groups: dict[int, int] = {}
    invoke_groups: dict[int, int] = {}
    node_maps: list[dict[int, int]] = []
    for group, graph in enumerate(graphs):
        invoke_map: dict[int, int] = {}
        for invoke in graph.runs[0].invokes:
            invoke_map[invoke.id] = len(run.invokes)
            invoke_groups[len(run.invokes)] = group
            run.invokes.append(Invoke(len(run.invokes), invoke.args, invoke.kwargs, invoke.all_rows))
        node_map: dict[int, int] = {}
        for node in graph.nodes:
            new_id = len(merged.nodes)
            node_map[node.id] = new_id
            groups[new_id] = group
            merged.nodes.append(Node(
                new_id, node.op, _renumber(node.args, node_map), _renumber(node.kwargs, node_map),
                run=0, invoke=invoke_map[node.invoke], module=node.module, call=node.call, step=node.step,
                repeat=node.repeat, backward=None, line=node.line))
        node_maps.append(node_map)
    return merged, groups, invoke_groups, node_maps


def _renumber(value: Any, node_map: dict[int, int]) -> Any:
    if isinstance(value, Ref):
        return Ref(node_map[value.id])
    if isinstance(value, tuple):
        return tuple(_renumber(v, node_map) for v in value)
    if isinstance(value, list):
        return [_renumber(v, node_map) for v in value]
    if isinstance(value, dict):
        return {k: _renumber(v, node_map) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(_renumber(value.start, node_map), _renumber(value.stop, node_map),
                     _renumber(value.step, node_map))
    return value
