"""The job websocket (`<base_url>/nnsight/ws`): opened with the hello / welcome handshake, reopened when dropped.

`Socket` sends JSON control messages and binary frames (`protocol.pack`) and reads the next
message with a timeout (`next`: None on timeout, `Dropped` when the socket closed).
"""

from __future__ import annotations

import json
import platform
from typing import Any

from .. import protocol as P
from .._version import __version__
from ..errors import NNsightError, ProtocolError
from .wire_errors import remote_error


class Dropped(Exception):
    """The websocket closed while waiting for a message."""


class Socket:
    """One websocket to the host, opened on first use; `welcome` is the host's answer to hello."""

    def __init__(self, ws_url: str, headers: dict[str, str], timeout: float):
        self.ws_url = ws_url
        self.headers = headers
        self.timeout = timeout
        self.welcome: dict[str, Any] | None = None
        self.closed = False
        self.received = 0          # bytes of the messages read so far (a status line's "bytes received")
        self._ws: Any = None

    def open(self) -> Any:
        """The open websocket (opened, with the hello / welcome handshake, when there is none)."""
        if self.closed:
            raise NNsightError("this connection is closed: connect() again")
        ws = self._ws
        if ws is not None:
            from websockets.protocol import State

            if ws.state is State.OPEN:
                return ws
            self.drop()
        self._ws = self._connect()
        return self._ws

    def _connect(self) -> Any:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect as ws_connect

        options = {"additional_headers": self.headers, "max_size": None, "open_timeout": self.timeout}
        try:
            try:
                ws = ws_connect(self.ws_url, legacy=True, **options)   # websockets >= 17: a plain connection
            except TypeError:
                ws = ws_connect(self.ws_url, **options)
        except InvalidStatus as error:
            status = error.response.status_code
            hint = " The token is wrong or missing: pass connect(token=...) or set NNSIGHT_JUPYTER_TOKEN." \
                if status in (401, 403) else ""
            raise NNsightError(f"the Jupyter server refused the websocket {self.ws_url}: HTTP {status}.{hint}") from None
        except (OSError, TimeoutError, InvalidHandshake) as error:
            raise NNsightError(f"cannot open the websocket {self.ws_url}: {error}. Is the Jupyter server running "
                               "with the nnsight_jupyter extension?") from None
        try:
            ws.send(json.dumps({"type": P.HELLO, "protocol": P.PROTOCOL_VERSION,
                                "client": f"nnsight-jupyter {__version__}", "python": platform.python_version()}))
            raw = ws.recv(timeout=self.timeout)
        except TimeoutError:
            ws.close()
            raise ProtocolError(f"the host sent no welcome within {self.timeout:.0f} s of hello") from None
        except ConnectionClosed as error:
            raise ProtocolError(f"the host closed the websocket during the handshake "
                                f"(code {_close_code(error)}: {_close_reason(error) or 'no reason given'})") from None
        message = parse(raw)[0]
        if message["type"] == P.ERROR:
            ws.close()
            raise remote_error(message)
        if message["type"] != P.WELCOME:
            ws.close()
            raise ProtocolError(f"the host answered hello with {message['type']!r}, not welcome")
        try:
            P.check_version(message.get("protocol"), "client")
        except ProtocolError:
            ws.close()
            raise
        self.welcome = message
        return ws

    def close(self) -> None:
        """Close the websocket for good: `open` refuses afterwards."""
        self.closed = True
        self.drop()

    def drop(self) -> None:
        """Close the websocket if one is open (the next `open` opens a new one)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass

    def send(self, message: dict[str, Any]) -> None:
        self.open().send(json.dumps(message))

    def next(self, timeout: float) -> tuple[dict[str, Any], bytes | None] | None:
        """The next message (header, binary payload or None); None on timeout; Dropped if the socket closed."""
        from websockets.exceptions import ConnectionClosed

        ws = self._ws
        if ws is None:
            raise Dropped()
        try:
            raw = ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed:
            self.drop()
            raise Dropped() from None
        self.received += len(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else len(raw.encode())
        return parse(raw)

    def send_frame(self, frame: bytes) -> None:
        """Send a binary frame; if it was not delivered (the socket had closed), reopen and send it again."""
        from websockets.exceptions import ConnectionClosed

        try:
            self.open().send(frame)
        except ConnectionClosed:   # the frame was not delivered: nothing was submitted, send it again
            self.drop()
            self.open().send(frame)


def parse(raw: Any) -> tuple[dict[str, Any], bytes | None]:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        header, payload = P.unpack(bytes(raw))
        if not isinstance(header.get("type"), str):
            raise ProtocolError('a binary frame header needs a string "type"')
        return header, payload
    return P.parse_json(raw), None


def _close_code(error: Any) -> Any:
    frame = getattr(error, "rcvd", None)
    return getattr(frame, "code", None)


def _close_reason(error: Any) -> str:
    frame = getattr(error, "rcvd", None)
    return getattr(frame, "reason", "") or ""
