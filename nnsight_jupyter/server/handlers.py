"""HTTP and websocket handlers of the model host (thin: the work is in `host.Host`).

    <base_url>nnsight/ws                      the websocket (docs/protocol.md)
    <base_url>nnsight/api/status              GET
    <base_url>nnsight/api/models[/<name>]     GET
    <base_url>nnsight/api/models/<name>/tree  GET (the module tree alone, for the JupyterLab panel)
    <base_url>nnsight/api/panel               GET (what the JupyterLab panel shows: server/panel.py)
    <base_url>nnsight/api/jobs[/<id>]         GET, DELETE (cancel)
    <base_url>nnsight/api/jobs/<id>/result    GET (encoded values)

Every handler is authenticated like any Jupyter endpoint (`ws_authenticated` / `authenticated`,
then the server's authorizer on the "nnsight" resource); the websocket checks the origin.
"""

from __future__ import annotations

import json
import platform
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web, websocket
from tornado.websocket import WebSocketProtocol13

from .. import protocol
from .._version import __version__
from ..errors import NNsightError, ProtocolError, extra_fields
from .auth import AUTH_RESOURCE, owner_of
from .host import Host, HostError
from .panel import module_tree_view, panel_view

MAX_REQUEST_ID = 200      # characters of a client's request_id


