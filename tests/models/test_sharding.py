"""Sharded models (accelerate's dispatch_model, `models.sharding`): a device map that keeps some
layers on the CPU and offloads others to disk, so accelerate's `AlignDevicesHook`s really load and
drop weights around each forward. Every trace gives the unsharded model's results within 1e-5."""

from __future__ import annotations

import copy

import pytest
import torch

from nnsight_jupyter import LanguageModel
from nnsight_jupyter.errors import ModelLoadError
from nnsight_jupyter.models.sharding import devices_of, place, resolve_device_map

SHORT, LONG = "a b c", "d e f g h i"
#: Layers 1 and 3, the final norm and the head on disk (meta between forwards), the rest on the CPU.
OFFLOAD_MAP = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
               "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "disk",
               "model.rotary_emb": "cpu", "lm_head": "disk"}


@pytest.fixture
def pair(raw_llama, tokenizer, tmp_path):
    """(unsharded, sharded) LanguageModels of the same weights."""
    sharded = place(copy.deepcopy(raw_llama), OFFLOAD_MAP, offload_dir=str(tmp_path / "offload"))
    return LanguageModel(raw_llama, tokenizer=tokenizer), LanguageModel(sharded, tokenizer=tokenizer)


def both(pair, body, kind="trace", *args, **options):
    """body(model, tracer) -> dict of saved proxies, run on each model; their values."""
    out = []
    for model in pair:
        with getattr(model, kind)(*args, **options) as tracer:
            saved = body(model, tracer)
        # A dict in the caller's frame holding saves of a repeated block is filled in place (tracing/containers.py).
        out.append({k: getattr(v, "value", v) for k, v in saved.items()})
    return out


def assert_same(plain: dict, sharded: dict) -> None:
    assert plain.keys() == sharded.keys()
    for key in plain:
        assert sharded[key].device.type == "cpu", key
        torch.testing.assert_close(sharded[key], plain[key], atol=1e-5, rtol=0, msg=key)


def test_the_map_really_offloads_to_disk(pair):
    _, sharded = pair
    module = sharded._target.module
    layer = dict(module.named_modules())["model.layers.1"]
    assert layer.mlp.down_proj.weight.device.type == "meta"       # weights live on disk between forwards
    assert hasattr(layer, "_hf_hook") and devices_of(module) == {"cpu", "disk"}


def test_reads_and_parameters(pair):
    def body(model, tracer):
        return {"l1": model.model.layers[1].output.save(), "in3": model.model.layers[3].input.save(),
                "mlp3": model.model.layers[3].mlp.output.save(), "logits": model.lm_head.output.save(),
                "w": model.model.layers[1].mlp.down_proj.weight.save(), "head": model.lm_head.weight.save()}
    assert_same(*both(pair, body, "trace", LONG))


def test_writes_in_place_and_replacements(pair):
    def body(model, tracer):
        first = model.model.layers[0].output
        model.model.layers[1].output[:, -1] = 0                      # into a disk-offloaded layer's output
        model.model.layers[2].mlp.input = model.model.layers[2].mlp.input + 1
        l2 = model.model.layers[2].output.save()
        model.model.layers[3].output = first * 2                     # read on one layer, written on another
        return {"l2": l2, "logits": model.lm_head.output.save()}
    assert_same(*both(pair, body, "trace", LONG))


def test_skips(pair):
    def body(model, tracer):
        model.model.layers[1].skip(model.model.layers[1].input)     # an offloaded layer's forward skipped
        model.model.layers[2].mlp.skip(model.model.layers[2].mlp.input * 0)
        return {"logits": model.lm_head.output.save()}
    assert_same(*both(pair, body, "trace", SHORT))


def test_invokes_patching_and_module_calls(pair):
    def body(model, tracer):
        with tracer.invoke(LONG):
            clean = model.model.layers[1].output[:, -1]
        with tracer.invoke(SHORT):
            lens = model.lm_head(model.model.norm(model.model.layers[1].output)).save()
            model.model.layers[3].output[:, -1] = clean
            logits = model.lm_head.output.save()
        return {"logits": logits, "lens": lens}
    assert_same(*both(pair, body))


def test_generation(pair):
    def body(model, tracer):
        with tracer.invoke(SHORT):
            for _ in tracer.all():
                steps = model.lm_head.output[:, -1].save()       # one entry per step
            ids = tracer.result.save()
        with tracer.invoke(LONG):
            model.model.layers[1].output[:] = model.model.layers[1].output * 0.5
            other = tracer.result.save()
        return {"ids": ids, "other": other, "steps": steps}
    plain, sharded = both(pair, body, "generate", max_new_tokens=3)
    assert plain["ids"].shape[1] == len(SHORT.split()) + 3
    assert_same(plain, sharded)


def test_weights_and_hooks_unchanged_after_traces(pair, tmp_path):
    _, sharded = pair
    module = sharded._target.module
    before = {name: len(m._forward_hooks) + len(m._forward_pre_hooks) for name, m in module.named_modules()}
    offloaded = module.model.layers[1].mlp.down_proj._hf_hook.weights_map["weight"].clone()
    with sharded.trace(LONG):
        sharded.model.layers[1].output[:] = 0
        sharded.lm_head.output.save()
    after = {name: len(m._forward_hooks) + len(m._forward_pre_hooks) for name, m in module.named_modules()}
    assert before == after
    assert torch.equal(module.model.layers[1].mlp.down_proj._hf_hook.weights_map["weight"], offloaded)


def test_auto_within_max_memory_spills_to_disk(raw_llama, tokenizer, tmp_path):
    total = sum(p.numel() * p.element_size() for p in raw_llama.parameters())
    device_map = resolve_device_map(raw_llama, "auto", {"cpu": total // 2})
    assert "disk" in device_map.values() and "cpu" in device_map.values()
    plain = LanguageModel(copy.deepcopy(raw_llama), tokenizer=tokenizer)
    sharded = LanguageModel(place(raw_llama, "auto", {"cpu": total // 2}, str(tmp_path)), tokenizer=tokenizer)
    got = both((plain, sharded), lambda m, t: {"logits": m.lm_head.output.save()}, "trace", LONG)
    assert_same(*got)


def test_a_bad_map_fails_clearly(raw_llama):
    with pytest.raises(ModelLoadError, match="does not have"):
        place(raw_llama, {"model.nope": "cpu", "lm_head": "cpu"})
    with pytest.raises(ModelLoadError, match="without a device"):
        place(raw_llama, {"lm_head": "cpu"})
    with pytest.raises(ModelLoadError, match="accelerate knows"):
        place(raw_llama, "everywhere")
