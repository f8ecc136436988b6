"""Errors from the wire: a host's `error` message (or error / cancelled status) as a local exception.

The host names the `NNsightError` subclass a local run would have raised; the kernel raises that
same class (`remote_error`), or `QueueFullError`, `JobCancelledError`, `ProtocolError`, else
`RemoteError` with `remote_type` set.
"""

from __future__ import annotations

from typing import Any

from .. import errors as _errors
from ..errors import JobCancelledError, NNsightError, ProtocolError, QueueFullError, RemoteError


def _error_class(name: str) -> type[NNsightError] | None:
    if not name or name.startswith("_"):
        return None
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, NNsightError):
        return cls
    return None


def remote_error(message: dict[str, Any], job_id: str | None = None) -> NNsightError:
    """The exception for a host `error` message or an error / cancelled `status`: the same
    nnsight_jupyter error class as a local run would raise when the host names one, QueueFullError,
    JobCancelledError, ProtocolError, else RemoteError with `remote_type` set."""
    error = message.get("error") or {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    type_name = str(error.get("type") or "")
    text = str(error.get("message") or message.get("message") or "")
    code = message.get("code")
    job_id = job_id or message.get("job_id")
    if message.get("status") == "cancelled":
        cls: type[NNsightError] = JobCancelledError
        text = text or f"job {job_id} was cancelled"
    elif code == "queue_full":
        cls = QueueFullError
    elif code == "protocol":
        cls = ProtocolError
    else:
        cls = _error_class(type_name) or RemoteError
    text = text or f"the host reported {type_name or code or 'an error'} without a message"
    # The host's error rebuilt with its fields (line, module, shapes, fix), so that it reads as
    # the same error raised locally; a host that sends none gives the message as the reason.
    fields = {**error, "message": text} if "reason" in error else {"reason": text}
    extra = {"remote_type": type_name or cls.__name__} if issubclass(cls, RemoteError) else {}
    exc: NNsightError = cls.from_fields(fields, **extra)
    exc.job_id = job_id          # type: ignore[attr-defined]
    exc.code = code              # type: ignore[attr-defined]
    return exc
