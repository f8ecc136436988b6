"""The wire format: round trips, refusal of tampered bytes, values, no pickle, speed (printed only)."""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import math
import random
import re
import struct
import tokenize
from pathlib import Path

import pytest
import safetensors.torch
import torch

from nnsight_jupyter.errors import GraphError, OpNotAllowedError, WeightWriteError
from nnsight_jupyter.graph import (
    GRAPH_VERSION,
    Graph,
    Invoke,
    Node,
    Parameter,
    Ref,
    Run,
    decode,
    decode_values,
    encode,
    encode_values,
)
from nnsight_jupyter.graph.codec import graph_from_json, graph_to_json

ROOT = Path(__file__).resolve().parents[2]
GRAPH_SRC = ROOT / "nnsight_jupyter" / "graph"


# ============================================================================ helpers
def frame(doc, tensors=None, magic=b"NJG1") -> bytes:
    """The documented layout, written independently of the codec."""
    header = json.dumps(doc).encode("utf-8")
    return magic + struct.pack("<I", len(header)) + header + safetensors.torch.save(tensors or {})


def unframe(data: bytes):
    (length,) = struct.unpack_from("<I", data, 4)
    return json.loads(data[8:8 + length]), safetensors.torch.load(data[8 + length:])


def full_graph() -> Graph:
    """Every argument kind, several runs and invokes, kwargs, a parameter, awkward tensors."""
    torch.manual_seed(0)
    shared = torch.randn(3, 4)
    base = torch.arange(12.0).reshape(3, 4)
    tensors = {
        "zero_d": torch.tensor(2.5),
        "bool": torch.tensor([True, False, True]),
        "int64": torch.tensor([[1, -2], [3, 2**40]], dtype=torch.int64),
        "bf16": torch.randn(2, 3).to(torch.bfloat16),
        "f16": torch.tensor([1.0, 65504.0, float("inf"), -0.0], dtype=torch.float16),
        "empty": torch.zeros(0, 3),
        "transposed": torch.randn(4, 5).t(),                # not contiguous
        "grad": torch.randn(2, requires_grad=True),          # stored detached
        "row": base[1],                                      # a view into `base` (overlapping storage)
    }
    runs = [
        Run(0, "trace", [
            Invoke(0, ("The Eiffel Tower is in the city of",)),
            Invoke(1, (torch.tensor([[1, 2, 3]]),), {"attention_mask": torch.ones(1, 3, dtype=torch.int64)}),
        ]),
        Run(1, "generate", [Invoke(0, (), {}, all_rows=True), Invoke(1, (["a", "b"],))],
            {"max_new_tokens": 4, "do_sample": False, "temperature": 1.0}),
        Run(2, "trace", [Invoke(0, ("x",), {"past_key_values": Ref(4)})]),  # a value of run 0
    ]
    L = "notebook.ipynb:{}".format
    nodes = [
        Node(0, "module.output", module="model.layers.0", line=L(1)),
        Node(1, "getitem", (Ref(0), (slice(None, None, None), -1, Ellipsis, slice(1, Ref(0), 2))), line=L(2)),
        Node(2, "mul", (Ref(1), shared, 1.0, 1, True, None), line=L(3)),
        Node(3, "torch.add", (Ref(2), shared), {"alpha": 0.5}, line=L(4)),         # same tensor object again
        Node(4, "module.output", module="model.layers.1", call=1, invoke=1, line=L(5)),
        Node(5, "log", ("scalars", float("nan"), float("inf"), float("-inf"), -0.0, 1e-300, 2**70, "héllo ✓",
                        "", 0, False), line=L(6)),
        Node(6, "Tensor.to", (Ref(4),), {"dtype": torch.bfloat16, "device": torch.device("cpu")}, line=L(7)),
        Node(7, "Tensor.view", (Ref(4), torch.Size([2, 3])), line=L(8)),
        Node(8, "torch.stack", ([Ref(1), Ref(2)],), {"dim": 0}, line=L(9)),
        Node(9, "log", ({"a": 1, 2: [1.5, (), [], {}], "nested": ((((1,),),),)},), line=L(10)),
        Node(10, "log", tuple(tensors.values()), line=L(11)),
        Node(11, "log", (base, tensors["row"], torch.device("cuda:1"), torch.float16, torch.bool,
                         torch.Size([])), line=L(12)),
        Node(12, "module.param", ("lm_head", "weight"), line=L(13)),
        Node(13, "Tensor.t", (Ref(12),), line=L(14)),
        Node(14, "matmul", (Ref(1), Ref(13)), line=L(15)),
        Node(15, "torch.sum", (Ref(14),), line=L(16)),
        Node(16, "backward", (Ref(15),), line=L(17)),
        Node(17, "grad", (Ref(0),), backward=16, line=L(18)),
        Node(18, "save", (Ref(17),), backward=16, line=L(19)),
        Node(19, "module.output", module="lm_head", run=1, step=2, repeat=True, line=L(20)),
        Node(20, "Tensor.argmax", (Ref(19),), {"dim": -1}, run=1, step=2, repeat=True, invoke=1, line=L(21)),
        Node(21, "tracer.result", run=1, line=L(22)),
        Node(22, "module.output", module="", run=2, line=L(23)),            # the root module
        Node(23, "add", (Ref(22), Ref(2)), run=2, line=L(24)),              # a value of an earlier run
        Node(24, "save", (Ref(23),), run=2),                                 # no line
        Node(25, "setitem", (Ref(0), (slice(None), 0), 0.0), line=L(26)),    # in place on an activation
        Node(26, "Tensor.clone", (Ref(12),), line=L(27)),
        Node(27, "Tensor.zero_", (Ref(26),), line=L(28)),                   # in place on a clone: fine
        Node(28, "getattr", (Ref(0), "shape"), line=L(29)),
        Node(29, "save", (Ref(28),), line=L(30)),
    ]
    parameters = [Parameter("lora_a", torch.zeros(4, 2)), Parameter("scale", torch.tensor(1.0), False)]
    return Graph(runs=runs, nodes=nodes, model="smollm2-135m", parameters=parameters)


