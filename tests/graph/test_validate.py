"""validate(): the rules, on in-memory graphs, and the incremental NodeChecker / check_node."""

from __future__ import annotations

import pytest
import torch

from nnsight_jupyter.errors import GraphError, KeywordNotAllowedError, OpNotAllowedError, WeightWriteError
from nnsight_jupyter.graph import Graph, Invoke, Node, Parameter, Ref, Run, validate
from nnsight_jupyter.graph.validate import MAX_NODES, VIEW_OPS, NodeChecker, check_module_path, check_node


def graph(*extra: Node, runs=None, parameters=()) -> Graph:
    nodes = [
        Node(0, "module.output", module="model.layers.0", line="cell.py:1"),
        Node(1, "getitem", (Ref(0), (slice(None), -1)), line="cell.py:2"),
        Node(2, "module.param", ("lm_head", "weight"), line="cell.py:3"),
        *extra,
    ]
    runs = runs if runs is not None else [Run(0, "trace", [Invoke(0, ("Hello",)), Invoke(1, ("World",))])]
    return Graph(runs=runs, nodes=nodes, parameters=list(parameters))


def node(id, op, *args, line="nb.ipynb:7", **fields):
    kwargs = fields.pop("kwargs", None)
    return Node(id, op, args, kwargs, line=line, **fields)


def refuse(g: Graph, error=GraphError) -> str:
    with pytest.raises(error) as info:
        validate(g)
    assert isinstance(info.value, error)
    return str(info.value)


def test_valid_graph():
    validate(graph(node(3, "add", Ref(1), 1.0), node(4, "save", Ref(3))))
    validate(Graph())


def test_message_names_node_op_and_line():
    message = refuse(graph(node(3, "os.system", "ls", line="exp.ipynb:42")), OpNotAllowedError)
    assert message.startswith("exp.ipynb:42: ") and "%3" in message and "'os.system'" in message
    message = refuse(graph(node(3, "os.system", "ls", line="")), OpNotAllowedError)
    assert "%3" in message and "no source line" in message


def test_version():
    g = graph()
    g.version = 2
    message = refuse(g)
    assert "version 2" in message and "version 1" in message and "Upgrade" in message


@pytest.mark.parametrize("op", ["os.system", "subprocess.run", "builtins.__import__", "import", "torch.load",
                                "torch.save", "Tensor.__reduce_ex__", "torch.Tensor.add", "", "getattr "])
def test_ops_off_the_list(op):
    assert repr(op) in refuse(graph(node(3, op, Ref(1))), OpNotAllowedError)


def test_op_must_be_a_str():
    refuse(graph(node(3, ["add"], Ref(1))), OpNotAllowedError)


def test_ids_unique_and_increasing():
    assert "strictly increasing" in refuse(graph(node(2, "add", Ref(1), 1)))
    assert "repeats" in refuse(graph(node(1, "add", Ref(0), 1)))
    assert "strictly increasing" in refuse(graph(node(5, "add", Ref(1), 1), node(4, "add", Ref(1), 1)))
    assert "int >= 0" in refuse(graph(node("3", "add", Ref(1), 1)))
    assert "int >= 0" in refuse(graph(node(True, "add", Ref(1), 1)))
    validate(graph(node(10, "add", Ref(1), 1), node(20, "save", Ref(10))))   # gaps are fine


@pytest.mark.parametrize("args, words", [
    ((Ref(3),), "later node (or itself)"),
    ((Ref(4),), "later node"),
    ((Ref(-2),), "does not exist"),
    (((1, [Ref(9)]),), "later node"),
    (({"k": Ref(9)},), "later node"),
    ((slice(None, Ref(9)),), "later node"),
    ((Ref("0"),), "does not exist"),
])
def test_refs(args, words):
    message = refuse(graph(node(3, "log", *args)))
    assert words in message and "%3" in message


def test_ref_to_missing_node_in_kwargs():
    assert "does not exist" in refuse(graph(node(5, "log", kwargs={"x": [Ref(4)]})))


def test_runs_and_invokes():
    assert "run 1 does not exist" in refuse(graph(node(3, "save", Ref(1), run=1)))
    assert "invoke 2 does not exist in run 0" in refuse(graph(node(3, "save", Ref(1), invoke=2)))
    assert "appears twice" in refuse(graph(runs=[Run(0), Run(0)]))
    assert "appears twice" in refuse(graph(runs=[Run(0, invokes=[Invoke(0), Invoke(0)])]))
    assert "kind 'train'" in refuse(graph(runs=[Run(0, "train", [Invoke(0)])]))
    assert "takes no input" in refuse(graph(runs=[Run(0, invokes=[Invoke(0, ("x",), all_rows=True)])]))
    # Run ids need not be positions; the run order is the list order.
    g = graph(runs=[Run(7, invokes=[Invoke(3), Invoke(0), Invoke(1)])])
    for n in g.nodes:
        n.run = 7
    validate(g)


