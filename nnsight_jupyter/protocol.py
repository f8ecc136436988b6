"""The wire protocol between a kernel (client) and the model host: framing and message names.

Control messages are JSON text frames. Graphs and results are binary frames::

    offset 0   4 bytes   b"NJM1"
    offset 4   4 bytes   N, unsigned 32-bit little-endian: length of the JSON header
    offset 8   N bytes   the JSON header (UTF-8), with "type" and the message's fields
    offset 8+N ...       the payload: an encoded graph (b"NJG1...") or encoded values (b"NJV1...")

Every message is documented in docs/protocol.md. Nothing is pickled in either direction.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .errors import ProtocolError

PROTOCOL_VERSION = 1
FRAME_MAGIC = b"NJM1"
_HEADER = struct.Struct("<4sI")
MAX_HEADER_BYTES = 1 << 20

# client -> host
HELLO, SUBMIT, ATTACH, CANCEL = "hello", "submit", "attach", "cancel"
# host -> client
WELCOME, ACCEPTED, STATUS, PROGRESS, LOG, RESULT, ERROR = (
    "welcome", "accepted", "status", "progress", "log", "result", "error")

TERMINAL = ("done", "error", "cancelled")


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """A binary frame: magic, header length, JSON header, payload; ProtocolError if the header is
    over `MAX_HEADER_BYTES` (the peer would refuse it), so an oversized frame is never sent."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(
            f"the {header.get('type', 'message')} header takes {len(raw)} bytes, over the protocol's limit of "
            f"{MAX_HEADER_BYTES} (its log lines and missing-value notes travel in it): print less")
    return _HEADER.pack(FRAME_MAGIC, len(raw)) + raw + payload


def unpack(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of a binary frame; ProtocolError if it is not one."""
    if len(frame) < _HEADER.size:
        raise ProtocolError(f"binary frame of {len(frame)} bytes is too short to hold a header")
    magic, size = _HEADER.unpack_from(frame)
    if magic != FRAME_MAGIC:
        raise ProtocolError(f"binary frame starts with {magic!r}, not {FRAME_MAGIC!r}")
    if size > MAX_HEADER_BYTES or _HEADER.size + size > len(frame):
        raise ProtocolError(f"binary frame header of {size} bytes runs past the frame ({len(frame)} bytes)")
    header = parse_json(frame[_HEADER.size:_HEADER.size + size])
    return header, bytes(frame[_HEADER.size + size:])


def parse_json(text: str | bytes) -> dict[str, Any]:
    """A control message: a JSON object with a string "type"; ProtocolError otherwise."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise ProtocolError(f"message is not JSON: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError('a message must be a JSON object with a string "type"')
    return message


def check_version(theirs: Any, side: str) -> None:
    """Refuse a peer speaking another protocol version, saying both and how to fix it."""
    if theirs != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version mismatch: this {side} speaks version {PROTOCOL_VERSION}, the other side "
            f"{theirs!r}. Install the same nnsight-jupyter release on the kernel and on the server "
            "(Python versions may differ).")
