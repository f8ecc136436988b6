"""Weightless module trees for models that live on a model host.

The host describes a model's module tree as JSON (`nnsight_jupyter.models.skeleton.module_tree`):
each node is ``{"class", "children": {name: node}, "params": {name: shape}, "attrs": {name: value}}``.
`build_skeleton` turns it back into a torch module tree that has the host's paths, classes (by name),
parameter shapes and plain attributes, with every parameter on the ``meta`` device: enough to build
an Envoy tree and trace against, with no weights and without the model's class (so the kernel's
transformers version does not matter). `same_tree` tells whether a locally built model has the
same tree as a hosted one.
"""

from __future__ import annotations

import logging
import types
from typing import Any, Iterator

import torch

from ..errors import NNsightError

__all__ = ["HostedModule", "build_skeleton", "same_tree", "make_config"]

_CONTAINERS = frozenset({"ModuleList", "Sequential", "ModuleDict"})


class HostedModule(torch.nn.Module):
    """One module of a hosted model: its children, meta parameters and plain attributes, no weights.

    Every node of a skeleton is a HostedModule; its class is a subclass named after the host-side class
    (``type(m).__name__ == "LlamaAttention"``), so `repr(model)` reads like ``print(model)`` on the host.
    `host_class` holds that name too.
    """

    host_class = "Module"

    def __init__(self, host_class: str | None = None):
        super().__init__()
        if host_class is not None:
            self.host_class = host_class

    def _get_name(self) -> str:
        return self.host_class

    def extra_repr(self) -> str:
        if self._modules:
            return ""
        d = self.__dict__
        params = {name: tuple(p.shape) for name, p in self._parameters.items() if p is not None}
        if "in_features" in d and "out_features" in d:
            return f"in_features={d['in_features']}, out_features={d['out_features']}, bias={'bias' in params}"
        if self.host_class == "Embedding" and "weight" in params and len(params["weight"]) == 2:
            return f"{params['weight'][0]}, {params['weight'][1]}"
        if set(params) == {"weight"} and len(params["weight"]) == 1:
            return f"({params['weight'][0]},)"
        return ", ".join(f"{name}={list(shape)}" for name, shape in params.items())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NNsightError(
            f"this model lives on the host; it has no weights here ({self.host_class} cannot run in this "
            "kernel). Use it inside `with model.trace(...)` / `model.generate(...)`, which run on the host.")


class _HostedContainer(HostedModule):
    """A hosted ModuleList / Sequential / ModuleDict: indexable, iterable and sized like the original."""

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[torch.nn.Module]:
        if self.host_class == "ModuleDict":
            return iter(self._modules)
        return iter(self._modules.values())

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return self._modules[key]
        return list(self._modules.values())[key]

    def __bool__(self) -> bool:
        return True


_CLASSES: dict[str, type[HostedModule]] = {}


def _hosted_class(name: str) -> type[HostedModule]:
    """The HostedModule subclass named after the host-side class `name` (one per name)."""
    cls = _CLASSES.get(name)
    if cls is None:
        ident = name if name.isidentifier() else "HostedModule"
        base = _HostedContainer if name in _CONTAINERS else HostedModule
        namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": ident, "host_class": name}
        if name == "ModuleList":   # "(0-29): 30 x LlamaDecoderLayer(...)", as print(model) shows it
            namespace["__repr__"] = torch.nn.ModuleList.__repr__
        cls = type(ident, (base,), namespace)
        _CLASSES[name] = cls
    return cls


def make_config(config: dict[str, Any] | None) -> Any:
    """The host's config dict as a transformers PretrainedConfig when `AutoConfig.for_model` can build
    one (never needs the model class), else as a `types.SimpleNamespace`; None stays None."""
    if config is None:
        return None
    if not isinstance(config, dict):
        return config
    fields = {k: v for k, v in config.items() if k != "transformers_version"}
    model_type = fields.pop("model_type", None)
    if model_type:
        try:
            from transformers import AutoConfig

            logger = logging.getLogger("transformers")
            level = logger.level
            logger.setLevel(logging.ERROR)
            try:
                return AutoConfig.for_model(model_type, **fields)
            finally:
                logger.setLevel(level)
        except Exception:   # an architecture this transformers does not know, or another version's fields
            pass
    return types.SimpleNamespace(**config)