def small_graph(*extra: tuple) -> Graph:
    """A valid graph; `extra` nodes (op, args, kwargs, fields) are appended with the next ids."""
    nodes = [
        Node(0, "module.output", module="model.layers.0", line="cell.py:1"),
        Node(1, "getitem", (Ref(0), (slice(None), -1)), line="cell.py:2"),
        Node(2, "module.param", ("lm_head", "weight"), line="cell.py:3"),
        Node(3, "save", (Ref(1),), line="cell.py:4"),
    ]
    for op, args, kwargs, fields in extra:
        nodes.append(Node(len(nodes), op, args, kwargs, line=f"evil.py:{len(nodes)}", **fields))
    return Graph(runs=[Run(0, "trace", [Invoke(0, ("Hello",))])], nodes=nodes, model="m")


def refused(graph_or_bytes, error=GraphError) -> str:
    data = graph_or_bytes if isinstance(graph_or_bytes, bytes) else encode(graph_or_bytes)
    with pytest.raises(error) as info:
        decode(data)
    assert type(info.value) is error or error is GraphError and isinstance(info.value, GraphError)
    return str(info.value)


def tampered_doc(edit) -> bytes:
    doc, tensors = graph_to_json(small_graph())
    edit(doc)
    return frame(doc, tensors)


