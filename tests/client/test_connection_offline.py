"""The client against an in-process fake host (websockets on 127.0.0.1) that speaks docs/protocol.md.

The fake host serves the REST GET endpoints through `process_request` and the websocket at
/nnsight/ws; it runs submitted graphs on a real tiny Llama with `execution.execute`. It speaks no
dialect of its own: its model description and status are the real host's (`server.host.Host` over
`server.worker.describe`), its messages carry the real message types and the fields the real
handler sends. Scenarios:
a normal job, queue full, a job error, a cancelled job, a socket that drops after `accepted` (the
result then comes through `attach`), and a job that runs until it is cancelled (Ctrl-C tests).
"""

from __future__ import annotations

import _thread
import http.server
import json
import threading

import pytest
import torch
from websockets.sync.server import serve

import nnsight_jupyter.client.connection as connection_module
import nnsight_jupyter.client.jobs as jobs_module
from nnsight_jupyter import LanguageModel
from nnsight_jupyter import errors as E
from nnsight_jupyter import protocol as P
from nnsight_jupyter.client import connect, current_connection, runner_for
from nnsight_jupyter.client.connection import Connection
from nnsight_jupyter.client.discovery import TOKEN_ENV, URL_ENV
from nnsight_jupyter.client.transport import Socket
from nnsight_jupyter.execution import LanguageTarget, execute
from nnsight_jupyter.graph.codec import decode, encode_values
from nnsight_jupyter.models import tiny_llama, word_tokenizer
from nnsight_jupyter.protocol import PROTOCOL_VERSION, pack, unpack
from nnsight_jupyter.server.host import Host, HostError
from nnsight_jupyter.server.jobs import JobStore
from nnsight_jupyter.server.worker import ModelSpec, describe

TOKEN = "s3cret"


