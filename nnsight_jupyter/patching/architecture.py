"""Where a causal LM keeps what the patching library reads and writes: decoder layers, attention heads,
MLPs, the final norm and the unembedding.

`layout(model)` finds them once per model for the known layouts (Llama-family `model.layers`, GPT-2
`transformer.h`) and raises `ArchitectureError` naming what is missing otherwise. Head values go through
the engine's own view, `attention.heads` ([batch, seq, n_heads, head_dim], tracing/envoy.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ModuleAttributeError
from .errors import ArchitectureError

# (decoder layer list, final norm, attention child, MLP child), by the attribute path of each layout.
_LAYOUTS = (
    ("model.layers", "model.norm", "self_attn", "mlp"),          # Llama, Mistral, Qwen, SmolLM2, ...
    ("transformer.h", "transformer.ln_f", "attn", "mlp"),         # GPT-2
    ("gpt_neox.layers", "gpt_neox.final_layer_norm", "attention", "mlp"),
)


def _walk(envoy: Any, path: str) -> Any | None:
    for name in path.split("."):
        module = envoy._module
        if name not in module._modules or module._modules[name] is None:
            return None
        envoy = envoy._child(name)
    return envoy


@dataclass(frozen=True)
class Layout:
    """The parts of one model the sweeps use, as envoys."""

    layers_path: str
    norm: Any
    lm_head: Any
    attention_name: str
    mlp_name: str
    layers: tuple

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def attention(self, layer: int) -> Any:
        return getattr(self.layers[layer], self.attention_name)

    def mlp(self, layer: int) -> Any:
        return getattr(self.layers[layer], self.mlp_name)

    def head_projection(self, layer: int) -> Any:
        """The attention output projection of a layer, whose input `.heads` views."""
        self.heads_shape()
        return self.attention(layer)._heads_spec()[0]

    def heads_shape(self) -> tuple[int, int]:
        """(n_heads, head_dim) of the attention modules, from the engine's `.heads` view."""
        try:
            _, n_heads, head_dim = self.attention(0)._heads_spec()
        except ModuleAttributeError as error:
            raise ArchitectureError(
                f"the attention modules ({self.layers_path}.0.{self.attention_name}) have no known head layout: "
                f"{error.reason}", module=f"{self.layers_path}.0.{self.attention_name}",
                fix="Head patching needs an attention module with an output projection (o_proj / c_proj / "
                    "out_proj) and num_heads or head_dim; residual_patching and mlp_patching work without it."
            ) from None
        return n_heads, head_dim


def layout(model: Any) -> Layout:
    """The model's layout (cached on the model), or ArchitectureError."""
    found = model.__dict__.get("_patching_layout")
    if found is not None:
        return found
    for layers_path, norm_path, attention, mlp in _LAYOUTS:
        layers = _walk(model, layers_path)
        norm = _walk(model, norm_path)
        lm_head = _walk(model, "lm_head")
        lm_head = _walk(model, "embed_out") if lm_head is None else lm_head
        if layers is None or norm is None or lm_head is None or len(layers) == 0:  # (envoys: no truth test)
            continue
        first = layers[0]._module._modules
        if attention not in first or mlp not in first:
            continue
        found = Layout(layers_path, norm, lm_head, attention, mlp, tuple(layers))
        model.__dict__["_patching_layout"] = found
        return found
    known = ", ".join(f"{lp} with {a} / {m}, {n} and lm_head" for lp, n, a, m in _LAYOUTS)
    children = ", ".join(model._module._modules) or "none"
    raise ArchitectureError(
        f"{type(model._module).__name__} has no known layout for patching (its top-level modules: {children})",
        fix=f"The patching library knows these layouts: {known}. For another model write the sweep as traces "
            "(see docs/patching.md).")
