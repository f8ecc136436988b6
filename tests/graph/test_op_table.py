"""One table of model ops (`graph.ops.MODEL_OPS`): every reader (validator, planner, merger,
executor, memory limits) reads its declarations, none keeps a set of op names of its own, and a
new op is one line in the table."""

import ast
import importlib
from pathlib import Path

import pytest
import torch

from nnsight_jupyter.errors import GraphError, KeywordNotAllowedError, OutOfOrderError
from nnsight_jupyter.execution import executor, limits, merge, planner
from nnsight_jupyter.execution.order import ExecutionOrder
from nnsight_jupyter.graph import ops
from nnsight_jupyter.graph.nodes import Graph, Invoke, Node, Ref, Run
from nnsight_jupyter.graph.ops import ANCHORS, MODEL_OPS, NAMES, OPS, PARTS, Check, Op

validate = importlib.import_module("nnsight_jupyter.graph.validate")   # the module (graph.validate is the function)
PACKAGE = Path(ops.__file__).resolve().parents[1]
READERS = ["graph/validate.py", "execution/planner.py", "execution/merge.py", "execution/executor.py",
           "execution/limits.py"]
#: Strings that are spelled like an op but are not one: `merge.job_kind`'s kinds of job.
NOT_OPS = {"execution/merge.py": {"backward"}}
ORDER = ExecutionOrder([("", 0, "input"), ("a", 0, "input"), ("a", 0, "output"), ("b", 0, "input"),
                        ("b", 0, "output"), ("", 0, "output")])


def _graph(*nodes: Node, kind: str = "trace") -> Graph:
    return Graph(runs=[Run(0, kind, [Invoke(0, ("x",))])], nodes=list(nodes))


# ------------------------------------------------------------------ the declarations

def test_every_model_op_declares_what_its_readers_need():
    for name, op in MODEL_OPS.items():
        assert OPS[name] is op and op.kind == "model" and op.fn is None
        assert op.anchor in ANCHORS and op.part in PARTS
        if op.anchor in ("input", "output"):          # a module access: which part of the value
            assert op.part, name
        if op.writes is not None:                      # model ops write what they are anchored at
            assert op.writes.frame and not op.writes.params and op.anchor in ("input", "output", "gradient"), name
        if op.checks:
            assert op.arity is not None and all(c.what in NAMES for c in op.checks), name
        if op.saves:
            assert not op.borrows, f"{name}: a saved copy is an allocation of the job"
    # The meanings the readers rely on, pinned: an edit of the table that changes them fails here.
    assert {n for n, op in MODEL_OPS.items() if not op.merges} == {"grad", "set_grad", "backward", "grad.require", "grad.keep",
                                                                    "tracer.result"}
    assert {n for n, op in MODEL_OPS.items() if not op.ordered} == {"cache.output", "cache.inputs", "grad.keep", "collect"}
    assert {n for n, op in MODEL_OPS.items() if op.saves} == {"save", "collect", "cache.output", "cache.inputs", "grad.keep"}
    assert [n for n, op in OPS.items() if op.weight] == ["module.param"]
    assert [n for n, op in OPS.items() if op.part == "forward"] == ["module.skip"]
    assert [n for n, op in OPS.items() if op.runs_backward] == ["backward"]
    assert {n for n, op in OPS.items() if op.checks} == {"getattr", "module.param", "module.call"}


def test_a_declaration_that_no_reader_knows_fails_when_the_op_is_made():
    with pytest.raises(ValueError, match="anchor"):
        Op("kv.reuse", "model", anchor="layer")
    with pytest.raises(ValueError, match="part"):
        Op("kv.reuse", "model", anchor="output", part="outputs")
    with pytest.raises(ValueError, match="check"):
        Op("kv.reuse", "model", checks=(Check(0, "file name"),), arity=(1, 1))
    with pytest.raises(ValueError, match="arity"):
        Op("kv.reuse", "model", checks=(Check(0, "module path"),))


def test_the_executor_has_one_handler_per_model_op_and_no_other():
    assert set(executor._HANDLERS) == set(MODEL_OPS)
    for method in executor._HANDLERS.values():
        assert callable(getattr(executor._Executor, method)), method


def test_memory_limits_and_frame_checks_are_derived_from_the_table():
    assert limits._BORROWED == {n for n, op in OPS.items() if op.borrows}
    assert {"module.output", "module.param", "grad", "log"} <= limits._BORROWED
    assert not {"save", "cache.output", "module.call", "add"} & limits._BORROWED
    assert executor._SETS == {"module.set_output", "module.set_input", "module.set_inputs"}