# ============================================================================ round trips
def test_round_trip_every_kind():
    graph = full_graph()
    data = encode(graph)
    back = decode(data)
    assert back == graph
    assert encode(back) == data                      # canonical: same bytes again
    assert data[:4] == b"NJG1"

    # Types survive exactly, not just values.
    log = back.nodes[5].args
    assert type(log[0]) is str and math.isnan(log[1]) and log[2] == math.inf and log[3] == -math.inf
    assert math.copysign(1.0, log[4]) == -1.0 and log[5] == 1e-300 and log[6] == 2**70
    assert type(log[9]) is int and type(log[10]) is bool
    mul = back.nodes[2].args
    assert type(mul[2]) is float and type(mul[3]) is int and type(mul[4]) is bool and mul[5] is None
    nested = back.nodes[9].args[0]
    assert list(nested) == ["a", 2, "nested"] and type(nested[2][1]) is tuple and type(nested[2][2]) is list
    assert nested["nested"] == ((((1,),),),)
    assert back.nodes[1].args[1][3] == slice(1, Ref(0), 2) and back.nodes[1].args[1][2] is Ellipsis
    assert back.nodes[6].kwargs == {"dtype": torch.bfloat16, "device": torch.device("cpu")}
    assert type(back.nodes[7].args[1]) is torch.Size and back.nodes[11].args[5] == torch.Size([])
    assert back.nodes[11].args[2] == torch.device("cuda:1")
    assert back.runs[1].invokes[0].all_rows and back.runs[1].options["temperature"] == 1.0
    assert back.runs[2].invokes[0].kwargs == {"past_key_values": Ref(4)}
    assert back.nodes[17].backward == 16 and back.nodes[19].repeat and back.nodes[19].step == 2
    assert back.nodes[22].module == "" and back.nodes[24].line == ""

    tensors = back.nodes[10].args
    assert [t.dtype for t in tensors] == [torch.float32, torch.bool, torch.int64, torch.bfloat16,
                                          torch.float16, torch.float32, torch.float32, torch.float32,
                                          torch.float32]
    assert tensors[0].shape == () and tensors[5].shape == (0, 3)
    assert not tensors[7].requires_grad
    assert back.nodes[11].args[1].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert back.parameters[0].name == "lora_a" and back.parameters[1].requires_grad is False


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def test_tensor_bits_survive():
    # Graph.__eq__ uses torch.equal (nan != nan): compare the bits of awkward floats directly.
    odd = [torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 5e-324], dtype=torch.float64),
           torch.tensor([float("nan"), -0.0, 1e-45], dtype=torch.float32),
           torch.tensor([float("nan"), -0.0, 6e-8], dtype=torch.float16),
           torch.tensor([float("nan"), -0.0, 1e-40], dtype=torch.bfloat16),
           torch.tensor(float("nan"))]
    graph = small_graph(("log", tuple(odd), {}, {}))
    back = decode(encode(graph)).nodes[4].args
    for a, b in zip(odd, back):
        assert a.dtype == b.dtype and a.shape == b.shape and _bits(a) == _bits(b)
    values = decode_values(encode_values({"odd": odd}))["odd"]
    assert all(_bits(a) == _bits(b) for a, b in zip(odd, values))


def test_tensors_stored_once_cpu_contiguous_detached():
    graph = full_graph()
    doc, tensors = graph_to_json(graph)
    # `shared` is used by nodes 2 and 3: one entry, referenced twice.
    name = doc["nodes"][2]["args"][1]["tensor"]
    assert doc["nodes"][3]["args"][1] == {"tensor": name}
    names = re.findall(r'"tensor": "(t[0-9]+)"', json.dumps(doc))
    assert set(names) == set(tensors) and len(names) == len(tensors) + 2   # `shared` and `row` twice
    for t in tensors.values():
        assert t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad
    back = decode(encode(graph))
    assert back.nodes[2].args[1] is back.nodes[3].args[1]


def test_documented_json_shape():
    doc, _ = graph_to_json(small_graph(("mul", (Ref(1), 2.0, 2), {}, {"invoke": 0})))
    assert doc["format"] == "nnsight-jupyter/graph" and doc["version"] == GRAPH_VERSION == 1
    assert set(doc) == {"format", "version", "model", "runs", "nodes", "parameters"}
    assert doc["runs"] == [{"id": 0, "kind": "trace", "options": {},
                            "invokes": [{"id": 0, "args": ["Hello"], "kwargs": {}, "all_rows": False}]}]
    assert doc["nodes"][1] == {"id": 1, "op": "getitem", "line": "cell.py:2",
                               "args": [{"ref": 0}, {"tuple": [{"slice": [None, None, None]}, -1]}]}
    text = json.dumps(doc["nodes"][4]["args"])
    assert text == '[{"ref": 1}, 2.0, 2]'           # 2.0 stays a float, 2 an int
    # Fields at their default are left out; written out in full, they decode the same.
    full = dict(doc["nodes"][0], args=[], kwargs={}, run=0, invoke=0, call=0, step=0, repeat=False,
                backward=None)
    doc["nodes"][0] = full
    assert graph_from_json(doc, {}) == small_graph(("mul", (Ref(1), 2.0, 2), {}, {}))


