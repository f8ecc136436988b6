"""Weightless skeletons from the host's module tree: same paths and shapes, no storage, traceable."""

from __future__ import annotations

import types

import pytest
import torch

from nnsight_jupyter import LanguageModel
from nnsight_jupyter.client.skeleton import HostedModule, build_skeleton, same_tree
from nnsight_jupyter.client.tokenizer import tokenizer_from_description
from nnsight_jupyter.errors import NNsightError
from nnsight_jupyter.execution import LanguageTarget, LocalRunner
from nnsight_jupyter.graph.codec import decode, decode_values, encode, encode_values
from nnsight_jupyter.graph.order import ExecutionOrder
from nnsight_jupyter.graph.result import Result
from nnsight_jupyter.models import config_dict, module_tree, tiny_gpt2, tiny_llama, word_tokenizer


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


@pytest.fixture(scope="module")
def real():
    return tiny_llama(seed=0)


@pytest.fixture(scope="module")
def tree(real):
    return module_tree(real)


def test_same_paths_and_shapes_as_the_real_model(real, tree):
    skeleton = build_skeleton(tree)
    assert [p for p, _ in skeleton.named_modules()] == [p for p, _ in real.named_modules()]
    assert shapes(skeleton) == shapes(real)
    assert not skeleton.training


def test_no_real_storage(tree):
    skeleton = build_skeleton(tree)
    params = list(skeleton.parameters())
    assert params
    for p in params:
        assert p.device.type == "meta"
        assert not p.requires_grad
        assert isinstance(p, torch.nn.Parameter)


def test_classes_and_repr_read_like_the_host(real, tree):
    skeleton = build_skeleton(tree)
    attention = skeleton.model.layers[0].self_attn
    assert isinstance(attention, HostedModule)
    assert type(attention).__name__ == "LlamaAttention" and attention.host_class == "LlamaAttention"
    text = repr(skeleton)
    assert text.startswith("LlamaForCausalLM(")
    assert "(self_attn): LlamaAttention(" in text
    assert "(o_proj): Linear(in_features=64, out_features=64, bias=False)" in text
    assert "(0-3): 4 x LlamaDecoderLayer(" in text
    assert len(skeleton.model.layers) == 4 and skeleton.model.layers[-1] is skeleton.model.layers[3]
    assert [type(m).__name__ for m in skeleton.model.layers] == ["LlamaDecoderLayer"] * 4


def test_attributes_for_heads(real, tree):
    skeleton = build_skeleton(tree)
    attention = skeleton.model.layers[0].self_attn
    assert attention.head_dim == real.model.layers[0].self_attn.head_dim == 16
    assert attention.o_proj.in_features == 64 and attention.o_proj.out_features == 64


def test_config_becomes_a_transformers_config_on_root_and_attention(real, tree):
    skeleton = build_skeleton(tree, config_dict(real))
    assert skeleton.config.num_attention_heads == 4
    assert type(skeleton.config).__name__ == "LlamaConfig"
    assert skeleton.model.layers[2].self_attn.config is skeleton.config
    assert not hasattr(skeleton.model.layers[2].mlp, "config")


def test_config_of_an_unknown_architecture_is_a_namespace(tree):
    skeleton = build_skeleton(tree, {"model_type": "no-such-arch-xyz", "num_attention_heads": 4})
    assert isinstance(skeleton.config, types.SimpleNamespace)
    assert skeleton.config.num_attention_heads == 4


def test_forward_says_it_lives_on_the_host(tree):
    skeleton = build_skeleton(tree)
    with pytest.raises(NNsightError, match="lives on the host; it has no weights here"):
        skeleton(torch.zeros(1, 3, dtype=torch.long))


def test_same_tree(real, tree):
    assert same_tree(real, tree) is None
    assert same_tree(build_skeleton(tree), tree) is None
    extra = same_tree(tiny_llama(num_layers=5), tree)
    assert extra is not None and "model.layers.4" in extra and "not on the host" in extra
    fewer = same_tree(tiny_llama(num_layers=3), tree)
    assert fewer is not None and "model.layers.3" in fewer and "on the host but not here" in fewer
    wider = same_tree(tiny_llama(hidden=32), tree)
    assert wider is not None and "model.embed_tokens.weight" in wider and "[200, 32]" in wider


