"""The intervention graph: node types, the op allow-list, the wire format and validation.

A trace becomes a `Graph` (`nodes`), checked against the allow-list (`ops.OPS`, `validate`) and
sent as JSON + safetensors (`codec.encode` / `codec.decode`; never pickle). Results come back in
the same format (`encode_values` / `decode_values`). The format is documented in
``docs/graph-format.md``; its JSON Schema is ``schema.json`` beside this file.

This package imports nothing from the rest of nnsight_jupyter except `nnsight_jupyter.errors`.
"""

from .codec import decode, decode_values, encode, encode_values
from .nodes import GRAPH_VERSION, Graph, Invoke, Node, Parameter, Ref, Run
from .ops import OPS, get_op
from .validate import validate

__all__ = [
    "Graph", "Node", "Ref", "Run", "Invoke", "Parameter", "GRAPH_VERSION", "OPS", "get_op",
    "encode", "decode", "encode_values", "decode_values", "validate",
]