def test_empty_graph_and_layout():
    data = encode(Graph())
    (length,) = struct.unpack_from("<I", data, 4)
    assert data[:4] == b"NJG1" and json.loads(data[8:8 + length])["nodes"] == []
    assert safetensors.torch.load(data[8 + length:]) == {}
    assert decode(data) == Graph()
    # A graph written by hand with the documented layout decodes.
    doc, tensors = graph_to_json(full_graph())
    assert decode(frame(doc, tensors)) == full_graph()


def test_values_round_trip():
    values = {
        "h": torch.randn(2, 3),
        "cache": ((torch.ones(1, 2), torch.zeros(1, 2, dtype=torch.bfloat16)), [torch.tensor(3)]),
        "stats": {"p": 0.77, "rank": 1, "tokens": [" Paris", " Rome"], 5: None},
        "shape": torch.Size([2, 3]),
        "nan": float("nan"),
        "none": None,
        "text": "done",
        "flag": True,
    }
    data = encode_values(values)
    assert data[:4] == b"NJV1"
    back = decode_values(data)
    assert list(back) == list(values)
    assert torch.equal(back["h"], values["h"]) and back["cache"][0][1].dtype == torch.bfloat16
    assert type(back["cache"]) is tuple and type(back["cache"][1]) is list
    assert back["stats"] == values["stats"] and type(back["shape"]) is torch.Size
    assert math.isnan(back["nan"]) and back["none"] is None and back["text"] == "done" and back["flag"] is True
    assert encode_values(back) == data
    assert decode_values(encode_values({})) == {}


def test_values_refuse_refs_and_graphs():
    with pytest.raises(GraphError, match="Ref"):
        encode_values({"x": Ref(1)})
    with pytest.raises(GraphError, match="not a set of encoded values.*this is an encoded graph"):
        decode_values(encode(small_graph()))
    with pytest.raises(GraphError, match="not an encoded graph.*this is a set of encoded values"):
        decode(encode_values({"x": 1}))
    header = json.dumps({"format": "nnsight-jupyter/values", "version": 1, "values": {"x": {"ref": 0}}}).encode()
    data = b"NJV1" + struct.pack("<I", len(header)) + header + safetensors.torch.save({})
    with pytest.raises(GraphError, match="reference"):
        decode_values(data)


# ============================================================================ what cannot be encoded
class Opaque:
    pass


@pytest.mark.parametrize("value, name", [
    (print, "builtin_function_or_method"),
    (lambda x: x, "function"),
    (torch.nn.Linear(2, 2), "torch.nn.modules.linear.Linear"),
    (Opaque(), "Opaque"),
    ({1, 2}, "set"),
    (b"bytes", "bytes"),
    (torch.tensor([1 + 2j], dtype=torch.complex128), "complex128"),
])
def test_unencodable_values_named(value, name):
    graph = small_graph(("log", (value,), {}, {}))
    with pytest.raises(GraphError) as info:
        encode(graph)
    message = str(info.value)
    assert name in message and "%4" in message and "evil.py:4" in message


def test_unencodable_dict_key_and_depth():
    with pytest.raises(GraphError, match="dict key"):
        encode(small_graph(("log", ({(1, 2): 3},), {}, {})))
    deep: object = 1
    for _ in range(33):
        deep = [deep]
    with pytest.raises(GraphError, match="32"):
        encode(small_graph(("log", (deep,), {}, {})))
    ok: object = 1
    for _ in range(32):
        ok = [ok]
    assert decode(encode(small_graph(("log", (ok,), {}, {})))).nodes[4].args == (ok,)


