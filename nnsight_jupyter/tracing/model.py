"""The user-facing model wrappers: NNsight (any nn.Module) and LanguageModel (HF causal LMs).

Both wrap the given module in place (no copy) as the root of an envoy tree and open tracing
contexts on it: `trace`, `session`, and for language models `generate`. Outside a trace the
wrapped model runs at plain speed: no hook stays installed.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import TracingError
from ..execution.batching import LanguageTarget, ModuleTarget
from .envoy import Envoy
from .tracer import Session, Tracer


class NNsight(Envoy):
    """Wrap any torch module: `with net.trace(x): net.layer.output.save()`."""

    def __init__(self, module: torch.nn.Module):
        if not isinstance(module, torch.nn.Module):
            raise TracingError(f"NNsight wraps a torch.nn.Module, got {type(module).__name__}")
        super().__init__(module)
        self.__dict__["_target"] = self._make_target(module)
        self.__dict__["_name"] = type(module).__name__

    def _make_target(self, module: torch.nn.Module) -> ModuleTarget:
        return ModuleTarget(module)

    def trace(self, *args: Any, remote: bool = False, **kwargs: Any) -> Tracer:
        """A forward pass; `args`/`kwargs` (if any) are the first invoke's input."""
        _local_only(remote)
        return Tracer(self, "trace", args, kwargs, {})

    def session(self, remote: bool = False) -> Session:
        """Several traces run as one request; values flow between them without .save()."""
        _local_only(remote)
        return Session(self)


class LanguageModel(NNsight):
    """A Hugging Face causal LM: prompts in, tokens handled (left padding, position ids).

    `LanguageModel("smollm2-135m")` loads the bundled model; a local HF directory, an HF id already in
    the local cache (never downloaded), or a transformers model object (with `tokenizer=`) work too.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, dtype: torch.dtype = torch.float32):
        name = None
        if isinstance(model, str):
            from ..models import load_pretrained

            name = model
            model, loaded_tokenizer = load_pretrained(model, dtype=dtype)
            tokenizer = tokenizer or loaded_tokenizer
        if tokenizer is None:
            raise TracingError(
                "LanguageModel needs a tokenizer: LanguageModel(hf_model, tokenizer=tokenizer), or a model "
                "name / directory to load both from")
        self.__dict__["tokenizer"] = tokenizer
        super().__init__(model)
        self.__dict__["_name"] = name or getattr(getattr(model, "config", None), "name_or_path", None) or type(model).__name__
        self._target.record_order()

    def _make_target(self, module: torch.nn.Module) -> ModuleTarget:
        return LanguageTarget(module, self.tokenizer)

    def generate(self, *args: Any, max_new_tokens: int = 20, remote: bool = False, **kwargs: Any) -> Tracer:
        """Greedy (or configured) generation with per-step interventions (`tracer.iter`, `tracer.all()`)."""
        _local_only(remote)
        if max_new_tokens < 1:
            raise TracingError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        options = {"max_new_tokens": int(max_new_tokens)}
        model_kwargs = {}
        for key, value in kwargs.items():
            (model_kwargs if key in ("input_ids", "attention_mask") else options)[key] = value
        return Tracer(self, "generate", args, model_kwargs, options)


def _local_only(remote: bool) -> None:
    if remote:
        raise TracingError(
            "remote=True runs on a model host, which this version of nnsight_jupyter does not include "
            "yet; run locally (remote=False)")
