"""Meta-device skeletons rebuilt from a config dict match the real model's tree, with no weights."""

import json

import pytest

from nnsight_jupyter.errors import ModelLoadError
from nnsight_jupyter.models import config_dict, meta_skeleton, module_tree, tiny_gpt2, tiny_llama


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_skeleton_from_config_dict_matches_model(build):
    model = build()
    wire = json.loads(json.dumps(config_dict(model)))  # what a remote client receives
    skeleton = meta_skeleton(wire)

    assert type(skeleton) is type(model)
    assert not skeleton.training
    assert [name for name, _ in skeleton.named_modules()] == [name for name, _ in model.named_modules()]
    assert {n: tuple(p.shape) for n, p in skeleton.named_parameters()} == {
        n: tuple(p.shape) for n, p in model.named_parameters()
    }
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    assert all(b.device.type == "meta" for b in skeleton.buffers())
    assert module_tree(skeleton) == module_tree(model)


def test_skeleton_from_config_object():
    model = tiny_llama(num_layers=2)
    skeleton = meta_skeleton(model.config)
    assert len(skeleton.model.layers) == 2
    assert all(p.is_meta for p in skeleton.parameters())


def test_module_tree_is_json_and_has_shapes():
    model = tiny_llama(num_layers=2, hidden=64, heads=4, kv_heads=2, vocab=200)
    tree = json.loads(json.dumps(module_tree(model)))
    assert tree["class"] == "LlamaForCausalLM"
    layer = tree["children"]["model"]["children"]["layers"]["children"]["1"]
    assert layer["class"] == "LlamaDecoderLayer"
    q_proj = layer["children"]["self_attn"]["children"]["q_proj"]
    assert q_proj == {"class": "Linear", "children": {}, "params": {"weight": [64, 64]},
                      "attrs": {"in_features": 64, "out_features": 64}}
    assert layer["children"]["self_attn"]["attrs"]["head_dim"] == 16
    assert layer["children"]["self_attn"]["children"]["k_proj"]["params"] == {"weight": [32, 64]}
    assert tree["children"]["lm_head"]["params"] == {"weight": [200, 64]}
    assert "params" not in tree["children"]["model"]["children"]["layers"]  # ModuleList owns none


def test_skeleton_errors():
    with pytest.raises(ModelLoadError, match="model_type"):
        meta_skeleton({"hidden_size": 8})
    with pytest.raises(ModelLoadError, match="model_type 'no-such-arch'"):
        meta_skeleton({"model_type": "no-such-arch"})
    with pytest.raises(ModelLoadError, match="config or a dict"):
        meta_skeleton("llama")  # type: ignore[arg-type]
