"""The case study's six rungs ("130x faster", `case_study.py`) run on the bundled SmolLM2 and give the
scores of a plain-PyTorch-hook reference, head by head (the remote twin: tests/server/test_containers_remote.py).

Two layers of the model (the post's own `n_layers`) and all nine heads: about 90 forward passes (some
seconds on a quiet machine, minutes on a busy one; hence `slow`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from nnsight_jupyter import LanguageModel

_spec = importlib.util.spec_from_file_location("case_study", Path(__file__).with_name("case_study.py"))
case_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(case_study)

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
N_LAYERS = 2


@pytest.fixture(scope="module")
def smollm2():
    model = LanguageModel("smollm2-135m")
    config = model._module.config
    entities = [model.tokenizer(" Mary")["input_ids"][0], model.tokenizer(" John")["input_ids"][0]]
    setup = dict(clean_seq=CLEAN, corr_seq=CORRUPT, entities=entities, n_layers=N_LAYERS,
                 n_heads=config.num_attention_heads, h_dim=config.hidden_size // config.num_attention_heads)
    reference = case_study.hook_reference(model._module, model.tokenizer, **setup)
    return model, setup, reference


def assert_scores_equal(got, expected, unpatched) -> None:
    assert len(got) == len(expected)
    moved = 0
    for (layer_head, score), want in zip(enumerate(got), expected):
        assert isinstance(score, tuple) and len(score) == len(want), layer_head
        for part, wanted in zip(score, want):
            assert isinstance(part, torch.Tensor), (layer_head, type(part))
            torch.testing.assert_close(part, wanted, atol=1e-4, rtol=1e-4)
        moved += not torch.allclose(want[3], unpatched[3], atol=1e-4)
    assert moved, "no head patch changed the entity logits: the comparison would show nothing"


def test_tokens_line_up():
    from nnsight_jupyter.models import load_pretrained

    _, tokenizer = load_pretrained("smollm2-135m")
    assert len(tokenizer(CLEAN)["input_ids"]) == len(tokenizer(CORRUPT)["input_ids"])


@pytest.mark.slow
@pytest.mark.parametrize("rung", case_study.RUNGS, ids=lambda f: f.__name__)
def test_rung_equals_plain_hooks(smollm2, rung):
    model, setup, reference = smollm2
    scores = rung(model, **setup)
    unpatched = case_study.unpatched(model._module, model.tokenizer, setup["corr_seq"], setup["entities"])
    assert_scores_equal(scores, reference, unpatched)
