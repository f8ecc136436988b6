"""Saved containers: `results = list().save()`, `dict().save()`, `nj.save(list())`, as in nnsight.

    with model.session():
        results = list().save()                 # or nj.save(list()), or dict().save()
        with model.trace(prompt):
            results.append(model.lm_head.output[:, -1])     # a value that was not saved itself
    results                                     # the same list, holding a torch.Tensor

The mechanism, narrower than nnsight's (which mounts `save` on every Python object):

* `save` is a method of `list` and `dict` only while a trace or session is open (`mounted()`:
  put in the type's dict, taken out when the last context closes); `nj.save(container)` works
  everywhere a trace is open. It returns the container itself, registered with the open request.
* The container's own methods are untouched (appends are plain list appends): when the outermost
  context exits, before the graph is sealed, every traced value found in a registered container
  (nested in tuples, lists and dicts too) that has no save gets a `collect` node: a save taken
  where the value is computed (an unordered op), stamped like the value's node (its run, invoke,
  generation step, repeated block).
* After the run the container is rebuilt in place: each traced value replaced by its value. A
  value of a repeated block (`tracer.all()`, `tracer.iter[a:]`) came back as one value per step
  that ran (the executor's repeated-block collection): its entry becomes that many entries (a
  dict key that is the loop's step number becomes one key per step), and a value of a step that
  never ran is left out, so the container is as long as the steps that ran.

Plain (unsaved) lists and dicts in the user's frame that hold a value saved inside a repeated block
get the same per-step entries (`expand_in_frame`), since nnsight's loop body appends once per step.
"""

from __future__ import annotations

import ctypes
import gc
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import TracingError
from ..graph.nodes import Node
from . import context
from .proxy import MISSING, READY, Proxy, to_arg

if TYPE_CHECKING:
    from .builder import GraphBuilder

#: Container types that get a `.save()` method while a trace is open.
SAVABLE = (list, dict)
#: The ops whose value, in a repeated block, comes back as a list of one value per step that ran.
PER_STEP_OPS = frozenset({"save", "collect"})

_lock = threading.Lock()
_open = 0


class StepNumber(int):
    """The step number `for step in tracer.all()` yields: one int while tracing, one key per step after
    (a dict key or a tuple member of a saved container's entry becomes each step's number)."""


def _type_dict(kind: type) -> dict:
    return gc.get_referents(kind.__dict__)[0]


def _mount(on: bool) -> None:
    """Put `save` in (or take it out of) the dicts of `list` and `dict`, and clear the type caches.
    On an interpreter where a built-in type's dict cannot be reached this way, `nj.save(x)` still
    works and `list().save()` stays Python's AttributeError (never a trace that cannot start)."""
    for kind in SAVABLE:
        try:
            namespace = _type_dict(kind)
            if type(namespace) is not dict:
                continue
            if on:
                namespace["save"] = _save_method
            else:
                namespace.pop("save", None)
            ctypes.pythonapi.PyType_Modified(ctypes.py_object(kind))
        except Exception:  # noqa: BLE001 - see the docstring
            continue


@contextmanager
def mounted() -> Iterator[None]:
    """`list.save` and `dict.save` exist inside the block (re-entrant, across threads)."""
    global _open
    with _lock:
        _open += 1
        if _open == 1:
            _mount(True)
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            if _open == 0:
                _mount(False)


def _save_method(self: Any) -> Any:
    """`results = list().save()`: keep this container past the trace, with its traced values' values."""
    return save_container(self)


def save_container(container: Any) -> Any:
    """Register a list or dict with the open request; it is filled with values after the run."""
    builder = _open_builder(container)
    if isinstance(container, (set, frozenset)):
        raise TracingError(
            f"save() of a {type(container).__name__}: a set has no order to keep per step, so it cannot be "
            "saved; use a list (results = list().save(), then results.append(value))")
    if not isinstance(container, SAVABLE):
        raise TracingError(
            f"save() takes a traced value, a list or a dict, not a {type(container).__name__}; put the values "
            "in a list: results = nj.save([a, b])")
    if not any(c is container for c in builder.containers):
        builder.containers.append(container)
    return container


def _open_builder(container: Any) -> "GraphBuilder":
    stack = context.stack()
    if not stack:
        raise TracingError(
            f"save() of a {type(container).__name__} outside a trace: a container is saved inside "
            "`with model.trace(...)` or `with model.session()`, where its traced values come from "
            "(results = list().save() as the first line of the block)")
    return stack[-1].builder


# ----------------------------------------------------------------------------- before the run


