"""The graph document: a `Graph` as the JSON header of the wire format, and back.

The document (``docs/graph-format.md``; JSON Schema in ``schema.json``)::

    {"format": "nnsight-jupyter/graph", "version": 1, "model": str | null,
     "runs": [{"id", "kind": "trace" | "generate",
               "invokes": [{"id", "args": [Arg], "kwargs": {str: Arg}, "all_rows": bool}],
               "options": {str: Arg}}],
     "nodes": [{"id", "op", "args": [Arg], "kwargs": {str: Arg}, "run", "invoke",
                "module": str | null, "call", "step", "repeat", "backward": int | null, "line": str}],
     "parameters": [{"name", "value": Arg, "requires_grad": bool}]}

A node field other than id and op may be left out when it holds its default (`NODE_DEFAULTS`);
`graph_to_json` leaves out every such field, so its output is canonical (decode then encode gives
the same bytes) and about 40% smaller, which is most of what makes it fast. Arguments are
`graph.arguments`; their tensors are attached beside the document (`graph.frame.Attachments`).
`graph_from_json` checks the document by hand as it decodes (the checks `schema.GraphDoc`
describes, faster) and validates each node as soon as it is made (`graph.validate`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import GraphError
from .arguments import JSON_SCALARS, PLAIN, BadArg, decode_dict, decode_list, decoder, encode_kwargs, encoder, json_type
from .frame import Attachments
from .nodes import GRAPH_VERSION, Graph, Invoke, Node, Parameter, Run
from .validate import MAX_NODES, node_error
from .validate import begin as validate_begin
from .validate import finish as validate_finish

__all__ = ["FORMAT", "NODE_DEFAULTS", "graph_to_json", "graph_from_json", "check_document"]

FORMAT = "nnsight-jupyter/graph"

#: Node fields that may be left out of the JSON, with the value they then have. `encode` leaves
#: out every field at its default (so its output is canonical); `decode` accepts them either way.
NODE_DEFAULTS: dict[str, Any] = {"args": [], "kwargs": {}, "run": 0, "invoke": 0, "module": None, "call": 0,
                                 "step": 0, "repeat": False, "backward": None, "line": ""}
_NODE_KEYS = frozenset({"id", "op", *NODE_DEFAULTS})
# graph_from_json fills Node's slots one by one; a new Node field must be added there (and here).
if set(Node._FIELDS) != _NODE_KEYS:
    raise ImportError("nnsight_jupyter.graph.document is out of date with graph.nodes.Node's fields")


def graph_to_json(graph: Graph) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON document of `graph` and the tensors it names (CPU, contiguous, detached).

    Raises GraphError naming the node (or run, invoke, parameter) whose argument cannot be encoded.
    Does not validate the graph: `decode` (and the tracer, as it builds) does that.
    """
    attachments = Attachments()
    arg = encoder(attachments.add)
    plain = PLAIN
    runs = []
    for run in graph.runs:
        try:
            invokes = [{"id": inv.id, "args": [arg(a) for a in inv.args],
                        "kwargs": encode_kwargs(arg, inv.kwargs), "all_rows": inv.all_rows}
                       for inv in run.invokes]
            runs.append({"id": run.id, "kind": run.kind, "invokes": invokes,
                         "options": encode_kwargs(arg, run.options)})
        except BadArg as e:
            raise GraphError(f"run {run.id}: cannot encode an input or option: {e}") from None
    nodes = []
    append = nodes.append
    for node in graph.nodes:
        # Fields at their default are left out (see NODE_DEFAULTS).
        try:
            n = {"id": node.id, "op": node.op}
            if node.args:
                out = []
                for a in node.args:
                    out.append(a if type(a) in plain else arg(a))
                n["args"] = out
            if node.kwargs:
                n["kwargs"] = encode_kwargs(arg, node.kwargs)
        except BadArg as e:
            raise node_error(node, f"cannot encode its arguments: {e}") from None
        # (A falsy value is the default; validate() on the other side checks the types.)
        if node.run:
            n["run"] = node.run
        if node.invoke:
            n["invoke"] = node.invoke
        if node.module is not None:
            n["module"] = node.module
        if node.call:
            n["call"] = node.call
        if node.step:
            n["step"] = node.step
        if node.repeat:
            n["repeat"] = node.repeat
        if node.backward is not None:
            n["backward"] = node.backward
        if node.line:
            n["line"] = node.line
        append(n)
    parameters = []
    for p in graph.parameters:
        try:
            parameters.append({"name": p.name, "value": arg(p.value), "requires_grad": p.requires_grad})
        except BadArg as e:
            raise GraphError(f"parameter {p.name!r}: cannot encode its value: {e}") from None
    doc = {"format": FORMAT, "version": graph.version, "model": graph.model, "runs": runs,
           "nodes": nodes, "parameters": parameters}
    return doc, attachments.tensors


