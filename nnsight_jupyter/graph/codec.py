"""The wire format of intervention graphs (and of the values that come back): JSON + safetensors.

Nothing here pickles or unpickles, in either direction: the header is JSON, tensors are raw
safetensors buffers, and decoding builds only the types listed below.

Binary layout (a graph, or a set of values)::

    offset 0   4 bytes   magic: b"NJG1" for a graph, b"NJV1" for values
    offset 4   4 bytes   N, unsigned 32-bit little-endian: length of the JSON header
    offset 8   N bytes   the JSON header, UTF-8 (the graph document, or the values document)
    offset 8+N ...       a safetensors buffer holding every tensor the header names
                         (``safetensors.torch.save``; an empty one, 16 bytes, when there are none)

The graph document (``docs/graph-format.md``; JSON Schema in ``schema.json``)::

    {"format": "nnsight-jupyter/graph", "version": 1, "model": str | null,
     "runs": [{"id", "kind": "trace" | "generate",
               "invokes": [{"id", "args": [Arg], "kwargs": {str: Arg}, "all_rows": bool}],
               "options": {str: Arg}}],
     "nodes": [{"id", "op", "args": [Arg], "kwargs": {str: Arg}, "run", "invoke",
                "module": str | null, "call", "step", "repeat", "backward": int | null, "line": str}],
     "parameters": [{"name", "value": Arg, "requires_grad": bool}]}

A node field other than id and op may be left out when it holds its default (`NODE_DEFAULTS`);
`encode` leaves out every such field, so its output is canonical (decode then encode gives the
same bytes) and about 40% smaller, which is most of what makes it fast.

The values document: ``{"format": "nnsight-jupyter/values", "version": 1, "values": {str: Arg}}``.

Argument values (Arg): JSON null, booleans, integers, strings and finite floats stand for themselves
(a float is always written with a fraction or exponent, so 1.0 stays a float and 1 an int); anything
else is an object with exactly one key:

    {"ref": 12}                     the value of node 12 (graphs only)
    {"tensor": "t0"}                a tensor of the safetensors body (stored CPU, contiguous, detached;
                                    one tensor object used several times is stored once)
    {"float": "nan" | "inf" | "-inf"}
    {"list": [Arg, ...]}   {"tuple": [Arg, ...]}   {"dict": [[key, Arg], ...]} (keys str or int)
    {"slice": [Arg, Arg, Arg]}      {"ellipsis": null}
    {"dtype": "float32"}            {"device": "cuda:0"}      {"size": [2, 3]} (torch.Size)

Containers nest at most 32 deep. Anything else (functions, modules, arbitrary objects) cannot be
encoded: `GraphError` names its type. Decoding refuses unknown tags, malformed framing and
anything a graph may not do (`decode` runs `graph.validate.validate`), always with `GraphError` or
one of its subclasses (`OpNotAllowedError`), or `WeightWriteError` for writes into the weights.
"""

from __future__ import annotations

import gc
import json
import math
import struct
from typing import Any, Callable

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from ..errors import GraphError
from .nodes import GRAPH_VERSION, Graph, Invoke, Node, Parameter, Ref, Run
from .validate import MAX_DEPTH, MAX_NODES, node_error
from .validate import begin as validate_begin
from .validate import finish as validate_finish

__all__ = [
    "FORMAT", "GRAPH_MAGIC", "VALUES_MAGIC", "VALUES_FORMAT", "VALUES_VERSION", "MAX_NODES", "NODE_DEFAULTS",
    "DTYPES", "encode", "decode", "graph_to_json", "graph_from_json", "check_document", "encode_values",
    "decode_values",
]

GRAPH_MAGIC = b"NJG1"
VALUES_MAGIC = b"NJV1"
VALUES_FORMAT = "nnsight-jupyter/values"
VALUES_VERSION = 1

FORMAT = "nnsight-jupyter/graph"

_HEADER = struct.Struct("<4sI")