def test_values_flow_only_forward_between_runs():
    runs = [Run(0, invokes=[Invoke(0, ("a",))]), Run(1, invokes=[Invoke(0, ("b",))])]
    later_run = [node(3, "module.output", run=1, module="model.layers.0"),
                 node(4, "add", Ref(3), Ref(1), run=1)]     # run 1 uses a value of run 0: fine
    validate(graph(*later_run, runs=runs))
    message = refuse(graph(node(3, "module.output", run=1, module="model"), node(4, "add", Ref(3), 1, run=0),
                           runs=runs))
    assert "run 1, which runs after" in message
    # Inputs of a run may use values of an earlier run (e.g. past_key_values) ...
    runs[1].invokes[0].kwargs = {"past_key_values": Ref(0)}
    validate(graph(runs=runs))
    # ... but not of their own run or a later one.
    runs[0].invokes[0].kwargs = {"inputs_embeds": Ref(1)}
    assert "earlier runs" in refuse(graph(runs=runs))
    runs[0].invokes[0].kwargs = {"inputs_embeds": Ref(99)}
    assert "does not exist" in refuse(graph(runs=runs))


def test_backward_field():
    ok = graph(node(3, "torch.sum", Ref(1)), node(4, "backward", Ref(3)), node(5, "grad", Ref(0), backward=4))
    validate(ok)
    assert "backward" in refuse(graph(node(3, "grad", Ref(0), backward=1)))
    assert "backward" in refuse(graph(node(3, "grad", Ref(0), backward=3)))
    assert "backward" in refuse(graph(node(3, "grad", Ref(0), backward="0")))


@pytest.mark.parametrize("path, ok", [
    ("model.layers.0.self_attn.o_proj", True), ("transformer.h.11.mlp", True), ("", True), ("x", True),
    ("model.__class__", False), ("model._modules", False), ("__class__", False), ("model.", False),
    ("model..layers", False), ("model.layers[0]", False), ("1x", False), ("model.layers.-1", False),
    ("a b", False), ("é", False), ("a" * 2000, False),
])
def test_module_paths(path, ok):
    assert (check_module_path(path) is None) is ok
    g = graph(node(3, "module.output", module=path))
    if ok:
        validate(g)
    else:
        assert "module path" in refuse(g)


def test_attribute_and_parameter_names():
    validate(graph(node(3, "getattr", Ref(0), "shape"), node(4, "getattr", Ref(2), "T")))
    for name in ("__class__", "_private", "__dict__", "_"):
        message = refuse(graph(node(3, "getattr", Ref(0), name)))
        assert repr(name) in message and "'getattr'" in message and "%3" in message
    assert "literal str" in refuse(graph(node(3, "getattr", Ref(0))))
    assert "literal str" in refuse(graph(node(3, "getattr", Ref(0), Ref(1))))
    for name in ("_private", "__dict__", "layer._w", ""):
        assert "parameter name" in refuse(graph(node(3, "module.param", "lm_head", name)))
    assert "module path" in refuse(graph(node(3, "module.param", "model._modules", "weight")))
    assert "literal str" in refuse(graph(node(3, "module.param", "lm_head", Ref(1))))
    assert "literal str" in refuse(graph(node(3, "module.param", "lm_head.weight")))
    validate(graph(node(3, "module.param", "model.layers.0.self_attn.q_proj", "weight"),
                   node(4, "module.param", "", "bias")))                       # "" is the root module


def test_out_kwarg_is_refused_everywhere():
    for op in ("torch.add", "torch.matmul", "Tensor.add", "torch.nn.functional.softmax", "log", "add"):
        message = refuse(graph(node(3, op, Ref(1), 1, kwargs={"out": Ref(1)})), KeywordNotAllowedError)
        assert "keyword 'out'" in message and repr(op) in message


def test_depth_limit():
    deep: object = 1
    for _ in range(33):
        deep = (deep,)
    assert "32" in refuse(graph(node(3, "log", deep)))
    assert "32" in refuse(graph(node(3, "log", kwargs={"x": deep})))
    validate(graph(node(3, "log", deep[0])))


def test_node_limit():
    g = Graph(runs=[Run(0, invokes=[Invoke(0)])], nodes=[Node(i, "tracer.input") for i in range(MAX_NODES + 1)])
    assert str(MAX_NODES) in refuse(g)