# ============================================================================ refused on decode
@pytest.mark.parametrize("op", ["os.system", "builtins.__import__", "import", "__import__", "torch.load",
                                "torch.save", "eval", "exec", "open", "Tensor.__setstate__",
                                "Tensor.requires_grad_", "Tensor.set_", "torch.manual_seed"])
def test_op_not_allowed(op):
    message = refused(small_graph((op, ("x",), {}, {})), OpNotAllowedError)
    assert op in message and "%4" in message and "evil.py:4" in message and "allow-list" in message


@pytest.mark.parametrize("name", ["__class__", "__dict__", "_modules", "__globals__"])
def test_private_getattr_refused(name):
    message = refused(small_graph(("getattr", (Ref(0), name), {}, {})))
    assert name in message and "%4" in message and "'getattr'" in message and "evil.py:4" in message


def test_getattr_name_must_be_literal():
    assert "literal str" in refused(small_graph(("getattr", (Ref(0), Ref(1)), {}, {})))


@pytest.mark.parametrize("path", ["model.__class__", "model._modules", "model..x", ".model", "model.",
                                  "model.layers[0]", "model/x", "__init__", "a.b-c"])
def test_bad_module_path(path):
    message = refused(small_graph(("module.output", (), {}, {"module": path})))
    assert path in message and "%4" in message and "module path" in message


@pytest.mark.parametrize("path, name", [("lm_head", "_private"), ("lm_head", "__dict__"), ("", "weight._x"),
                                        ("lm_head", "__class__.__init__"), ("lm_head.__dict__", "weight"),
                                        ("_modules", "weight")])
def test_bad_param_name(path, name):
    message = refused(small_graph(("module.param", (path, name), {}, {})))
    assert (name if name.startswith("_") or "." in name else path) in message and "%4" in message


def test_module_call_path_checked():
    assert "model.__class__" in refused(small_graph(("module.call", ("model.__class__", Ref(1)), {}, {})))
    assert "module path" in refused(small_graph(("module.call", (Ref(1),), {}, {"module": "lm_head"})))
    decode(encode(small_graph(("module.call", ("lm_head", Ref(1)), {}, {}))))
    decode(encode(small_graph(("module.call", ("", Ref(1)), {"use_cache": False}, {}))))   # the root


@pytest.mark.parametrize("extra", [
    [("setitem", (Ref(2), 0, 1.0), {}, {})],
    [("Tensor.zero_", (Ref(2),), {}, {})],
    [("iadd", (Ref(2), 1.0), {}, {})],
    [("Tensor.copy_", (Ref(2), Ref(1)), {}, {})],
    [("getitem", (Ref(2), slice(0, 1)), {}, {}), ("setitem", (Ref(4), 0, 0.0), {}, {})],
    [("Tensor.view", (Ref(2), -1), {}, {}), ("getitem", (Ref(4), 0), {}, {}), ("Tensor.add_", (Ref(5), 1), {}, {})],
    [("getattr", (Ref(2), "T"), {}, {}), ("Tensor.mul_", (Ref(4), 0), {}, {})],
    [("getattr", (Ref(2), "data"), {}, {}), ("Tensor.fill_", (Ref(4), 0), {}, {})],
    [("Tensor.detach", (Ref(2),), {}, {}), ("Tensor.transpose", (Ref(4), 0, 1), {}, {}),
     ("Tensor.reshape", (Ref(5), -1), {}, {}), ("imul", (Ref(6), 2), {}, {})],
    [("Tensor.split", (Ref(2), 1), {}, {}), ("getitem", (Ref(4), 0), {}, {}), ("Tensor.neg_", (Ref(5),), {}, {})],
])
def test_weight_writes_refused(extra):
    message = refused(small_graph(*extra), WeightWriteError)
    last = len(extra) + 3
    assert "read-only" in message and "clone()" in message and f"%{last}" in message
    assert f"evil.py:{last}" in message and "lm_head.weight" in message


