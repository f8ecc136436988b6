"""The magics in a real ipykernel (its own compiler names cells after temp files, its displays go over
ZMQ): the status line is one display_data then update_display_data of the same id, the saved name is a
tensor, and a trace error on cell line 3 is reported as line 3 in the message and in the traceback."""

from __future__ import annotations

import re
import sys

import pytest

jupyter_client = pytest.importorskip("jupyter_client")


@pytest.fixture(scope="module")
def kernel():
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.kernel_spec.argv[0] = sys.executable       # this venv's Python, whatever the spec says
    manager.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=120)
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def execute(client, code: str) -> list[dict]:
    """Run `code`; the iopub messages it caused (until the kernel is idle again)."""
    msg_id = client.execute(code)
    messages = []
    while True:
        message = client.get_iopub_msg(timeout=120)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(message)
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return messages


def test_trace_cell_in_a_real_kernel(kernel):
    setup = ("%load_ext nnsight_jupyter\n"
             "import torch\n"
             "from nnsight_jupyter import LanguageModel\n"
             "from nnsight_jupyter.models import tiny_llama, word_tokenizer\n"
             "model = LanguageModel(tiny_llama(seed=0), tokenizer=word_tokenizer())\n")
    assert not [m for m in execute(kernel, setup) if m["msg_type"] == "error"]
    messages = execute(kernel, '%%trace model "the cat sat"\nh = model.model.layers[0].output.save()\n'
                               'print(model.lm_head.output.shape)\n')
    displays = [m for m in messages if m["msg_type"] in ("display_data", "update_display_data")]
    assert displays[0]["msg_type"] == "display_data"
    assert {m["content"]["transient"]["display_id"] for m in displays} == {displays[0]["content"]["transient"]["display_id"]}
    final = displays[-1]["content"]["data"]
    assert "done in" in final["text/plain"] and "nnsight-status-done" in final["text/html"]
    printed = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert "torch.Size([1, 3, 200])" in printed
    (kind,) = [m["content"] for m in execute(kernel, "print(type(h).__name__)") if m["msg_type"] == "stream"]
    assert kind["text"].strip() == "Tensor"

    messages = execute(kernel, '%%trace model "the cat sat"\nh = model.model.layers[0].output.save()\n'
                               "model.model.layers[1].output[:] = torch.zeros(5)\n")
    (error,) = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert error["ename"] == "ShapeMismatchError"
    assert re.match(r"Cell In\[\d+\], line 3: an in-place write", error["evalue"])
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))
    frames = re.findall(r"^Cell In\[\d+\], line (\d+)\n", traceback, re.M)
    assert frames[-1] == "3"                       # the last frame shown is the cell's line 3, with its source
    assert "----> 3 model.model.layers[1].output[:] = torch.zeros(5)" in traceback.split("line 3\n")[-1]
