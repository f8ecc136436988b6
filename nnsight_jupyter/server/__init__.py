"""The model host: a Jupyter server extension that shares models over websockets.

`app.NNsightHost` is the extension; `host.Host` its core (queues, dispatch, faults); `jobs.JobStore`
the durable job store; `worker` the model worker processes; `handlers` the HTTP/websocket endpoints.
"""


def _jupyter_server_extension_points() -> list[dict]:
    from .app import NNsightHost

    return [{"module": "nnsight_jupyter.server.app", "app": NNsightHost}]