def test_in_place_on_activations_and_clones_allowed():
    graph = small_graph(("setitem", (Ref(1), 0, 1.0), {}, {}), ("Tensor.clone", (Ref(2),), {}, {}),
                        ("Tensor.zero_", (Ref(5),), {}, {}), ("Tensor.float", (Ref(2),), {}, {}),
                        ("add", (Ref(7), 1), {}, {}), ("iadd", (Ref(8), 1), {}, {}))
    assert decode(encode(graph)) == graph


@pytest.mark.parametrize("ref, words", [(Ref(5), "later"), (Ref(4), "later"), (Ref(99), "later"),
                                        (Ref(-1), "node id")])
def test_bad_refs(ref, words):
    message = refused(small_graph(("add", (Ref(1), [ref]), {}, {})))
    assert words in message and "%4" in message


def test_ref_to_missing_node():
    graph = small_graph(("add", (Ref(1), 1), {}, {}))
    del graph.nodes[1]
    message = refused(graph)
    assert "does not exist" in message or "later" in message


def test_wrong_version():
    graph = small_graph()
    graph.version = 2
    message = refused(graph)
    assert "version 2" in message and "1" in message and "Upgrade" in message
    message = refused(tampered_doc(lambda d: d.update(version=2, newfield=1)))  # version checked first
    assert "version 2" in message


def test_out_kwarg_refused():
    message = refused(small_graph(("torch.add", (Ref(1), 1), {"out": Ref(1)}, {})))
    assert "keyword 'out'" in message and "%4" in message and "torch.add" in message
    message = refused(small_graph(("Tensor.add", (Ref(1), 1), {"out": Ref(1)}, {})))
    assert "keyword 'out'" in message and "writes into a given tensor" in message


@pytest.mark.parametrize("arg, words", [
    ({"pickle": "gASV"}, "unknown argument tag 'pickle'"),
    ({"ref": 0, "tensor": "t0"}, "exactly one key"),
    ([1, 2], "bare JSON array"),
    ({"float": "1.5"}, "float"),
    ({"dtype": "os"}, "not a torch dtype"),
    ({"dtype": "Tensor"}, "not a torch dtype"),
    ({"device": "nonsense:x"}, "torch device"),
    ({"size": [-1]}, "size"),
    ({"slice": [1, 2]}, "slice"),
    ({"dict": [[[1], 2]]}, "dict key"),
    ({"ref": "0"}, "node id"),
    ({"ref": True}, "node id"),
    ({"ellipsis": 1}, "ellipsis"),
    ({"tensor": "t9"}, "'t9' is not in the safetensors body"),
])
def test_bad_argument_encodings(arg, words):
    def edit(doc):
        doc["nodes"][3]["args"] = [arg]
    message = refused(tampered_doc(edit))
    assert words in message and "%3" in message and "cell.py:4" in message


def test_tensor_missing_from_body():
    graph = small_graph(("mul", (Ref(1), torch.ones(2)), {}, {}))
    doc, _ = graph_to_json(graph)
    message = refused(frame(doc, {}))
    assert "'t0' is not in the safetensors body" in message


