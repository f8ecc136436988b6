"""Loading models: the bundled real model, local Hugging Face folders, cached hub ids, tiny random
test models, and meta-device skeletons built from a config alone. Nothing here downloads weights."""

from nnsight_jupyter.models.bundled import BUNDLED, cache_dir, load_bundled
from nnsight_jupyter.models.loading import load_pretrained
from nnsight_jupyter.models.skeleton import config_dict, meta_skeleton, module_tree
from nnsight_jupyter.models.tiny import tiny_gpt2, tiny_llama, word_tokenizer

__all__ = [
    "BUNDLED",
    "cache_dir",
    "config_dict",
    "load_bundled",
    "load_pretrained",
    "meta_skeleton",
    "module_tree",
    "tiny_gpt2",
    "tiny_llama",
    "word_tokenizer",
]
