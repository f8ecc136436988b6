"""What the JupyterLab panel and status item show, in one small JSON view (`GET nnsight/api/panel`).

One request gives everything the front end draws, so an open JupyterLab costs the host one cheap
request per poll (labextension/src/poll.ts decides how often):

    {"user": "alice", "time": 1733300000.0, "message": null,
     "models": {"smollm2-135m": {"state": "ready", "error": null, "dtype": "float32", "device_map": null,
                                 "placement": {"": "cpu"}, "parameters": 134515008,
                                 "queued": 1, "running": 1}},
     "queue": [{"model": "smollm2-135m", "status": "running", "position": null, "mine": true,
                "job_id": "ab12...", "kind": "trace"}, ...],          # other users' jobs: no id, no owner
     "jobs": [{"job_id", "model", "kind", "status", "position", "batch_id", "rows", "created",
               "started", "finished", "wall_time", "error_type", "error_message"}, ...]}   # yours, newest first

`wall_time` is seconds from the job's start to its end (to now while it runs; null while queued).
The module tree of a model, which the panel shows on demand, is `GET nnsight/api/models/<name>/tree`
(`module_tree`), without the tokenizer that `models/<name>` carries for clients.
"""

from __future__ import annotations

import time
from typing import Any

from .host import Host
from .jobs import JobRecord

#: Jobs of the asking user the panel lists (newest first).
PANEL_JOBS = 20


def wall_time(record: JobRecord, now: float) -> float | None:
    """Seconds the job has run: start to finish, or start to `now` while running; None if never started."""
    if record.started is None:
        return None
    end = record.finished if record.finished is not None else now
    return max(0.0, end - record.started)


def _job_view(host: Host, record: JobRecord, now: float) -> dict[str, Any]:
    return {"job_id": record.id, "model": record.model, "kind": record.kind, "status": record.status,
            "position": host.store.position(record.id) if record.status == "queued" else None,
            "batch_id": record.batch_id, "rows": record.rows, "created": record.created,
            "started": record.started, "finished": record.finished, "wall_time": wall_time(record, now),
            "error_type": record.error_type, "error_message": record.error_message}


def _queue_view(host: Host, owner: str) -> list[dict[str, Any]]:
    """Running then queued jobs of every user, in order; only the asker's carry their id."""
    entries = []
    for status, records in (("running", host.store.running()), ("queued", host.store.queued())):
        positions: dict[str, int] = {}
        for record in records:
            mine = record.owner == owner
            position = None
            if status == "queued":
                position = positions.get(record.model, 0)
                positions[record.model] = position + 1
            entries.append({"model": record.model, "status": status, "position": position, "mine": mine,
                            "kind": record.kind, "job_id": record.id if mine else None})
    return entries


def _model_view(host: Host, name: str) -> dict[str, Any]:
    model = host.models[name]
    info = model.info or {}
    return {"state": model.state, "error": model.error, "dtype": model.spec.dtype,
            "device_map": model.spec.device_map, "placement": info.get("placement"),
            "parameters": info.get("parameters"), "source": model.spec.source,
            "queued": len(model.queue), "running": len(model.busy.job_ids) if model.busy else 0}


def panel_view(host: Host, owner: str, now: float | None = None) -> dict[str, Any]:
    """The panel's view for `owner` (see the module docstring)."""
    now = time.time() if now is None else now
    return {"user": owner, "time": now, "message": host.status().get("message"),
            "models": {name: _model_view(host, name) for name in host.models},
            "queue": _queue_view(host, owner),
            "jobs": [_job_view(host, r, now) for r in host.store.list_for(owner, limit=PANEL_JOBS)]}


def module_tree_view(host: Host, name: str) -> dict[str, Any]:
    """{"name", "state", "module_tree"} of a loaded model; HostError as `Host.describe` raises it."""
    info = host.describe(name)
    return {"name": name, "state": info["state"], "module_tree": info["module_tree"]}


__all__ = ["PANEL_JOBS", "module_tree_view", "panel_view", "wall_time"]
