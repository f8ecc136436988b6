"""Bad input is refused before anything runs, with a typed error that says what was given and how to fix it."""

from __future__ import annotations

import pytest
import torch

from nnsight_jupyter import NNsight, NNsightError
from nnsight_jupyter import patching as P

from .conftest import CLEAN, CORRUPT, PAIR


def test_clean_and_corrupt_of_different_lengths_name_both_lengths_and_tokens(llama):
    with pytest.raises(P.PairLengthError) as caught:
        P.head_patching(llama, (CLEAN, "when mary went to the store mary gave a book to", "mary", "john"))
    message = str(caught.value)
    assert "13 tokens" in message and "11 tokens" in message
    assert "'store'" in message and "same number of tokens" in message
    assert caught.value.shapes == {"clean": (13,), "corrupt": (11,)}
    assert isinstance(caught.value, NNsightError) and isinstance(caught.value, ValueError)


def test_an_answer_of_several_tokens_is_listed(llama):
    with pytest.raises(P.AnswerTokenError) as caught:
        P.head_patching(llama, (CLEAN, CORRUPT, "mary john", "john"))
    message = str(caught.value)
    assert "'mary john' is 2 tokens" in message and "'mary'" in message and "'john'" in message
    with pytest.raises(P.AnswerTokenError, match="distractor id 999 is outside the vocabulary"):
        P.pairs(llama, CLEAN, CORRUPT, "mary", 999)


@pytest.mark.parametrize("sweep", [P.head_patching, P.residual_patching, P.mlp_patching])
def test_a_position_outside_the_prompt_is_refused(llama, sweep):
    with pytest.raises(P.PositionError) as caught:
        sweep(llama, PAIR, positions=13)
    assert "position 13 is outside the prompt of 13 tokens" in str(caught.value)
    assert "0 to 12" in str(caught.value) and isinstance(caught.value, IndexError)


def test_a_model_without_a_known_layout_is_refused(llama):
    with pytest.raises(P.ArchitectureError, match="no known layout for patching"):    # no decoder layers at all
        P.head_patching(NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4))), PAIR)
    headless = P.architecture.Layout("model.layers", llama.model.norm, llama.lm_head, "mlp", "mlp",
                                     tuple(llama.model.layers))
    with pytest.raises(P.ArchitectureError) as caught:
        headless.heads_shape()                            # an MLP has no heads
    assert "no known head layout" in str(caught.value) and "residual_patching" in str(caught.value)


def test_kv_with_several_positions_names_the_plan_to_use(llama):
    with pytest.raises(P.PlanError) as caught:
        P.head_patching(llama, PAIR, positions=[3, -1], plan="kv")
    message = str(caught.value)
    assert "2 positions [3, 12]" in message and "plan='skip'" in message
    with pytest.raises(P.PlanError, match="positions"):
        P.residual_patching(llama, PAIR, plan="kv")
    with pytest.raises(P.PlanError, match="unknown plan 'fast'.*naive, session"):
        P.head_patching(llama, PAIR, plan="fast")


def test_other_bad_input(llama):
    with pytest.raises(P.PatchingError, match="unknown metric"):
        P.head_patching(llama, PAIR, metric="accuracy")
    with pytest.raises(P.PatchingError, match="layer 9 is outside"):
        P.head_patching(llama, PAIR, layers=[9])
    with pytest.raises(P.PatchingError, match="clean, corrupt, answer and distractor"):
        P.pairs(llama, [(CLEAN, CORRUPT)])
    with pytest.raises(P.PatchingError, match="nothing to recover"):
        P.head_patching(llama, (CLEAN, CLEAN, "mary", "john"), metric="recovered")
