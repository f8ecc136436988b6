"""Saved values on the wire: what a trace hands back (tensors, nested containers, scalars), by name.

The values document, the JSON header of a frame with magic ``NJV1`` (`graph.frame`)::

    {"format": "nnsight-jupyter/values", "version": 1, "values": {str: Arg}}

Each value is an argument value (`graph.arguments`) without graph references; its tensors are
attached beside the document.
"""

from __future__ import annotations

from typing import Any

from ..errors import GraphError
from .arguments import BadArg, decoder, encoder
from .frame import VALUES_MAGIC, Attachments, frame, unframe

__all__ = ["VALUES_FORMAT", "VALUES_VERSION", "encode_values", "decode_values"]

VALUES_FORMAT = "nnsight-jupyter/values"
VALUES_VERSION = 1


def encode_values(values: dict[str, Any]) -> bytes:
    """The wire bytes of named values (saved results): tensors, nested containers, scalars, ..."""
    if not isinstance(values, dict):
        raise GraphError(f"values must be a dict of str to value, not {type(values).__qualname__}")
    attachments = Attachments()
    arg = encoder(attachments.add, allow_refs=False)
    out = {}
    for name, value in values.items():
        if type(name) is not str:
            raise GraphError(f"value name {name!r} is not a str")
        try:
            out[name] = arg(value)
        except BadArg as e:
            raise GraphError(f"value {name!r}: cannot encode it: {e}") from None
    return frame(VALUES_MAGIC, {"format": VALUES_FORMAT, "version": VALUES_VERSION, "values": out},
                 attachments.tensors)


def decode_values(data: bytes) -> dict[str, Any]:
    """The named values in wire bytes `data` (from `encode_values`)."""
    doc, tensors = unframe(data, VALUES_MAGIC, "values")
    if type(doc) is not dict or doc.get("format") != VALUES_FORMAT:
        raise GraphError(f"not a set of values: format {doc.get('format') if type(doc) is dict else doc!r:.80}")
    if doc.get("version") != VALUES_VERSION or type(doc.get("version")) is not int:
        raise GraphError(f"values format version {doc.get('version')!r:.40} is not supported: this "
                         f"nnsight_jupyter reads version {VALUES_VERSION}. Upgrade the older side.")
    if set(doc) != {"format", "version", "values"} or type(doc["values"]) is not dict:
        raise GraphError("malformed values document: expected exactly format, version and a values object")
    arg = decoder(tensors, allow_refs=False)
    out = {}
    for name, value in doc["values"].items():
        try:
            out[name] = arg(value)
        except BadArg as e:
            raise GraphError(f"value {name!r}: {e}") from None
    return out