_GRAPH_KEYS = frozenset({"format", "version", "model", "runs", "nodes", "parameters"})
_RUN_KEYS = frozenset({"id", "kind", "invokes", "options"})
_INVOKE_KEYS = frozenset({"id", "args", "kwargs", "all_rows"})
_PARAMETER_KEYS = frozenset({"name", "value", "requires_grad"})


def _check_version(doc: Any) -> None:
    """Format and version first, so that a document of another version says so (not "bad field")."""
    if type(doc) is not dict:
        raise GraphError(f"the graph header must be a JSON object, not {json_type(doc)}")
    if doc.get("format") != FORMAT:
        raise GraphError(f"not an intervention graph: format {doc.get('format')!r:.80}, expected {FORMAT!r}")
    version = doc.get("version")
    if version != GRAPH_VERSION or type(version) is not int:
        raise GraphError(
            f"graph format version {version!r:.40} is not supported: this nnsight_jupyter reads version "
            f"{GRAPH_VERSION}. Upgrade nnsight_jupyter on the side that is older (client or host) so "
            "both speak the same version."
        )


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise GraphError(f"malformed graph document: {message}")


def _check_keys(obj: Any, allowed: frozenset, required: frozenset, what: str) -> None:
    _expect(type(obj) is dict, f"{what} must be a JSON object, not {json_type(obj)}")
    if not allowed.issuperset(obj):
        raise GraphError(f"malformed graph document: {what} has unknown field(s) "
                         f"{sorted(k for k in obj if k not in allowed)!r:.120}")
    if not required.issubset(obj):
        raise GraphError(f"malformed graph document: {what} lacks field(s) {sorted(required.difference(obj))!r}")


def check_document(doc: Any) -> None:
    """Check a graph document against the JSON Schema with pydantic (`schema.GraphDoc`).

    `graph_from_json` does the same checks by hand, faster, as it decodes; this is the reference.
    """
    _check_version(doc)
    from .schema import GraphDoc  # not at import time: `python -m nnsight_jupyter.graph.schema` runs it

    try:
        GraphDoc.model_validate(doc)
    except Exception as e:  # noqa: BLE001 - pydantic.ValidationError
        raise GraphError(f"malformed graph document: {_describe_validation_error(e, doc)}") from None


def _describe_validation_error(error: Any, doc: dict) -> str:
    errors = getattr(error, "errors", None)
    if errors is None:
        return str(error)
    parts = []
    items = errors(include_url=False)
    for item in items[:3]:
        loc = item.get("loc", ())
        where = ".".join(str(x) for x in loc)
        if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
            try:
                node = doc["nodes"][loc[1]]
                where = (f"node %{node.get('id')} (op {node.get('op')!r}, {node.get('line') or 'unknown line'})"
                         f" field {'.'.join(str(x) for x in loc[2:])}")
            except (AttributeError, IndexError, KeyError, TypeError):
                pass
        parts.append(f"{where}: {item.get('msg')}")
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return "; ".join(parts) + more


