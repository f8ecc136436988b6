"""Shared fixtures: tiny random models (milliseconds to build), their raw twins, hook checks, and
`wait_until`: tests wait on conditions with a deadline, never on the clock."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch

from nnsight_jupyter.models import tiny_gpt2, tiny_llama, word_tokenizer


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny trained-shape Llama and its tokenizer, saved as a local Hugging Face directory."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(seed=0).save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def _llama():
    return tiny_llama(seed=0)


@pytest.fixture(scope="session")
def _gpt2():
    return tiny_gpt2(seed=0)


@pytest.fixture
def tokenizer():
    return word_tokenizer()


@pytest.fixture
def raw_llama(_llama):
    """A raw tiny Llama (4 layers, hidden 64, 4 heads), a fresh copy per test."""
    return copy.deepcopy(_llama)


@pytest.fixture
def raw_gpt2(_gpt2):
    return copy.deepcopy(_gpt2)


@pytest.fixture
def llama(raw_llama, tokenizer):
    from nnsight_jupyter import LanguageModel

    return LanguageModel(raw_llama, tokenizer=tokenizer)


@pytest.fixture
def gpt2(raw_gpt2, tokenizer):
    from nnsight_jupyter import LanguageModel

    return LanguageModel(raw_gpt2, tokenizer=tokenizer)


def hooks_left(module: torch.nn.Module) -> int:
    """How many forward hooks / pre-hooks are installed anywhere in `module`."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
               + ("forward" in m.__dict__) for m in module.modules())


def ids(tokenizer, prompt: str) -> torch.Tensor:
    return tokenizer(prompt, return_tensors="pt")["input_ids"]


def hook_run(model, input_ids, capture=(), edit=None, **kwargs):
    """Plain-PyTorch reference: forward with hooks that record (clone) or edit module outputs."""
    rec, handles = {}, []
    for path, fn in (edit or {}).items():
        handles.append(model.get_submodule(path).register_forward_hook(lambda m, a, o, fn=fn: fn(o)))
    for path in capture:
        handles.append(model.get_submodule(path).register_forward_hook(
            lambda m, a, o, path=path: rec.__setitem__(path, o.detach().clone())))
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return out, rec


@pytest.fixture(scope="session")
def count_hooks():
    """count_hooks(module) -> hooks (and patched forwards) left anywhere in it."""
    return hooks_left


@pytest.fixture(scope="session")
def reference():
    """reference(model, ids, capture=[paths], edit={path: fn}) -> (output, recorded clones)."""
    return hook_run


@pytest.fixture
def encode(tokenizer):
    """encode(prompt) -> [1, seq] token ids."""
    return lambda prompt: ids(tokenizer, prompt)


def wait_until_true(condition, timeout: float = 60.0, what: str = "the condition", ignore=()):
    """`condition()`'s first truthy value, polled until `timeout` seconds have passed (then an
    AssertionError naming `what`); exceptions of the types in `ignore` count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.05)      # between polls of something this process cannot be told about


@pytest.fixture(scope="session")
def wait_until():
    """wait_until(condition, timeout=60, what="...", ignore=(OSError,)) -> condition()'s truthy value."""
    return wait_until_true
