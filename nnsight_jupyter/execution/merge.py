"""Several jobs in one forward pass (co-tenancy): merge compatible graphs, run once, split the results.

Compatible jobs are forward-only traces on the same model: one run of kind "trace", no gradients,
no job-owned parameters. Each job is planned on its own first, so a job whose module order is
impossible is refused alone. The survivors become one graph: their invokes side by side (each job's
rows contiguous, an invoke with no input sees only its own job's rows), their nodes renumbered.
A node that fails fails its job only; the others' values come back as if they had run alone
(within float tolerance: a batch is padded to its longest prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import NNsightError, TracingError
from ..graph.nodes import Graph, Invoke, Node, Ref, Run
from .batching import ModuleTarget
from .executor import Result, _Executor
from .planner import plan

INCOMPATIBLE_OPS = frozenset({"backward", "grad", "set_grad", "tracer.result"})


@dataclass
class JobOutcome:
    """What one job of a merged batch got: a Result, or the error that failed it; its batch rows."""

    result: Result | None = None
    error: NNsightError | None = None
    rows: tuple[int, int] | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)


def job_kind(graph: Graph) -> str:
    """ "trace" for a graph that can share a forward pass; else what makes it run alone:
    "session", "generate", "training" or "backward"."""
    if len(graph.runs) != 1:
        return "session"
    if graph.runs[0].kind != "trace":
        return "generate"
    if graph.parameters:
        return "training"
    if any(node.op in INCOMPATIBLE_OPS for node in graph.nodes):
        return "backward"
    return "trace"


_ALONE = {"session": "a session runs alone", "generate": "generation runs alone",
          "training": "training runs alone", "backward": "gradients run alone"}


def why_not_mergeable(graph: Graph) -> str | None:
    """None if the graph can share a forward pass with other jobs, else the reason it runs alone."""
    return _ALONE.get(job_kind(graph))


def execute_batch(graphs: list[Graph], target: ModuleTarget) -> list[JobOutcome]:
    """Run mergeable graphs in one forward pass; one outcome per graph, in order."""
    outcomes = [JobOutcome() for _ in graphs]
    order = target.order
    survivors: list[int] = []
    for index, graph in enumerate(graphs):
        reason = why_not_mergeable(graph)
        if reason is not None:
            outcomes[index].error = TracingError(f"this job cannot share a forward pass: {reason}")
            continue
        try:
            if order is None:
                raise TracingError("the model's execution order is not recorded yet")
            plan(graph, {graph.runs[0].id: order})
        except NNsightError as error:
            outcomes[index].error = error
            continue
        survivors.append(index)
    if not survivors:
        return outcomes
    merged, groups, invoke_groups, node_maps = _merge([graphs[i] for i in survivors])
    executor = _Executor(merged, target, echo_logs=False, groups=groups, invoke_groups=invoke_groups)
    try:
        result = executor.run()
    except NNsightError as error:          # the forward pass itself failed: every job in it fails
        for index in survivors:
            outcomes[index].error = error
        return outcomes
    spans = executor.batch.spans
    for group, index in enumerate(survivors):
        outcome = outcomes[index]
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
    return outcomes


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