#: torch dtypes by every name torch exports them under ("float32", "float", "half", ...).
DTYPES: dict[str, torch.dtype] = {
    name: value for name in dir(torch) if isinstance(value := getattr(torch, name), torch.dtype)
}
_DTYPE_NAMES: dict[torch.dtype, str] = {dtype: str(dtype).removeprefix("torch.") for dtype in DTYPES.values()}

#: Node fields that may be left out of the JSON, with the value they then have. `encode` leaves
#: out every field at its default (so its output is canonical); `decode` accepts them either way.
NODE_DEFAULTS: dict[str, Any] = {"args": [], "kwargs": {}, "run": 0, "invoke": 0, "module": None, "call": 0,
                                 "step": 0, "repeat": False, "backward": None, "line": ""}
_NODE_KEYS = frozenset({"id", "op", *NODE_DEFAULTS})
# graph_from_json fills Node's slots one by one; a new Node field must be added there (and here).
if set(Node._FIELDS) != _NODE_KEYS:
    raise ImportError("nnsight_jupyter.graph.codec is out of date with graph.nodes.Node's fields")


class _BadArg(Exception):
    """An argument value that cannot be encoded or decoded; turned into a GraphError that says where."""


# =============================================================================== encoding
#: Types written as themselves (floats are not: nan and inf need a tag).
_PLAIN = frozenset({str, int, bool, type(None)})
#: Types read as themselves.
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _encoder(allow_refs: bool = True) -> tuple[Callable[..., Any], dict[str, torch.Tensor]]:
    """(`arg(value, depth=0)`, `tensors`): `arg` turns one argument value into its JSON form (or
    raises _BadArg), collecting the tensors it meets into `tensors` ("t0", "t1", ... in the order
    met; a tensor object met again gets its first name). A closure: the hot path of `encode`."""
    tensors: dict[str, torch.Tensor] = {}
    names: dict[int, str] = {}             # id(tensor) -> name; `keep` holds the tensor alive
    storages: set[tuple[str, int, int]] = set()
    keep: list[torch.Tensor] = []
    plain = _PLAIN

    def arg(v: Any, depth: int = 0) -> Any:
        t = type(v)
        if t is Ref:
            if not allow_refs:
                raise _BadArg("a graph reference (Ref) cannot be sent back as a value")
            if type(v.id) is not int:
                raise _BadArg(f"Ref with a non-integer id {v.id!r:.40}")
            return {"ref": v.id}
        if t in plain:
            return v
        if t is float:
            if v - v == 0.0:                    # finite (inf - inf and nan - nan are nan)
                return v
            return {"float": "nan" if v != v else ("inf" if v > 0 else "-inf")}
        if t is tuple or t is list or t is slice or t is dict:
            if depth >= MAX_DEPTH:
                raise _BadArg(f"arguments nest more than {MAX_DEPTH} containers deep")
            d = depth + 1
            if t is slice:
                a, b, c = v.start, v.stop, v.step
                return {"slice": [a if type(a) in plain else arg(a, d), b if type(b) in plain else arg(b, d),
                                  c if type(c) in plain else arg(c, d)]}
            out: list = []
            append = out.append
            if t is dict:
                for k, x in v.items():
                    append([k if type(k) is str or type(k) is int else key(k),
                            x if type(x) in plain else arg(x, d)])
                return {"dict": out}
            for x in v:
                append(x if type(x) in plain else arg(x, d))
            return {"tuple": out} if t is tuple else {"list": out}
        if t is torch.Tensor or isinstance(v, torch.Tensor):
            name = names.get(id(v))
            return {"tensor": name if name is not None else tensor(v)}
        if v is Ellipsis:
            return {"ellipsis": None}
        if t is torch.dtype:
            return {"dtype": _DTYPE_NAMES[v]}
        if t is torch.device:
            return {"device": str(v)}
        if t is torch.Size:
            return {"size": [int(x) for x in v]}
        # Subclasses of the plain types (IntEnum, namedtuple, OrderedDict, ...) travel as the plain type.
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, int):
            return int(v)
        if isinstance(v, str):
            return str(v)
        for base in (float, tuple, list, dict):
            if isinstance(v, base):
                return arg(base(v.items() if base is dict else v), depth)
        kind = f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__
        raise _BadArg(
            f"a value of type {kind} cannot be sent in a graph: only None, bool, int, float, str, "
            "tensors, lists, tuples, dicts, slices, Ellipsis, torch dtypes, devices and sizes can"
        )

    def key(k: Any) -> Any:
        if isinstance(k, (str, int)) and not isinstance(k, bool):
            return str(k) if isinstance(k, str) else int(k)
        raise _BadArg(f"dict key {k!r:.80} of type {type(k).__qualname__}: keys must be str or int")

    def tensor(v: torch.Tensor) -> str:
        if v.layout is not torch.strided:
            raise _BadArg(f"a {v.layout} tensor cannot be sent: make it dense (.to_dense()) first")
        if v.device.type == "meta":
            raise _BadArg("a tensor on the meta device has no values to send")
        if _DTYPE_NAMES.get(v.dtype) not in _SAFE_DTYPES:
            raise _BadArg(f"tensors of dtype {v.dtype} cannot be sent (safetensors has no such type)")
        stored = v.detach()
        if type(stored) is not torch.Tensor:
            stored = stored.as_subclass(torch.Tensor)
        if stored.device.type != "cpu":
            stored = stored.cpu()
        if stored.is_conj() or stored.is_neg():
            stored = stored.resolve_conj().resolve_neg()
        if not stored.is_contiguous():
            stored = stored.contiguous()
        if stored.numel():
            # safetensors refuses two entries that share memory: give a second one its own copy.
            storage = (stored.device.type, stored.device.index or 0, stored.untyped_storage().data_ptr())
            if storage in storages:
                stored = stored.clone()
            else:
                storages.add(storage)
        name = f"t{len(tensors)}"
        tensors[name] = stored
        names[id(v)] = name
        keep.append(v)
        return name

    return arg, tensors


