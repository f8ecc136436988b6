"""`%%trace` and `%nnsight` against a real model host (a Jupyter server on 127.0.0.1, real
websockets), in IPython's own InteractiveShell: connect, models, status, jobs, cancel, attach,
remote cells (hosted models and --remote), print() lines streamed as the job runs, the queued
state, remote errors at the cell's lines, and a cell that lost its connection finished by attach."""

from __future__ import annotations

import re
import threading

import pytest
import torch

import nnsight_jupyter as nj
from nnsight_jupyter.client import current_connection
from nnsight_jupyter.notebook.magics import NNsightMagics
from nnsight_jupyter.notebook.status import StatusLine

PROMPT = "the cat sat on the mat"


@pytest.fixture
def remote(notebook, jupyter_host, tiny_local, monkeypatch):
    """The notebook connected to the host (as alice unless the test connects again)."""
    monkeypatch.setenv("NNSIGHT_JUPYTER_PROGRESS", "0")
    notebook.ns.update(torch=torch, prompt=PROMPT, local=tiny_local, host_url=jupyter_host.url)
    notebook.connect = lambda token="token-alice": notebook.run(f"%nnsight connect {jupyter_host.url} --token {token}")
    yield notebook
    connection = current_connection()
    if connection is not None:
        connection.close()
    magics(notebook).connection = None


def magics(notebook) -> NNsightMagics:
    return notebook.shell.magics_manager.registry["NNsightMagics"]


def texts(notebook) -> list[str]:
    return [o["data"]["text/plain"] for o in notebook.outputs]


def test_connect_models_and_status(remote, jupyter_host, capsys):
    assert remote.connect().success
    assert f"connected to {jupyter_host.url}: tiny (ready)" in capsys.readouterr().out
    assert current_connection() is magics(remote).connection and current_connection().token == "token-alice"
    assert remote.run("%nnsight models").success
    (table,) = remote.outputs
    assert re.search(r"^tiny\s+ready\s+\S+\s+float32", table["data"]["text/plain"], re.M)
    assert "<td>tiny</td><td>ready</td>" in table["data"]["text/html"]
    assert remote.run("%nnsight status").success
    text = texts(remote)[0]
    assert text.startswith(f"host {jupyter_host.url} · protocol 1") and re.search(r"^tiny\s+ready\s+\d+\s+\d+", text, re.M)
    assert "job_timeout=" in text


def test_commands_connect_on_their_own_from_the_environment(remote, jupyter_host, monkeypatch):
    monkeypatch.setenv("NNSIGHT_JUPYTER_URL", jupyter_host.url)
    monkeypatch.setenv("NNSIGHT_JUPYTER_TOKEN", "token-carol")
    assert current_connection() is None
    assert remote.run("%nnsight jobs").success
    assert current_connection().token == "token-carol"


def test_a_wrong_token_is_a_clear_error_at_the_magic_line(remote):
    result = remote.connect("not-a-token")
    assert isinstance(result.error_in_exec, nj.NNsightError)
    assert "token is wrong or missing" in str(result.error_in_exec)
    assert str(result.error_in_exec).startswith(f"Cell In[{remote.number}], line 1: ")


def test_a_hosted_model_cell_equals_the_local_run_and_reports_bytes(remote, tiny_local, jupyter_host):
    remote.connect()
    assert remote.run('hosted = __import__("nnsight_jupyter").client.current_connection().model("tiny")').success
    assert remote.run("%%trace hosted prompt\nh = hosted.model.layers[1].output.save()\n"
                      "logits = hosted.lm_head.output[:, -1].save()\n").success
    with tiny_local.trace(PROMPT):
        h = tiny_local.model.layers[1].output.save()
        logits = tiny_local.lm_head.output[:, -1].save()
    assert torch.equal(remote.ns["h"], h.value) and torch.equal(remote.ns["logits"], logits.value)
    final = remote.status_texts()[-1]
    assert f"tiny on {jupyter_host.url}: done in" in final and "1 forward pass" in final
    received = re.search(r"([\d.]+) (bytes|KiB|MiB) received", final)
    assert received and float(received[1]) > 0


def test_remote_option_runs_a_local_model_on_the_host(remote, tiny_local, jupyter_host):
    remote.connect("token-dave")
    assert remote.run("%%trace local prompt --remote --max-new-tokens 3\nids = tracer.result.save()\n").success
    with tiny_local.generate(PROMPT, max_new_tokens=3) as tracer:
        ids = tracer.result.save()
    assert torch.equal(remote.ns["ids"], ids.value)
    statuses = remote.status_texts()
    assert f"on {jupyter_host.url}: done in" in statuses[-1] and "3 forward passes" in statuses[-1]
    assert [s for s in statuses if "running · step 3/3" in s]
    jobs = current_connection().jobs()
    assert jobs[0]["kind"] == "generate" and jobs[0]["status"] == "done"
    assert remote.run("%nnsight jobs").success
    assert re.search(rf"^{jobs[0]['id']}\s+tiny\s+generate\s+done", texts(remote)[0], re.M)


class _Recording(StatusLine):
    """The status line, also keeping the order in which progress and log lines arrived."""

    events: list = []

    def progress(self, step, steps):
        self.events.append(("progress", step))
        super().progress(step, steps)

    def log(self, line, text):
        self.events.append(("log", text))
        super().log(line, text)