class FakeHost:
    """A protocol-speaking stand-in for the model host (one model, "tiny")."""

    def __init__(self, store_dir, scenario: str = "ok", *, loading_polls: int = 0, error_type: str = "ExecutionError"):
        self.scenario = scenario
        self.error_type = error_type
        self.loading_polls = loading_polls
        self.received: list[dict] = []
        self.connections = 0
        self.jobs = 0
        self.pending: dict[str, tuple[dict, bytes]] = {}   # job id -> result frame parts (drop scenario)
        self.cancel_seen = threading.Event()
        self.submitted = threading.Event()
        self.running_sent = threading.Event()
        self.real = tiny_llama(seed=0)
        self.tokenizer = word_tokenizer()
        self.target = LanguageTarget(self.real, self.tokenizer)
        self.order = self.target.record_order()
        # The real host's views (status, model description), its worker's description of the model.
        self.host = Host(JobStore(store_dir / "jobs.sqlite"), {"tiny": ModelSpec("tiny", "bundled:tiny-llama")})
        self.info = describe("tiny", self.real, self.tokenizer, self.order)
        self.server = serve(self.handler, "127.0.0.1", 0, process_request=self.http, max_size=None,
                            compression=None)
        self.port = self.server.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
        self.host.store.close()
        self.host.decoder.shutdown(wait=False)

    # ------------------------------------------------------------------ REST (GET only)

    def model(self, poll: bool = True):
        """The real host's record of the model: loading for `loading_polls` status polls, then ready."""
        model = self.host.models["tiny"]
        if self.loading_polls > 0:
            self.loading_polls -= poll
            model.state, model.info = "loading", None
        else:
            model.state, model.info = "ready", self.info
        return model

    def http(self, connection, request):
        if request.headers.get("Authorization") != f"token {TOKEN}":
            return connection.respond(403, json.dumps({"message": "Forbidden", "reason": None}))
        path = request.path.split("?")[0]
        if path == "/nnsight/ws":
            return None
        api = "/nnsight/api/"
        if not path.startswith(api):
            return connection.respond(404, "not found")
        route = path[len(api):]
        if route == "status":
            self.model()
            body = self.host.status()
        elif route == "models":
            body = {"tiny": {"state": "ready", "source": "bundled:tiny-llama", "dtype": "float32", "error": None}}
        elif route == "models/tiny":
            self.model(poll=False)
            try:
                body = self.host.describe("tiny")
            except HostError as error:
                return connection.respond(409, json.dumps({"message": str(error)}))
        elif route.startswith("models/"):
            return connection.respond(404, json.dumps({"message": "unknown model"}))
        elif route == "jobs":
            body = {"jobs": [{"id": "job-1", "status": "done"}]}
        else:
            return connection.respond(404, json.dumps({"message": "not found"}))
        return connection.respond(200, json.dumps(body))

    # ------------------------------------------------------------------ websocket

    def send(self, ws, **message) -> None:
        ws.send(json.dumps(message))

    def run_job(self, job_id: str, payload: bytes) -> tuple[dict, bytes]:
        result = execute(decode(payload), self.target, echo_logs=False)
        header = {"type": P.RESULT, "job_id": job_id, "status": "done", "batch_id": "b1", "rows": [0, 1],
                  "logs": [list(log) for log in result.logs],
                  "missing": {str(k): v for k, v in result.missing.items()}}
        return header, encode_values({str(k): v for k, v in result.saved.items()})

    def handler(self, ws) -> None:
        self.connections += 1
        hello = json.loads(ws.recv())
        self.received.append(hello)
        if hello.get("type") != "hello" or hello.get("protocol") != PROTOCOL_VERSION:
            self.send(ws, type=P.ERROR, code="protocol", error={"type": "ProtocolError", "message": "bad hello"})
            ws.close(1002)
            return
        if self.scenario == "old_protocol":
            self.send(ws, type=P.WELCOME, protocol=PROTOCOL_VERSION + 1, server="x", python="3", user="u",
                      models={}, max_frame_bytes=1 << 20)
        else:
            self.send(ws, type=P.WELCOME, protocol=PROTOCOL_VERSION, server="test", python="3", user="alice",
                      models={"tiny": "ready"}, max_frame_bytes=1 << 30)
        for raw in ws:
            if isinstance(raw, bytes):
                header, payload = unpack(raw)
                self.received.append(header)
                if self.on_submit(ws, header, payload) == "drop":
                    return
            else:
                message = json.loads(raw)
                self.received.append(message)
                if message["type"] == "attach":
                    self.on_attach(ws, message["job_id"])
                elif message["type"] == "cancel":
                    self.cancel_seen.set()
                    self.send(ws, type=P.STATUS, job_id=message["job_id"], status="cancelled")

    def on_submit(self, ws, header: dict, payload: bytes):
        assert header["type"] == "submit" and header["model"] == "tiny"
        request_id = header["request_id"]
        if self.scenario == "queue_full":
            self.send(ws, type=P.ERROR, code="queue_full", request_id=request_id,
                      error={"type": "QueueFullError", "message": "you have 4 jobs queued on 'tiny' (the limit)"})
            return None
        self.jobs += 1
        job_id = f"job-{self.jobs}"
        self.send(ws, type=P.ACCEPTED, request_id=request_id, job_id=job_id, position=1)
        self.submitted.set()
        if self.scenario == "drop":
            self.pending[job_id] = self.run_job(job_id, payload)
            ws.close()
            return "drop"
        self.send(ws, type=P.STATUS, job_id="someone-elses", status="running", batch_id="b0")   # ignored
        self.send(ws, type=P.STATUS, job_id=job_id, status="queued", position=0)
        self.send(ws, type=P.STATUS, job_id=job_id, status="running", batch_id="b1", rows=[0, 1])
        self.running_sent.set()
        if self.scenario == "hang":
            return None   # runs until cancelled
        if self.scenario == "job_error":
            self.send(ws, type=P.STATUS, job_id=job_id, status="error",
                      error={"type": self.error_type, "message": f"cell.py:3: it went wrong ({self.error_type})"})
            return None
        if self.scenario == "host_cancel":
            self.send(ws, type=P.STATUS, job_id=job_id, status="cancelled")
            return None
        result_header, values = self.run_job(job_id, payload)
        for step in range(3):
            self.send(ws, type=P.PROGRESS, job_id=job_id, step=step + 1, steps=3)
        for line, text in result_header["logs"]:
            self.send(ws, type=P.LOG, job_id=job_id, line=line, text=text)
        self.send(ws, type=P.STATUS, job_id=job_id, status="done", batch_id="b1")
        ws.send(pack(result_header, values))
        return None

    def on_attach(self, ws, job_id: str) -> None:
        if job_id not in self.pending:
            self.send(ws, type=P.ERROR, code="not_found", job_id=job_id,
                      error={"type": "NotFound", "message": f"no job {job_id}"})
            return
        header, values = self.pending.pop(job_id)
        self.send(ws, type=P.STATUS, job_id=job_id, status="running", batch_id="b1")
        ws.send(pack(header, values))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No real server is found by accident, and the current connection is reset around each test."""
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    import jupyter_core.paths

    monkeypatch.setattr(jupyter_core.paths, "jupyter_runtime_dir", lambda: str(tmp_path))
    monkeypatch.setattr(jobs_module, "RECONNECT_DELAYS", (0.0, 0.05, 0.1))
    saved = connection_module._current
    connection_module._current = None
    yield
    if connection_module._current is not None:
        connection_module._current.close()
    connection_module._current = saved


@pytest.fixture
def make_host(tmp_path):
    """make_host(scenario, **options) -> a running FakeHost, shut down after the test."""
    hosts: list[FakeHost] = []

    def make(*args, **kwargs) -> FakeHost:
        hosts.append(FakeHost(tmp_path / f"host{len(hosts)}", *args, **kwargs))
        return hosts[-1]

    yield make
    for fake in hosts:
        fake.close()


@pytest.fixture
def host(make_host):
    return make_host()


def local_reference(prompt: str):
    local = LanguageModel(tiny_llama(seed=0), tokenizer=word_tokenizer())
    with local.trace(prompt):
        heads = local.model.layers[0].self_attn.heads.save()
        h = local.model.layers[1].output.save()
        logits = local.lm_head.output.save()
    return heads.value, h.value, logits.value


# ====================================================================== end to end

def test_connect_model_and_trace_end_to_end(host, capsys):
    conn = connect(host.url, TOKEN)
    assert current_connection() is conn
    assert conn.server_status["models"]["tiny"]["state"] == "ready"
    model = conn.model("tiny")
    assert isinstance(model, LanguageModel)
    assert repr(model).startswith("LlamaForCausalLM(")
    assert model.config.num_attention_heads == 4

    with model.trace("the cat sat"):
        heads = model.model.layers[0].self_attn.heads.save()
        h = model.model.layers[1].output.save()
        print("norm", h.norm())
        logits = model.lm_head.output.save()
    ref_heads, ref_h, ref_logits = local_reference("the cat sat")
    assert torch.equal(heads.value, ref_heads)
    assert torch.equal(h.value, ref_h)
    assert torch.equal(logits.value, ref_logits)

    runner = model._host
    assert runner.last_job_id == "job-1"
    out = capsys.readouterr().out
    assert out.count("norm tensor(") == 1          # the log, printed once as it came
    hello = host.received[0]
    assert hello["type"] == "hello" and hello["protocol"] == PROTOCOL_VERSION
    assert hello["client"].startswith("nnsight-jupyter ") and hello["python"].count(".") == 2
    assert conn.welcome["user"] == "alice"

    # a second trace reuses the socket
    with model.trace("the dog ran"):
        model.lm_head.output.save()
    assert runner.last_job_id == "job-2" and host.connections == 1


class Events:
    """An observer (graph.runner.Observer) that writes down what it hears."""

    def __init__(self):
        self.events = []

    def status(self, state, **detail):
        self.events.append(("status", state, detail.get("position", detail.get("batch_id"))))

    def progress(self, step, steps):
        self.events.append(("progress", step, steps))

    def log(self, line, text):
        self.events.append(("log", line.split(":")[0], text.split("(")[0]))


def test_an_observer_hears_the_remote_job(host, capsys):
    model = connect(host.url, TOKEN).model("tiny")
    events = Events()
    with model.trace("the cat sat") as tracer:
        tracer.observer = events
        print("norm", model.model.layers[1].output.norm())
        model.lm_head.output.save()
    assert events.events == [("status", "queued", 1), ("status", "queued", 0), ("status", "running", "b1"),
                             ("progress", 1, 3), ("progress", 2, 3), ("progress", 3, 3),
                             ("log", "test_connection_offline.py", "norm tensor"), ("status", "done", None)]
    assert capsys.readouterr().out == ""      # the observer shows the lines, not the default progress bar


def test_an_observer_hears_a_remote_error_last(make_host):
    model = connect(make_host("job_error").url, TOKEN).model("tiny")
    events = Events()
    with pytest.raises(E.ExecutionError):
        with model.trace("the cat") as tracer:
            tracer.observer = events
            model.lm_head.output.save()
    assert events.events[-1] == ("status", "error", None)
    assert [e for e in events.events if e[1] in ("done", "error", "cancelled")] == [("status", "error", None)]


def test_progress_can_be_switched_off(host, monkeypatch):
    monkeypatch.setenv("NNSIGHT_JUPYTER_PROGRESS", "0")
    made = []
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **k: made.append(1))
    model = connect(host.url, TOKEN).model("tiny")
    with model.trace("the cat"):
        model.lm_head.output.save()
    assert made == []


def test_rest_calls(host):
    conn = connect(host.url, TOKEN)
    assert conn.models()["tiny"]["state"] == "ready"
    assert conn.jobs() == [{"id": "job-1", "status": "done"}]
    assert conn.status()["protocol"] == PROTOCOL_VERSION


def test_wrong_token_is_a_clear_error(host):
    with pytest.raises(E.NNsightError) as info:
        connect(host.url, "wrong")
    assert "403" in str(info.value) and "Forbidden" in str(info.value) and "token" in str(info.value)
    conn = Connection(host.url, "wrong")
    with pytest.raises(E.NNsightError, match="refused the websocket .*403"):
        conn.socket.open()


def test_unreachable_server():
    with pytest.raises(E.NNsightError, match="cannot reach the Jupyter server"):
        connect("http://127.0.0.1:9/", "x", timeout=2)


def test_unknown_model_lists_hosted_names(host):
    conn = connect(host.url, TOKEN)
    with pytest.raises(E.NNsightError, match="no model 'gpt5'.*'tiny'"):
        conn.model("gpt5")


def test_model_still_loading_waits_and_says_so_once(make_host, capsys):
    host = make_host(loading_polls=3)
    conn = Connection(host.url, TOKEN)
    model = conn.model("tiny", timeout=30)
    assert isinstance(model, LanguageModel)
    out = capsys.readouterr().out
    assert out.count("waiting") == 1 and "'tiny' is loading" in out


def test_model_loading_times_out(make_host):
    host = make_host(loading_polls=1000)
    conn = Connection(host.url, TOKEN)
    with pytest.raises(E.NNsightError, match="still loading after 1 s"):
        conn.model("tiny", timeout=1)


def test_protocol_version_mismatch(make_host):
    host = make_host("old_protocol")
    conn = Connection(host.url, TOKEN)
    with pytest.raises(E.ProtocolError, match="protocol version mismatch"):
        conn.socket.open()


# ====================================================================== errors

def test_queue_full(make_host):
    host = make_host("queue_full")
    model = connect(host.url, TOKEN).model("tiny")
    with pytest.raises(E.QueueFullError, match="4 jobs queued") as info:
        with model.trace("the cat"):
            model.lm_head.output.save()
    assert isinstance(info.value, E.RemoteError) and isinstance(info.value, E.NNsightError)


@pytest.mark.parametrize("error_type, cls", [
    ("OutOfOrderError", E.OutOfOrderError), ("ExecutionError", E.ExecutionError),
    ("ShapeMismatchError", E.ShapeMismatchError), ("GraphError", E.GraphError),
    ("OpNotAllowedError", E.OpNotAllowedError), ("ModuleIndexError", E.ModuleIndexError),
])
def test_job_errors_are_the_local_classes(make_host, error_type, cls):
    host = make_host("job_error", error_type=error_type)
    model = connect(host.url, TOKEN).model("tiny")
    with pytest.raises(cls, match="cell.py:3: it went wrong") as info:
        with model.trace("the cat"):
            model.lm_head.output.save()
    assert type(info.value) is cls
    assert info.value.job_id == "job-1"


def test_unknown_error_types_are_remote_errors(make_host):
    host = make_host("job_error", error_type="ValueError")
    model = connect(host.url, TOKEN).model("tiny")
    with pytest.raises(E.RemoteError) as info:
        with model.trace("the cat"):
            model.lm_head.output.save()
    assert type(info.value) is E.RemoteError and info.value.remote_type == "ValueError"


def test_cancelled_job(make_host):
    host = make_host("host_cancel")
    model = connect(host.url, TOKEN).model("tiny")
    with pytest.raises(E.JobCancelledError, match="job-1"):
        with model.trace("the cat"):
            model.lm_head.output.save()


# ====================================================================== reconnect

def test_drop_after_accepted_reattaches(make_host):
    host = make_host("drop")
    model = connect(host.url, TOKEN).model("tiny")
    with model.trace("the cat sat"):
        heads = model.model.layers[0].self_attn.heads.save()
        h = model.model.layers[1].output.save()
        logits = model.lm_head.output.save()
    ref_heads, ref_h, ref_logits = local_reference("the cat sat")
    assert torch.equal(h.value, ref_h) and torch.equal(heads.value, ref_heads)
    assert torch.equal(logits.value, ref_logits)
    assert host.connections == 2
    attaches = [m for m in host.received if m.get("type") == "attach"]
    assert attaches == [{"type": "attach", "job_id": "job-1"}]
    assert model._host.last_job_id == "job-1"


def test_reconnect_gives_up_with_the_job_id(make_host, monkeypatch):
    host = make_host("drop")
    model = connect(host.url, TOKEN).model("tiny")
    real_open = Socket._connect
    opens = []

    def failing_open(self):
        opens.append(1)
        if len(opens) > 1:
            raise E.NNsightError("cannot open the websocket (test)")
        return real_open(self)

    monkeypatch.setattr(Socket, "_connect", failing_open)
    with pytest.raises(E.NNsightError, match="could not reconnect.*attach\\('job-1'\\)"):
        with model.trace("the cat sat"):
            model.lm_head.output.save()

    # the job went on: once the host can be reached again, attach picks its result up
    monkeypatch.setattr(Socket, "_connect", real_open)
    result = current_connection().attach("job-1")
    (logits,) = result.saved.values()
    assert torch.equal(logits, local_reference("the cat sat")[2])
    assert result.missing == {} and result.logs == []


# ====================================================================== Ctrl-C

def test_keyboard_interrupt_cancels_the_job(make_host, monkeypatch):
    host = make_host("hang")
    model = connect(host.url, TOKEN).model("tiny")

    class InterruptWhenRunning:
        """An observer (graph.runner.Observer) that presses Ctrl-C when the job starts running."""

        def status(self, state, **detail):
            if state == "running":
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with model.trace("the cat") as tracer:
            tracer.observer = InterruptWhenRunning()
            model.lm_head.output.save()
    assert host.cancel_seen.is_set()
    assert {"type": "cancel", "job_id": "job-1"} in host.received


def test_real_sigint_while_waiting_cancels_the_job(make_host):
    host = make_host("hang")
    model = connect(host.url, TOKEN).model("tiny")

    running = threading.Event()

    class Running:
        """Tells the other thread once the client is waiting on a running job."""

        def status(self, state, **detail):
            if state == "running":
                running.set()

    def press_ctrl_c():
        assert running.wait(10)
        _thread.interrupt_main()

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        with model.trace("the cat") as tracer:
            tracer.observer = Running()
            model.lm_head.output.save()
    assert host.cancel_seen.wait(5)
    assert {"type": "cancel", "job_id": "job-1"} in host.received
    # the connection is still usable afterwards
    host.scenario = "ok"
    with model.trace("the cat"):
        out = model.lm_head.output.save()
    assert out.value.shape == (1, 2, 200)


# ====================================================================== remote=True on a local model

def test_remote_true_on_a_local_model(host):
    connect(host.url, TOKEN)
    local = LanguageModel(tiny_llama(seed=0), tokenizer=word_tokenizer())
    local.__dict__["_name"] = "tiny"
    with local.trace("the cat sat", remote=True):
        logits = local.lm_head.output.save()
    _, _, ref_logits = local_reference("the cat sat")
    assert torch.equal(logits.value, ref_logits)
    assert any(m.get("type") == "submit" for m in host.received)


def test_remote_session_on_a_local_model(host):
    connect(host.url, TOKEN)
    local = LanguageModel(tiny_llama(seed=0), tokenizer=word_tokenizer())
    local.__dict__["_name"] = "tiny"
    with local.session(remote=True):
        with local.trace("the cat sat"):
            logits = local.lm_head.output.save()
        with local.trace("the cat sat"):
            again = local.lm_head.output.save()
    assert torch.equal(logits.value, local_reference("the cat sat")[2]) and torch.equal(again.value, logits.value)
    assert sum(m.get("type") == "submit" for m in host.received) == 1      # one request for the session


def test_remote_true_finds_the_model_by_source(host):
    conn = connect(host.url, TOKEN)
    local = LanguageModel(tiny_llama(seed=0), tokenizer=word_tokenizer())
    local.__dict__["_name"] = "tiny-llama"     # hosted as "tiny" from "bundled:tiny-llama"
    assert runner_for(local).model_name == "tiny"
    assert conn is current_connection()


def test_remote_true_with_a_different_tree(host):
    connect(host.url, TOKEN)
    bigger = LanguageModel(tiny_llama(num_layers=5), tokenizer=word_tokenizer())
    bigger.__dict__["_name"] = "tiny"
    with pytest.raises(E.NNsightError, match="module trees.*model.layers.4"):
        with bigger.trace("the cat", remote=True):
            bigger.lm_head.output.save()


def test_remote_true_with_an_unknown_name(host):
    connect(host.url, TOKEN)
    local = LanguageModel(tiny_llama(seed=0), tokenizer=word_tokenizer())
    local.__dict__["_name"] = "nope"
    with pytest.raises(E.NNsightError, match="no model named 'nope'.*'tiny'"):
        runner_for(local)


def test_remote_true_without_a_connection():
    local = LanguageModel(tiny_llama(seed=0), tokenizer=word_tokenizer())
    with pytest.raises(E.TracingError, match=r"not connected to one: call nnsight_jupyter.connect\(\) first"):
        with local.trace("the cat", remote=True):
            local.lm_head.output.save()


def test_close_and_context_manager(host):
    with connect(host.url, TOKEN) as conn:
        assert current_connection() is conn
    assert current_connection() is None and conn.closed
    with pytest.raises(E.NNsightError, match="closed"):
        conn.socket.open()


# ====================================================================== cancel over REST (DELETE)

class _RestHandler(http.server.BaseHTTPRequestHandler):
    calls: list[tuple[str, str, str | None]] = []

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_DELETE(self):
        self.calls.append(("DELETE", self.path, self.headers.get("Authorization")))
        if self.path.endswith("/done-job"):
            self._answer(409, {"message": "job done-job has finished"})
        else:
            self._answer(200, {"id": self.path.rsplit("/", 1)[1], "status": "cancelled"})

    def do_GET(self):
        self.calls.append(("GET", self.path, self.headers.get("Authorization")))
        self._answer(200, {"id": "j1", "status": "running", "history": []})

    def log_message(self, *args):
        pass


def test_job_and_cancel_over_rest():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = Connection(f"http://127.0.0.1:{server.server_address[1]}/base", "tok")
        assert conn.ws_url.endswith("/base/nnsight/ws") and conn.ws_url.startswith("ws://")
        assert conn.cancel("j1") == {"id": "j1", "status": "cancelled"}
        assert conn.job("j1")["status"] == "running"
        assert ("DELETE", "/base/nnsight/api/jobs/j1", "token tok") in _RestHandler.calls
        with pytest.raises(E.NNsightError, match="HTTP 409: job done-job has finished"):
            conn.cancel("done-job")
    finally:
        server.shutdown()
        thread.join(5)


def test_generate_runs_on_the_host(host):
    model = connect(host.url, TOKEN).model("tiny")
    with model.generate("the cat sat", max_new_tokens=3) as tracer:
        ids = tracer.result.save()
    local = LanguageModel(tiny_llama(seed=0), tokenizer=word_tokenizer())
    with local.generate("the cat sat", max_new_tokens=3) as local_tracer:
        local_ids = local_tracer.result.save()
    assert ids.value.shape == (1, 6)
    assert torch.equal(ids.value, local_ids.value)


def test_out_of_order_is_refused_before_sending(host):
    model = connect(host.url, TOKEN).model("tiny")
    with pytest.raises(E.OutOfOrderError, match="model.layers.0"):
        with model.trace("the cat"):
            model.model.layers[1].output.save()
            model.model.layers[0].output.save()
    assert not any(m.get("type") == "submit" for m in host.received)



def test_attach_to_an_unknown_job(host):
    conn = connect(host.url, TOKEN)
    with pytest.raises(E.RemoteError, match="does not know job job-404"):
        conn.attach("job-404")
