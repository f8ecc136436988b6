"""The keyword allow-list: every keyword argument a graph can hand to torch or transformers.

A graph passes keywords in three places, each with its section of `KEYWORDS` (name -> what the
value may be):

* ``generate``: the options of a ``generate`` run (``max_new_tokens=4``), passed to
  ``model.generate``; ``trace``: those of a ``trace`` run. ``seed`` (both) seeds the generator the
  run's random ops draw from (`graph.sampling`) and is not passed to the model;
* ``model``: the keyword inputs of an invoke and of a module call, passed to a module's
  ``forward`` (and, in a generate run, to ``model.generate`` as model inputs);
* ``torch``: the keyword arguments of torch functions and Tensor methods.

Operators and model ops take no keywords (``module.call`` takes the ``model`` section: its
`graph.ops.Op.keywords`); what a model op does is its name, never a flag.

`check_keywords` refuses anything else, naming the keyword, where it was given and what is
allowed; `graph.validate` calls it on every path (the builder before a trace runs or is sent, the
host as it decodes). No name here makes transformers or torch load or call code: refused are
``custom_generate`` / ``trust_remote_code`` (import code from a directory or a Hub repository),
``assistant_model``, ``streamer``, ``logits_processor``, ``stopping_criteria``,
``prefix_allowed_tokens_fn``, ``generation_config`` (objects or callables the host would call, or
a bag of any option), and ``out=`` (writes into a given tensor). Values are plain data: numbers,
bools, None, dtypes, devices, strings only from a fixed set of choices, tensors, and values
computed by the graph (`Ref`s) where a tensor is expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from .nodes import Ref

__all__ = ["Accepts", "KEYWORDS", "REFUSED", "SECTION_OF_KIND", "check_keywords", "keyword_problem"]


@dataclass(frozen=True)
class Accepts:
    """What one keyword accepts: `what` for messages, `test` for constants, and whether a value
    computed by the graph (a Ref) may stand in for it (`ref`)."""

    what: str
    test: Callable[[Any], bool]
    ref: bool = True

    def __call__(self, value: Any) -> bool:
        if type(value) is Ref:
            return self.ref
        return self.test(value)


def _int(v: Any) -> bool:
    return type(v) is int


def _number(v: Any) -> bool:
    return type(v) is int or type(v) is float


def _ints(v: Any) -> bool:
    return type(v) is int or (isinstance(v, (list, tuple)) and all(type(x) is int or type(x) is Ref for x in v))


def _data(v: Any, depth: int = 0) -> bool:
    """Tensors, numbers, bools, None, graph values, and lists / tuples / dicts of them; no strings."""
    t = type(v)
    if t in (int, float, bool, type(None), Ref) or isinstance(v, torch.Tensor):
        return True
    if depth < 32 and t in (list, tuple, torch.Size):
        return all(_data(x, depth + 1) for x in v)
    if depth < 32 and t is dict:
        return all(type(k) in (str, int) and _data(x, depth + 1) for k, x in v.items())
    return False


_DEVICE = re.compile(r"(?:cpu|cuda|meta|mps|xpu)(?::[0-9]{1,3})?")


def _device(v: Any) -> bool:
    return (v is None or isinstance(v, torch.device) or (type(v) is int and v >= 0)
            or (type(v) is str and _DEVICE.fullmatch(v) is not None))


def _choice(*choices: str | None) -> Accepts:
    allowed = frozenset(choices)
    shown = " or ".join(repr(c) for c in choices)
    return Accepts(f"one of {shown}", lambda v: (v is None or type(v) is str) and v in allowed)


INT = Accepts("an int", _int)
INTS = Accepts("an int or a list of ints", _ints)
OPT_INTS = Accepts("None, an int or a list of ints", lambda v: v is None or _ints(v))
OPT_INT = Accepts("an int or None", lambda v: v is None or _int(v))
BOOL = Accepts("a bool", lambda v: type(v) is bool)
NUMBER = Accepts("a number", _number)
OPT_NUMBER = Accepts("a number or None", lambda v: v is None or _number(v))
DTYPE = Accepts("a torch dtype", lambda v: v is None or isinstance(v, torch.dtype))
DEVICE = Accepts("a device ('cpu', 'cuda:0', a torch.device)", _device)
DATA = Accepts("a tensor, a number or a list of them", _data)
NORM = Accepts("a number, 'fro' or 'nuc'", lambda v: v is None or _number(v) or v in ("fro", "nuc"))
# Options of generate are literals: the executor passes them as they are.
LIT_INT = Accepts("a literal int", _int, ref=False)
LIT_OPT_INT = Accepts("a literal int or None", lambda v: v is None or _int(v), ref=False)
LIT_INTS = Accepts("a literal int or list of ints", _ints, ref=False)
LIT_BOOL = Accepts("a literal bool", lambda v: type(v) is bool, ref=False)
LIT_NUMBER = Accepts("a literal number", _number, ref=False)
LIT_INT_LISTS = Accepts("a list of lists of ints", lambda v: isinstance(v, (list, tuple)) and all(
    isinstance(x, (list, tuple)) and all(type(i) is int for i in x) for x in v), ref=False)

KEYWORDS: dict[str, dict[str, Accepts]] = {
    # model.generate(**options): sampling and length controls that keep one row per prompt and
    # return token ids (tracer.result); nothing that names code, objects or files.
    "generate": {
        "max_new_tokens": LIT_INT, "min_new_tokens": LIT_INT, "max_length": LIT_INT, "min_length": LIT_INT,
        "do_sample": LIT_BOOL, "temperature": LIT_NUMBER, "top_k": LIT_INT, "top_p": LIT_NUMBER,
        "min_p": LIT_NUMBER, "typical_p": LIT_NUMBER, "epsilon_cutoff": LIT_NUMBER, "eta_cutoff": LIT_NUMBER,
        "repetition_penalty": LIT_NUMBER, "no_repeat_ngram_size": LIT_INT, "use_cache": LIT_BOOL,
        "eos_token_id": LIT_INTS, "pad_token_id": LIT_INT, "bos_token_id": LIT_INT,
        "forced_bos_token_id": LIT_INT, "forced_eos_token_id": LIT_INTS, "bad_words_ids": LIT_INT_LISTS,
        "suppress_tokens": LIT_INTS, "begin_suppress_tokens": LIT_INTS, "renormalize_logits": LIT_BOOL,
        "remove_invalid_values": LIT_BOOL, "max_time": LIT_NUMBER,
        "seed": LIT_INT,
    },
    # the run's own options (not passed to the model): the seed of its random ops' generator
    "trace": {"seed": LIT_INT},
    # module(**kwargs) / model.generate(**model inputs): the inputs of a transformers model's
    # forward (and of its layers, for module calls).
    "model": {
        "input_ids": DATA, "attention_mask": DATA, "position_ids": DATA, "token_type_ids": DATA,
        "inputs_embeds": DATA, "past_key_values": DATA, "cache_position": DATA, "labels": DATA,
        "hidden_states": DATA, "position_embeddings": DATA, "encoder_hidden_states": DATA,
        "encoder_attention_mask": DATA, "head_mask": DATA, "layer_past": DATA,
        "use_cache": BOOL, "output_attentions": BOOL, "output_hidden_states": BOOL, "return_dict": BOOL,
        "logits_to_keep": INT,
    },
    # torch.f(..., **kwargs) and tensor.m(..., **kwargs).
    "torch": {
        "input": DATA, "other": DATA, "self": DATA, "tensors": DATA, "x1": DATA, "x2": DATA, "mask": DATA,
        "index": DATA, "src": DATA, "source": DATA, "weight": DATA, "bias": DATA, "target": DATA,
        "condition": DATA, "boundaries": DATA, "sorted_sequence": DATA, "sorter": DATA, "prepend": DATA,
        "append": DATA, "data": DATA, "value": DATA, "fill_value": DATA, "alpha": DATA, "exponent": DATA,
        "min": DATA, "max": DATA, "nan": OPT_NUMBER, "posinf": OPT_NUMBER, "neginf": OPT_NUMBER,
        "dim": OPT_INTS, "dims": OPT_INTS, "keepdim": BOOL, "dtype": DTYPE, "device": DEVICE,
        "requires_grad": BOOL, "non_blocking": BOOL, "copy": BOOL,
        "k": INT, "largest": BOOL, "sorted": BOOL, "descending": BOOL, "stable": BOOL,
        "p": NORM, "ord": NORM, "eps": OPT_NUMBER, "beta": NUMBER, "threshold": NUMBER, "rtol": OPT_NUMBER,
        "atol": OPT_NUMBER, "equal_nan": BOOL, "start_dim": INT, "end_dim": INT, "dim0": INT, "dim1": INT,
        "dim2": INT, "offset": INT, "diagonal": INT, "shifts": INTS, "n": INT, "chunks": INT,
        "split_size_or_sections": INTS, "split_size": INTS, "sizes": INTS, "shape": INTS, "size": INTS,
        "start": NUMBER, "end": NUMBER, "step": NUMBER, "steps": INT, "length": INT,
        "reduction": _choice("none", "mean", "sum", "batchmean"), "ignore_index": INT,
        "label_smoothing": NUMBER, "log_target": BOOL, "num_classes": INT,
        "mode": _choice("constant", "reflect", "replicate", "circular", "reduced", "complete", "r"),
        "pad": INTS, "approximate": _choice("none", "tanh"), "training": BOOL, "inplace": BOOL,
        "padding_idx": OPT_INT, "max_norm": OPT_NUMBER, "norm_type": NUMBER, "scale_grad_by_freq": BOOL,
        "sparse": BOOL, "normalized_shape": INTS, "right": BOOL, "side": _choice("left", "right"),
        "out_int32": BOOL, "rounding_mode": _choice(None, "floor", "trunc"), "decimals": INT,
        "correction": OPT_NUMBER, "unbiased": BOOL, "full_matrices": BOOL, "hermitian": BOOL,
        "driver": _choice(None, "gesvd", "gesvdj", "gesvda", "gels", "gelsy", "gelsd", "gelss"),
        "UPLO": _choice("L", "U"), "rcond": OPT_NUMBER, "as_tuple": BOOL, "sparse_grad": BOOL,
        "compute_mode": _choice("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist",
                                "donot_use_mm_for_euclid_dist"),
        # random sampling (drawn from the job's generator: graph.sampling), activations, reductions
        "num_samples": INT, "replacement": BOOL, "mean": DATA, "std": DATA, "low": INT, "high": INT,
        "lambd": NUMBER, "tau": NUMBER, "hard": BOOL, "base": NUMBER, "negative_slope": NUMBER,
        "min_val": NUMBER, "max_val": NUMBER, "reduce": _choice(None, "sum", "prod", "mean", "amax", "amin"),
        "include_self": BOOL, "return_inverse": BOOL, "return_counts": BOOL, "q": DATA,
        "interpolation": _choice("linear", "lower", "higher", "midpoint", "nearest"), "repeats": DATA,
        "output_size": OPT_INT, "upper": BOOL, "indexing": _choice("ij", "xy"), "r": INT,
        "with_replacement": BOOL, "pos_weight": DATA, "delta": NUMBER, "margin": NUMBER, "full": BOOL,
        "bins": INT, "minlength": INT, "weights": DATA, "scale_factor": OPT_NUMBER,
        # F.softmax / log_softmax / softmin pass their warning depth on through __torch_function__
        "_stacklevel": INT,
        # the losses pass their deprecated reduction flags on too (None unless given)
        "size_average": Accepts("None or a bool", lambda v: v is None or type(v) is bool),
    },
}

#: The section that keyword arguments of a node are checked against, by op kind (operators and
#: model ops take none); an op may name another (`graph.ops.Op.keywords`: ``module.call``).
SECTION_OF_KIND = {"torch": "torch", "method": "torch", "operator": "none", "model": "none"}
_NONE: dict[str, Accepts] = {}

#: Why the best-known dangerous keywords are not on the list (for the message only).
REFUSED = {
    "custom_generate": "it imports and runs generation code from a directory or a Hub repository",
    "trust_remote_code": "it lets transformers import and run code from a repository",
    "assistant_model": "it is a second model object",
    "streamer": "it is an object the host would call",
    "logits_processor": "it is a list of objects the host would call",
    "stopping_criteria": "it is a list of objects the host would call",
    "prefix_allowed_tokens_fn": "it is a function the host would call",
    "generation_config": "it is an object carrying any option, past this list",
    "tokenizer": "it is an object the host would call",
    "out": "it writes into a given tensor; use the returned value instead",
    "num_beams": "it changes the rows of the batch, which the invokes own",
    "num_return_sequences": "it changes the rows of the batch, which the invokes own",
    "return_dict_in_generate": "tracer.result is the generated token ids",
}


def _section(name: str) -> Mapping[str, Accepts]:
    return _NONE if name == "none" else KEYWORDS[name]


def keyword_problem(section: str, name: Any, value: Any, where: str) -> str | None:
    """None if keyword `name` with `value` is allowed in `section`, else what is wrong (it names the
    keyword, `where` it was given, and what is allowed)."""
    table = _section(section)
    accepts = table.get(name) if type(name) is str else None
    if accepts is None:
        why = REFUSED.get(name) if type(name) is str else None
        reason = f": {why}" if why else ""
        if not table:
            allowed = "it takes no keyword arguments"
        elif section == "torch":
            allowed = (f"allowed keywords of torch functions and Tensor methods are the {len(table)} names "
                       "of nnsight_jupyter.graph.keywords.KEYWORDS['torch'] (dim, keepdim, dtype, ...)")
        else:
            allowed = "allowed: " + ", ".join(table)
        return f"keyword {str(name)[:80]!r} ({where}) is not allowed{reason}; {allowed}"
    if accepts(value):
        return None
    shown = "a value computed in the trace" if type(value) is Ref else f"{type(value).__name__} {value!r:.60}"
    return f"keyword {name!r} ({where}) must be {accepts.what}, not {shown}"


def check_keywords(section: str, kwargs: Mapping[str, Any], where: str) -> str | None:
    """The first problem with the keyword arguments `kwargs` given as `where`, or None."""
    table = _section(section)
    for name, value in kwargs.items():
        accepts = table.get(name) if type(name) is str else None
        if accepts is None or not accepts(value):
            return keyword_problem(section, name, value, where)
    return None