def _op_name_literals(path: Path) -> list[tuple[int, str]]:
    """String constants in `path` that are model-op names, outside docstrings, `__slots__` and the
    executor's handler table (`_HANDLERS`, checked against the table above)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None:
            skip.add(id(node.body[0].value))
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("_HANDLERS", "__slots__")
                                                for t in node.targets):
            skip.update(id(n) for n in ast.walk(node.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in MODEL_OPS and id(node) not in skip]


@pytest.mark.parametrize("reader", READERS)
def test_readers_name_no_model_op_of_their_own(reader):
    found = [(line, name) for line, name in _op_name_literals(PACKAGE / reader)
             if name not in NOT_OPS.get(reader, ())]
    assert not found, f"{reader} names model ops {found}: declare what it needs on graph.ops.Op instead"


def test_the_literal_finder_finds_op_names(tmp_path):
    source = tmp_path / "reader.py"
    source.write_text('"""Docstring naming "save"."""\n_GRADS = frozenset({"grad", "set_grad"})\n')
    assert _op_name_literals(source) == [(2, "grad"), (2, "set_grad")]


# ------------------------------------------------------------------ a new op is one line

@pytest.fixture
def kv_reuse(monkeypatch):
    """A throwaway model op, added to the table only (as a new op would be: one line)."""
    op = Op("kv.reuse", "model", anchor="output", part="output", merges=False, borrows=True)
    monkeypatch.setitem(OPS, op.name, op)
    monkeypatch.setitem(MODEL_OPS, op.name, op)
    monkeypatch.setattr(validate, "_FLAGS", {})        # per-op caches, rebuilt from the table
    monkeypatch.setattr(validate, "_SECTIONS", {})
    monkeypatch.setattr(validate, "_CHECKS", {})
    return op


def test_a_new_op_is_picked_up_by_the_validator_planner_and_merger(kv_reuse):
    g = _graph(Node(0, "kv.reuse", module="b", line="u.py:1"), Node(1, "save", (Ref(0),), line="u.py:2"))
    validate.validate(g)                                            # on the allow-list now
    [p] = planner.plan(g, {0: ORDER})
    assert [n.id for n in p.events[(0, "b", 0, "output")]] == [0, 1]   # at its module's output event
    assert merge.job_kind(g) == "backward" and merge.why_not_mergeable(g) is not None   # merges=False
    out_of_order = _graph(Node(0, "kv.reuse", module="b", line="u.py:1"),
                          Node(1, "module.output", module="a", line="u.py:2"))
    with pytest.raises(OutOfOrderError):                            # ordered, like any module access
        planner.plan(out_of_order, {0: ORDER})
    with pytest.raises(KeywordNotAllowedError):                     # model ops take no keywords
        validate.validate(_graph(Node(0, "kv.reuse", (), {"fast": True}, module="b", line="u.py:1")))


def test_without_a_handler_the_executor_refuses_to_build(kv_reuse):
    with pytest.raises(KeyError, match="kv.reuse"):
        executor._Executor(_graph(), None, echo_logs=False)


def test_a_new_op_that_names_things_is_checked_by_the_validator(monkeypatch):
    op = Op("module.buffer", "model", checks=(Check(0, "module path"), Check(1, "parameter name")),
            arity=(2, 2), weight=True, borrows=True)
    monkeypatch.setitem(OPS, op.name, op)
    monkeypatch.setattr(validate, "_FLAGS", {})
    monkeypatch.setattr(validate, "_SECTIONS", {})
    monkeypatch.setattr(validate, "_CHECKS", {})
    validate.validate(_graph(Node(0, "module.buffer", ("a", "running_mean"), line="u.py:1")))
    with pytest.raises(GraphError, match="parameter name '_secret'"):
        validate.validate(_graph(Node(0, "module.buffer", ("a", "_secret"), line="u.py:1")))
    with pytest.raises(GraphError, match="needs 2 arguments"):
        validate.validate(_graph(Node(0, "module.buffer", ("a",), line="u.py:1")))


# ------------------------------------------------------------------ the cache is an op, not a flag

def test_cache_entries_are_ops_of_their_own_without_keywords(llama):
    with llama.trace("hello world") as tracer:
        cache = tracer.cache(modules=[llama.model.layers[1], llama.model.layers[0]], include_inputs=True)
        llama.model.layers[0].output.save()           # after a cache of a later layer: still in order
    graph = tracer.builder.graph
    cached = [n for n in graph.nodes if n.op.startswith("cache.")]
    assert sorted(n.op for n in cached) == ["cache.inputs", "cache.inputs", "cache.output", "cache.output"]
    assert all(not n.kwargs for n in graph.nodes) and [n.op for n in graph.nodes].count("save") == 1
    assert isinstance(cache["model.layers.0"].output, torch.Tensor)


def test_the_passive_flag_is_gone_from_the_format():
    with pytest.raises(KeywordNotAllowedError, match="passive"):
        validate.validate(_graph(Node(0, "module.output", (), {"passive": True}, module="a", line="u.py:1")))
