"""Meta-device skeletons: a model's module tree from its config alone, with no weights allocated.

A client that talks to a remote model host needs the module tree (names, classes, parameter
shapes) to build its Envoy tree and check a trace before sending it, but not the weights. The host
sends `config_dict(model)` (and `module_tree(model)` for display); the client rebuilds the same
tree with `meta_skeleton(config)`, whose parameters and buffers all live on the ``meta`` device.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from nnsight_jupyter.errors import ModelLoadError

__all__ = ["meta_skeleton", "module_tree", "config_dict"]


def config_dict(model: PreTrainedModel) -> dict[str, Any]:
    """The model's full config as a JSON-able dict (``model.config.to_dict()``, through JSON)."""
    return json.loads(model.config.to_json_string(use_diff=False))


def _as_config(config: PretrainedConfig | dict[str, Any]) -> PretrainedConfig:
    if isinstance(config, PretrainedConfig):
        return config
    if not isinstance(config, dict):
        raise ModelLoadError(
            f"meta_skeleton needs a transformers config or a dict, got {type(config).__name__}. "
            "Pass model.config or config_dict(model)."
        )
    fields = dict(config)
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise ModelLoadError(
            "The config dict has no 'model_type', so the architecture is unknown. Send "
            "config_dict(model), which includes it (for example 'llama' or 'gpt2')."
        )
    # Bookkeeping keys that are not constructor arguments.
    fields.pop("transformers_version", None)
    try:
        return AutoConfig.for_model(model_type, **fields)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"Cannot build a config for model_type {model_type!r}: {exc}. The installed transformers "
            "may not know this architecture; upgrade transformers or use a supported model type."
        ) from exc


def meta_skeleton(config: PretrainedConfig | dict[str, Any]) -> PreTrainedModel:
    """Build the causal-LM module tree for ``config`` on the meta device, in eval mode.

    No memory is allocated for weights; every parameter and buffer is a ``meta`` tensor that has
    the right shape and dtype only. A dict (as from `config_dict`) needs a ``model_type`` key.
    """
    config = _as_config(config)
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype):
        dtype = torch.float32
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except ValueError as exc:
        raise ModelLoadError(
            f"No causal language model class for config of type {type(config).__name__}: {exc}. "
            "nnsight_jupyter works with architectures that have an AutoModelForCausalLM class."
        ) from exc
    return model.eval()


def module_tree(model: torch.nn.Module) -> dict[str, Any]:
    """A JSON-able description of the module tree.

    Each node is ``{"class": <class name>, "children": {name: node, ...}}``; a module that owns
    parameters directly also has ``"params": {name: [shape...]}`` (for a Linear: ``{"weight": [out, in],
    "bias": [out]}``), and ``"attrs"`` holds the plain attributes named in `TREE_ATTRIBUTES`.
    """
    node: dict[str, Any] = {
        "class": type(model).__name__,
        "children": {name: module_tree(child) for name, child in model.named_children()},
    }
    params = {name: list(p.shape) for name, p in model.named_parameters(recurse=False)}
    if params:
        node["params"] = params
    attrs = {name: getattr(model, name) for name in TREE_ATTRIBUTES
             if isinstance(getattr(model, name, None), (int, float, str, bool))}
    if attrs:
        node["attrs"] = attrs
    return node


#: Plain attributes a client-side skeleton needs (e.g. for `attention.heads`), copied into the tree.
TREE_ATTRIBUTES = ("head_dim", "num_heads", "num_key_value_groups", "in_features", "out_features",
                   "embed_dim", "hidden_size", "layer_idx", "nf", "nx")
