"""Saved containers and the case study's rungs on a real host (`remote=True`): the same values as the
local run and as plain PyTorch hooks (local twins: tests/tracing/test_containers.py and
tests/tracing/test_case_study.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "case_study", Path(__file__).parents[1] / "tracing" / "case_study.py")
case_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(case_study)

CLEAN = "when mary and john went to the store john gave a drink to"
CORRUPT = "when mary and john went to the store mary gave a drink to"


@pytest.fixture
def hosted(connect_as):
    return connect_as("token-grace").model("tiny")


def _close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_remote_session_list_and_dict_equal_local(hosted, tiny_local):
    def body(model, remote):
        with model.session(remote=remote):
            results = list().save()
            named = dict().save()
            for prompt in (CLEAN, CORRUPT):
                with model.trace(prompt):
                    results.append((model.model.layers[0].output[:, -1], {"top": model.lm_head.output[:, -1].amax(-1)}))
                    named[prompt] = model.lm_head.output[:, -1]
        return results, named

    (got, got_named), (want, want_named) = body(hosted, True), body(tiny_local, False)
    assert len(got) == 2 and list(got_named) == [CLEAN, CORRUPT]
    for (h, extra), (h0, extra0) in zip(got, want):
        _close(h, h0)
        _close(extra["top"], extra0["top"])
    for key in want_named:
        _close(got_named[key], want_named[key])


def test_remote_all_loop_collects_every_step(hosted, tiny_local):
    def body(model, remote):
        with model.generate("when mary and john", max_new_tokens=4, remote=remote) as tracer:
            results = list().save()
            for step in tracer.all():
                results.append(model.lm_head.output[:, -1])
                last = model.lm_head.output[:, -1].argmax(-1).save()
            ids = tracer.result.save()
        return results, last.value, ids.value

    got, last, ids = body(hosted, True)
    want, last0, ids0 = body(tiny_local, False)
    steps = ids0.shape[1] - len(tiny_local.tokenizer("when mary and john")["input_ids"])
    assert len(got) == len(want) == steps
    for a, b in zip(got, want):
        _close(a, b)
    assert torch.equal(ids, ids0) and torch.equal(last, ids0[:, -1])


@pytest.mark.parametrize("rung", case_study.RUNGS, ids=lambda f: f.__name__)
def test_remote_case_study_rung_equals_plain_hooks(hosted, tiny_local, rung):
    config = tiny_local._module.config
    tokenizer = tiny_local.tokenizer
    entities = [tokenizer("mary")["input_ids"][0], tokenizer("john")["input_ids"][0]]
    setup = dict(clean_seq=CLEAN, corr_seq=CORRUPT, entities=entities, n_layers=2,
                 n_heads=config.num_attention_heads, h_dim=config.hidden_size // config.num_attention_heads)
    expected = case_study.hook_reference(tiny_local._module, tokenizer, **setup)
    scores = rung(hosted, **setup, remote=True)
    assert len(scores) == len(expected)
    for score, want in zip(scores, expected):
        for part, wanted in zip(score, want):
            assert isinstance(part, torch.Tensor)
            _close(part, wanted)
