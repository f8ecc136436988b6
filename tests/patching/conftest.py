"""Fixtures of the patching tests: an IOI-shaped pair of equal length for the word-level tiny models."""

from __future__ import annotations

import warnings

import pytest

CLEAN = "when mary and john went to the store john gave a book to"
CORRUPT = "when mary and john went to the store mary gave a book to"
PAIR = (CLEAN, CORRUPT, "mary", "john")


@pytest.fixture(autouse=True)
def _quiet_cache_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)     # transformers 5 renames past_key_values
        yield


@pytest.fixture(params=["llama", "gpt2"])
def model(request):
    return request.getfixturevalue(request.param)
