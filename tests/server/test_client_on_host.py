"""The real client against the real host: connect(), hosted models, remote=True, errors as local types."""

import pytest
import torch

import nnsight_jupyter as nj

PROMPT = "the cat sat on the mat"


@pytest.fixture
def connection(connect_as):
    return connect_as("token-grace")


def test_hosted_model_trace_equals_local(connection, tiny_local):
    model = connection.model("tiny")
    assert [n for n, _ in model._module.named_modules()] == [n for n, _ in tiny_local._module.named_modules()]
    with model.trace(PROMPT):
        heads = model.model.layers[0].self_attn.heads.save()
        h = model.model.layers[2].output.save()
        print("mean", model.model.layers[2].output.mean())
        logits = model.lm_head.output[:, -1].save()
    with tiny_local.trace(PROMPT):
        heads_l = tiny_local.model.layers[0].self_attn.heads.save()
        h_l = tiny_local.model.layers[2].output.save()
        logits_l = tiny_local.lm_head.output[:, -1].save()
    for remote, local in ((heads, heads_l), (h, h_l), (logits, logits_l)):
        assert torch.equal(remote.value, local.value)
    assert model.tokenizer("the cat")["input_ids"] == tiny_local.tokenizer("the cat")["input_ids"]


def test_hosted_generate_session_and_patching(connection, tiny_local):
    model = connection.model("tiny")
    with model.generate("hello world", max_new_tokens=5) as tracer:
        ids = tracer.result.save()
    with tiny_local.generate("hello world", max_new_tokens=5) as tracer:
        ids_l = tracer.result.save()
    assert torch.equal(ids.value, ids_l.value)
    with model.session():
        with model.trace("hello world"):
            clean = model.model.layers[1].output[:, -1]
        with model.trace(PROMPT):
            model.model.layers[1].output[:, -1] = clean
            patched = model.lm_head.output.save()
    with tiny_local.session():
        with tiny_local.trace("hello world"):
            clean_l = tiny_local.model.layers[1].output[:, -1]
        with tiny_local.trace(PROMPT):
            tiny_local.model.layers[1].output[:, -1] = clean_l
            patched_l = tiny_local.lm_head.output.save()
    assert torch.equal(patched.value, patched_l.value)


def test_remote_true_on_a_local_model(connection, tiny_local):
    with tiny_local.trace(PROMPT, remote=True):
        remote = tiny_local.model.layers[1].output.save()
    with tiny_local.trace(PROMPT):
        local = tiny_local.model.layers[1].output.save()
    assert torch.equal(remote.value, local.value)
    assert connection.jobs()[0]["status"] == "done"


def test_errors_arrive_as_local_types(connection):
    model = connection.model("tiny")
    with pytest.raises(nj.OutOfOrderError):            # refused in the kernel, before sending
        with model.trace(PROMPT):
            model.model.layers[3].output.save()
            model.model.layers[1].output.save()
    with pytest.raises(nj.ShapeMismatchError, match="model.layers.1.output"):
        with model.trace(PROMPT):
            model.model.layers[1].output = torch.zeros(1, 6, 3)
    with pytest.raises(nj.ExecutionError, match="IndexError"):
        with model.trace(PROMPT):
            model.model.layers[1].output[:, 40] = 0
    with model.trace(PROMPT):                          # and the model is fine afterwards
        ok = model.lm_head.output.save()
    assert ok.value.shape == (1, 6, 200)


def test_connect_from_environment(jupyter_host, monkeypatch):
    monkeypatch.setenv("NNSIGHT_JUPYTER_URL", jupyter_host.url)
    monkeypatch.setenv("NNSIGHT_JUPYTER_TOKEN", "token-heidi")
    conn = nj.connect()
    assert conn.status()["models"]["tiny"]["state"] == "ready"
    conn.close()
