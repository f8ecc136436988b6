"""A real Jupyter server with the extension on 127.0.0.1, and raw protocol clients for it.

`jupyter_host(models=..., **limits)` starts `python -m jupyter_server` in a subprocess
(`server.launch.HostProcess`) with its own runtime, data and job-store paths, several user tokens
(NNsightIdentityProvider), and waits until every model is ready. Tests talk to it over real websockets and HTTP.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from nnsight_jupyter import protocol
from nnsight_jupyter.server.launch import HostProcess

USERS = {f"token-{name}": name for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")}
ADMIN_TOKEN = "admin-token"


class JupyterHost(HostProcess):
    """A running server (`server.launch.HostProcess`) with this suite's tokens, and helpers to talk to it."""

    def __init__(self, root: Path, models: dict, **host_config):
        super().__init__(root, models, USERS, ADMIN_TOKEN, **host_config)

    start_timeout = 120.0      # seconds to wait for the models (a Ray host: longer)

    def start(self, wait_ready: bool = True) -> "JupyterHost":
        super().start()
        if wait_ready:
            try:
                self.wait_ready(timeout=self.start_timeout)
            except BaseException:
                self.stop()          # a server that never got ready must not outlive its test
                raise
        return self

    def request(self, path: str, method: str = "GET", token: str | None = ADMIN_TOKEN, headers=None):
        request = urllib.request.Request(self.url + path, method=method, headers=dict(headers or {}))
        if token:
            request.add_header("Authorization", f"token {token}")
        return urllib.request.urlopen(request, timeout=30)

    def socket(self, token: str | None = "token-alice", hello: bool = True, **kwargs) -> "RawClient":
        return RawClient(self, token, hello, **kwargs)


