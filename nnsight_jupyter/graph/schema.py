"""The JSON document of an intervention graph, as pydantic models, and its JSON Schema.

`GraphDoc` describes the JSON header of an encoded graph (see `graph.codec` and
``docs/graph-format.md``). `graph.codec.decode` checks the envelope with
``GraphDoc.model_validate(doc)`` (strict: no coercion, no unknown fields) before it decodes the
arguments with its own walker; argument values are typed `Any` here for speed, and their tagged
encoding is described to JSON Schema readers by the recursive ``$defs/Arg`` definition.

``schema.json`` beside this module is ``GraphDoc.model_json_schema()``; regenerate it with::

    python -m nnsight_jupyter.graph.schema > nnsight_jupyter/graph/schema.json
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from .validate import MAX_DEPTH

FORMAT = "nnsight-jupyter/graph"

_ARG_REF = {"$ref": "#/$defs/Arg"}


def _tagged(tag: str, payload: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "title": tag,
        "description": description,
        "properties": {tag: payload},
        "required": [tag],
        "additionalProperties": False,
    }


#: The recursive definition of one argument value (the tagged encoding), put under ``$defs/Arg``.
ARG_SCHEMA: dict[str, Any] = {
    "title": "Arg",
    "description": (
        "One argument value. JSON null, booleans, integers, strings and finite numbers stand for "
        "themselves (a number written with a fraction or exponent is a Python float, one without is "
        "an int); everything else is an object with exactly one key, its tag. Containers nest at "
        f"most {MAX_DEPTH} deep."
    ),
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "integer"},
        {"type": "number"},
        {"type": "string"},
        _tagged("ref", {"type": "integer", "minimum": 0},
                "The value of an earlier node of the graph, by node id."),
        _tagged("tensor", {"type": "string"},
                "A tensor stored in the safetensors body under this name."),
        _tagged("float", {"enum": ["nan", "inf", "-inf"]}, "A float that JSON cannot write."),
        _tagged("list", {"type": "array", "items": _ARG_REF}, "A Python list."),
        _tagged("tuple", {"type": "array", "items": _ARG_REF}, "A Python tuple."),
        _tagged("dict", {
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [{"type": ["string", "integer"]}, _ARG_REF],
                "minItems": 2,
                "maxItems": 2,
            },
        }, "A Python dict, as [key, value] pairs in order; keys are strings or integers."),
        _tagged("slice", {"type": "array", "items": _ARG_REF, "minItems": 3, "maxItems": 3},
                "slice(start, stop, step)."),
        _tagged("ellipsis", {"type": "null"}, "Python's Ellipsis (...)."),
        _tagged("dtype", {"type": "string"},
                "A torch dtype by name (\"float32\", \"bfloat16\", \"int64\", ...)."),
        _tagged("device", {"type": "string"}, "A torch.device (\"cpu\", \"cuda:0\")."),
        _tagged("size", {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "A torch.Size."),
    ],
}

# pydantic's schema generator resolves every "$ref" it meets against its own definitions, so the
# fields carry a marker that `GraphDoc.model_json_schema` turns into the "$ref" afterwards.
_MARK = {"x-arg": True}
Arg = Annotated[Any, WithJsonSchema(_MARK)]
ArgList = Annotated[list, WithJsonSchema({"type": "array", "items": _MARK})]
ArgDict = Annotated[dict[str, Any], WithJsonSchema({"type": "object", "additionalProperties": _MARK})]
NonNegInt = Annotated[int, Field(ge=0)]

_CONFIG = ConfigDict(strict=True, extra="forbid")


class InvokeDoc(BaseModel):
    """One invoke of a run: the input of the model call (args/kwargs) or, with all_rows, none."""

    model_config = _CONFIG
    id: NonNegInt = Field(description="Id of the invoke, unique within its run.")
    args: ArgList = Field(description="Positional inputs of the model call (e.g. a prompt string).")
    kwargs: ArgDict = Field(description="Keyword inputs of the model call.")
    all_rows: bool = Field(description="An invoke without input: it sees every row of its run.")


class RunDoc(BaseModel):
    """One forward pass (trace) or generate call, in execution order."""

    model_config = _CONFIG
    id: NonNegInt = Field(description="Id of the run, unique in the graph; nodes name it in `run`.")
    kind: Literal["trace", "generate"]
    invokes: list[InvokeDoc]
    options: ArgDict = Field(description="Options of the run, e.g. {\"max_new_tokens\": 4}.")


class NodeDoc(BaseModel):
    """One operation of the graph, in program order. Fields other than id and op may be left out
    when they hold their default; `encode` always leaves them out then (its output is canonical)."""

    model_config = _CONFIG
    id: NonNegInt = Field(description="Node id; strictly increasing along `nodes`.")
    op: str = Field(description="An operation of the allow-list (nnsight_jupyter.graph.ops.OPS).")
    args: ArgList = Field(default=[], description="Positional arguments.")
    kwargs: ArgDict = Field(default={}, description="Keyword arguments.")
    run: NonNegInt = Field(default=0, description="Id of the run the node belongs to.")
    invoke: NonNegInt = Field(default=0, description="Id of the invoke (within its run) the node belongs to.")
    module: str | None = Field(default=None, description=(
        "named_modules() path where a model op is anchored (\"\" = the root module)."))
    call: NonNegInt = Field(default=0, description="Which call of the module within one forward pass (0 = first).")
    step: Annotated[int, Field(ge=-1)] = Field(default=0, description=(
        "Generation step (0 for a plain trace; -1: after the last step, for code after an open "
        "tracer.all() / tracer.iter[a:] loop)."))
    repeat: bool = Field(default=False, description="Applies at every step from `step` on (tracer.all(), iter[a:]).")
    backward: NonNegInt | None = Field(default=None, description=(
        "Id of the `backward` node whose block this node is in (gradient phase)."))
    line: str = Field(default="", description="The user's source location (\"file.py:12\") that created the node.")


class ParameterDoc(BaseModel):
    """A job-owned tensor (training inside a session; reserved, refused by the executor for now)."""

    model_config = _CONFIG
    name: str
    value: Arg
    requires_grad: bool


class GraphDoc(BaseModel):
    """The JSON header of an encoded intervention graph."""

    model_config = ConfigDict(strict=True, extra="forbid", title="nnsight-jupyter intervention graph")
    format: Literal["nnsight-jupyter/graph"]
    version: int = Field(description="Graph format version (nnsight_jupyter.graph.GRAPH_VERSION).")
    model: str | None = Field(description="Name of the model the graph is for, if known.")
    runs: list[RunDoc]
    nodes: list[NodeDoc]
    parameters: list[ParameterDoc]

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """The JSON Schema of the document, with the recursive ``$defs/Arg`` of argument values."""
        schema = _unmark(super().model_json_schema(*args, **kwargs))
        schema.setdefault("$defs", {})["Arg"] = ARG_SCHEMA
        schema["$defs"] = dict(sorted(schema["$defs"].items()))
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        return schema


def _unmark(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("x-arg") is True:
            return {k: v for k, v in value.items() if k != "x-arg"} | _ARG_REF
        return {k: _unmark(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unmark(v) for v in value]
    return value


def schema_text() -> str:
    """The text of schema.json."""
    return json.dumps(GraphDoc.model_json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(schema_text())