@pytest.mark.parametrize("chain", [
    [("setitem", (Ref(2), 0, 1.0))],
    [("Tensor.zero_", (Ref(2),))],
    [("Tensor.add_", (Ref(2), 1))],
    [("iadd", (Ref(2), 1))],
    [("Tensor.copy_", (Ref(2), Ref(1)))],
    [("getitem", (Ref(2), (slice(None), 0))), ("setitem", (Ref(3), 0, 0.0))],
    [("Tensor.view", (Ref(2), -1)), ("Tensor.fill_", (Ref(3), 0))],
    [("Tensor.reshape", (Ref(2), -1)), ("itruediv", (Ref(3), 2))],
    [("Tensor.transpose", (Ref(2), 0, 1)), ("Tensor.masked_fill_", (Ref(3), Ref(1), 0))],
    [("Tensor.t", (Ref(2),)), ("Tensor.clamp_", (Ref(3),))],
    [("getattr", (Ref(2), "T")), ("Tensor.mul_", (Ref(3), 0))],
    [("getattr", (Ref(2), "data")), ("Tensor.zero_", (Ref(3),))],
    [("Tensor.detach", (Ref(2),)), ("Tensor.zero_", (Ref(3),))],
    [("torch.reshape", (Ref(2), (-1,))), ("Tensor.zero_", (Ref(3),))],
    [("torch.nn.functional.dropout", (Ref(2),)), ("Tensor.zero_", (Ref(3),))],
    [("Tensor.float", (Ref(2),)), ("Tensor.contiguous", (Ref(3),)), ("Tensor.zero_", (Ref(4),))],
    [("torch.chunk", (Ref(2), 2)), ("getitem", (Ref(3), 1)), ("Tensor.unsqueeze", (Ref(4), 0)),
     ("Tensor.expand", (Ref(5), 2, -1, -1)), ("Tensor.narrow", (Ref(6), 0, 0, 1)), ("Tensor.zero_", (Ref(7),))],
])
def test_weight_writes(chain):
    nodes = [Node(3 + i, op, args, line=f"w.py:{3 + i}") for i, (op, args) in enumerate(chain)]
    message = refuse(graph(*nodes), WeightWriteError)
    last = nodes[-1]
    assert message.startswith(f"w.py:{last.id}: ") and f"%{last.id}" in message and repr(last.op) in message
    assert "parameters are read-only inside a trace; clone() first" in message
    assert "parameter %2" in message and "lm_head.weight" in message


@pytest.mark.parametrize("chain", [
    [("Tensor.clone", (Ref(2),)), ("Tensor.zero_", (Ref(3),))],
    [("mul", (Ref(2), 2)), ("iadd", (Ref(3), 1))],
    [("torch.matmul", (Ref(1), Ref(2))), ("Tensor.add_", (Ref(3), 1))],
    [("setitem", (Ref(1), 0, Ref(2)))],                         # a weight written INTO an activation
    [("Tensor.copy_", (Ref(1), Ref(2)))],
    [("module.set_output", (Ref(2),), )],                      # model ops are not in-place on args
])
def test_not_weight_writes(chain):
    nodes = [Node(3 + i, op, args, module="lm_head" if op.startswith("module.") else None)
             for i, (op, args) in enumerate(chain)]
    validate(graph(*nodes))


def test_view_ops_are_ops():
    from nnsight_jupyter.graph import OPS
    assert VIEW_OPS <= set(OPS), sorted(VIEW_OPS - set(OPS))


def test_field_types():
    for field, value, words in [("run", -1, "run must be"), ("invoke", 1.0, "invoke must be"),
                                ("call", None, "call must be"), ("step", "0", "step must be"),
                                ("step", -2, "step must be an int >= -1"),
                                ("step", -1, None),
                                ("repeat", 1, "repeat must be"), ("line", None, "line must be"),
                                ("module", 3, "module path must be a str"), ("args", [Ref(1)], None),
                                ("args", {"a": 1}, "args must be"), ("kwargs", [1], "kwargs must be")]:
        n = node(3, "save", Ref(1))
        setattr(n, field, value)
        if words is None:
            validate(graph(n))
        else:
            assert words in refuse(graph(n))
    assert "keyword argument name" in refuse(graph(node(3, "log", kwargs={1: 2})))


def test_parameters():
    validate(graph(parameters=[Parameter("lora_a", torch.zeros(2, 2)), Parameter("b", torch.ones(1), False)]))
    assert "appears twice" in refuse(graph(parameters=[Parameter("a", torch.zeros(1))] * 2))
    assert "must be a tensor" in refuse(graph(parameters=[Parameter("a", [1.0])]))
    assert "identifier" in refuse(graph(parameters=[Parameter("_a", torch.zeros(1))]))
    assert "identifier" in refuse(graph(parameters=[Parameter("a.b", torch.zeros(1))]))
    assert "requires_grad" in refuse(graph(parameters=[Parameter("a", torch.zeros(1), 1)]))


def test_incremental_checker():
    checker = NodeChecker()            # no runs known yet: run/invoke ids not checked
    checker.add(Node(0, "module.output", module="model.layers.0", run=5))
    checker.add(Node(1, "module.param", ("lm_head", "weight")))
    checker.add(Node(2, "Tensor.t", (Ref(1),)))
    with pytest.raises(WeightWriteError):
        checker.add(Node(3, "Tensor.zero_", (Ref(2),)))
    with pytest.raises(OpNotAllowedError):
        checker.add(Node(3, "torch.load", ("f",)))
    with pytest.raises(GraphError, match="later"):
        checker.add(Node(3, "add", (Ref(3), 1)))
    checker.add(Node(3, "add", (Ref(0), 1)))          # failed nodes were not remembered
    assert list(checker.nodes) == [0, 1, 2, 3]

    known = {n.id: n for n in graph().nodes}
    check_node(Node(3, "add", (Ref(1), 1)), known)
    with pytest.raises(WeightWriteError):
        check_node(Node(3, "setitem", (Ref(2), 0, 1)), known)
    with pytest.raises(GraphError, match="strictly increasing"):
        check_node(Node(1, "add", (Ref(0), 1)), known)
