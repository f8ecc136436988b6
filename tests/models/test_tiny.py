"""Tiny random models and the offline word tokenizer: deterministic, fast, self-contained."""

import torch

from nnsight_jupyter.models import tiny_gpt2, tiny_llama, word_tokenizer
from nnsight_jupyter.models.tiny import WORDS


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_builders_are_deterministic_by_seed_and_leave_global_rng_alone():
    for build in (tiny_llama, tiny_gpt2):
        torch.manual_seed(1234)
        before = torch.random.get_rng_state()
        a, b, c = build(seed=0), build(seed=0), build(seed=1)
        assert torch.equal(torch.random.get_rng_state(), before)
        assert _same_weights(a, b)
        assert not _same_weights(a, c)


def test_tiny_llama_shape_and_state():
    model = tiny_llama(num_layers=2, hidden=32, heads=4, kv_heads=2, vocab=100)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert len(model.model.layers) == 2
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (2 * 8, 32)  # 2 kv heads of 8
    logits = model(torch.tensor([[2, 3, 4]])).logits
    assert logits.shape == (1, 3, 100)


def test_tiny_gpt2_shape_and_state():
    model = tiny_gpt2(num_layers=2, hidden=32, heads=2, vocab=100, positions=64)
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert not model.training
    assert len(model.transformer.h) == 2
    assert model.transformer.wpe.weight.shape == (64, 32)
    assert model(torch.tensor([[5, 6]])).logits.shape == (1, 2, 100)


def test_generation_is_greedy_without_eos():
    for model in (tiny_llama(), tiny_gpt2()):
        gen = model.generation_config
        assert gen.do_sample is False and gen.eos_token_id is None and gen.bos_token_id is None
        assert gen.pad_token_id == 0
        ids = torch.tensor([[2, 3, 4]])
        out1 = model.generate(ids, max_new_tokens=6)
        out2 = model.generate(ids, max_new_tokens=6)
        assert out1.shape == (1, 9)  # no eos: exactly max_new_tokens
        assert torch.equal(out1, out2)


def test_word_tokenizer_round_trip():
    tok = word_tokenizer()
    assert len(tok) == len(WORDS) == 180
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1
    for text in (
        "the cat sat on the mat",
        "the eiffel tower is in the city of",
        "when mary and john went to the store john gave a book to",
    ):
        ids = tok(text)["input_ids"]
        assert 1 not in ids, text  # every word is in the vocabulary
        assert tok.decode(ids) == text
    assert tok("The Cat")["input_ids"] == tok("the cat")["input_ids"]  # lower-cased
    assert tok("zebra")["input_ids"] == [1]
    assert max(tok.get_vocab().values()) < tiny_llama().config.vocab_size


def test_word_tokenizer_pads_left():
    tok = word_tokenizer()
    assert tok.padding_side == "left"
    batch = tok(["the cat", "the cat sat on the mat"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 6)
    assert batch["input_ids"][0, :4].tolist() == [0, 0, 0, 0]
    assert batch["attention_mask"][0].tolist() == [0, 0, 0, 0, 1, 1]
    assert batch["input_ids"][0, -2:].tolist() == tok("the cat")["input_ids"]