class RawClient:
    """The protocol by hand (for abuse tests and to control every frame)."""

    def __init__(self, host: JupyterHost, token: str | None, hello: bool, **kwargs):
        from websockets.sync.client import connect

        headers = {"Authorization": f"token {token}"} if token else {}
        self.ws = connect(host.url.replace("http", "ws") + "nnsight/ws", additional_headers=headers,
                          max_size=None, open_timeout=30, **kwargs).__enter__()
        if hello:
            self.send({"type": "hello", "protocol": protocol.PROTOCOL_VERSION, "client": "tests", "python": "3"})
            welcome = self.recv()
            assert welcome["type"] == "welcome", welcome

    def send(self, message: dict) -> None:
        self.ws.send(json.dumps(message))

    def submit(self, graph_bytes: bytes, model: str = "tiny", request_id: str | None = None) -> str:
        """Send a submit (a fresh request id unless one is given: the host makes one job per request id);
        the request id."""
        request_id = request_id or uuid.uuid4().hex
        self.ws.send(protocol.pack({"type": "submit", "request_id": request_id, "model": model}, graph_bytes))
        return request_id

    def recv(self, timeout: float = 60) -> dict:
        """The next message: a dict (text), or a dict with "_payload" (binary)."""
        message = self.ws.recv(timeout=timeout)
        if isinstance(message, bytes):
            header, payload = protocol.unpack(message)
            header["_payload"] = payload
            return header
        return json.loads(message)

    def until(self, predicate, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(timeout=max(0.1, deadline - time.monotonic()))
            if predicate(message):
                return message

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def keep_worker_busy(graph_of):
    """keep_worker_busy(host, token) -> (socket, job id) of a long generation, once it runs, so that
    jobs sent next queue up together whatever the machine's speed."""
    def generation(model, tracer):
        with tracer.invoke("hello"):
            tracer.result.save()

    def start(host: JupyterHost, token: str) -> tuple["RawClient", str]:
        busy = host.socket(token)
        busy.submit(graph_of(generation, kind="generate", max_new_tokens=300))
        blocker = busy.until(lambda m: m["type"] == "accepted")["job_id"]
        busy.until(lambda m: m.get("job_id") == blocker and m.get("status") == "running")
        return busy, blocker

    return start


@pytest.fixture
def connect_as(jupyter_host, monkeypatch):
    """connect_as(token) -> a client `Connection` to the shared host (closed after the test)."""
    from nnsight_jupyter.client import connect

    monkeypatch.setenv("NNSIGHT_JUPYTER_PROGRESS", "0")
    opened = []

    def make(token: str):
        opened.append(connect(jupyter_host.url, token))
        return opened[-1]

    yield make
    for connection in opened:
        connection.close()


#: The host's backends; every test of the shared host runs on each. The Ray ones are marked `ray`.
BACKENDS = ["local", pytest.param("ray", marks=pytest.mark.ray)]
#: A local Ray of 2 CPUs on 127.0.0.1, started by the host (Serve can take 45 s to start when the machine is busy).
RAY_CONFIG = {"backend": "ray", "ray_num_cpus": 2}


def _backend_config(backend: str) -> dict:
    """NNsightHost settings of a backend (skips the test when Ray Serve is not installed)."""
    if backend != "ray":
        return {}
    pytest.importorskip("ray.serve", reason='the Ray backend needs pip install ".[ray]"')
    return dict(RAY_CONFIG)


@pytest.fixture(scope="session")
def backend_config():
    """backend_config("local" | "ray") -> NNsightHost settings for make_host (skips without Ray Serve)."""
    return _backend_config


@pytest.fixture(scope="session", params=BACKENDS)
def jupyter_host(request, tmp_path_factory, tiny_model_dir):
    """One shared server for the tests that don't break it (threads=1 worker), once per backend."""
    host = JupyterHost(tmp_path_factory.mktemp(f"host-{request.param}"),
                       {"tiny": {"source": str(tiny_model_dir), "threads": 1}},
                       max_queued_per_user=40, max_frame_bytes=4_000_000, **_backend_config(request.param))
    host.start_timeout = 240 if request.param == "ray" else 120
    host.backend = request.param
    yield host.start()
    host.stop()


@pytest.fixture
def make_host(tmp_path, tiny_model_dir):
    """make_host(**config) -> a fresh server of this test's own (for fault tests)."""
    hosts = []

    def make(models=None, start=True, **config) -> JupyterHost:
        host = JupyterHost(tmp_path / f"host{len(hosts)}",
                           models if models is not None else {"tiny": {"source": str(tiny_model_dir), "threads": 1}},
                           **config)
        (host.root).mkdir(parents=True, exist_ok=True)
        if config.get("backend") == "ray":
            host.start_timeout = 240.0
        hosts.append(host)
        return host.start() if start else host

    yield make
    for host in hosts:
        host.stop()


class _Recorder:
    """A runner (`graph.runner.Runner`) that keeps the graph instead of running it (as the client would send it)."""

    def run(self, graph, observer=None):
        from nnsight_jupyter.graph.result import Result

        self.graph = graph
        return Result()


@pytest.fixture
def graph_of(tiny_local):
    """graph_of(body) -> encoded graph of `with model.trace() as tr: body(model, tr)` (not run);
    `graph_of(body, "generate", max_new_tokens=n)` for a generation."""
    from nnsight_jupyter.graph.codec import encode

    def build(body, kind="trace", **options):
        recorder = _Recorder()
        with getattr(tiny_local, kind)(**options) as tracer:
            tracer.runner = recorder
            body(tiny_local, tracer)
        return encode(recorder.graph)

    return build


@pytest.fixture
def tiny_local(tiny_model_dir):
    """The same tiny model, loaded locally, for local-vs-remote comparisons."""
    from nnsight_jupyter import LanguageModel

    return LanguageModel(str(tiny_model_dir))


# ----------------------------------------------------------------------------- hostile graphs (limits, failures)


@pytest.fixture
def with_nodes():
    """with_nodes(graph_bytes, [(op, args), ...]) -> the graph with those nodes appended, as a hostile
    co-tenant would write them by hand (args may hold `Prev(k)`: the k-th appended node)."""
    from nnsight_jupyter.graph.codec import decode, encode
    from nnsight_jupyter.graph.nodes import Node, Ref

    class Prev:
        """In `with_nodes`, a reference to the k-th appended node (`Prev(0)` is the first)."""

        def __init__(self, index: int):
            self.index = index

    def build(graph_bytes: bytes, ops: list[tuple[str, tuple]], save_last: bool = True) -> bytes:
        """`graph_bytes` with `ops` appended after its last node, anchored where that node is (same
        module, call and invoke), each at line evil.py:<n>; args may hold `Prev(k)` and `Ref`s to
        the traced nodes; the last one is saved."""
        graph = decode(graph_bytes)
        anchor = graph.nodes[-1]
        first = len(graph.nodes)

        def arg(value: Any) -> Any:
            if isinstance(value, Prev):
                return Ref(first + value.index)
            if isinstance(value, tuple):
                return tuple(arg(v) for v in value)
            return value

        for index, (op, args) in enumerate(ops):
            graph.nodes.append(Node(first + index, op, arg(args), {}, invoke=anchor.invoke, module=anchor.module,
                                    call=anchor.call, line=f"evil.py:{index + 1}"))
        if save_last:
            graph.nodes.append(Node(len(graph.nodes), "save", (Ref(len(graph.nodes) - 1),), invoke=anchor.invoke,
                                    module=anchor.module, call=anchor.call, line="evil.py:99"))
        return encode(graph)

    build.Prev = Prev
    return build