def graph_from_json(doc: dict, tensors: dict[str, torch.Tensor]) -> Graph:
    """The Graph described by the JSON document `doc` and its `tensors`; checked in full.

    The document is checked against the schema (the checks `schema.GraphDoc` describes, done by
    hand here for speed), its arguments decoded, and the graph validated (`graph.validate`).
    Raises GraphError (or OpNotAllowedError / WeightWriteError) naming what is wrong and, where
    it is about one node, the node id, its op and its user line.
    """
    if not isinstance(tensors, dict):
        raise GraphError(f"tensors must be a dict of name -> tensor, not {type(tensors).__qualname__}")
    _check_version(doc)
    _check_keys(doc, _GRAPH_KEYS, _GRAPH_KEYS, "the graph")
    model, doc_runs, doc_nodes, doc_parameters = doc["model"], doc["runs"], doc["nodes"], doc["parameters"]
    _expect(model is None or type(model) is str, "model must be a string or null")
    _expect(type(doc_runs) is list, "runs must be an array")
    _expect(type(doc_nodes) is list, "nodes must be an array")
    _expect(type(doc_parameters) is list, "parameters must be an array")
    if len(doc_nodes) > MAX_NODES:
        raise GraphError(f"the graph has {len(doc_nodes)} nodes, more than the limit of {MAX_NODES}")
    arg = decoder(tensors)

    runs = []
    for i, r in enumerate(doc_runs):
        _check_keys(r, _RUN_KEYS, _RUN_KEYS, f"runs[{i}]")
        _expect(type(r["invokes"]) is list, f"runs[{i}].invokes must be an array")
        _expect(type(r["kind"]) is str, f"runs[{i}].kind must be a string")
        invokes = []
        try:
            for j, v in enumerate(r["invokes"]):
                _check_keys(v, _INVOKE_KEYS, _INVOKE_KEYS, f"runs[{i}].invokes[{j}]")
                invokes.append(Invoke(v["id"], decode_list(arg, v["args"], "args"),
                                      decode_dict(arg, v["kwargs"], "kwargs"), v["all_rows"]))
            runs.append(Run(r["id"], r["kind"], invokes, decode_dict(arg, r["options"], "options")))
        except BadArg as e:
            raise GraphError(f"run {r['id']!r:.40}: bad input or option: {e}") from None

    parameters = []
    for i, p in enumerate(doc_parameters):
        _check_keys(p, _PARAMETER_KEYS, _PARAMETER_KEYS, f"parameters[{i}]")
        try:
            parameters.append(Parameter(p["name"], arg(p["value"]), p["requires_grad"]))
        except BadArg as e:
            raise GraphError(f"parameter {p['name']!r:.80}: bad value: {e}") from None

    # validate(graph), with each node checked as soon as it is decoded (one pass, warm caches).
    nodes: list[Node] = []
    graph = Graph(runs=runs, nodes=nodes, model=model, version=doc["version"], parameters=parameters)
    checker = validate_begin(graph)
    add = checker.add
    append = nodes.append
    new = Node.__new__  # fills the slots directly: 40% faster than Node(...) with keywords
    scalars = JSON_SCALARS
    for n in doc_nodes:
        if type(n) is not dict or "id" not in n or "op" not in n or not _NODE_KEYS.issuperset(n):
            _check_keys(n, _NODE_KEYS, frozenset({"id", "op"}), f"nodes[{len(nodes)}]")
        get = n.get
        try:
            args = get("args")
            if type(args) is list:
                decoded = []
                for a in args:
                    decoded.append(a if type(a) in scalars else arg(a))
                args = tuple(decoded)
            else:
                args = decode_list(arg, args, "args")
            kwargs = get("kwargs")
            kwargs = decode_dict(arg, kwargs, "kwargs") if kwargs is not None else {}
        except BadArg as e:
            raise node_error(_Label(n), f"bad argument: {e}") from None
        node = new(Node)
        node.id = n["id"]
        node.op = n["op"]
        node.args = args
        node.kwargs = kwargs
        node.run = get("run", 0)
        node.invoke = get("invoke", 0)
        node.module = get("module")
        node.call = get("call", 0)
        node.step = get("step", 0)
        node.repeat = get("repeat", False)
        node.backward = get("backward")
        node.line = get("line", "")
        node.refs = None
        add(node)
        append(node)
    validate_finish(graph, checker)
    return graph


class _Label:
    """id / op / line of a node document, for messages (whatever their types)."""

    __slots__ = ("id", "op", "line")

    def __init__(self, n: dict):
        self.id, self.op = n.get("id"), n.get("op")
        line = n.get("line")
        self.line = line if type(line) is str else ""