class _FrameLimitProtocol(WebSocketProtocol13):
    """Tornado's websocket protocol, naming the limit an oversized frame broke when it closes.

    Tornado checks a frame's length from its header, before reading it, and can only close the
    connection then (the frame's bytes are never read, so the stream cannot go on): the close
    (code 1009) carries `frame_too_large` and the limit in its reason. The limit is also in the
    `welcome` message (`max_frame_bytes`), so a client can refuse such a frame before sending it."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if code == 1009:
            reason = f"frame_too_large: over {self.params.max_message_size} bytes"
        super().close(code, reason)


class _HostMixin:
    @property
    def host(self) -> Host:
        return self.settings["nnsight_host"]  # type: ignore[attr-defined]


class StatusHandler(_HostMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.finish(json.dumps({**self.host.status(), "version": __version__,
                                "backend": self.settings.get("nnsight_backend", "local"),
                                "user": owner_of(self)}))


def _finish_model(handler: APIHandler, view: Any, name: str) -> None:
    """Answer with `view(name)` as JSON: 404 for an unknown model, 409 for one not ready."""
    try:
        handler.finish(json.dumps(view(name)))
    except HostError as error:
        raise web.HTTPError(404 if error.code == "unknown_model" else 409, str(error)) from None


class ModelsHandler(_HostMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self, name: str | None = None) -> None:
        if name is None:
            self.finish(json.dumps({n: {"state": m.state, "error": m.error, "source": m.spec.source,
                                        "dtype": m.spec.dtype} for n, m in self.host.models.items()}))
            return
        _finish_model(self, self.host.describe, name)


class ModelTreeHandler(_HostMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self, name: str) -> None:
        _finish_model(self, lambda model: module_tree_view(self.host, model), name)


class PanelHandler(_HostMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(panel_view(self.host, owner_of(self))))


class JobsHandler(_HostMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self, job_id: str | None = None) -> None:
        owner = owner_of(self)
        if job_id is None:
            self.finish(json.dumps({"jobs": [j.to_json() for j in self.host.store.list_for(owner)]}))
            return
        record = self._own(owner, job_id)
        self.finish(json.dumps({**record.to_json(), "history": self.host.store.history(job_id)}))

    @web.authenticated
    @authorized
    def delete(self, job_id: str) -> None:
        try:
            record = self.host.cancel(owner_of(self), job_id)
        except HostError as error:
            raise web.HTTPError(404 if error.code == "not_found" else 409, str(error)) from None
        self.finish(json.dumps(record.to_json()))

    def _own(self, owner: str, job_id: str):
        try:
            return self.host._own(owner, job_id)
        except HostError as error:
            raise web.HTTPError(404, str(error)) from None


class ResultHandler(JobsHandler):
    @web.authenticated
    @authorized
    def get(self, job_id: str) -> None:  # type: ignore[override]
        record = self._own(owner_of(self), job_id)
        if record.status != "done":
            raise web.HTTPError(409, f"job {job_id} is {record.status}, it has no result")
        try:
            _, payload = protocol.unpack(self.host.store.result(job_id))
        except NNsightError as error:
            raise web.HTTPError(404, str(error)) from None
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(payload)


class SocketHandler(_HostMixin, WebSocketMixin, websocket.WebSocketHandler, JupyterHandler):
    """One kernel's connection: hello, then submit / attach / cancel; status and results flow back."""

    auth_resource = AUTH_RESOURCE

    @property
    def max_message_size(self) -> int:  # oversized frames: an error frame, then close 1009 (_FrameLimitProtocol)
        return int(self.settings.get("nnsight_max_frame_bytes", 256 << 20))

    def get_websocket_protocol(self) -> Any:
        protocol_ = super().get_websocket_protocol()
        if isinstance(protocol_, WebSocketProtocol13):
            protocol_.__class__ = _FrameLimitProtocol
        return protocol_

    async def pre_get(self) -> None:
        user = self.current_user
        allowed = await ensure_async(self.authorizer.is_authorized(self, user, "execute", AUTH_RESOURCE))
        if not allowed:
            raise web.HTTPError(403)

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await ensure_async(self.pre_get())
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.owner = owner_of(self)
        self.greeted = False
        self.set_nodelay(True)   # small frames (status, small results) go out at once, not after ~40 ms

    def on_close(self) -> None:
        self.host.unsubscribe(self._listen)

    # -- sending
    def _send(self, header: dict, payload: bytes | None = None) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        try:
            if payload is None:
                self.write_message(json.dumps(header))
            else:
                self.write_message(protocol.pack(header, payload), binary=True)
        except websocket.WebSocketClosedError:
            pass

    def _listen(self, header: dict, payload: bytes | None) -> None:
        self._send(header, payload)

    def _error(self, code: str, message: str, error_type: str = "ProtocolError", fields: dict | None = None,
               **ids: Any) -> None:
        error = {**(fields or {}), "type": error_type, "message": message}
        self._send({"type": protocol.ERROR, "code": code, "error": error,
                    **{k: v for k, v in ids.items() if v is not None}})

    # -- receiving
    async def on_message(self, message: str | bytes) -> None:
        """One message at a time per socket (tornado awaits this before reading the next one)."""
        try:
            await self._on_message(message)
        except Exception as error:  # noqa: BLE001 - a message that breaks something never closes the socket
            self.log.exception("nnsight: a message of %s failed", getattr(self, "owner", "?"))
            self._error("internal", f"the host could not handle this message: {type(error).__name__}: {error}",
                        "NNsightError")

    async def _on_message(self, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                header, payload = protocol.unpack(message)
            else:
                header, payload = protocol.parse_json(message), b""
        except ProtocolError as error:
            self._error("protocol", str(error))
            return
        kind = header["type"]
        if not self.greeted:
            if kind != protocol.HELLO:
                self._error("protocol", 'the first message must be "hello" with the protocol version')
                return
            try:
                protocol.check_version(header.get("protocol"), "server")
            except ProtocolError as error:
                self._error("protocol", str(error))
                self.close(1002, "protocol version mismatch")
                return
            self.greeted = True
            self._send({"type": protocol.WELCOME, "protocol": protocol.PROTOCOL_VERSION, "server": __version__,
                        "python": platform.python_version(), "user": self.owner,
                        "models": {n: m.state for n, m in self.host.models.items()},
                        "max_frame_bytes": self.max_message_size})
            return
        request_id = header.get("request_id")
        if request_id is not None and not (isinstance(request_id, str) and len(request_id) <= MAX_REQUEST_ID):
            shown = f"a {type(request_id).__name__}" if not isinstance(request_id, str) else f"{len(request_id)} characters"
            self._error("protocol", f'"request_id" must be a string of at most {MAX_REQUEST_ID} characters, '
                        f"got {shown}")
            return
        job_id = header.get("job_id")
        if job_id is not None and not isinstance(job_id, str):
            job_id = None
        try:
            if kind == protocol.SUBMIT:
                if not isinstance(header.get("model"), str) or not payload:
                    raise HostError("protocol", 'submit needs a "model" name and a graph payload')
                record = await self.host.submit(self.owner, header["model"], payload, request_id)
                self.host.subscribe(record.id, self._listen)
                self._send({"type": protocol.ACCEPTED, "request_id": request_id, "job_id": record.id,
                            "position": self.host.store.position(record.id)})
                if record.status == "done":       # a resend of a finished request: its result
                    self.host.attach(self.owner, record.id, self._listen)
                elif record.status != "queued":   # it may have been dispatched at once
                    self._send(self.host._status_message(record))
            elif kind in (protocol.ATTACH, protocol.CANCEL):
                if job_id is None or len(job_id) > 64:
                    raise HostError("protocol", f'{kind} needs a "job_id" string (a job id the host gave)')
                if kind == protocol.ATTACH:
                    self.host.attach(self.owner, job_id, self._listen)
                else:
                    self.host.cancel(self.owner, job_id)
            else:
                raise HostError("protocol", f"unknown message type {kind!r:.80}")
        except HostError as error:
            self._error(error.code, str(error), error.error_type, extra_fields(error.fields()),
                        request_id=request_id, job_id=job_id)
