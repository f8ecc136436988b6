"""Refusing, before the model runs, a read of a module that a skip keeps from running.

`m.skip(v)` replaces `m`'s forward for its invoke's rows: the modules inside `m` do not run for
those rows (and not at all when the skip covers every row), so reading or writing one of them in
the same invoke can never happen. Without this check the trace would run and then report the value
as never computed; `check_skipped_reads` raises `OutOfOrderError` naming both lines instead.
The skipped module's own `.input` and `.output` stay readable (its output is the skip's value).
"""

from __future__ import annotations

from ..errors import OutOfOrderError
from ..graph.nodes import Graph, Node
from ..graph.ops import OPS

_EVENTS = frozenset({"input", "output"})


def _steps_meet(a: Node, b: Node) -> bool:
    """True if nodes `a` and `b` apply at some common generation step."""
    if a.repeat and b.repeat:
        return True
    if a.repeat:
        return b.step >= a.step
    if b.repeat:
        return a.step >= b.step
    return a.step == b.step


def check_skipped_reads(graph: Graph) -> None:
    """Raise OutOfOrderError for a module access inside a module skipped for the same rows."""
    skips = [n for n in graph.nodes if OPS[n.op].part == "forward" and n.module]
    if not skips:
        return
    every_row = {(run.id, inv.id) for run in graph.runs for inv in run.invokes if inv.all_rows}
    for node in graph.nodes:
        op = OPS[node.op]
        if op.anchor not in _EVENTS or not op.ordered or op.part == "forward" or not node.module:
            continue
        for skip in skips:
            if (skip.run == node.run and node.module.startswith(skip.module + ".")
                    and (skip.invoke == node.invoke or (skip.run, skip.invoke) in every_row)
                    and _steps_meet(skip, node)):
                raise OutOfOrderError(
                    f"{node.module}.{op.anchor} is used, but {skip.module} is skipped (line {skip.line}) for "
                    f"these rows, so {node.module}, which is inside it, never runs", where=node.line,
                    module=node.module,
                    fix=f"Use {skip.module}.input or {skip.module}.output instead, or skip {skip.module} in "
                        "another invoke or trace. Nothing was run.")