def test_tokenizer_from_description_matches():
    original = word_tokenizer()
    rebuilt = tokenizer_from_description({"json": original.backend_tokenizer.to_str(),
                                          "special_tokens": original.special_tokens_map})
    assert rebuilt.padding_side == "left"
    assert rebuilt.pad_token_id == original.pad_token_id == 0
    for prompt in ["the cat sat", "When Mary and John went to the store", "zzz unknown"]:
        assert rebuilt(prompt)["input_ids"] == original(prompt)["input_ids"]
    # the bare tokenizer.json text works too
    assert tokenizer_from_description(original.backend_tokenizer.to_str())("the cat")["input_ids"] == \
        original("the cat")["input_ids"]


# ------------------------------------------------------------------ tracing a skeleton

class FakeRunner:
    """A `graph.runner.Runner` that runs graphs the way a host would: through the wire format, on a real model."""

    def __init__(self, model, tokenizer):
        self.local = LocalRunner(LanguageTarget(model, tokenizer))
        self.order = self.local.target.record_order()
        self.graphs = 0

    def run(self, graph, observer=None) -> Result:
        self.graphs += 1
        result = self.local.run(decode(encode(graph)), observer)
        values = decode_values(encode_values({str(k): v for k, v in result.saved.items()}))
        return Result({int(k): v for k, v in values.items()}, result.logs, result.missing)


def hosted(real_model):
    runner = FakeRunner(real_model, word_tokenizer())
    order = ExecutionOrder.from_json(runner.order.to_json())
    model = LanguageModel._hosted(build_skeleton(module_tree(real_model), config_dict(real_model)),
                                  word_tokenizer(), order, runner, "tiny")
    return model, runner


def test_hosted_skeleton_traces_like_a_local_model(real):
    model, runner = hosted(real)
    with model.trace("the cat sat"):
        heads = model.model.layers[0].self_attn.heads.save()
        h = model.model.layers[1].output.save()
    assert runner.graphs == 1

    local = LanguageModel(tiny_llama(seed=0), tokenizer=word_tokenizer())
    with local.trace("the cat sat"):
        local_heads = local.model.layers[0].self_attn.heads.save()
        local_h = local.model.layers[1].output.save()
    h, heads = h.value, heads.value
    assert isinstance(h, torch.Tensor) and h.shape == (1, 3, 64)
    assert heads.shape == (1, 3, 4, 16)
    assert torch.equal(h, local_h.value)
    assert torch.equal(heads, local_heads.value)


def test_hosted_skeleton_writes_and_logits(real):
    model, _ = hosted(real)
    with model.trace("the cat sat on the mat"):
        model.model.layers[1].mlp.output[:, -1] = 0
        logits = model.lm_head.output.save()
    local = LanguageModel(tiny_llama(seed=0), tokenizer=word_tokenizer())
    with local.trace("the cat sat on the mat"):
        local.model.layers[1].mlp.output[:, -1] = 0
        local_logits = local.lm_head.output.save()
    assert torch.equal(logits.value, local_logits.value)


def test_hosted_gpt2_heads():
    real_gpt2 = tiny_gpt2(seed=0)
    model, _ = hosted(real_gpt2)
    with model.trace("the cat sat"):
        heads = model.transformer.h[0].attn.heads.save()
    local = LanguageModel(tiny_gpt2(seed=0), tokenizer=word_tokenizer())
    with local.trace("the cat sat"):
        local_heads = local.transformer.h[0].attn.heads.save()
    assert heads.value.shape == local_heads.value.shape == (1, 3, 4, 16)
    assert torch.equal(heads.value, local_heads.value)


def test_hosted_model_refuses_remote_false(real):
    model, _ = hosted(real)
    with pytest.raises(NNsightError, match="remote=False"):
        with model.trace("the cat", remote=False):
            model.lm_head.output.save()
