"""REST calls to the model host (`<base_url>/nnsight/api/...`): one request, errors that say what to do."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..errors import NNsightError, ProtocolError


class HTTPError(NNsightError):
    """A REST call answered with an HTTP error; `status` is its code."""

    def __init__(self, message: str, status: int):
        self.status = status
        super().__init__(message)


def request(server_url: str, api_url: str, headers: dict[str, str], method: str, path: str, *,
            timeout: float, raw: bool = False) -> Any:
    """`method` `api_url + path`: the JSON answer (or the bytes, with `raw`); `HTTPError` / `NNsightError`."""
    req = urllib.request.Request(api_url + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        status, message = error.code, server_message(error)
        hint = ""
        if status in (401, 403):
            hint = (" The token is wrong or missing: pass connect(token=...) or set NNSIGHT_JUPYTER_TOKEN "
                    "(`jupyter server list` shows the running servers and their tokens).")
        elif status == 404 and path in ("status", "models"):
            hint = (" Is the nnsight_jupyter server extension enabled on this server? "
                    "(`jupyter server extension list`)")
        raise HTTPError(f"{method} {api_url}{path} failed: HTTP {status}: {message}.{hint}", status) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise NNsightError(
            f"cannot reach the Jupyter server at {server_url}: {reason}. Is it running, and is this its "
            "address? (set NNSIGHT_JUPYTER_URL or pass connect(url=...))") from None
    if raw:
        return body
    if not body:
        return {}
    try:
        return json.loads(body)
    except ValueError:
        raise ProtocolError(f"{method} {api_url}{path} answered with something that is not JSON: "
                            f"{body[:200]!r}") from None


def server_message(error: urllib.error.HTTPError) -> str:
    try:
        body = error.read()
    except Exception:
        body = b""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error")
        message = data.get("message") or (inner.get("message") if isinstance(inner, dict) else inner) \
            or data.get("reason")
        if message:
            return str(message)[:1000]
    text = body.decode("utf-8", "replace").strip() if body else ""
    return text[:1000] or str(error.reason)
