"""A remote error is the local error: same class, same fields (line, module, shapes, fix), same text.

Each graph is run twice: locally (`execute` / `decode` on the tiny model in this process) and on the
real host (a Jupyter server on 127.0.0.1, over a real websocket); the host's error is turned into an
exception by the client's own function (`client.connection.remote_error`), or raised by the real
client (`connect`) when the client sends the graph itself.
"""

from __future__ import annotations

import pytest
import torch

import nnsight_jupyter as nj
from nnsight_jupyter.client import connect
from nnsight_jupyter.client.wire_errors import remote_error
from nnsight_jupyter.errors import NNsightError
from nnsight_jupyter.execution.executor import execute
from nnsight_jupyter.graph.codec import decode

PROMPT = "the cat sat on the mat"


def _fields(error: NNsightError) -> tuple:
    return type(error), error.reason, error.where, error.module, error.shapes, error.fix


def _local_error(graph_bytes: bytes, model) -> NNsightError:
    with pytest.raises(NNsightError) as info:
        execute(decode(graph_bytes), model._target, echo_logs=False)
    return info.value


def _remote_error(jupyter_host, graph_bytes: bytes, request_id: str) -> NNsightError:
    """Submit raw graph bytes (no client-side checks) and turn the host's answer into an exception."""
    client = jupyter_host.socket("token-heidi")
    try:
        client.submit(graph_bytes, request_id=request_id)
        message = client.until(lambda m: m["type"] == "error" or (
            m["type"] == "status" and m.get("status") in ("error", "cancelled", "done")) or m["type"] == "result")
    finally:
        client.close()
    assert message.get("status") == "error" or message["type"] == "error", message
    return remote_error(message)


def _assert_same(remote: NNsightError, local: NNsightError) -> None:
    assert _fields(remote) == _fields(local)
    assert str(remote) == str(local)


def _read_layer3_then_layer1(model, tracer):
    with tracer.invoke(PROMPT):
        model.model.layers[3].output.save()
        model.model.layers[1].output.save()


def test_out_of_order_read_remote_equals_local(jupyter_host, graph_of, tiny_local):
    graph = graph_of(_read_layer3_then_layer1)
    local = _local_error(graph, tiny_local)
    remote = _remote_error(jupyter_host, graph, "order")
    assert isinstance(remote, nj.OutOfOrderError)
    assert remote.where.startswith("test_remote_errors.py:") and remote.module == "model.layers.1"
    _assert_same(remote, local)


def _grads_early_then_late(model, tracer):
    with tracer.invoke(PROMPT):
        early = model.model.layers[0].output
        late = model.model.layers[2].output
        with model.lm_head.output.sum().backward():
            early.grad.save()
            late.grad.save()


def test_gradient_order_remote_equals_local(jupyter_host, graph_of, tiny_local):
    graph = graph_of(_grads_early_then_late)
    local = _local_error(graph, tiny_local)
    remote = _remote_error(jupyter_host, graph, "grad-order")
    assert isinstance(remote, nj.OutOfOrderError) and "Nothing was run" in str(remote)
    _assert_same(remote, local)


def test_op_off_the_allow_list_remote_equals_local(jupyter_host, graph_of, with_nodes, tiny_local):
    graph = with_nodes(graph_of(_read_layer3_then_layer1), [("os.system", ("true",))])
    with pytest.raises(nj.OpNotAllowedError) as info:
        decode(graph)
    remote = _remote_error(jupyter_host, graph, "op")
    assert isinstance(remote, nj.OpNotAllowedError) and remote.where == "evil.py:1"
    _assert_same(remote, info.value)


def _write_of_the_wrong_shape(model):
    with model.trace(PROMPT):
        model.model.layers[1].output[:, 0] = torch.zeros(7)


def _replace_of_the_wrong_shape(model):
    with model.trace(PROMPT):
        model.model.layers[2].output = torch.zeros(1, 6, 3)


@pytest.mark.parametrize("body", [_write_of_the_wrong_shape, _replace_of_the_wrong_shape])
def test_shape_mismatch_in_a_write_remote_equals_local_through_the_client(jupyter_host, tiny_local, monkeypatch,
                                                                          body):
    monkeypatch.setenv("NNSIGHT_JUPYTER_PROGRESS", "0")
    connection = connect(jupyter_host.url, "token-heidi")
    try:
        with pytest.raises(nj.ShapeMismatchError) as remote:
            body(connection.model("tiny"))
    finally:
        connection.close()
    with pytest.raises(nj.ShapeMismatchError) as local:
        body(tiny_local)
    assert remote.value.where.startswith("test_remote_errors.py:")
    assert remote.value.module is not None and remote.value.module in str(remote.value)
    assert len(remote.value.shapes) >= 2 and remote.value.fix
    _assert_same(remote.value, local.value)


def test_a_schema_1_job_store_keeps_working_and_stores_error_fields(tmp_path):
    import sqlite3

    from nnsight_jupyter.server import jobs

    old_schema = jobs._SCHEMA.replace(",\n    error_fields  TEXT", "")
    assert old_schema != jobs._SCHEMA
    path = tmp_path / "jobs.db"
    db = sqlite3.connect(str(path))
    db.executescript(old_schema)
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = jobs.JobStore(path)
    job = store.create(owner="alice", model="tiny", kind="trace", graph=b"graph", graph_hash="h", request_id="r")
    store.transition(job.id, "running")
    error = nj.ShapeMismatchError("it does not fit", where="cell.py:4", module="lm_head",
                                  shapes={"expected": (1, 2)}, fix="Fit it.")
    record = store.transition(job.id, "error", error_type="ShapeMismatchError", error_message=str(error),
                              error_fields={k: v for k, v in error.fields().items() if k not in ("type", "message")})
    store.close()
    again = jobs.JobStore(path).get(job.id)
    assert again.error_fields == record.error_fields == {"reason": "it does not fit", "line": "cell.py:4",
                                                         "module": "lm_head", "shapes": {"expected": [1, 2]},
                                                         "fix": "Fit it."}
    rebuilt = remote_error({"status": "error", "error": {**again.error_fields, "type": again.error_type,
                                                          "message": again.error_message}})
    assert type(rebuilt) is nj.ShapeMismatchError and str(rebuilt) == str(error)
