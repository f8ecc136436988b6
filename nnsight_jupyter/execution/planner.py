"""Placing every node of a run at the moment it runs, and refusing impossible orders before the model runs.

Each node gets an *anchor*, a sortable tuple:

* ``(0, 0, 0)``          before the forward pass (nodes that depend on nothing from the model);
* ``(1, step, pos)``     at event `pos` of the recorded execution order, in generation step `step`;
* ``(2, 0, 0)``          after the forward pass (``tracer.result``, ``backward``, code after ``tracer.all()``);
* ``(3, b, -step, -pos)`` during backward pass `b` (its node id), when the gradient of a value anchored
  at (1, step, pos) arrives; code after a backward block runs after that pass, in program order.

Code in one invoke runs in program order: every node is anchored no earlier than the node before it
in its invoke (its *cursor*) and no earlier than the values it uses. A module access is anchored at
its own event; if that event is earlier than the cursor or than a value it uses, the trace is
impossible and `OutOfOrderError` says which line, which modules and how to fix it. Invokes have
cursors of their own, so a value read in one invoke can be used in a later one with no barrier.

Where a node goes is read from its op's declarations (`graph.ops.Op`): `anchor` (a module's input
or output event, a gradient, the end of the forward pass, or none), `ordered` (an unordered op, a
cache entry, is placed at its event without moving or checking the cursor), `part` ("forward":
the module's forward is skipped) and `runs_backward` (the run records gradients).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ExecutionError, OutOfOrderError
from ..graph.nodes import Graph, Node, Ref, Run
from ..graph.ops import OPS
from ..graph.order import ExecutionOrder
from .skipped import check_skipped_reads

START = (0, 0, 0)
END = (2, 0, 0)
#: The anchors (`graph.ops.ANCHORS`) that are events of the forward pass: a module's input or output.
MODULE_EVENTS = frozenset({"input", "output"})


@dataclass
class RunPlan:
    """Where each node of one run executes."""

    run: Run
    before: list[Node] = field(default_factory=list)
    events: dict[tuple[int, str, int, str], list[Node]] = field(default_factory=dict)   # (step, path, call, kind)
    repeat: dict[tuple[str, int, str], list[Node]] = field(default_factory=dict)       # every step >= node.step
    after: list[Node] = field(default_factory=list)
    grads: dict[int, list[Node]] = field(default_factory=dict)    # target node id -> nodes in its grad hook
    skips: set[str] = field(default_factory=set)
    needs_grad: bool = False
    last_step: int = 0

    def hooked(self) -> tuple[set[str], set[str]]:
        """Module paths that need a forward pre-hook / a forward hook."""
        pre, post = set(), set()
        for key in (*self.events, *((0, *k) for k in self.repeat)):
            (pre if key[3] == "input" else post).add(key[1])
        for path in self.skips:
            pre.add(path)
            post.add(path)
        return pre, post


_LEAF = frozenset({int, float, str, bool, type(None), torch.Tensor})


def refs_of(value: Any, out: list[int]) -> list[int]:
    """Ids of every Ref inside a (nested) argument."""
    kind = type(value)
    if kind is Ref:
        out.append(value.id)
        return out
    if kind is tuple or kind is list:
        items = value
    elif kind is dict:
        items = value.values()
    elif kind is slice:
        items = (value.start, value.stop, value.step)
    else:
        return out
    for item in items:
        t = type(item)
        if t is Ref:
            out.append(item.id)
        elif t not in _LEAF:
            refs_of(item, out)
    return out


def plan(graph: Graph, orders: dict[int, ExecutionOrder]) -> list[RunPlan]:
    """Anchor every node; `orders[run_id]` is the execution order of that run's model."""
    check_skipped_reads(graph)
    plans = {run.id: RunPlan(run) for run in graph.runs}
    anchors: dict[int, tuple] = {}
    run_of: dict[int, int] = {}
    last_access: dict[tuple[int, int], Node] = {}
    cursor: dict[tuple[int, int], tuple] = {}
    grad_anchor_target: dict[tuple, int] = {}
    last_grad: dict[tuple[int, int, Any], tuple[Node, tuple]] = {}    # (run, invoke, backward) -> node, anchor
    unordered: set[int] = set()
    last: list[tuple[RunPlan, Any, Node]] = []    # unordered nodes: placed after every other node of their moment
    for node in graph.nodes:
        run_plan = plans[node.run]
        key = (node.run, node.invoke)
        cur = cursor.get(key, START)
        dep, dep_node = START, None
        if node.refs is None:
            found = refs_of(node.args, [])
            node.refs = tuple(refs_of(node.kwargs, found) if node.kwargs else found)
        for ref in node.refs:
            if ref in unordered:
                raise ExecutionError(
                    f"{node.op} uses a tracer.cache() entry inside the trace; a cache fills as the model runs "
                    "and is read after the trace", where=node.line,
                    fix="Use the module's .output (or .input) inside the trace. Nothing was run.")
            if run_of.get(ref) == node.run and anchors[ref] > dep:
                dep, dep_node = anchors[ref], ref
        op = OPS[node.op]
        kind = op.anchor
        if kind in MODULE_EVENTS and not op.ordered:
            anchors[node.id] = START
            unordered.add(node.id)              # nothing may read a cache entry inside the trace
            run_of[node.id] = node.run
            _place_every_call(run_plan, node, kind, orders[node.run], last)
            continue
        if kind in MODULE_EVENTS:
            anchor = _event_anchor(node, kind, orders[node.run], graph)
            if op.ordered:
                if anchor < cur:
                    raise _out_of_order(node, last_access.get(key), orders[node.run])
                if dep > anchor:
                    raise _uses_later_value(node, graph.nodes[_index(graph, dep_node)])
                last_access[key] = node
        elif kind == "gradient":
            target = node.args[0].id
            t_anchor = anchors[target]
            if t_anchor[0] != 1:
                raise ExecutionError(
                    ".grad of a value that is not computed in the forward pass", where=node.line,
                    fix="Read .grad of module values (h = model.layers[0].output) or values computed from "
                        "them inside the trace. Nothing was run.")
            anchor = (3, node.backward, -t_anchor[1], -t_anchor[2])
            if not op.ordered:                  # a retained gradient: after the block's own nodes
                anchors[node.id] = anchor
                run_of[node.id] = node.run
                run_plan.needs_grad = True
                last.append((run_plan, target, node))
                continue
            grad_key = (node.run, node.invoke, node.backward)
            previous = last_grad.get(grad_key)
            if previous is not None and anchor < previous[1]:
                raise _grad_out_of_order(graph, node, previous[0])
            last_grad[grad_key] = (node, anchor)
            grad_anchor_target.setdefault(anchor, target)
            anchor = max(anchor, cur)
            run_plan.grads.setdefault(target, [])
        elif kind == "end" or node.step < 0:
            anchor = max(END, cur, dep)
        elif not op.ordered:
            anchor = dep
        else:
            anchor = max(cur, dep)
        anchors[node.id] = anchor
        run_of[node.id] = node.run
        if op.ordered:
            cursor[key] = anchor
        _place(run_plan, node, op, anchor, orders[node.run], grad_anchor_target)
    for run_plan, key, node in last:
        if OPS[node.op].anchor == "gradient":
            table = run_plan.grads
        else:
            table = run_plan.repeat if node.repeat else run_plan.events
        table.setdefault(key, []).append(node)
    return [plans[run.id] for run in graph.runs]


