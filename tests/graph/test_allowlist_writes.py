"""The shared model is untouchable by every op of the allow-list, locally and hosted.

The op table (`graph.ops.OPS`) declares, per op, which arguments it may write (`Op.written`) and
which its result may view (`Op.aliased`). These tests

* prove the declarations complete: every positional write in an op's aten schemas, every
  ``out`` / ``inplace`` / ``max_norm`` parameter of its Python signature is declared, and every
  op, run on a fresh tensor, either leaves it unchanged or declares that write (and declares the
  views it returns), so a writing op added to the table without its declaration fails here;
* walk every writing op and aim it at a parameter, a buffer and each view of one (index, ``.T``,
  ``.mT``, ``.data``, ``detach``, ``view``, ``expand``): refused with `WeightWriteError`, the
  state_dict unchanged bit for bit, through the public API (`NNsight`, `LanguageModel`), through
  `execute` on a hand-built graph, and on a real model host;
* show the run-time check catching an alias the static check cannot see (a parameter laundered
  through a tuple), locally and hosted.
"""

from __future__ import annotations

import inspect
import json
import warnings

import pytest
import torch

from nnsight_jupyter import LanguageModel, NNsight
from nnsight_jupyter.errors import WeightWriteError
from nnsight_jupyter.execution import execute
from nnsight_jupyter.execution.batching import ModuleTarget
from nnsight_jupyter.graph import OPS
from nnsight_jupyter.graph.codec import decode_values, encode
from nnsight_jupyter.graph.keywords import KEYWORDS
from nnsight_jupyter.graph.nodes import Graph, Invoke, Node, Ref, Run
from nnsight_jupyter.graph.validate import validate

X = torch.ones(4, 4)
IDX = torch.tensor([0])
IDS = torch.tensor([[0, 1]])
MASK = torch.zeros(4, 4, dtype=torch.bool)

# How to call each writing op so that it writes `t` (x: a tensor that is not a weight). Every op
# that declares a write must have its calls here (test_every_writing_op_has_its_calls).
_ONE = ("iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul", "iand", "ior", "ixor",
        "Tensor.add_", "Tensor.sub_", "Tensor.mul_", "Tensor.div_", "Tensor.pow_")
CALLS = {
    **{name: (lambda t, x: [((t, 1), {})]) for name in _ONE},
    **{name: (lambda t, x: [((t,), {})]) for name in ("Tensor.zero_", "Tensor.neg_", "Tensor.abs_", "Tensor.exp_")},
    "setitem": lambda t, x: [((t, 0, 0.0), {})],
    "Tensor.fill_": lambda t, x: [((t, 0.0), {})],
    "Tensor.copy_": lambda t, x: [((t, x), {})],
    "Tensor.clamp_": lambda t, x: [((t, 0.0), {}), ((t,), {"min": 0.0})],
    "Tensor.masked_fill_": lambda t, x: [((t, MASK, 0.0), {})],
    "Tensor.index_fill_": lambda t, x: [((t, 0, IDX, 0.0), {})],
    "Tensor.scatter_": lambda t, x: [((t, 0, IDX.reshape(1, 1), x), {})],
    "Tensor.index_copy_": lambda t, x: [((t, 0, IDX, x), {})],
    "Tensor.index_add_": lambda t, x: [((t, 0, IDX, x), {})],
    "torch.nn.functional.relu": lambda t, x: [((t,), {"inplace": True}), ((t, True), {})],
    "torch.nn.functional.silu": lambda t, x: [((t,), {"inplace": True}), ((t, True), {})],
    "torch.nn.functional.dropout": lambda t, x: [((t,), {"p": 0.5, "training": True, "inplace": True}),
                                                 ((t, 0.5, True, True), {})],
    "torch.nn.functional.embedding": lambda t, x: [((IDS, t), {"max_norm": 1.0}), ((IDS, t, None, 1.0), {}),
                                                   ((IDS,), {"weight": t, "max_norm": 1.0})],
    "torch.norm": lambda t, x: [((x, 2, -1, False, t), {})],
    # in-place ops added with the allow-list audit (issue 8), random ones included
    **{name: (lambda t, x: [((t,), {})]) for name in (
        "Tensor.sqrt_", "Tensor.log_", "Tensor.sigmoid_", "Tensor.tanh_", "Tensor.relu_", "Tensor.nan_to_num_",
        "Tensor.normal_", "Tensor.uniform_", "Tensor.random_", "Tensor.exponential_", "Tensor.log_normal_",
        "Tensor.cauchy_")},
    **{name: (lambda t, x: [((t, 0.5), {})]) for name in (
        "Tensor.clamp_min_", "Tensor.clamp_max_", "Tensor.bernoulli_", "Tensor.geometric_")},
    "Tensor.scatter_add_": lambda t, x: [((t, 0, IDX.reshape(1, 1), x), {})],
    "Tensor.lerp_": lambda t, x: [((t, x, 0.5), {})],
    **{f"torch.nn.functional.{name}": (lambda t, x: [((t,), {"inplace": True}), ((t, True), {})]) for name in (
        "selu", "relu6", "mish", "hardswish", "hardsigmoid")},
    "torch.nn.functional.elu": lambda t, x: [((t,), {"inplace": True}), ((t, 1.0, True), {})],
    "torch.nn.functional.celu": lambda t, x: [((t,), {"inplace": True}), ((t, 1.0, True), {})],
    "torch.nn.functional.leaky_relu": lambda t, x: [((t,), {"inplace": True}), ((t, 0.01, True), {})],
    "torch.nn.functional.hardtanh": lambda t, x: [((t,), {"inplace": True}), ((t, -1.0, 1.0, True), {})],
    "torch.nn.functional.threshold": lambda t, x: [((t, 0.0, 0.0), {"inplace": True}), ((t, 0.0, 0.0, True), {})],
    **{f"torch.nn.functional.{name}": (lambda t, x: [((t,), {"p": 0.5, "training": True, "inplace": True}),
                                                     ((t, 0.5, True, True), {})])
       for name in ("dropout1d", "dropout2d", "dropout3d")},
    "torch.nn.functional.normalize": lambda t, x: [((x, 2.0, -1, 1e-12, t), {})],
}
WRITING = sorted(name for name, op in OPS.items() if op.writes is not None and op.writes.params)

