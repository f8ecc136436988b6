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
from ..execution.runner import LocalRunner
from ..execution.scan import ScanRunner
from ..graph.order import ExecutionOrder
from ..graph.runner import Runner
from .envoy import Envoy
from .remote import remote_runner
from .scan import ScanTracer
from .tracer import Session, Tracer


class NNsight(Envoy):
    """Wrap any torch module: `with net.trace(x): net.layer.output.save()`."""

    def __init__(self, module: torch.nn.Module):
        if not isinstance(module, torch.nn.Module):
            raise TracingError(f"NNsight wraps a torch.nn.Module, got {type(module).__name__}")
        super().__init__(module)
        self.__dict__["_target"] = self._make_target(module)
        self.__dict__["_local"] = LocalRunner(self._target)   # runs this model's graphs here
        self.__dict__["_name"] = type(module).__name__
        self.__dict__["_host"] = None   # a hosted model's runner (see client.Connection.model)

    def _make_target(self, module: torch.nn.Module) -> ModuleTarget:
        return ModuleTarget(module)

    def trace(self, *args: Any, remote: bool | None = None, seed: int | None = None, **kwargs: Any) -> Tracer:
        """A forward pass; `args`/`kwargs` (if any) are the first invoke's input. `seed` seeds the
        generator the trace's random ops (torch.randn, dropout ...) draw from."""
        options = {} if seed is None else {"seed": seed}
        return Tracer(self, "trace", args, kwargs, options, self._chosen_runner(remote))

    def scan(self, *args: Any, **kwargs: Any) -> ScanTracer:
        """A trace under fake tensors (no real compute, no host): shapes of saved values, shape
        errors, and `.shapes`, every module's output shape (see `tracing.scan`)."""
        return ScanTracer(self, args, kwargs, ScanRunner(self._target))

    def session(self, remote: bool | None = None) -> Session:
        """Several traces run as one request; values flow between them without .save()."""
        return Session(self, self._runner(remote))

    def _chosen_runner(self, remote: bool | None) -> Runner | None:
        """A trace's runner when `remote=` is given; None (the default) lets the trace take its
        session's runner, or outside a session this model's (`Tracer.__enter__`)."""
        return None if remote is None else self._runner(remote)

    def _runner(self, remote: bool | None) -> Runner:
        """Who runs this model's graphs (a `graph.runner.Runner`): its local runner, or a host's.

        A model from `connect().model(name)` always runs on its host. `remote=True` on a model built
        locally uses the current connection's hosted model of the same name (`tracing.remote`)."""
        if remote is False and self._host is not None:
            raise TracingError(f"{self._name} lives on a model host (it has no weights here): remote=False "
                               "is not possible; leave remote out")
        if self._host is not None:
            return self._host
        if not remote:
            return self._local
        return remote_runner(self)


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

    @classmethod
    def _hosted(cls, skeleton: torch.nn.Module, tokenizer: Any, order: ExecutionOrder, host: Runner,
                name: str) -> "LanguageModel":
        """A model that lives on a model host: a weightless module tree, the host's execution order,
        and the host's runner (`graph.runner.Runner`) for its graphs (see client.Connection.model)."""
        model = cls.__new__(cls)
        model.__dict__["tokenizer"] = tokenizer
        NNsight.__init__(model, skeleton)
        model.__dict__["_name"] = name
        model.__dict__["_host"] = host
        model._target.order = order
        return model

    def _make_target(self, module: torch.nn.Module) -> ModuleTarget:
        return LanguageTarget(module, self.tokenizer)

    def generate(self, *args: Any, max_new_tokens: int = 20, remote: bool | None = None, **kwargs: Any) -> Tracer:
        """Greedy (or configured) generation with per-step interventions (`tracer.iter`, `tracer.all()`)."""
        if max_new_tokens < 1:
            raise TracingError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        options = {"max_new_tokens": int(max_new_tokens)}
        model_kwargs = {}
        for key, value in kwargs.items():
            (model_kwargs if key in ("input_ids", "attention_mask") else options)[key] = value
        return Tracer(self, "generate", args, model_kwargs, options, self._chosen_runner(remote))