def _dtype(config: dict[str, Any] | None) -> torch.dtype:
    name = (config or {}).get("dtype") or (config or {}).get("torch_dtype")
    value = getattr(torch, name, None) if isinstance(name, str) else None
    return value if isinstance(value, torch.dtype) else torch.float32


def _check_node(node: Any, path: str) -> None:
    if not isinstance(node, dict) or not isinstance(node.get("class"), str):
        raise NNsightError(f"malformed module tree from the host at {path or 'the root'}: expected an object "
                           'with a "class" name')


def _build(node: dict[str, Any], path: str, dtype: torch.dtype, config: Any,
           attention: list[HostedModule]) -> HostedModule:
    _check_node(node, path)
    module = _hosted_class(node["class"])()
    for name, child in (node.get("children") or {}).items():
        module.add_module(str(name), _build(child, f"{path}.{name}" if path else str(name), dtype, config, attention))
    for name, shape in (node.get("params") or {}).items():
        meta = torch.empty([int(s) for s in shape], device="meta", dtype=dtype)
        module.register_parameter(str(name), torch.nn.Parameter(meta, requires_grad=False))
    attrs = node.get("attrs") or {}
    for name, value in attrs.items():
        name = str(name)
        if name.startswith("_") or name in module._modules or name in module._parameters \
                or name == "training" or hasattr(HostedModule, name):
            continue
        setattr(module, name, value)
    if "head_dim" in attrs:
        attention.append(module)
    return module


def build_skeleton(tree: dict[str, Any], config: dict[str, Any] | Any | None = None) -> torch.nn.Module:
    """A weightless module tree (HostedModules, meta parameters, eval mode) from the host's `module_tree`.

    `named_modules()` paths and parameter shapes equal the host's. `config` (the host's config dict)
    becomes `.config` of the root and of every attention module (those with a ``head_dim``)."""
    attention: list[HostedModule] = []
    root = _build(tree, "", _dtype(config if isinstance(config, dict) else None), config, attention)
    cfg = make_config(config)
    if cfg is not None:
        for module in [root, *attention]:
            module.config = cfg
    return root.eval()


def _flatten_tree(tree: dict[str, Any]) -> dict[str, tuple[str, dict[str, tuple[int, ...]]]]:
    out: dict[str, tuple[str, dict[str, tuple[int, ...]]]] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        _check_node(node, path)
        params = {str(k): tuple(int(s) for s in v) for k, v in (node.get("params") or {}).items()}
        out[path] = (node["class"], params)
        for name, child in (node.get("children") or {}).items():
            walk(child, f"{path}.{name}" if path else str(name))

    walk(tree, "")
    return out


def _flatten_module(module: torch.nn.Module) -> dict[str, tuple[str, dict[str, tuple[int, ...]]]]:
    out = {}
    for path, m in module.named_modules(remove_duplicate=False):
        name = m.host_class if isinstance(m, HostedModule) else type(m).__name__
        out[path] = (name, {k: tuple(p.shape) for k, p in m.named_parameters(recurse=False)})
    return out


def same_tree(local_module: torch.nn.Module, tree: dict[str, Any]) -> str | None:
    """None if `local_module` has exactly the module paths and parameter shapes of the host's `tree`;
    else a short description of the first difference."""
    here, there = _flatten_module(local_module), _flatten_tree(tree)
    for path, (cls, params) in here.items():
        if path not in there:
            return f"{path or 'the root'} ({cls}) exists here but not on the host"
        host_params = there[path][1]
        for name, shape in params.items():
            full = f"{path}.{name}" if path else name
            if name not in host_params:
                return f"parameter {full} {list(shape)} exists here but not on the host"
            if tuple(host_params[name]) != shape:
                return f"parameter {full} is {list(shape)} here but {list(host_params[name])} on the host"
        for name in host_params:
            if name not in params:
                full = f"{path}.{name}" if path else name
                return f"parameter {full} {list(host_params[name])} exists on the host but not here"
    for path, (cls, _) in there.items():
        if path not in here:
            return f"{path or 'the root'} ({cls}) exists on the host but not here"
    return None