def _place_every_call(run_plan: RunPlan, node: Node, kind: str, order: ExecutionOrder,
                      last: list[tuple[RunPlan, Any, Node]]) -> None:
    """An unordered module op (a `tracer.cache()` entry) runs at every call of its module (every
    generation step too when it repeats), after the other nodes there; a module that never runs
    gets nothing (its value is reported missing, and the cache has no entry for it)."""
    path = node.module or ""
    for call in range(order.calls.get(path, 0)):
        if (path, call, kind) not in order.position:
            continue
        run_plan.last_step = max(run_plan.last_step, node.step)
        last.append((run_plan, (path, call, kind) if node.repeat else (node.step, path, call, kind), node))


def _index(graph: Graph, node_id: int | None) -> int:
    for i, node in enumerate(graph.nodes):
        if node.id == node_id:
            return i
    return 0


def _event_anchor(node: Node, kind: str, order: ExecutionOrder, graph: Graph) -> tuple:
    if node.step < 0:
        raise OutOfOrderError(
            f"{node.module or 'the model'}.{kind} is read after a `tracer.all()` / open "
            "`tracer.iter[a:]` loop, when every generation step has run", where=node.line,
            module=node.module, fix="Move it inside the loop.")
    pos = order.position.get((node.module or "", node.call, kind))
    if pos is None:
        path = node.module or "the model"
        raise OutOfOrderError(
            f"{path} {order.describe(node.module or '')}, so call {node.call} of it can't be "
            f"intervened on", where=node.line, module=node.module,
            fix=f"Use a module that runs (see print(model)) or a call index below "
                f"{order.calls.get(node.module or '', 0)}.")
    return (1, node.step, pos)