# Views of a value, as graph nodes (op, extra arguments).
VIEWS = {
    "itself": [],
    "index": [("getitem", (0,))],
    ".T": [("getattr", ("T",))],
    ".mT": [("getattr", ("mT",))],
    ".data": [("getattr", ("data",))],
    "detach": [("Tensor.detach", ())],
    "view": [("Tensor.view", (-1,))],
    "expand": [("Tensor.expand", (2, -1, -1))],
}
CASES = [(name, i) for name in WRITING for i in range(len(CALLS[name](None, None)))]


class Net(torch.nn.Module):
    """A module with a parameter and a buffer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("scale", torch.rand(4, 4))

    def forward(self, x):
        return self.lin(x) * self.scale


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()}


def _unchanged(before: dict, module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return before.keys() == after.keys() and all(
        before[k].dtype == after[k].dtype and torch.equal(before[k].view(torch.uint8) if before[k].dim() else before[k],
                                                          after[k].view(torch.uint8) if after[k].dim() else after[k])
        for k in before)


# ----------------------------------------------------------------------------- the table is complete

def _tensor_schemas(base: str):
    for schema in torch._C._jit_get_schemas_for_operator("aten::" + base):
        for index, arg in enumerate(schema.arguments):
            if arg.alias_info is not None and arg.alias_info.is_write and str(arg.type) in ("Tensor", "Tensor?"):
                yield schema, index, arg


def test_every_write_in_the_aten_schemas_is_declared():
    checked = 0
    for name, op in OPS.items():
        if op.kind not in ("torch", "method"):
            continue
        declared = {p.index for p in (op.writes.params if op.writes else ())}
        for schema, index, arg in _tensor_schemas(name.rsplit(".", 1)[-1]):
            checked += 1
            if arg.kwarg_only and arg.name in KEYWORDS["torch"]:
                # torch.max's out tensors are named `max` in the schema; Python binds them as out=
                # only, and refuses them under that name (which clamp(max=...) needs).
                with pytest.raises(TypeError):
                    op.fn(torch.randn(4, 4), 1, **{arg.name: torch.zeros(4)})
            elif not arg.kwarg_only:
                assert index in declared, f"{name} writes argument {index} ({arg.name}) in {schema}"
    assert checked > 20 and "out" not in KEYWORDS["torch"]


def test_python_signatures_declare_their_writing_parameters():
    for name, op in OPS.items():
        if op.kind != "torch":
            continue
        try:
            parameters = list(inspect.signature(op.fn).parameters)
        except (TypeError, ValueError):
            continue                 # a builtin: its aten schemas are checked above
        writes = op.writes
        for index, parameter in enumerate(parameters):
            if parameter == "out":
                assert writes and any(p.index == index for p in writes.params), name
            if parameter in ("inplace", "max_norm"):
                assert writes and writes.switch and writes.switch.param.index == index, name
                assert writes.switch.param.name == parameter


def _candidates(t: torch.Tensor):
    yield from [(t,), (t, 0), (t, -1), (t, 1), (t, True), (t, t), (t, 2, 2), (t, 4), (t, (4, 4)), (t, 0, 1),
                (t, torch.float32), (t, t, t), ("ij->ij", t), ("ij->ji", t), (t, 0.5), (t, 0, 0, 2), (t, 0.5, True, True),
                (IDS, t, None, 1.0), (X.clone(), 2, -1, False, t), (X.clone(), 2.0, -1, 1e-12, t)]


def _shares(result, t: torch.Tensor) -> bool:
    if isinstance(result, torch.Tensor):
        return result.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
    return isinstance(result, (tuple, list)) and any(_shares(r, t) for r in result)


def test_every_op_declares_what_it_writes_and_views_when_run_on_a_tensor():
    """Each op, run with simple arguments around a fresh tensor: a write into that tensor must be
    declared (Op.written names it), and a result sharing its storage must be declared (Op.aliased)."""
    ran = 0
    for name, op in OPS.items():
        if op.fn is None:
            continue
        for template in _candidates(torch.empty(0)):
            t = torch.randn(4, 4)
            args = tuple(t if type(a) is torch.Tensor and a.numel() == 0 else a for a in template)
            before = t.clone()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    result = op.fn(*args)
                except Exception:  # noqa: BLE001 - these arguments do not fit this op
                    continue
            ran += 1
            if not torch.equal(before, t):
                assert any(v is t for v in op.written(args, {})), f"{name}{template!r:.60} writes undeclared"
            if _shares(result, t):
                assert any(v is t for v in op.aliased(args, {})), f"{name} returns an undeclared view"
    assert ran > 200


def test_every_writing_op_has_its_calls():
    assert set(WRITING) == set(CALLS), sorted(set(WRITING) ^ set(CALLS))
    assert {"setitem", "iadd", "Tensor.copy_", "torch.nn.functional.relu", "torch.nn.functional.embedding",
            "torch.norm"} <= set(WRITING)


def test_the_same_calls_on_a_tensor_of_the_job_are_allowed():
    """The refusal is about the target: aimed at a clone of the parameter, every call validates."""
    for name, i in CASES:
        args, kwargs = CALLS[name](Ref(3), X)[i]
        validate(_graph([Node(2, "module.param", ("lin", "weight")), Node(3, "Tensor.clone", (Ref(2),)),
                         Node(4, name, args, kwargs, line="cell:4")]))


# ----------------------------------------------------------------------------- hand-built graphs

def _graph(nodes, ids=False) -> Graph:
    inputs = ("the cat",) if ids else (X,)
    return Graph(runs=[Run(0, "trace", [Invoke(0, inputs)])],
                 nodes=[Node(0, "module.output", module="" if not ids else "lm_head"), *nodes])


def _aimed(name: str, i: int, path: str, pname: str, view: str) -> list[Node]:
    """module.param(path, pname), then the view's nodes, then op `name` (call i) writing the last one."""
    nodes = [Node(1, "module.param", (path, pname), line="cell:1")]
    for op, extra in VIEWS[view]:
        nodes.append(Node(len(nodes) + 1, op, (Ref(len(nodes)), *extra), line=f"cell:{len(nodes) + 1}"))
    args, kwargs = CALLS[name](Ref(len(nodes)), X)[i]
    nodes.append(Node(len(nodes) + 1, name, args, kwargs, line=f"cell:{len(nodes) + 1}"))
    return nodes


