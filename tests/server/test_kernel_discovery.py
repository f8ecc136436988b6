"""A real kernel started by the Jupyter server finds that server with nj.connect() and runs a hosted trace."""

import json
import uuid


def _execute(host, kernel_id, code, timeout=120):
    """Run `code` in a kernel over the server's kernel websocket; return its stdout (or raise its error)."""
    from websockets.sync.client import connect

    ws = connect(host.url.replace("http", "ws") + f"api/kernels/{kernel_id}/channels",
                 additional_headers={"Authorization": "token admin-token"}, max_size=None).__enter__()
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    out = []
    while True:
        message = json.loads(ws.recv(timeout=timeout))
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = message["msg_type"]
        if kind == "stream":
            out.append(message["content"]["text"])
        elif kind == "error":
            ws.close()
            raise AssertionError("\n".join(message["content"]["traceback"]))
        elif kind == "status" and message["content"]["execution_state"] == "idle":
            ws.close()
            return "".join(out)


def test_kernel_finds_its_server_and_runs_remotely(jupyter_host):
    request = jupyter_host.request("api/kernels", method="POST", headers={"Content-Type": "application/json"})
    kernel_id = json.loads(request.read())["id"]
    try:
        out = _execute(jupyter_host, kernel_id, (
            "import os\n"
            "os.environ.pop('NNSIGHT_JUPYTER_URL', None); os.environ['NNSIGHT_JUPYTER_PROGRESS'] = '0'\n"
            "import nnsight_jupyter as nj\n"
            "host = nj.connect()\n"
            "model = host.model('tiny')\n"
            "with model.trace('the cat sat'):\n"
            "    h = model.model.layers[1].output.save()\n"
            "print(type(h).__name__, tuple(h.shape), host.status()['user'])\n"))
    finally:
        jupyter_host.request(f"api/kernels/{kernel_id}", method="DELETE")
    assert out.strip().splitlines()[-1] == "Tensor (1, 3, 64) owner"
