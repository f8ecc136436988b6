"""Tiny random test models (Llama, GPT-2) and an offline word-level tokenizer to go with them.

Everything here is built from code in milliseconds, with no files and no network: the models from
configs with seeded random weights, the tokenizer from a fixed word list. Weights depend only on
the arguments (the seed included), and building a model leaves the global torch RNG untouched.
The tokenizer's ids (180 of them) fit the models' default vocabulary of 200.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

__all__ = ["WORDS", "word_tokenizer", "tiny_llama", "tiny_gpt2"]

PAD, UNK = "<pad>", "<unk>"
VOCAB_SIZE = 180

# Words likely to appear in tests ("the cat sat on the mat", "the eiffel tower is in the city of",
# "when mary and john went to the store john gave a book to"), then filler w0, w1, ... up to 180 entries.
_ENGLISH = """
the cat sat on mat a an and of to in is was it that this he she they we you i
eiffel tower city paris france capital rome italy london england berlin germany
when mary john went store gave book drink drinks shop school park
dog ran quickly big small red blue green hello world one two three four five
. , ! ? ' "
""".split()
WORDS: tuple[str, ...] = tuple(
    [PAD, UNK] + _ENGLISH + [f"w{i}" for i in range(VOCAB_SIZE - 2 - len(_ENGLISH))]
)
assert len(WORDS) == VOCAB_SIZE and len(set(WORDS)) == VOCAB_SIZE


def word_tokenizer() -> PreTrainedTokenizerFast:
    """An offline word-level tokenizer over `WORDS`: lower-cases, splits on whitespace and punctuation.

    ``<pad>`` is id 0, ``<unk>`` id 1; it adds no special tokens and pads on the left.
    """
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, unk_token=UNK)
    tokenizer.padding_side = "left"
    return tokenizer


def _greedy_generation_config() -> GenerationConfig:
    # No eos: generation runs for exactly max_new_tokens, which is what tests want.
    return GenerationConfig(do_sample=False, bos_token_id=None, eos_token_id=None, pad_token_id=0)


def _build(model_class: type[PreTrainedModel], config, seed: int) -> PreTrainedModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config = _greedy_generation_config()
    return model.eval()


def tiny_llama(
    num_layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2, vocab: int = 200, seed: int = 0
) -> LlamaForCausalLM:
    """A random `LlamaForCausalLM` (grouped-query attention, untied embeddings), eval mode, float32."""
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    return _build(LlamaForCausalLM, config, seed)


def tiny_gpt2(
    num_layers: int = 3, hidden: int = 64, heads: int = 4, vocab: int = 200, positions: int = 256, seed: int = 0
) -> GPT2LMHeadModel:
    """A random `GPT2LMHeadModel` (tied embeddings, no dropout), eval mode, float32."""
    config = GPT2Config(
        vocab_size=vocab,
        n_embd=hidden,
        n_layer=num_layers,
        n_head=heads,
        n_positions=positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    return _build(GPT2LMHeadModel, config, seed)