def _laundered(name: str, i: int, path: str, pname: str) -> list[Node]:
    """The parameter passed through a tuple (`(w,) + ()`, then `[0]`): the static check cannot
    follow it, the run-time check must."""
    args, kwargs = CALLS[name](Ref(3), X)[i]
    return [Node(1, "module.param", (path, pname)), Node(2, "add", ((Ref(1),), ())),
            Node(3, "getitem", (Ref(2), 0)), Node(4, name, args, kwargs, line="cell:4")]


@pytest.mark.parametrize("name, i", CASES)
def test_execute_refuses_every_writing_op_aimed_at_weights(name, i):
    net = Net()
    before = _state(net)
    for path, pname in (("lin", "weight"), ("", "scale")):
        for view in VIEWS:
            with pytest.raises(WeightWriteError, match="read-only") as info:
                execute(_graph(_aimed(name, i, path, pname, view)), ModuleTarget(net), echo_logs=False)
            assert (f"{path}.{pname}" if path else pname) in str(info.value)
            assert str(info.value).startswith("cell:")
    assert _unchanged(before, net)


@pytest.mark.parametrize("name, i", CASES)
def test_run_time_check_catches_what_the_static_check_cannot_see(name, i):
    net = Net()
    before = _state(net)
    for path, pname in (("lin", "weight"), ("", "scale")):
        graph = _graph(_laundered(name, i, path, pname))
        validate(graph)                          # statically it looks like a write into a tuple item
        with pytest.raises(WeightWriteError, match="model's weights"):
            execute(graph, ModuleTarget(net), echo_logs=False)
    assert _unchanged(before, net)


