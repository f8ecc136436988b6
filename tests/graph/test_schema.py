"""The JSON Schema of the graph document: up to date, and in agreement with what encode writes."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nnsight_jupyter.errors import GraphError
from nnsight_jupyter.graph import Node, Ref, decode
from nnsight_jupyter.graph.codec import check_document, graph_from_json, graph_to_json
from nnsight_jupyter.graph.schema import ARG_SCHEMA, GraphDoc, schema_text

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "nnsight_jupyter" / "graph" / "schema.json"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_docs():
    codec_tests = _load("graph_codec_tests", Path(__file__).with_name("test_codec.py"))
    bench = _load("graph_codec_bench", ROOT / "benchmarks" / "graph_codec.py")
    graphs = [codec_tests.full_graph(), codec_tests.small_graph(), bench.build_graph(300)]
    return [graph_to_json(g)[0] for g in graphs]


def test_schema_file_is_up_to_date():
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "schema.json is stale: python -m nnsight_jupyter.graph.schema > nnsight_jupyter/graph/schema.json")


def test_schema_module_prints_it():
    out = subprocess.run([sys.executable, "-m", "nnsight_jupyter.graph.schema"], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    assert out.stdout == SCHEMA_FILE.read_text() and out.stderr == ""


def test_schema_describes_the_document():
    schema = json.loads(SCHEMA_FILE.read_text())
    assert set(schema["properties"]) == {"format", "version", "model", "runs", "nodes", "parameters"}
    defs = schema["$defs"]
    assert set(defs) == {"Arg", "GraphDoc", "InvokeDoc", "NodeDoc", "ParameterDoc", "RunDoc"} - {"GraphDoc"}
    assert set(defs["NodeDoc"]["properties"]) == set(Node._FIELDS)
    assert defs["NodeDoc"]["required"] == ["id", "op"]
    assert defs["NodeDoc"]["properties"]["args"]["items"] == {"$ref": "#/$defs/Arg"}
    tags = {alt["title"] for alt in defs["Arg"]["anyOf"] if alt.get("type") == "object"}
    assert tags == {"ref", "tensor", "float", "list", "tuple", "dict", "slice", "ellipsis", "dtype", "device",
                    "size"}
    assert defs["Arg"] == json.loads(json.dumps(ARG_SCHEMA))
    # Every $ref resolves.
    refs = set()

    def walk(value):
        if isinstance(value, dict):
            if "$ref" in value:
                refs.add(value["$ref"])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
    walk(schema)
    assert refs and all(r.startswith("#/$defs/") and r.split("/")[-1] in defs for r in refs)


def test_encoded_documents_validate_with_pydantic():
    for doc in example_docs():
        check_document(doc)
        GraphDoc.model_validate(doc)


def test_encoded_documents_validate_with_jsonschema():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for doc in example_docs():
        validator.validate(json.loads(json.dumps(doc)))
    bad = example_docs()[1]
    bad["nodes"][1]["args"] = [{"pickle": "x"}]
    assert not validator.is_valid(bad)


@pytest.mark.parametrize("edit", [
    lambda d: d["nodes"][0].update(run="0"),
    lambda d: d["nodes"][0].update(run=-1),
    lambda d: d["nodes"][0].update(repeat=0),
    lambda d: d["nodes"][0].update(extra=1),
    lambda d: d["nodes"][0].pop("op"),
    lambda d: d["nodes"][0].update(args={"list": []}),
    lambda d: d["nodes"][0].update(kwargs=[]),
    lambda d: d["nodes"][0].update(module=1),
    lambda d: d["nodes"][0].update(backward="1"),
    lambda d: d.update(extra=1),
    lambda d: d.update(model=1),
    lambda d: d.pop("runs"),
    lambda d: d["runs"][0].update(kind="train"),
    lambda d: d["runs"][0]["invokes"][0].update(all_rows="no"),
    lambda d: d["runs"][0]["invokes"][0].pop("kwargs"),
    lambda d: d["parameters"].append({"name": "p", "value": 1}),
])
def test_pydantic_and_decoder_agree_on_bad_envelopes(edit):
    doc = example_docs()[1]
    edit(doc)
    with pytest.raises(GraphError):
        check_document(copy.deepcopy(doc))
    with pytest.raises(GraphError):
        graph_from_json(doc, {})
    try:
        import jsonschema
    except ImportError:
        return
    assert not jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).is_valid(doc)


def test_pydantic_message_names_the_node():
    doc = example_docs()[1]
    doc["nodes"][1]["run"] = "0"
    with pytest.raises(GraphError, match=r"node %1 \(op 'getitem'.*run"):
        check_document(doc)


def test_version_checked_before_fields():
    doc = example_docs()[1]
    doc.update(version=2, future_field=[])
    with pytest.raises(GraphError, match="version 2"):
        check_document(doc)


def test_documents_decode_after_schema_check():
    codec_tests = _load("graph_codec_tests", Path(__file__).with_name("test_codec.py"))
    graph = codec_tests.small_graph(("add", (Ref(1), 1.5), {}, {}))
    doc, tensors = graph_to_json(graph)
    check_document(doc)
    assert graph_from_json(doc, tensors) == graph
    assert decode(codec_tests.frame(doc, tensors)) == graph