def test_print_lines_stream_while_a_remote_generation_runs(remote, capsys, monkeypatch):
    remote.connect("token-erin")
    monkeypatch.setattr(magics(remote), "status_line", _Recording)
    _Recording.events = []
    cell = ("%%trace local prompt --remote --max-new-tokens 6\n"
            "for step in tracer.all():\n"
            "    print('top', local.lm_head.output[0, -1].argmax())\n"
            "ids = tracer.result.save()\n")
    assert remote.run(cell).success
    events = _Recording.events
    logs = [i for i, e in enumerate(events) if e[0] == "log"]
    progress = [i for i, e in enumerate(events) if e[0] == "progress"]
    assert len(logs) == 6 and len(progress) == 6
    assert logs[0] < progress[-1]          # a line arrived before the generation ended: streamed, not at the end
    out = capsys.readouterr().out
    assert out.count("top tensor(") == 6   # every line printed once (the result's copy is not printed again)


def test_a_remote_session_cell_is_one_job_equal_to_the_local_session(remote, tiny_local):
    remote.connect("token-heidi")
    cell = ("%%trace local --session --remote\n"
            "with local.trace('hello world'):\n"
            "    clean = local.model.layers[1].output[:, -1]\n"
            "with local.trace(prompt):\n"
            "    local.model.layers[1].output[:, -1] = clean\n"
            "    patched = local.lm_head.output.save()\n")
    before = len(current_connection().jobs())
    assert remote.run(cell).success
    with tiny_local.session():
        with tiny_local.trace("hello world"):
            clean = tiny_local.model.layers[1].output[:, -1]
        with tiny_local.trace(PROMPT):
            tiny_local.model.layers[1].output[:, -1] = clean
            patched = tiny_local.lm_head.output.save()
    assert torch.equal(remote.ns["patched"], patched.value)
    assert len(current_connection().jobs()) == before + 1 and "2 forward passes" in remote.status_texts()[-1]


def test_a_remote_error_on_cell_line_3_is_line_3(remote, capsys):
    remote.connect()
    result = remote.run("%%trace local prompt --remote\n"
                        "h = local.model.layers[0].output.save()\n"
                        "local.model.layers[1].output[:] = torch.zeros(5)\n")
    error = result.error_in_exec
    assert isinstance(error, nj.ShapeMismatchError)           # the host's error, rebuilt as its own type
    assert str(error).startswith(f"Cell In[{remote.number}], line 3: ")
    shown = capsys.readouterr().out
    frame = shown[shown.index(f"Cell In[{remote.number}], line 3\n"):]
    assert "----> 3 local.model.layers[1].output[:] = torch.zeros(5)" in frame
    assert "error after" in remote.status_texts()[-1]


def test_attach_a_finished_job_and_an_unknown_one(remote):
    remote.connect("token-frank")
    assert remote.run("%%trace local prompt --remote\nh = local.model.layers[0].output.save()\n").success
    job_id = current_connection().jobs()[0]["id"]
    assert remote.run(f"result = %nnsight attach {job_id}").success
    (value,) = remote.ns["result"].saved.values()
    assert torch.equal(value, remote.ns["h"])
    assert "done in" in remote.status_texts()[-1]
    unknown = remote.run("%nnsight attach 0123456789abcdef")
    assert isinstance(unknown.error_in_exec, nj.RemoteError) and "does not know job" in str(unknown.error_in_exec)


def test_queued_status_and_cancel(remote, jupyter_host, keep_worker_busy, capsys):
    remote.connect("token-bob")
    busy, blocker = keep_worker_busy(jupyter_host, "token-bob")
    try:
        assert remote.run(f"%nnsight cancel {blocker}").success
        assert f"job {blocker}: cancelled" in capsys.readouterr().out
        again = remote.run(f"%nnsight cancel {blocker}")
        assert isinstance(again.error_in_exec, nj.NNsightError) and "already finished" in str(again.error_in_exec)
        busy2, blocker2 = keep_worker_busy(jupyter_host, "token-bob")
        cancel = threading.Timer(1.0, lambda: current_connection().cancel(blocker2))
        cancel.start()
        assert remote.run("%%trace local prompt --remote\nh = local.model.layers[0].output.save()\n").success
        cancel.join()
        busy2.close()
        statuses = remote.status_texts()
        assert any(": queued" in s for s in statuses), statuses
        assert "done in" in statuses[-1]
    finally:
        busy.close()


def test_a_cell_that_lost_its_connection_is_finished_by_attach(remote, jupyter_host, keep_worker_busy, tiny_local,
                                                                wait_until):
    remote.connect("token-grace")
    busy, blocker = keep_worker_busy(jupyter_host, "token-grace")
    connection = current_connection()

    def drop_when_queued():
        wait_until(lambda: any(": queued" in s for s in remote.status_texts()), what="the cell's job queued")
        connection.close()

    dropper = threading.Thread(target=drop_when_queued)
    dropper.start()
    try:
        result = remote.run("%%trace local prompt --remote\nh = local.model.layers[2].output.save()\n")
        dropper.join()
        assert isinstance(result.error_in_exec, nj.NNsightError) and "closed while waiting" in str(result.error_in_exec)
        assert isinstance(remote.ns["h"], nj.Proxy)
        (job_id,) = magics(remote).unfinished
        remote.connect("token-grace")
        assert remote.run(f"%nnsight attach {job_id}").success
    finally:
        busy.close()
    with tiny_local.trace(PROMPT):
        h = tiny_local.model.layers[2].output.save()
    assert torch.equal(remote.ns["h"], h.value)           # the cell's saved name landed in the notebook
    assert not magics(remote).unfinished