# ----------------------------------------------------------------------------- the public API

def _view_of(value, view: str):
    for op, extra in VIEWS[view]:
        if op == "getitem":
            value = value[extra[0]]
        elif op == "getattr":
            value = getattr(value, extra[0])
        else:
            value = getattr(value, op.split(".", 1)[1])(*extra)
    return value


def _call(name: str, args: tuple, kwargs: dict):
    op = OPS[name]
    if op.kind == "method":
        return getattr(args[0], name.split(".", 1)[1])(*args[1:], **kwargs)
    return op.fn(*args, **kwargs)         # operators and torch functions dispatch on proxies


@pytest.mark.parametrize("name, i", CASES)
def test_public_api_refuses_every_writing_op_aimed_at_weights(name, i, raw_llama, tokenizer):
    net = NNsight(Net())
    llama = LanguageModel(raw_llama, tokenizer=tokenizer)
    for model, prompt, targets in (
            (net, X, (lambda m: m.lin.weight, lambda m: m.scale)),
            (llama, "the cat", (lambda m: m.lm_head.weight, lambda m: m.model.rotary_emb.inv_freq))):
        before = _state(model._module)
        for target in targets:
            for view in VIEWS:
                with pytest.raises(WeightWriteError, match="read-only"):
                    with model.trace(prompt):
                        other = (model.output if model is net else model.lm_head.output).clone()
                        args, kwargs = CALLS[name](_view_of(target(model), view), other)[i]
                        _call(name, args, kwargs)
        assert _unchanged(before, model._module)


# ----------------------------------------------------------------------------- hosted

TINY_WEIGHT, TINY_BUFFER = ("lm_head", "weight"), ("model.rotary_emb", "inv_freq")


def _finished(message: dict) -> bool:
    """A refusal as the host decodes (an error message), or a job's end (result, or error status)."""
    return message["type"] in ("result", "error") or message.get("status") in ("error", "cancelled")


def _hosted_state(client) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the hosted model, read by one job."""
    from nnsight_jupyter.models import tiny_llama

    names = [*dict(tiny_llama(seed=0).named_parameters()), *dict(tiny_llama(seed=0).named_buffers())]
    nodes = [Node(0, "module.output", module="lm_head")]
    for name in names:
        path, _, attr = name.rpartition(".")
        nodes += [Node(len(nodes), "module.param", (path, attr)), Node(len(nodes) + 1, "save", (Ref(len(nodes)),))]
    graph = Graph(runs=[Run(0, "trace", [Invoke(0, ("the cat",))])], nodes=nodes)
    client.submit(encode(graph), request_id="state")
    result = client.until(_finished)
    assert result["type"] == "result", result
    values = decode_values(result["_payload"])
    return {name: values[str(node.id)] for name, node in zip(names, nodes[2::2])}


def test_hosted_every_writing_op_aimed_at_weights_is_refused(allowlist_host, tiny_model_dir):
    """Every case of the walk, as graphs submitted to a real host: the static ones refused as the
    host decodes them, the laundered ones as they run; the hosted weights end bit-identical to a
    fresh load of the same directory."""
    client = allowlist_host.socket("token-alice")
    count = 0
    for name, i in CASES:
        for path, pname in (TINY_WEIGHT, TINY_BUFFER):
            graphs = [_graph(_aimed(name, i, path, pname, view), ids=True) for view in VIEWS]
            graphs.append(_graph(_laundered(name, i, path, pname), ids=True))
            for graph in graphs:
                count += 1
                client.submit(encode(graph), request_id=f"w{count}")
                error = client.until(_finished)
                assert error["type"] != "result", (name, i, error)
                message = json.dumps(error)
                assert "read-only" in message and "WeightWrite" in message, (name, i, message[:400])
    fresh = LanguageModel(str(tiny_model_dir))._module
    hosted = _hosted_state(client)
    expected = dict(fresh.named_parameters()) | dict(fresh.named_buffers())
    assert hosted.keys() == expected.keys() and count == len(CASES) * 2 * (len(VIEWS) + 1)
    assert all(torch.equal(hosted[k], expected[k].detach()) for k in expected)
    client.close()