def collect(builder: "GraphBuilder") -> None:
    """Give every unsaved traced value of `builder` in a registered container a `collect` node."""
    seen: set[int] = set()
    for container in builder.containers:
        for proxy in _proxies(container, seen):
            if proxy._builder is builder and proxy._save_id is None and proxy._state != READY:
                _add_collect(builder, proxy)


def _proxies(value: Any, seen: set[int]) -> Iterator[Proxy]:
    if isinstance(value, Proxy):
        yield value
        return
    if isinstance(value, (list, tuple, dict)):
        if id(value) in seen:
            return
        seen.add(id(value))
        items = value.values() if isinstance(value, dict) else value
        for item in items:
            yield from _proxies(item, seen)


def _add_collect(builder: "GraphBuilder", proxy: Proxy) -> None:
    source = builder.graph.nodes[proxy._id]
    node = Node(len(builder.graph.nodes), "collect", to_arg((proxy,), builder), {}, run=source.run,
                invoke=source.invoke, call=source.call, step=source.step, repeat=source.repeat,
                backward=source.backward, line=source.line)
    builder._checker.add_built(node)
    builder.graph.nodes.append(node)
    object.__setattr__(proxy, "_save_id", node.id)
    builder.saved.append(proxy)


# ----------------------------------------------------------------------------- after the run


def resolve(builder: "GraphBuilder") -> None:
    """Rebuild every registered container in place with its traced values' values."""
    for container in builder.containers:
        _fill(container, builder)


def expand_in_frame(builder: "GraphBuilder", frame: Any) -> None:
    """Plain lists and dicts of the user's frame holding a value saved in a repeated block: one
    entry per step, as nnsight's loop (whose body runs at each step) appends them."""
    if frame is None or not builder.per_step:
        return
    names = frame.f_globals if frame.f_code.co_name == "<module>" else frame.f_locals
    registered = {id(c) for c in builder.containers}
    for value in list(names.values()):
        if type(value) in SAVABLE and id(value) not in registered and any(
                type(v) is Proxy and v._builder is builder and v._save_id in builder.per_step
                for v in (value.values() if type(value) is dict else value)):
            _fill(value, builder)


def _fill(container: Any, builder: "GraphBuilder") -> None:
    if isinstance(container, dict):
        items: dict = {}
        for key, value in container.items():
            for step, entry in _entries(value, builder):
                items[_key(key, step)] = entry
        container.clear()
        container.update(items)
    else:
        container[:] = [entry for value in container for _, entry in _entries(value, builder)]


def _entries(value: Any, builder: "GraphBuilder") -> list[tuple[int | None, Any]]:
    """The entries one stored element becomes: [(None, value)] normally; [(step, value at that
    step), ...] for a value of a repeated block; [] for a value of a step that never ran."""
    per_step = _repeated(value, builder, set())
    if per_step is None:
        try:
            return [(None, _at(value, builder, None))]
        except _NeverRan:
            return []
    start, count = per_step
    return [(start + i, _at(value, builder, (start, i))) for i in range(count)]


class _NeverRan(Exception):
    """A value of a generation step that never ran: the element is left out."""


def _repeated(value: Any, builder: "GraphBuilder", seen: set[int]) -> tuple[int, int] | None:
    """(first step, number of steps that ran) if `value` holds a value of a repeated block."""
    found = None
    for proxy in _proxies(value, seen):
        values = builder.per_step.get(proxy._save_id) if proxy._builder is builder else None
        if values is None:
            continue
        start = builder.graph.nodes[proxy._save_id].step
        found = (start, len(values)) if found is None else (found[0], min(found[1], len(values)))
    return found


def _at(value: Any, builder: "GraphBuilder", step: tuple[int, int] | None) -> Any:
    """`value` with each traced value replaced by its value (at entry `step[1]` of a repeated block)."""
    if isinstance(value, Proxy):
        if value._builder is builder and step is not None and value._save_id in builder.per_step:
            return builder.per_step[value._save_id][step[1]]
        if value._state == READY:
            return value._value
        if value._state == MISSING:
            raise _NeverRan
        return value
    if isinstance(value, StepNumber) and step is not None:
        return step[0] + step[1]
    if isinstance(value, tuple):
        items = [_at(v, builder, step) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, list):
        return [_at(v, builder, step) for v in value]
    if isinstance(value, dict):
        return {_key(k, step[0] + step[1] if step else None): _at(v, builder, step) for k, v in value.items()}
    return value


def _key(key: Any, step: int | None) -> Any:
    if isinstance(key, StepNumber):
        return int(key) if step is None else step
    return key
