"""The planner anchors nodes and refuses impossible orders from graph data alone (before any run)."""

import pytest

from nnsight_jupyter.errors import ExecutionError, OutOfOrderError
from nnsight_jupyter.execution.planner import plan
from nnsight_jupyter.graph.nodes import Graph, Invoke, Node, Ref, Run
from nnsight_jupyter.graph.order import ExecutionOrder

ORDER = ExecutionOrder([
    ("", 0, "input"), ("a", 0, "input"), ("a", 0, "output"), ("b", 0, "input"), ("b", 0, "output"),
    ("b", 1, "input"), ("b", 1, "output"), ("", 0, "output"),
])


def _graph(*nodes, invokes=1):
    run = Run(0, "trace", [Invoke(i, ("x",)) for i in range(invokes)])
    return Graph(runs=[run], nodes=list(nodes))


def test_nodes_are_placed_at_their_events():
    g = _graph(
        Node(0, "module.output", module="a", line="u.py:1"),
        Node(1, "mul", (Ref(0), 2), line="u.py:2"),
        Node(2, "module.set_output", (Ref(1),), module="b", call=1, line="u.py:3"),
        Node(3, "save", (Ref(1),), line="u.py:4"),
    )
    [p] = plan(g, {0: ORDER})
    assert [n.id for n in p.events[(0, "a", 0, "output")]] == [0, 1]
    assert [n.id for n in p.events[(0, "b", 1, "output")]] == [2, 3]   # the save follows program order
    assert p.hooked() == (set(), {"a", "b"})


def test_read_after_a_later_module_is_refused_with_both_lines():
    g = _graph(Node(0, "module.output", module="b", line="u.py:1"),
               Node(1, "module.output", module="a", line="u.py:2"))
    with pytest.raises(OutOfOrderError) as info:
        plan(g, {0: ORDER})
    message = str(info.value)
    assert message.startswith("u.py:2") and "u.py:1" in message and "Nothing was run" in message


def test_invokes_have_their_own_order_and_share_values():
    g = _graph(
        Node(0, "module.output", invoke=0, module="b", line="u.py:1"),
        Node(1, "module.output", invoke=1, module="a", line="u.py:2"),        # earlier module, other invoke: fine
        Node(2, "module.set_output", (Ref(0),), invoke=1, module="b", call=1, line="u.py:3"),
        invokes=2)
    plan(g, {0: ORDER})


def test_write_with_a_value_computed_later_is_refused():
    g = _graph(Node(0, "module.output", invoke=0, module="b", line="u.py:1"),
               Node(1, "module.set_output", (Ref(0),), invoke=1, module="a", line="u.py:2"), invokes=2)
    with pytest.raises(OutOfOrderError, match="only computes later"):
        plan(g, {0: ORDER})


def test_call_index_that_does_not_exist():
    g = _graph(Node(0, "module.output", module="a", call=3, line="u.py:1"))
    with pytest.raises(OutOfOrderError, match="called 1 time"):
        plan(g, {0: ORDER})


def test_module_that_never_runs():
    g = _graph(Node(0, "module.output", module="zzz", line="u.py:1"))
    with pytest.raises(OutOfOrderError, match="never called"):
        plan(g, {0: ORDER})


def test_result_and_backward_run_after_the_forward():
    g = Graph(runs=[Run(0, "generate", [Invoke(0, ("x",))])],
              nodes=[Node(0, "tracer.result"), Node(1, "save", (Ref(0),))])
    [p] = plan(g, {0: ORDER})
    assert [n.id for n in p.after] == [0, 1]


def test_grad_of_a_constant_is_refused():
    g = _graph(Node(0, "Tensor.sum", (1,)), Node(1, "backward", (Ref(0),)),
               Node(2, "grad", (Ref(0),), backward=1, line="u.py:3"))
    with pytest.raises(ExecutionError, match="not computed in the forward"):
        plan(g, {0: ORDER})


def test_cache_entries_are_read_where_the_forward_pass_reaches_them_out_of_program_order():
    # tracer.cache() of a later module before code that reads an earlier one: the cache entry is
    # placed at its own event and neither moves nor is checked against the invoke's cursor.
    g = _graph(
        Node(0, "cache.output", module="b", line="u.py:1"),
        Node(1, "cache.inputs", module="b", line="u.py:1"),
        Node(2, "module.output", module="a", line="u.py:2"),
        Node(3, "save", (Ref(2),), line="u.py:3"),
    )
    [p] = plan(g, {0: ORDER})
    assert [n.id for n in p.events[(0, "b", 0, "output")]] == [0]
    assert [n.id for n in p.events[(0, "b", 0, "input")]] == [1]
    assert [n.id for n in p.events[(0, "a", 0, "output")]] == [2, 3]
    # The same reads as module accesses follow program order, and are refused.
    ordered = _graph(Node(0, "module.output", module="b", line="u.py:1"),
                     Node(1, "module.output", module="a", line="u.py:2"))
    with pytest.raises(OutOfOrderError):
        plan(ordered, {0: ORDER})


def test_a_value_computed_from_a_cache_entry_is_refused():
    """A cache entry holds every call of its module, filled as the model runs: read after the trace."""
    g = _graph(Node(0, "cache.output", module="b", line="u.py:1"),
               Node(1, "mul", (Ref(0), 2), line="u.py:2"))
    with pytest.raises(ExecutionError, match="u.py:2: mul uses a tracer.cache"):
        plan(g, {0: ORDER})


def test_a_cache_entry_runs_at_every_call_after_the_other_nodes_there():
    g = _graph(Node(0, "cache.output", module="b", line="u.py:1"),
               Node(1, "module.output", module="b", line="u.py:2"),
               Node(2, "cache.output", module="never", line="u.py:3"))
    [p] = plan(g, {0: ORDER})
    assert [n.id for n in p.events[(0, "b", 0, "output")]] == [1, 0]
    assert [n.id for n in p.events[(0, "b", 1, "output")]] == [0]        # b runs twice: both calls
    assert all(2 not in [n.id for n in nodes] for nodes in p.events.values())
