"""Pairs given as strings, ids or tensors, one or a list, become the same checked token ids."""

from __future__ import annotations

import torch

from nnsight_jupyter import patching as P

from .conftest import CLEAN, CORRUPT, PAIR


def test_strings_ids_and_tensors_give_the_same_pairs_and_scores(llama, tokenizer):
    clean, corrupt = (tokenizer(p)["input_ids"] for p in (CLEAN, CORRUPT))
    mary, john = (tokenizer(w)["input_ids"][0] for w in ("mary", "john"))
    from_strings = P.pairs(llama, *PAIR)
    from_ids = P.pairs(llama, clean, corrupt, mary, john)
    from_tensors = P.pairs(llama, torch.tensor([clean]), torch.tensor([corrupt]), torch.tensor(mary), john)
    for other in (from_ids, from_tensors):
        assert torch.equal(other.clean_ids, from_strings.clean_ids) and torch.equal(other.corrupt_ids, from_strings.corrupt_ids)
        assert other.answer_ids.tolist() == [mary] and other.distractor_ids.tolist() == [john]
    torch.testing.assert_close(P.head_patching(llama, from_ids).scores, P.head_patching(llama, PAIR).scores)


def test_lists_of_prompts_with_one_answer_or_one_per_pair(llama):
    two = P.pairs(llama, [CLEAN, CORRUPT], [CORRUPT, CLEAN], "mary", "john")
    assert len(two) == 2 and two.answer_ids.tolist() == [two[0].answer] * 2
    per_pair = P.pairs(llama, [CLEAN, CORRUPT], [CORRUPT, CLEAN], ["mary", "john"], ["john", "mary"])
    assert per_pair.answer_ids.tolist() == per_pair.distractor_ids.tolist()[::-1]
    assert len(P.pairs(llama, [PAIR, PAIR])) == 2 and P.pairs(llama, two) is two