def _place(run_plan: RunPlan, node: Node, op: Any, anchor: tuple, order: ExecutionOrder,
           grad_targets: dict) -> None:
    stage = anchor[0]
    if op.part == "forward":
        run_plan.skips.add(node.module or "")
    if op.runs_backward:
        run_plan.needs_grad = True
    if stage == 0:
        run_plan.before.append(node)
    elif stage == 1:
        path, call, kind = order.events[anchor[2]]
        run_plan.last_step = max(run_plan.last_step, anchor[1])
        if node.repeat:
            run_plan.repeat.setdefault((path, call, kind), []).append(node)
        else:
            run_plan.events.setdefault((anchor[1], path, call, kind), []).append(node)
    elif stage == 2:
        run_plan.after.append(node)
    else:
        if node.backward != anchor[1] and OPS[node.op].anchor != "gradient":
            run_plan.after.append(node)         # after a backward block (or before its first gradient)
            return
        target = grad_targets.get(anchor)
        if target is None:  # anchored after a grad event by its cursor: run with the latest grad target
            target = grad_targets[max(k for k in grad_targets if k <= anchor and k[1] == node.backward)]
        run_plan.grads.setdefault(target, []).append(node)


def _name(node: Node, kind: str | None = None) -> str:
    kind = kind or OPS[node.op].anchor
    step = f" (generation step {node.step})" if node.step else ""
    call = f" (call {node.call})" if node.call else ""
    return f"{node.module or 'model'}.{kind}{call}{step}"


def _out_of_order(node: Node, previous: Node | None, order: ExecutionOrder) -> OutOfOrderError:
    prev = f"{_name(previous)} (line {previous.line})" if previous is not None else "an earlier access"
    return OutOfOrderError(
        f"{_name(node)} is used after {prev}, but the forward pass reaches {_name(node)} first: "
        f"within one invoke, modules must be accessed in the order the forward pass runs them",
        where=node.line, module=node.module,
        fix="Move this line above the other, or put it in a separate invoke or trace. Nothing was run.")


def _uses_later_value(node: Node, source: Node) -> OutOfOrderError:
    return OutOfOrderError(
        f"{_name(node)} is written with a value computed from {_name(source) if source.module is not None else 'a value'} "
        f"(line {source.line}), which the model only computes later in the same forward pass",
        where=node.line, module=node.module,
        fix="Compute the value in an earlier trace of a session, or from a module that runs earlier. "
            "Nothing was run.")


def _grad_name(graph: Graph, node: Node) -> str:
    """`<module>.output.grad` for a grad / set_grad node (or `.grad of value %n`)."""
    target = graph.nodes[_index(graph, node.args[0].id)]
    return f"{_name(target)}.grad" if target.module is not None else f".grad of value %{target.id}"


def _grad_out_of_order(graph: Graph, node: Node, previous: Node) -> OutOfOrderError:
    name, prev = _grad_name(graph, node), _grad_name(graph, previous)
    target = graph.nodes[_index(graph, node.args[0].id)]
    return OutOfOrderError(
        f"{name} is used after {prev} (line {previous.line}), but the backward pass reaches {name} "
        f"first: gradients arrive in reverse order of the forward pass, so inside `with loss.backward():` "
        f".grad of later modules must be read and written before that of earlier ones",
        where=node.line, module=target.module,
        fix="Move this line above the other, or read the other gradient in a separate trace. Nothing was run.")


def check_order(graph: Graph, order: ExecutionOrder) -> None:
    """Refuse a graph whose module accesses don't fit `order` (`OutOfOrderError`, naming both lines).

    A pure check of (graph, order), the planner's first step: nothing runs, no model is needed. A
    client runs it before sending a graph to a host that uses the same order."""
    plan(graph, {run.id: order for run in graph.runs})
