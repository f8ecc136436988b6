"""The wire format of intervention graphs, and the names of the whole format in one place.

`encode(graph)` / `decode(data)` turn a graph into wire bytes and back, checked in full (framing,
document, arguments, validation). Nothing pickles or unpickles, in either direction. The format
has four parts, one module each:

* `graph.frame`: the binary frame (magic, header length, JSON header, safetensors body) and the
  tensors attached to a header;
* `graph.arguments`: the JSON form of argument values (``{"ref": 3}``, ``{"tensor": "t0"}``, ...);
* `graph.document`: a `Graph` as the JSON document (``docs/graph-format.md``, ``schema.json``);
* `graph.values`: the saved values a trace hands back (`encode_values` / `decode_values`).

Decoding refuses unknown tags, malformed framing and anything a graph may not do (`decode` runs
`graph.validate.validate`), always with `GraphError` or one of its subclasses (`OpNotAllowedError`),
or `WeightWriteError` for writes into the weights.
"""

from __future__ import annotations

import gc

from .arguments import DTYPES
from .document import FORMAT, NODE_DEFAULTS, check_document, graph_from_json, graph_to_json
from .frame import GRAPH_MAGIC, VALUES_MAGIC, frame, unframe
from .nodes import Graph
from .validate import MAX_NODES
from .values import VALUES_FORMAT, VALUES_VERSION, decode_values, encode_values

__all__ = [
    "FORMAT", "GRAPH_MAGIC", "VALUES_MAGIC", "VALUES_FORMAT", "VALUES_VERSION", "MAX_NODES", "NODE_DEFAULTS",
    "DTYPES", "encode", "decode", "graph_to_json", "graph_from_json", "check_document", "encode_values",
    "decode_values",
]


def encode(graph: Graph) -> bytes:
    """The wire bytes of `graph` (see `graph.frame` for the layout)."""
    doc, tensors = graph_to_json(graph)
    return frame(GRAPH_MAGIC, doc, tensors)


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
        doc, tensors = unframe(data, GRAPH_MAGIC, "graph")
        return graph_from_json(doc, tensors)
    finally:
        if collecting:
            gc.enable()
