"""The JSON form of argument values (``Arg`` in ``docs/graph-format.md``), both ways.

JSON null, booleans, integers, strings and finite floats stand for themselves (a float is always
written with a fraction or exponent, so 1.0 stays a float and 1 an int); anything else is an object
with exactly one key::

    {"ref": 12}                     the value of node 12 (graphs only)
    {"tensor": "t0"}                a tensor attached beside the document (`graph.frame`)
    {"float": "nan" | "inf" | "-inf"}
    {"list": [Arg, ...]}   {"tuple": [Arg, ...]}   {"dict": [[key, Arg], ...]} (keys str or int)
    {"slice": [Arg, Arg, Arg]}      {"ellipsis": null}
    {"dtype": "float32"}            {"device": "cuda:0"}      {"size": [2, 3]} (torch.Size)

Containers nest at most 32 deep. Anything else (functions, modules, arbitrary objects) cannot be
encoded; unknown tags cannot be decoded: `BadArg` says why, and the caller says where.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from .nodes import Ref
from .validate import MAX_DEPTH

__all__ = ["BadArg", "DTYPES", "DTYPE_NAMES", "PLAIN", "JSON_SCALARS", "encoder", "decoder", "encode_kwargs",
           "decode_list", "decode_dict", "json_type"]


class BadArg(Exception):
    """An argument value that cannot be encoded or decoded; turned into a GraphError that says where."""


#: torch dtypes by every name torch exports them under ("float32", "float", "half", ...).
DTYPES: dict[str, torch.dtype] = {
    name: value for name in dir(torch) if isinstance(value := getattr(torch, name), torch.dtype)
}
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: str(dtype).removeprefix("torch.") for dtype in DTYPES.values()}

#: Types written as themselves (floats are not: nan and inf need a tag).
PLAIN = frozenset({str, int, bool, type(None)})
#: Types read as themselves.
JSON_SCALARS = frozenset({str, int, float, bool, type(None)})



def encoder(attach: Callable[[torch.Tensor], str] | None, allow_refs: bool = True) -> Callable[..., Any]:
    """`arg(value, depth=0)`: the JSON form of one argument value (or BadArg). A tensor becomes
    ``{"tensor": attach(tensor)}``: `attach` stores it beside the document and names it
    (`graph.frame.Attachments.add`; a ValueError from it is a BadArg). A closure: the hot path of
    `codec.encode`."""
    plain = PLAIN

    def arg(v: Any, depth: int = 0) -> Any:
        t = type(v)
        if t is Ref:
            if not allow_refs:
                raise BadArg("a graph reference (Ref) cannot be sent back as a value")
            if type(v.id) is not int:
                raise BadArg(f"Ref with a non-integer id {v.id!r:.40}")
            return {"ref": v.id}
        if t in plain:
            return v
        if t is float:
            if v - v == 0.0:                    # finite (inf - inf and nan - nan are nan)
                return v
            return {"float": "nan" if v != v else ("inf" if v > 0 else "-inf")}
        if t is tuple or t is list or t is slice or t is dict:
            if depth >= MAX_DEPTH:
                raise BadArg(f"arguments nest more than {MAX_DEPTH} containers deep")
            d = depth + 1
            if t is slice:
                a, b, c = v.start, v.stop, v.step
                return {"slice": [a if type(a) in plain else arg(a, d), b if type(b) in plain else arg(b, d),
                                  c if type(c) in plain else arg(c, d)]}
            out: list = []
            append = out.append
            if t is dict:
                for k, x in v.items():
                    append([k if type(k) is str or type(k) is int else key(k),
                            x if type(x) in plain else arg(x, d)])
                return {"dict": out}
            for x in v:
                append(x if type(x) in plain else arg(x, d))
            return {"tuple": out} if t is tuple else {"list": out}
        if t is torch.Tensor or isinstance(v, torch.Tensor):
            if attach is None:
                raise BadArg("tensors cannot be written here")
            try:
                return {"tensor": attach(v)}
            except ValueError as e:
                raise BadArg(str(e)) from None
        if v is Ellipsis:
            return {"ellipsis": None}
        if t is torch.dtype:
            return {"dtype": DTYPE_NAMES[v]}
        if t is torch.device:
            return {"device": str(v)}
        if t is torch.Size:
            return {"size": [int(x) for x in v]}
        # Subclasses of the plain types (IntEnum, namedtuple, OrderedDict, ...) travel as the plain type.
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, int):
            return int(v)
        if isinstance(v, str):
            return str(v)
        for base in (float, tuple, list, dict):
            if isinstance(v, base):
                return arg(base(v.items() if base is dict else v), depth)
        kind = f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__
        raise BadArg(
            f"a value of type {kind} cannot be sent in a graph: only None, bool, int, float, str, "
            "tensors, lists, tuples, dicts, slices, Ellipsis, torch dtypes, devices and sizes can"
        )

    def key(k: Any) -> Any:
        if isinstance(k, (str, int)) and not isinstance(k, bool):
            return str(k) if isinstance(k, str) else int(k)
        raise BadArg(f"dict key {k!r:.80} of type {type(k).__qualname__}: keys must be str or int")

    return arg


def encode_kwargs(arg: Callable[..., Any], kwargs: dict) -> dict:
    """The JSON form of keyword arguments (names must be str)."""
    out = {}
    for k, v in kwargs.items():
        if type(k) is not str:
            raise BadArg(f"keyword argument name {k!r:.80} is not a str")
        out[k] = v if type(v) in PLAIN else arg(v)
    return out


def decoder(tensors: dict[str, torch.Tensor], allow_refs: bool = True) -> Callable[..., Any]:
    """`arg(json_value, depth=0)`: the Python value of one encoded argument (tags checked, depth
    bounded), or BadArg. A closure with explicit loops: the hot path of `decode`."""
    refs: dict[int, Ref] = {}   # one Ref object per node id
    get_ref = refs.get
    get_tensor = tensors.get
    scalars = JSON_SCALARS

    def arg(v: Any, depth: int = 0) -> Any:
        if type(v) is not dict:
            if type(v) in scalars:
                return v
            raise BadArg(f"a bare JSON {json_type(v)} is not an argument value "
                          "(lists are written {\"list\": [...]} or {\"tuple\": [...]})")
        if len(v) != 1:
            raise BadArg(f"a tagged argument must have exactly one key, not {sorted(v)!r:.80}")
        for tag in v:
            p = v[tag]
        if tag == "ref":
            ref = get_ref(p) if type(p) is int else None
            if ref is None:
                if not allow_refs:
                    raise BadArg("a reference ({\"ref\": ...}) cannot appear among values")
                if type(p) is not int or p < 0:
                    raise BadArg(f"a ref must be a node id (an int >= 0), not {p!r:.40}")
                ref = refs[p] = Ref(p)
            return ref
        if tag == "slice":
            if type(p) is not list or len(p) != 3:
                raise BadArg(f"a slice must hold [start, stop, step], not {p!r:.80}")
            if depth >= MAX_DEPTH:
                raise BadArg(f"arguments nest more than {MAX_DEPTH} containers deep")
            a, b, c = p
            d = depth + 1
            return slice(a if type(a) in scalars else arg(a, d), b if type(b) in scalars else arg(b, d),
                         c if type(c) in scalars else arg(c, d))
        if tag == "tuple" or tag == "list":
            if type(p) is not list:
                raise BadArg(f"a {tag} must hold a JSON array, not {json_type(p)}")
            if depth >= MAX_DEPTH:
                raise BadArg(f"arguments nest more than {MAX_DEPTH} containers deep")
            d = depth + 1
            out = []
            append = out.append
            for x in p:
                append(x if type(x) in scalars else arg(x, d))
            return tuple(out) if tag == "tuple" else out
        if tag == "tensor":
            tensor = get_tensor(p) if type(p) is str else None
            if tensor is None:
                raise BadArg(f"tensor {p!r:.80} is not in the safetensors body")
            return tensor
        if tag == "dict":
            if type(p) is not list:
                raise BadArg(f"a dict must hold a JSON array of [key, value] pairs, not {json_type(p)}")
            if depth >= MAX_DEPTH:
                raise BadArg(f"arguments nest more than {MAX_DEPTH} containers deep")
            d = depth + 1
            result = {}
            for pair in p:
                if type(pair) is not list or len(pair) != 2:
                    raise BadArg(f"a dict entry must be a [key, value] pair, not {pair!r:.80}")
                key, value = pair
                if type(key) is not str and type(key) is not int:
                    raise BadArg(f"dict key {key!r:.80} must be a str or an int")
                result[key] = value if type(value) in scalars else arg(value, d)
            return result
        if tag == "float":
            value = _FLOATS.get(p) if type(p) is str else None
            if value is None:
                raise BadArg(f"float must be \"nan\", \"inf\" or \"-inf\", not {p!r:.80}")
            return value
        if tag == "ellipsis":
            if p is not None:
                raise BadArg("ellipsis must hold null")
            return Ellipsis
        if tag == "dtype":
            dtype = DTYPES.get(p) if type(p) is str else None
            if dtype is None:
                raise BadArg(f"{p!r:.80} is not a torch dtype")
            return dtype
        if tag == "device":
            if type(p) is not str or len(p) > 64:
                raise BadArg(f"a device must be a short string, not {p!r:.80}")
            try:
                return torch.device(p)
            except (RuntimeError, ValueError, TypeError) as e:
                raise BadArg(f"{p!r} is not a torch device: {e}") from None
        if tag == "size":
            if type(p) is not list or any(type(x) is not int or x < 0 for x in p):
                raise BadArg(f"a size must be a list of ints >= 0, not {p!r:.80}")
            return torch.Size(p)
        raise BadArg(f"unknown argument tag {tag!r:.80}")

    return arg


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def json_type(v: Any) -> str:
    """The JSON name of the type of `v`, for messages."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(v), "null" if v is None else type(v).__qualname__)



def decode_list(arg: Any, value: Any, what: str) -> tuple:
    """The decoded items of a JSON array (None: none)."""
    if value is None:
        return ()
    if type(value) is not list:
        raise BadArg(f"{what} must be a JSON array, not {json_type(value)}")
    return tuple([arg(a) for a in value])


def decode_dict(arg: Any, value: Any, what: str) -> dict:
    """The decoded values of a JSON object (None: empty)."""
    if value is None:
        return {}
    if type(value) is not dict:
        raise BadArg(f"{what} must be a JSON object, not {json_type(value)}")
    return {k: arg(v) for k, v in value.items()}
