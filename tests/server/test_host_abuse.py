"""Bad input and abuse: each refused with its own error, while the host keeps serving everyone else."""

import json
import struct
import urllib.error

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nnsight_jupyter import protocol


def _layer(model, tracer):
    with tracer.invoke("the cat sat"):
        model.model.layers[1].output.save()


def _still_serving(host, graph_of):
    client = host.socket("token-heidi")
    client.submit(graph_of(_layer))
    assert client.until(lambda m: m["type"] in ("result", "error"))["type"] == "result"
    client.close()


def _tamper(graph_bytes, edit):
    magic, size = struct.unpack_from("<4sI", graph_bytes)
    doc = json.loads(graph_bytes[8:8 + size])
    edit(doc)
    raw = json.dumps(doc).encode()
    return struct.pack("<4sI", magic, len(raw)) + raw + graph_bytes[8 + size:]


@pytest.mark.parametrize("frame, code", [
    (b"XXXX\x00\x00\x00\x00", "protocol"),                       # wrong magic
    (b"NJM1\xff\xff\x00\x00{}", "protocol"),                     # header length past the end
    ("this is not json", "protocol"),
    (json.dumps({"no": "type"}), "protocol"),
    (json.dumps({"type": "launch_missiles"}), "protocol"),
    (protocol.pack({"type": "submit", "request_id": "x", "model": "tiny"}, b"NJG1garbage"), "invalid_graph"),
    (protocol.pack({"type": "submit", "request_id": "x", "model": "nope"}, b"NJG1"), "unknown_model"),
])
def test_malformed_frames_are_refused(jupyter_host, graph_of, frame, code):
    client = jupyter_host.socket("token-alice")
    client.ws.send(frame)
    error = client.until(lambda m: m["type"] == "error")
    assert error["code"] == code and error["error"]["message"]
    _still_serving(jupyter_host, graph_of)


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d["nodes"][1].update(op="os.system"), "'os.system' is not on the allow-list"),
    (lambda d: d["nodes"][1].update(op="torch.load"), "torch.load"),
    (lambda d: d["nodes"][0].update(module="model.__class__"), "__class__"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d["nodes"][1]["args"].append({"ref": 999}), "999"),
])
def test_tampered_graphs_are_refused_with_the_reason(jupyter_host, graph_of, edit, fragment):
    client = jupyter_host.socket("token-bob")
    client.submit(_tamper(graph_of(_layer), edit))
    error = client.until(lambda m: m["type"] == "error")
    assert error["code"] == "invalid_graph" and fragment in error["error"]["message"], error
    _still_serving(jupyter_host, graph_of)


def test_oversized_frame_closes_only_that_socket(jupyter_host, graph_of):
    client = jupyter_host.socket("token-carol")
    with pytest.raises(ConnectionClosed) as info:
        client.ws.send(b"NJM1" + b"\x00" * 5_000_000)      # over max_frame_bytes (4 MB here)
        client.recv(timeout=30)
    # 1009 (message too big), unless the server's close arrived while we were still sending.
    assert info.value.rcvd is None or info.value.rcvd.code == 1009
    _still_serving(jupyter_host, graph_of)


def test_missing_or_wrong_token_is_403(jupyter_host):
    for token in (None, "not-a-token"):
        with pytest.raises(InvalidStatus) as info:
            jupyter_host.socket(token)
        assert info.value.response.status_code == 403
        with pytest.raises(urllib.error.HTTPError) as http:
            jupyter_host.request("nnsight/api/status", token=token)
        assert http.value.code == 403


def test_wrong_origin_is_403(jupyter_host):
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as info:
        connect(jupyter_host.url.replace("http", "ws") + "nnsight/ws", origin="http://evil.example",
                additional_headers={"Cookie": "x=y"}).__enter__()
    assert info.value.response.status_code == 403


def test_protocol_version_mismatch(jupyter_host):
    client = jupyter_host.socket("token-dave", hello=False)
    client.send({"type": "submit", "model": "tiny"})
    assert "first message must be" in client.until(lambda m: m["type"] == "error")["error"]["message"]
    client.send({"type": "hello", "protocol": 999, "client": "old", "python": "2.7"})
    error = client.until(lambda m: m["type"] == "error")
    assert "protocol version mismatch" in error["error"]["message"] and "999" in error["error"]["message"]
    with pytest.raises(ConnectionClosed) as info:
        client.recv(timeout=10)
    assert info.value.rcvd.code == 1002


def test_queue_full(make_host, graph_of):
    host = make_host(max_queued_per_user=2)
    client = host.socket("token-erin")

    def generation(model, tracer):
        with tracer.invoke("hello"):
            tracer.result.save()

    blocker = graph_of(generation, kind="generate", max_new_tokens=100000)
    client.submit(blocker)
    first = client.until(lambda m: m["type"] == "accepted")["job_id"]
    client.until(lambda m: m.get("job_id") == first and m.get("status") == "running")
    for _ in range(2):
        client.submit(graph_of(_layer))
        client.until(lambda m: m["type"] == "accepted")
    client.submit(graph_of(_layer))
    error = client.until(lambda m: m["type"] == "error")
    assert error["code"] == "queue_full" and "2 jobs queued" in error["error"]["message"]
    other = host.socket("token-frank")             # other users are not limited by erin's queue
    other.submit(graph_of(_layer))
    assert other.until(lambda m: m["type"] in ("accepted", "error"))["type"] == "accepted"
    client.send({"type": "cancel", "job_id": first})
