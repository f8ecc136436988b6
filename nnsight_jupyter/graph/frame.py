"""The binary frame of the wire format: a JSON header and the tensors attached to it (safetensors).

Layout (a graph, or a set of values)::

    offset 0   4 bytes   magic: b"NJG1" for a graph, b"NJV1" for values
    offset 4   4 bytes   N, unsigned 32-bit little-endian: length of the JSON header
    offset 8   N bytes   the JSON header, UTF-8 (the graph document, or the values document)
    offset 8+N ...       a safetensors buffer holding every tensor the header names
                         (``safetensors.torch.save``; an empty one, 16 bytes, when there are none)

`Attachments` collects the tensors of one header: stored CPU, contiguous, detached, named "t0",
"t1", ... in the order met, one tensor object used several times stored once. Nothing here pickles
or unpickles: the header is JSON, tensors are raw safetensors buffers.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from ..errors import GraphError
from .arguments import DTYPE_NAMES

__all__ = ["GRAPH_MAGIC", "VALUES_MAGIC", "SAFE_DTYPES", "Attachments", "frame", "unframe"]

GRAPH_MAGIC = b"NJG1"
VALUES_MAGIC = b"NJV1"
_HEADER = struct.Struct("<4sI")

#: The dtypes safetensors can store.
SAFE_DTYPES = frozenset({
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "complex64",
    "uint64", "uint32", "uint16",
})


class Attachments:
    """The tensors attached to one header, by name (`tensors`)."""

    __slots__ = ("tensors", "_names", "_storages", "_keep")

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._names: dict[int, str] = {}             # id(tensor) -> name; `_keep` holds the tensor alive
        self._storages: set[tuple[str, int, int]] = set()
        self._keep: list[torch.Tensor] = []

    def add(self, v: torch.Tensor) -> str:
        """The name of `v` among the attachments (added if new); ValueError if it cannot be sent."""
        name = self._names.get(id(v))
        if name is not None:
            return name
        if v.layout is not torch.strided:
            raise ValueError(f"a {v.layout} tensor cannot be sent: make it dense (.to_dense()) first")
        if v.device.type == "meta":
            raise ValueError("a tensor on the meta device has no values to send")
        if DTYPE_NAMES.get(v.dtype) not in SAFE_DTYPES:
            raise ValueError(f"tensors of dtype {v.dtype} cannot be sent (safetensors has no such type)")
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
            if storage in self._storages:
                stored = stored.clone()
            else:
                self._storages.add(storage)
        name = f"t{len(self.tensors)}"
        self.tensors[name] = stored
        self._names[id(v)] = name
        self._keep.append(v)
        return name


def frame(magic: bytes, doc: dict, tensors: dict[str, torch.Tensor]) -> bytes:
    """The wire bytes of header `doc` with `tensors` attached (GraphError if either cannot be written)."""
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON here (write non-finite floats as {{\"float\": ...}})")


def unframe(data: bytes, magic: bytes, what: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """The JSON header and the attached tensors of wire bytes `data` with `magic` (GraphError if
    the frame, the JSON or the safetensors body is malformed)."""
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
