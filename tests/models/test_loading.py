"""load_pretrained: local folders and files, cached hub ids only, clear errors, never the network."""

import time

import pytest
import torch

from nnsight_jupyter.errors import ModelLoadError
from nnsight_jupyter.models import load_pretrained, tiny_gpt2, tiny_llama, word_tokenizer


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_local_dir_round_trip(tmp_path, build):
    model, tok = build(seed=3), word_tokenizer()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    loaded, loaded_tok = load_pretrained(str(tmp_path))
    assert type(loaded) is type(model)
    assert not loaded.training
    assert loaded.dtype == torch.float32
    original, again = model.state_dict(), loaded.state_dict()
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)

    assert loaded_tok.padding_side == "left"
    assert loaded_tok.pad_token_id == 0
    text = "the cat sat on the mat"
    assert loaded_tok(text)["input_ids"] == tok(text)["input_ids"]
    ids = torch.tensor([tok(text)["input_ids"]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_local_dir_dtype(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)
    model, _ = load_pretrained(str(tmp_path), dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_pad_token_defaults_to_eos(tmp_path):
    tok = word_tokenizer()
    tok.pad_token = None
    tok.eos_token = "."
    tok.save_pretrained(tmp_path)
    tiny_llama().save_pretrained(tmp_path)
    model, loaded_tok = load_pretrained(str(tmp_path))
    assert loaded_tok.pad_token == "."
    assert model.generation_config.pad_token_id == loaded_tok.convert_tokens_to_ids(".")


def test_uncached_hub_id_fails_fast_without_network():
    # local_files_only=True: an id missing from the local cache fails at once instead of downloading.
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_pretrained("nobody/not-a-model")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "local cache" in message
    assert "never downloads" in message
    assert "nobody/not-a-model" in message


def test_missing_paths_and_bad_folders(tmp_path):
    with pytest.raises(ModelLoadError, match="neither a directory nor a .gguf"):
        load_pretrained(str(tmp_path / "nothing-here"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_pretrained(str(tmp_path))
    tiny_llama().save_pretrained(tmp_path)  # weights but no tokenizer
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_pretrained(str(tmp_path))
    with pytest.raises(ModelLoadError, match="non-empty"):
        load_pretrained("  ")


def test_unknown_bundled_name_lists_known_names():
    with pytest.raises(ModelLoadError, match="smollm2-135m"):
        load_pretrained("bundled:gpt-17")


def test_cached_hub_id_loads_offline(tmp_path, monkeypatch):
    # A fake Hugging Face cache in the hub's layout: models--owner--name/{refs/main, snapshots/<commit>/}.
    import huggingface_hub.constants

    repo = tmp_path / "models--someone--tiny"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model = tiny_llama(seed=5)
    model.save_pretrained(snapshot)
    word_tokenizer().save_pretrained(snapshot)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))

    loaded, tok = load_pretrained("someone/tiny")
    assert tok.padding_side == "left"
    original, again = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(original[k], again[k]) for k in original)