_SAFE_DTYPES = {
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "complex64",
    "uint64", "uint32", "uint16",
}


def _kwargs(arg: Callable[..., Any], kwargs: dict) -> dict:
    out = {}
    for k, v in kwargs.items():
        if type(k) is not str:
            raise _BadArg(f"keyword argument name {k!r:.80} is not a str")
        out[k] = v if type(v) in _PLAIN else arg(v)
    return out


def graph_to_json(graph: Graph) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON document of `graph` and the tensors it names (CPU, contiguous, detached).

    Raises GraphError naming the node (or run, invoke, parameter) whose argument cannot be encoded.
    Does not validate the graph: `decode` (and the tracer, as it builds) does that.
    """
    arg, tensors = _encoder()
    plain = _PLAIN
    runs = []
    for run in graph.runs:
        try:
            invokes = [{"id": inv.id, "args": [arg(a) for a in inv.args],
                        "kwargs": _kwargs(arg, inv.kwargs), "all_rows": inv.all_rows}
                       for inv in run.invokes]
            runs.append({"id": run.id, "kind": run.kind, "invokes": invokes,
                         "options": _kwargs(arg, run.options)})
        except _BadArg as e:
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
                n["kwargs"] = _kwargs(arg, node.kwargs)
        except _BadArg as e:
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
        except _BadArg as e:
            raise GraphError(f"parameter {p.name!r}: cannot encode its value: {e}") from None
    doc = {"format": FORMAT, "version": graph.version, "model": graph.model, "runs": runs,
           "nodes": nodes, "parameters": parameters}
    return doc, tensors


def _frame(magic: bytes, doc: dict, tensors: dict[str, torch.Tensor]) -> bytes:
    try:
        header = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:  # a field of the wrong type set by hand
        raise GraphError(f"cannot write the JSON header: {e}") from None
    header_bytes = header.encode("utf-8")
    try:
        body = _st_save(tensors)
    except Exception as e:  # noqa: BLE001 - safetensors raises plain ValueError/RuntimeError
        raise GraphError(f"cannot write the tensors: {e}") from None
    return b"".join((_HEADER.pack(magic, len(header_bytes)), header_bytes, body))


def encode(graph: Graph) -> bytes:
    """The wire bytes of `graph` (see the module docstring for the layout)."""
    doc, tensors = graph_to_json(graph)
    return _frame(GRAPH_MAGIC, doc, tensors)


def encode_values(values: dict[str, Any]) -> bytes:
    """The wire bytes of named values (saved results): tensors, nested containers, scalars, ..."""
    if not isinstance(values, dict):
        raise GraphError(f"values must be a dict of str to value, not {type(values).__qualname__}")
    arg, tensors = _encoder(allow_refs=False)
    out = {}
    for name, value in values.items():
        if type(name) is not str:
            raise GraphError(f"value name {name!r} is not a str")
        try:
            out[name] = arg(value)
        except _BadArg as e:
            raise GraphError(f"value {name!r}: cannot encode it: {e}") from None
    return _frame(VALUES_MAGIC, {"format": VALUES_FORMAT, "version": VALUES_VERSION, "values": out},
                  tensors)


# =============================================================================== decoding
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON here (write non-finite floats as {{\"float\": ...}})")


def _unframe(data: bytes, magic: bytes, what: str) -> tuple[Any, dict[str, torch.Tensor]]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise GraphError(f"{what} must be bytes, not {type(data).__qualname__}")
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise GraphError(f"truncated {what}: {len(data)} bytes, shorter than the 8-byte frame header")
    found, length = _HEADER.unpack_from(data)
    if found != magic:
        names = {GRAPH_MAGIC: "an encoded graph", VALUES_MAGIC: "a set of encoded values"}
        hint = f" (this is {names[found]})" if found in names else ""
        raise GraphError(f"not {names[magic]}: magic bytes {found!r}, expected {magic!r}{hint}")
    end = _HEADER.size + length
    if end > len(data):
        raise GraphError(f"truncated {what}: the JSON header claims {length} bytes but only "
                         f"{len(data) - _HEADER.size} follow the frame header")
    try:
        doc = json.loads(data[_HEADER.size:end].decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise GraphError(f"the JSON header of the {what} is not valid JSON: {e}") from None
    try:
        tensors = _st_load(data[end:])
    except Exception as e:  # noqa: BLE001 - safetensors' own SafetensorError and friends
        raise GraphError(f"the tensor body of the {what} is not a valid safetensors buffer: {e}") from None
    return doc, tensors


def _decoder(tensors: dict[str, torch.Tensor], allow_refs: bool = True) -> Callable[..., Any]:
    """`arg(json_value, depth=0)`: the Python value of one encoded argument (tags checked, depth
    bounded), or _BadArg. A closure with explicit loops: the hot path of `decode`."""
    refs: dict[int, Ref] = {}   # one Ref object per node id
    get_ref = refs.get
    get_tensor = tensors.get
    scalars = _JSON_SCALARS

    def arg(v: Any, depth: int = 0) -> Any:
        if type(v) is not dict:
            if type(v) in scalars:
                return v
            raise _BadArg(f"a bare JSON {_json_type(v)} is not an argument value "
                          "(lists are written {\"list\": [...]} or {\"tuple\": [...]})")
        if len(v) != 1:
            raise _BadArg(f"a tagged argument must have exactly one key, not {sorted(v)!r:.80}")
        for tag in v:
            p = v[tag]
        if tag == "ref":
            ref = get_ref(p) if type(p) is int else None
            if ref is None:
                if not allow_refs:
                    raise _BadArg("a reference ({\"ref\": ...}) cannot appear among values")
                if type(p) is not int or p < 0:
                    raise _BadArg(f"a ref must be a node id (an int >= 0), not {p!r:.40}")
                ref = refs[p] = Ref(p)
            return ref
        if tag == "slice":
            if type(p) is not list or len(p) != 3:
                raise _BadArg(f"a slice must hold [start, stop, step], not {p!r:.80}")
            if depth >= MAX_DEPTH:
                raise _BadArg(f"arguments nest more than {MAX_DEPTH} containers deep")
            a, b, c = p
            d = depth + 1
            return slice(a if type(a) in scalars else arg(a, d), b if type(b) in scalars else arg(b, d),
                         c if type(c) in scalars else arg(c, d))
        if tag == "tuple" or tag == "list":
            if type(p) is not list:
                raise _BadArg(f"a {tag} must hold a JSON array, not {_json_type(p)}")
            if depth >= MAX_DEPTH:
                raise _BadArg(f"arguments nest more than {MAX_DEPTH} containers deep")
            d = depth + 1
            out = []
            append = out.append
            for x in p:
                append(x if type(x) in scalars else arg(x, d))
            return tuple(out) if tag == "tuple" else out
        if tag == "tensor":
            tensor = get_tensor(p) if type(p) is str else None
            if tensor is None:
                raise _BadArg(f"tensor {p!r:.80} is not in the safetensors body")
            return tensor
        if tag == "dict":
            if type(p) is not list:
                raise _BadArg(f"a dict must hold a JSON array of [key, value] pairs, not {_json_type(p)}")
            if depth >= MAX_DEPTH:
                raise _BadArg(f"arguments nest more than {MAX_DEPTH} containers deep")
            d = depth + 1
            result = {}
            for pair in p:
                if type(pair) is not list or len(pair) != 2:
                    raise _BadArg(f"a dict entry must be a [key, value] pair, not {pair!r:.80}")
                key, value = pair
                if type(key) is not str and type(key) is not int:
                    raise _BadArg(f"dict key {key!r:.80} must be a str or an int")
                result[key] = value if type(value) in scalars else arg(value, d)
            return result
        if tag == "float":
            value = _FLOATS.get(p) if type(p) is str else None
            if value is None:
                raise _BadArg(f"float must be \"nan\", \"inf\" or \"-inf\", not {p!r:.80}")
            return value
        if tag == "ellipsis":
            if p is not None:
                raise _BadArg("ellipsis must hold null")
            return Ellipsis
        if tag == "dtype":
            dtype = DTYPES.get(p) if type(p) is str else None
            if dtype is None:
                raise _BadArg(f"{p!r:.80} is not a torch dtype")
            return dtype
        if tag == "device":
            if type(p) is not str or len(p) > 64:
                raise _BadArg(f"a device must be a short string, not {p!r:.80}")
            try:
                return torch.device(p)
            except (RuntimeError, ValueError, TypeError) as e:
                raise _BadArg(f"{p!r} is not a torch device: {e}") from None
        if tag == "size":
            if type(p) is not list or any(type(x) is not int or x < 0 for x in p):
                raise _BadArg(f"a size must be a list of ints >= 0, not {p!r:.80}")
            return torch.Size(p)
        raise _BadArg(f"unknown argument tag {tag!r:.80}")

    return arg


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _json_type(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(v), "null" if v is None else type(v).__qualname__)


_GRAPH_KEYS = frozenset({"format", "version", "model", "runs", "nodes", "parameters"})
_RUN_KEYS = frozenset({"id", "kind", "invokes", "options"})
_INVOKE_KEYS = frozenset({"id", "args", "kwargs", "all_rows"})
_PARAMETER_KEYS = frozenset({"name", "value", "requires_grad"})


def _check_version(doc: Any) -> None:
    """Format and version first, so that a document of another version says so (not "bad field")."""
    if type(doc) is not dict:
        raise GraphError(f"the graph header must be a JSON object, not {_json_type(doc)}")
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
    _expect(type(obj) is dict, f"{what} must be a JSON object, not {_json_type(obj)}")
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


def _arg_list(arg: Any, value: Any, what: str) -> tuple:
    if value is None:
        return ()
    if type(value) is not list:
        raise _BadArg(f"{what} must be a JSON array, not {_json_type(value)}")
    return tuple([arg(a) for a in value])


def _arg_dict(arg: Any, value: Any, what: str) -> dict:
    if value is None:
        return {}
    if type(value) is not dict:
        raise _BadArg(f"{what} must be a JSON object, not {_json_type(value)}")
    return {k: arg(v) for k, v in value.items()}


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
    arg = _decoder(tensors)

    runs = []
    for i, r in enumerate(doc_runs):
        _check_keys(r, _RUN_KEYS, _RUN_KEYS, f"runs[{i}]")
        _expect(type(r["invokes"]) is list, f"runs[{i}].invokes must be an array")
        _expect(type(r["kind"]) is str, f"runs[{i}].kind must be a string")
        invokes = []
        try:
            for j, v in enumerate(r["invokes"]):
                _check_keys(v, _INVOKE_KEYS, _INVOKE_KEYS, f"runs[{i}].invokes[{j}]")
                invokes.append(Invoke(v["id"], _arg_list(arg, v["args"], "args"),
                                      _arg_dict(arg, v["kwargs"], "kwargs"), v["all_rows"]))
            runs.append(Run(r["id"], r["kind"], invokes, _arg_dict(arg, r["options"], "options")))
        except _BadArg as e:
            raise GraphError(f"run {r['id']!r:.40}: bad input or option: {e}") from None

    parameters = []
    for i, p in enumerate(doc_parameters):
        _check_keys(p, _PARAMETER_KEYS, _PARAMETER_KEYS, f"parameters[{i}]")
        try:
            parameters.append(Parameter(p["name"], arg(p["value"]), p["requires_grad"]))
        except _BadArg as e:
            raise GraphError(f"parameter {p['name']!r:.80}: bad value: {e}") from None

    # validate(graph), with each node checked as soon as it is decoded (one pass, warm caches).
    nodes: list[Node] = []
    graph = Graph(runs=runs, nodes=nodes, model=model, version=doc["version"], parameters=parameters)
    checker = validate_begin(graph)
    add = checker.add
    append = nodes.append
    new = Node.__new__  # fills the slots directly: 40% faster than Node(...) with keywords
    scalars = _JSON_SCALARS
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
                args = _arg_list(arg, args, "args")
            kwargs = get("kwargs")
            kwargs = _arg_dict(arg, kwargs, "kwargs") if kwargs is not None else {}
        except _BadArg as e:
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


def decode(data: bytes) -> Graph:
    """The Graph in wire bytes `data`, checked in full (framing, document, arguments, validation).

    Every problem is a GraphError (OpNotAllowedError for an op off the allow-list, WeightWriteError
    for a write into the model's weights), never another exception type.
    """
    # Decoding allocates many small objects that all live on: the cyclic collector would scan them
    # for nothing (about 10% of the time for a 1000-node graph), so it is paused meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        doc, tensors = _unframe(data, GRAPH_MAGIC, "graph")
        return graph_from_json(doc, tensors)
    finally:
        if collecting:
            gc.enable()


def decode_values(data: bytes) -> dict[str, Any]:
    """The named values in wire bytes `data` (from `encode_values`)."""
    doc, tensors = _unframe(data, VALUES_MAGIC, "values")
    if type(doc) is not dict or doc.get("format") != VALUES_FORMAT:
        raise GraphError(f"not a set of values: format {doc.get('format') if type(doc) is dict else doc!r:.80}")
    if doc.get("version") != VALUES_VERSION or type(doc.get("version")) is not int:
        raise GraphError(f"values format version {doc.get('version')!r:.40} is not supported: this "
                         f"nnsight_jupyter reads version {VALUES_VERSION}. Upgrade the older side.")
    if set(doc) != {"format", "version", "values"} or type(doc["values"]) is not dict:
        raise GraphError("malformed values document: expected exactly format, version and a values object")
    arg = _decoder(tensors, allow_refs=False)
    out = {}
    for name, value in doc["values"].items():
        try:
            out[name] = arg(value)
        except _BadArg as e:
            raise GraphError(f"value {name!r}: {e}") from None
    return out