def test_deep_nesting_refused_on_decode():
    arg: object = 1
    for _ in range(40):
        arg = {"list": [arg]}

    def edit(doc):
        doc["nodes"][3]["args"] = [arg]
    assert "32" in refused(tampered_doc(edit))
    # Deeper than Python's own JSON parser goes: still a GraphError.
    deep = b'{"format":"nnsight-jupyter/graph","version":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert "JSON" in refused(b"NJG1" + struct.pack("<I", len(deep)) + deep + safetensors.torch.save({}))


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["nodes"][2].update(id=1), "strictly increasing"),
    (lambda d: d["nodes"][2].update(id=0), "strictly increasing"),
    (lambda d: d["nodes"][2].update(run=3), "run 3 does not exist"),
    (lambda d: d["nodes"][2].update(invoke=2), "invoke 2 does not exist"),
    (lambda d: d["nodes"][2].update(backward=1), "backward"),
    (lambda d: d["nodes"][2].update(backward=7), "backward"),
    (lambda d: d["nodes"][2].update(run="0"), "run must be an int"),
    (lambda d: d["nodes"][2].update(call=-1), "call must be an int >= 0"),
    (lambda d: d["nodes"][2].update(repeat=1), "repeat must be a bool"),
    (lambda d: d["nodes"][2].update(line=5), "line must be a str"),
    (lambda d: d["nodes"][2].update(module=["x"]), "module path must be a str"),
    (lambda d: d["nodes"][2].update(code="import os"), "unknown field"),
    (lambda d: d["nodes"][2].pop("op"), "lacks field"),
    (lambda d: d["nodes"][2].update(kwargs=[1]), "kwargs must be a JSON object"),
    (lambda d: d["nodes"][2].update(args={"tuple": []}), "args must be a JSON array"),
    (lambda d: d["nodes"].append("node"), "must be a JSON object"),
    (lambda d: d.update(format="other"), "not an intervention graph"),
    (lambda d: d.update(model=3), "model must be a string"),
    (lambda d: d.update(extra=1), "unknown field"),
    (lambda d: d.pop("parameters"), "lacks field"),
    (lambda d: d["runs"][0].update(kind="train"), "kind 'train'"),
    (lambda d: d["runs"].append(dict(d["runs"][0])), "appears twice"),
    (lambda d: d["runs"][0]["invokes"][0].update(all_rows=True), "all_rows invoke takes no input"),
    (lambda d: d["runs"][0]["invokes"][0].update(args=[{"ref": 0}]), "earlier runs"),
    (lambda d: d["parameters"].append({"name": "__x", "value": 1, "requires_grad": True}), "parameter name"),
    (lambda d: d["parameters"].append({"name": "x", "value": 1, "requires_grad": True}), "must be a tensor"),
])
def test_malformed_documents(edit, words):
    assert words in refused(tampered_doc(edit))


def test_node_limit():
    def edit(doc):
        doc["nodes"] = [{"id": i, "op": "tracer.input"} for i in range(200_001)]
    assert "200000" in refused(tampered_doc(edit))


@pytest.mark.parametrize("data, words", [
    (b"", "truncated"),
    (b"NJG", "truncated"),
    (b"NJG1\x10\x00\x00", "truncated"),
    (b"PK\x03\x04" + b"\x00" * 20, "magic"),
    (b"\x80\x04\x95" + b"\x00" * 20, "magic"),                       # a pickle
    (b"NJG1" + struct.pack("<I", 1000) + b"{}", "claims 1000 bytes"),
    (b"NJG1" + struct.pack("<I", 0xFFFFFFFF) + b"{}", "claims"),
    (b"NJG1" + struct.pack("<I", 5) + b"{nope" + safetensors.torch.save({}), "not valid JSON"),
    (b"NJG1" + struct.pack("<I", 2) + b"\xff\xfe" + safetensors.torch.save({}), "not valid JSON"),
    (b"NJG1" + struct.pack("<I", 3) + b"NaN" + safetensors.torch.save({}), "not valid JSON"),
    (b"NJG1" + struct.pack("<I", 2) + b"[]" + safetensors.torch.save({}), "JSON object"),
])
def test_bad_framing(data, words):
    assert words in refused(data)


def test_every_truncation_is_a_graph_error():
    data = encode(small_graph(("mul", (Ref(1), torch.ones(3)), {}, {})))
    for n in range(len(data)):
        with pytest.raises(GraphError):
            decode(data[:n])
    with pytest.raises(GraphError, match="safetensors"):
        decode(data + b"x")
    assert decode(bytearray(data)) == decode(memoryview(data))


def test_random_corruption_only_raises_typed_errors():
    data = encode(full_graph())
    rng = random.Random(1234)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(400):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        try:
            decode(bytes(corrupt))
            outcomes["ok"] += 1
        except (GraphError, WeightWriteError):
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100


