"""The model host: a Jupyter server extension that shares models over websockets.

`app.NNsightHost` is the extension; `host.Host` its core (queues, dispatch, faults); `jobs.JobStore`
the durable job store; `worker` the model worker processes; `handlers` the HTTP/websocket endpoints; `ray_backend` runs the
workers as Ray Serve deployments instead (`c.NNsightHost.backend = "ray"`).
Jupyter finds the extension through the top-level package (`nnsight_jupyter._jupyter_server_extension_points`).
"""
