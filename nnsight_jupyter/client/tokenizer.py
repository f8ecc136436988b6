"""The kernel's tokenizer of a hosted model, rebuilt from the host's description (no files, no hub)."""

from __future__ import annotations

from typing import Any

from ..errors import ProtocolError

_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_TEXT_KEYS = ("json", "tokenizer_json", "tokenizer.json", "text", "tokenizer")


def _token(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def tokenizer_from_description(spec: Any) -> Any:
    """A PreTrainedTokenizerFast (left padding) from the host's `tokenizer` field.

    Accepted: the ``tokenizer.json`` text itself, or an object with that text under ``"json"``
    (or ``"tokenizer_json"``) and the special tokens either under ``"special_tokens"`` (a
    ``special_tokens_map``: ``{"pad_token": "<pad>", ...}``) or at its top level; optional
    ``"chat_template"`` and ``"model_max_length"``.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    extra: dict[str, Any] = {}
    if isinstance(spec, str):
        text, specials = spec, {}
    elif isinstance(spec, dict):
        text = next((spec[k] for k in _TEXT_KEYS if isinstance(spec.get(k), str)), None)
        specials = spec.get("special_tokens") or spec.get("special_tokens_map") or spec
        extra = spec
    else:
        text, specials = None, {}
    if not text:
        raise ProtocolError("the host sent no tokenizer.json text for this model")
    try:
        backend = Tokenizer.from_str(text)
    except Exception as error:
        raise ProtocolError(f"the host's tokenizer.json cannot be read by this kernel's tokenizers: {error}") from None
    kwargs: dict[str, Any] = {}
    for key in _SPECIAL_TOKENS:
        token = _token(specials.get(key)) if isinstance(specials, dict) else None
        if token is not None:
            kwargs[key] = token
    if isinstance(specials, dict):
        more = specials.get("additional_special_tokens") or specials.get("extra_special_tokens")
        if isinstance(more, list):
            tokens = [t for t in (_token(v) for v in more) if t is not None]
            if tokens:
                kwargs["additional_special_tokens"] = tokens
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    tokenizer.padding_side = "left"
    if isinstance(extra.get("chat_template"), str):
        tokenizer.chat_template = extra["chat_template"]
    if isinstance(extra.get("model_max_length"), int):
        tokenizer.model_max_length = extra["model_max_length"]
    return tokenizer
