"""A session's value reused by several later traces, remotely: the session is one job on a real host,
and each later trace gets the KV cache (or tensor) as the first trace left it
(tests/execution/test_session_values.py is the local twin)."""

import warnings

import pytest
import torch

PROMPT = "the cat sat on the mat and the dog"
PREFIX = 4


@pytest.fixture
def connection(connect_as):
    return connect_as("token-heidi")


def _jobs(host):
    """The ids of this user's newest jobs (the listing holds the newest 50: count new ids, not rows)."""
    return {job["id"] for job in host.get("nnsight/api/jobs", token="token-heidi")["jobs"]}


def test_remote_kv_cache_reused_by_three_traces_equals_plain_pytorch(connection, jupyter_host, tiny_local):
    model = connection.model("tiny")
    ids = torch.tensor([tiny_local.tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        expected = tiny_local._module(input_ids=ids).logits[:, PREFIX:]
    before = _jobs(jupyter_host)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with model.session():
            with model.trace(ids[:, :PREFIX]):
                cache = model.output.past_key_values
            logits = []
            for _ in range(3):
                with model.trace(ids[:, PREFIX:], past_key_values=cache):
                    logits.append(model.lm_head.output.save())
    assert len(_jobs(jupyter_host) - before) == 1            # the whole session was one job
    for saved in logits:
        torch.testing.assert_close(saved.value, expected, atol=1e-5, rtol=1e-5)


def test_remote_tensor_written_in_place_by_later_traces_is_fresh_in_each(connection):
    model = connection.model("tiny")
    with model.session():
        with model.trace("hello world"):
            h = model.model.layers[1].output[:, -1]
            first = h.save()
        bumped = []
        for _ in range(3):
            with model.trace("the cat sat"):
                bumped.append(h.add_(1).save())
    for saved in bumped:
        torch.testing.assert_close(saved.value, first.value + 1)
