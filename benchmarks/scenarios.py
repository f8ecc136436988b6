"""The benchmarked work: three scenarios, each done by three contenders that return the same tensors.

Contenders
  plain  hand-written forward hooks / pre-hooks on the raw Hugging Face module, under torch.no_grad()
  nj     nnsight_jupyter.LanguageModel wrapping that same module object
  ns     nnsight 0.8.1 LanguageModel wrapping a deepcopy of it (nnsight installs a wrapper `forward`
         on every submodule it wraps, which would slow `plain` down if they shared the module)

Scenarios (a `Setup` holds the model, its wrappers and the [1, 16] input ids)
  a  one trace saving one layer's output
  b  32 invokes in one trace, each zeroing one attention head at the last position and saving that
     invoke's last-position logits (plain: one forward of the prompt repeated 32 times, with
     pre-hooks on the attention output projections that zero the right row and columns)
  c  a session of 32 traces, each saving one layer's output (plain: 32 hooked forwards)
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch

N = 32  # invokes in (b), traces in (c)


@dataclass
class Setup:
    name: str
    hf: torch.nn.Module  # the raw transformers model (used by plain and nj)
    nj: object  # nnsight_jupyter.LanguageModel(hf)
    ns: object  # nnsight.LanguageModel(deepcopy(hf))
    ids: torch.Tensor  # [1, 16] token ids
    layers: str  # attribute path of the decoder layer list: "transformer.h" / "model.layers"
    attn: str  # attention module inside a layer: "attn" / "self_attn"
    proj: str  # its output projection: "c_proj" / "o_proj"
    saved_layer: int  # the layer whose output (a) and (c) save
    n_layers: int
    n_heads: int
    head_dim: int

    # The accessors work on the raw model and on both wrappers alike (their module trees mirror it).
    def layer(self, root, i):
        for name in self.layers.split("."):
            root = getattr(root, name)
        return root[i]

    def attention(self, root, i):
        return getattr(self.layer(root, i), self.attn)

    def out_proj(self, root, i):
        return getattr(self.attention(root, i), self.proj)

    def target(self, i):
        """(layer, head) zeroed by invoke i of scenario (b)."""
        return (i // self.n_heads) % self.n_layers, i % self.n_heads


def make_setup(name, hf, tokenizer, ids, *, layers, attn, proj, saved_layer):
    import nnsight

    import nnsight_jupyter

    with warnings.catch_warnings():  # LanguageModel is deprecated in nnsight 0.8 but still works
        warnings.simplefilter("ignore", nnsight.NNsightDeprecationWarning)
        ns = nnsight.LanguageModel(copy.deepcopy(hf), tokenizer=tokenizer)
    nj = nnsight_jupyter.LanguageModel(hf, tokenizer=tokenizer)
    cfg = hf.config
    return Setup(name, hf, nj, ns, ids, layers, attn, proj, saved_layer,
                 n_layers=cfg.num_hidden_layers, n_heads=cfg.num_attention_heads,
                 head_dim=cfg.hidden_size // cfg.num_attention_heads)


def value(x):
    """A saved result: nnsight_jupyter may hand back a proxy whose .value is the tensor."""
    return x if isinstance(x, torch.Tensor) else x.value


# ---------------------------------------------------------------- (a) one trace, save one layer's output


def a_plain(s):
    saved = []
    handle = s.layer(s.hf, s.saved_layer).register_forward_hook(lambda m, args, out: saved.append(out.detach()))
    try:
        with torch.no_grad():
            s.hf(s.ids)
    finally:
        handle.remove()
    return saved[0]


def a_nj(s):
    with s.nj.trace(s.ids):
        h = s.layer(s.nj, s.saved_layer).output.save()
    return value(h)


def a_ns(s):
    with s.ns.trace(s.ids):
        h = s.layer(s.ns, s.saved_layer).output.save()
    return h


# ---------------------------------------------------------------- (b) 32 invokes, each zeroing one head


def b_plain(s):
    by_layer = {}  # layer -> [(row, head)]
    for row in range(N):
        layer, head = s.target(row)
        by_layer.setdefault(layer, []).append((row, head))

    def zero_heads(rows_heads):
        def pre_hook(module, args):
            x = args[0]  # [batch, seq, n_heads * head_dim], edited in place
            for row, head in rows_heads:
                x[row, -1, head * s.head_dim:(head + 1) * s.head_dim] = 0
        return pre_hook

    handles = [s.out_proj(s.hf, layer).register_forward_pre_hook(zero_heads(rows_heads))
               for layer, rows_heads in by_layer.items()]
    try:
        with torch.no_grad():
            logits = s.hf(s.ids.repeat(N, 1)).logits[:, -1]
    finally:
        for handle in handles:
            handle.remove()
    return [logits[row:row + 1] for row in range(N)]


def b_nj(s):
    saved = []
    with s.nj.trace() as tracer:
        for i in range(N):
            layer, head = s.target(i)
            with tracer.invoke(s.ids):
                s.attention(s.nj, layer).heads[:, -1, head] = 0
                saved.append(s.nj.lm_head.output[:, -1].save())
    return [value(x) for x in saved]


def b_ns(s):
    saved = []
    with s.ns.trace() as tracer:
        for i in range(N):
            layer, head = s.target(i)
            with tracer.invoke(s.ids):
                s.out_proj(s.ns, layer).input[:, -1, head * s.head_dim:(head + 1) * s.head_dim] = 0
                saved.append(s.ns.lm_head.output[:, -1].save())
    return saved


# ---------------------------------------------------------------- (c) a session of 32 traces


def c_plain(s):
    saved = []
    layer = s.layer(s.hf, s.saved_layer)
    with torch.no_grad():
        for _ in range(N):
            handle = layer.register_forward_hook(lambda m, args, out: saved.append(out.detach()))
            try:
                s.hf(s.ids)
            finally:
                handle.remove()
    return saved


def c_nj(s):
    saved = []
    with s.nj.session():
        for _ in range(N):
            with s.nj.trace(s.ids):
                saved.append(s.layer(s.nj, s.saved_layer).output.save())
    return [value(x) for x in saved]


def c_ns(s):
    saved = []
    with s.ns.session():
        for _ in range(N):
            with s.ns.trace(s.ids):
                saved.append(s.layer(s.ns, s.saved_layer).output.save())
    return saved


SCENARIOS = {
    "a": ("one trace, save one layer's output", {"plain": a_plain, "nj": a_nj, "ns": a_ns}),
    "b": (f"{N} invokes in one trace, each zeroing one head, save last logits",
          {"plain": b_plain, "nj": b_nj, "ns": b_ns}),
    "c": (f"session of {N} traces, each saving one layer's output", {"plain": c_plain, "nj": c_nj, "ns": c_ns}),
}


# ---------------------------------------------------------------- the models


def gpt2_setup():
    """Tiny random GPT-2 (4 layers, 256 wide, 4 heads), 16 word-level tokens; layer 2 saved."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from nnsight_jupyter.models import word_tokenizer

    torch.manual_seed(0)
    config = GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=200, n_positions=64,
                        bos_token_id=None, eos_token_id=None)
    hf = GPT2LMHeadModel(config).eval()
    tok = word_tokenizer()
    prompt = "the cat sat on the mat and the dog ran quickly to the big red store"
    ids = tok(prompt, return_tensors="pt")["input_ids"][:, :16]
    assert ids.shape == (1, 16)
    return make_setup("gpt2", hf, tok, ids, layers="transformer.h", attn="attn", proj="c_proj", saved_layer=2)


def smollm2_setup():
    """SmolLM2-135M (30 layers, 576 wide, 9 heads), 16 tokens of a real prompt; layer 15 saved."""
    from nnsight_jupyter.models import load_bundled

    hf, tok = load_bundled("smollm2-135m")
    hf.eval()
    prompt = ("The Eiffel Tower is in the city of Paris, which is the capital of France. "
              "The Colosseum is in the city of Rome")
    ids = tok(prompt, return_tensors="pt")["input_ids"][:, :16]
    assert ids.shape == (1, 16), ids.shape
    return make_setup("smollm2", hf, tok, ids, layers="model.layers", attn="self_attn", proj="o_proj",
                      saved_layer=15)


MODELS = {
    "gpt2": ("tiny GPT-2 (4 layers, n_embd 256, 4 heads, vocab 200, random weights)", gpt2_setup),
    "smollm2": ("SmolLM2-135M (bundled; 30 layers, hidden 576, 9 heads, vocab 49152)", smollm2_setup),
}
