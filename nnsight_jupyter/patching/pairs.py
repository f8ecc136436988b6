"""Contrastive pairs: clean and corrupt prompts with the answer and distractor tokens, as token ids.

`pairs(model, clean, corrupt, answer, distractor)` takes one pair or lists of each (prompts as strings
or ids, answers as strings or ids) and returns a `PairSet`, checked before anything runs: clean and
corrupt of a pair must have the same number of tokens (patched positions align), each answer must be
one token. `normalize_positions` turns the user's positions (negative counts from the end) into indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .errors import AnswerTokenError, PairLengthError, PatchingError, PositionError


@dataclass(frozen=True)
class Pair:
    """One contrastive pair: token ids of both prompts ([seq] each) and the two next-token ids."""

    clean: torch.Tensor
    corrupt: torch.Tensor
    answer: int
    distractor: int

    @property
    def length(self) -> int:
        return int(self.clean.shape[0])


@dataclass(frozen=True)
class PairSet:
    """Checked pairs (`pairs[i]`, `len(pairs)`); `clean_ids` / `corrupt_ids` are [n, seq] when all
    pairs have one length."""

    items: tuple[Pair, ...]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, i: int) -> Pair:
        return self.items[i]

    def _stack(self, field: str) -> torch.Tensor:
        lengths = sorted({p.length for p in self.items})
        if len(lengths) > 1:
            raise PairLengthError(f"the pairs have different lengths ({lengths}): they cannot be stacked",
                                  fix="Index the pairs one by one (pairs[i].clean).")
        return torch.stack([getattr(p, field) for p in self.items])

    @property
    def clean_ids(self) -> torch.Tensor:
        return self._stack("clean")

    @property
    def corrupt_ids(self) -> torch.Tensor:
        return self._stack("corrupt")

    @property
    def answer_ids(self) -> torch.Tensor:
        return torch.tensor([p.answer for p in self.items])

    @property
    def distractor_ids(self) -> torch.Tensor:
        return torch.tensor([p.distractor for p in self.items])


def _listed(value: Any, n: int | None, prompt: bool) -> list:
    """One value or a list of them, as a list (a single value repeated to n). A list of ints is one
    prompt's ids (`prompt`), or one answer id per pair."""
    if isinstance(value, (list, tuple)) and value and not (prompt and all(isinstance(v, int) for v in value)):
        return list(value)
    if isinstance(value, torch.Tensor) and value.dim() == (2 if prompt else 1):
        return list(value)
    return [value] * (n or 1)


def token_ids(tokenizer: Any, prompt: Any) -> torch.Tensor:
    """A prompt (string, list of ids, 1-row tensor) as a [seq] tensor of ids, tokenized as traces do."""
    if isinstance(prompt, str):
        ids = list(tokenizer(prompt)["input_ids"])
    elif isinstance(prompt, torch.Tensor):
        ids = prompt.reshape(-1).tolist()
    elif isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
        ids = list(prompt)
    else:
        raise PatchingError(f"cannot use {type(prompt).__name__} as a prompt",
                            fix="Give a string, a list of token ids or a 1-row tensor of ids.")
    if not ids:
        raise PatchingError(f"the prompt {prompt!r} has no tokens", fix="Give a prompt of at least one token.")
    return torch.tensor(ids, dtype=torch.long)


def answer_id(tokenizer: Any, answer: Any, role: str = "answer") -> int:
    """The one token id of an answer given as a string or an id; several tokens are refused, listed."""
    vocab = len(tokenizer)
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = int(answer)
    if isinstance(answer, int):
        if not 0 <= answer < vocab:
            raise AnswerTokenError(f"the {role} id {answer} is outside the vocabulary (0..{vocab - 1})",
                                   fix="Give a token id of this model's tokenizer, or the token as a string.")
        return answer
    if not isinstance(answer, str):
        raise AnswerTokenError(f"the {role} must be a string or a token id, got {type(answer).__name__}")
    ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        listed = ", ".join(f"{p!r} ({i})" for p, i in zip(pieces, ids)) or "none"
        raise AnswerTokenError(
            f"the {role} {answer!r} is {len(ids)} tokens, not one: {listed}",
            fix=f"Give a single token (for example {pieces[0]!r}, or its id {ids[0]}), often with its leading "
                "space (' Mary')." if ids else "Give a non-empty token.")
    return ids[0]


def _describe(tokenizer: Any, ids: torch.Tensor) -> str:
    return "[" + ", ".join(repr(tokenizer.decode([int(i)])) for i in ids) + "]"


def make_pair(tokenizer: Any, clean: Any, corrupt: Any, answer: Any, distractor: Any) -> Pair:
    clean_ids, corrupt_ids = token_ids(tokenizer, clean), token_ids(tokenizer, corrupt)
    if clean_ids.shape != corrupt_ids.shape:
        raise PairLengthError(
            f"the clean prompt is {len(clean_ids)} tokens {_describe(tokenizer, clean_ids)} and the corrupt one "
            f"{len(corrupt_ids)} tokens {_describe(tokenizer, corrupt_ids)}: patched positions must align",
            shapes={"clean": tuple(clean_ids.shape), "corrupt": tuple(corrupt_ids.shape)},
            fix="Make both prompts the same number of tokens: swap words that are one token each (names with "
                "their leading space), or pass token ids of equal length.")
    return Pair(clean_ids, corrupt_ids, answer_id(tokenizer, answer), answer_id(tokenizer, distractor, "distractor"))


def pairs(model: Any, clean: Any, corrupt: Any = None, answer: Any = None, distractor: Any = None) -> PairSet:
    """Checked contrastive pairs. `clean` may also be a PairSet, a Pair, or a (clean, corrupt, answer,
    distractor) tuple or a list of them."""
    if isinstance(clean, PairSet):
        return clean
    if isinstance(clean, Pair):
        return PairSet((clean,))
    tokenizer = model.tokenizer
    if corrupt is None:
        rows = [clean] if isinstance(clean, tuple) else list(clean)
        if not rows or not all(isinstance(r, (tuple, list)) and len(r) == 4 for r in rows):
            raise PatchingError("pairs need clean, corrupt, answer and distractor",
                                fix="Pass them as four arguments, or as (clean, corrupt, answer, distractor) tuples.")
        return PairSet(tuple(make_pair(tokenizer, *r) for r in rows))
    cleans = _listed(clean, None, True)
    n = len(cleans)
    columns = [cleans, _listed(corrupt, n, True), _listed(answer, n, False), _listed(distractor, n, False)]
    if len({len(c) for c in columns}) != 1:
        raise PatchingError(f"{n} clean prompts but {[len(c) for c in columns[1:]]} corrupt prompts / answers / "
                            "distractors", fix="Give one of each per pair (or a single answer for all).")
    return PairSet(tuple(make_pair(tokenizer, *row) for row in zip(*columns)))


def normalize_positions(positions: int | Sequence[int] | None, length: int) -> list[int]:
    """Positions as indices 0..length-1 (None: every position; negative: from the end)."""
    if positions is None:
        return list(range(length))
    given = [positions] if isinstance(positions, int) else list(positions)
    if not given:
        raise PositionError("no positions to patch", fix="Give a position, a list of them, or None for all.")
    out = []
    for p in given:
        if not isinstance(p, int) or not -length <= p < length:
            raise PositionError(
                f"position {p} is outside the prompt of {length} tokens",
                fix=f"Use a position from 0 to {length - 1}, or -1 to -{length} counted from the end.")
        out.append(p % length)
    if len(set(out)) != len(out):
        raise PositionError(f"positions {given} name a position twice", fix="Give each position once.")
    return out