def test_invalid_graphs_not_decoded_even_if_encodable():
    # encode() does not validate (the tracer does, as it builds); decode always does.
    graph = small_graph(("os.system", ("rm -rf /",), {}, {}))
    assert isinstance(encode(graph), bytes)
    with pytest.raises(OpNotAllowedError):
        decode(encode(graph))


# ============================================================================ no pickle, no imports
def _code_tokens(path: Path) -> list[str]:
    """The source's tokens without comments and strings (docstrings may name what is forbidden)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [t.string for t in tokens if t.type in (tokenize.NAME, tokenize.OP)]


def test_no_pickle_anywhere_in_graph_package():
    files = sorted(GRAPH_SRC.glob("*.py"))
    assert {f.name for f in files} >= {"codec.py", "validate.py", "schema.py", "nodes.py", "ops.py"}
    for path in files:
        tokens = _code_tokens(path)
        code = " ".join(tokens)
        for banned in ("pickle", "cPickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"):
            assert banned not in tokens, f"{path.name} uses {banned}"
        assert "torch . load" not in code and "torch . save" not in code, f"{path.name} uses torch.load/save"
        assert "eval (" not in code and "exec (" not in code and "__import__" not in tokens


def test_graph_package_imports_only_errors():
    for path in sorted(GRAPH_SRC.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                assert node.module == "errors", f"{path.name} imports ..{node.module}"
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("nnsight_jupyter") or node.module in (
                    "nnsight_jupyter.errors",) or node.module.startswith("nnsight_jupyter.graph"), path.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("nnsight_jupyter"), path.name


# ============================================================================ speed (printed, not asserted)
def _benchmark_module():
    spec = importlib.util.spec_from_file_location("graph_codec_bench", ROOT / "benchmarks" / "graph_codec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_1000_nodes_printed():
    bench = _benchmark_module()
    graph = bench.build_graph(1000)
    assert len(graph.nodes) == 1000
    data = encode(graph)
    assert decode(data) == graph and encode(decode(data)) == data
    figures = bench.measure(1000, repeat=7)
    print(f"\ngraph codec, 1000 nodes, {figures['bytes']} bytes: encode {figures['encode_ms']:.2f} ms, "
          f"decode {figures['decode_ms']:.2f} ms (median)")
    assert figures["nodes"] == 1000 and figures["encode_ms"] > 0 and figures["decode_ms"] > 0


def test_structural_fuzz_only_raises_typed_errors():
    """Every value anywhere in a document replaced by odd JSON: decoded, or refused with our errors."""
    doc, tensors = graph_to_json(full_graph())
    odd = [None, -1, 1.5, "x", "__class__", [], {}, {"ref": 0}, {"tensor": "t0"}, True, 2**80, [[1]]]

    def places(value, path=()):
        yield path
        if isinstance(value, dict):
            for k, v in value.items():
                yield from places(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from places(v, path + (i,))

    paths = [p for p in places(doc) if p]
    assert len(paths) > 300
    body = safetensors.torch.save(tensors)
    text = json.dumps(doc)
    outcomes = {"ok": 0, "refused": 0}
    for path in paths:
        for value in odd:
            mutated = json.loads(text)
            target = mutated
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            header = json.dumps(mutated).encode()
            try:
                decode(b"NJG1" + struct.pack("<I", len(header)) + header + body)
                outcomes["ok"] += 1
            except (GraphError, WeightWriteError):
                outcomes["refused"] += 1
    assert outcomes["refused"] > outcomes["ok"] > 0


def test_decode_leaves_the_garbage_collector_as_it_was():
    import gc

    from nnsight_jupyter.errors import GraphError
    from nnsight_jupyter.graph import Graph, Run, decode, encode

    data = encode(Graph(runs=[Run(0)]))
    assert gc.isenabled()
    decode(data)
    assert gc.isenabled()
    with pytest.raises(GraphError):
        decode(b"NJG1broken")
    assert gc.isenabled()
    gc.disable()
    try:
        decode(data)
        assert not gc.isenabled()
    finally:
        gc.enable()
