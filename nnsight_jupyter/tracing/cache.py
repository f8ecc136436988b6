"""`tracer.cache()`: the outputs (and inputs) of many modules at once, as nnsight's cache has them.

    with model.trace(prompt) as tracer:
        cache = tracer.cache()                          # every module that runs
    cache["model.layers.0"].output                      # keyed by named_modules() path ...
    cache.model.layers[0].output                        # ... or by attribute access
    cache.model.layers[0].input                         # with include_inputs=True (and .inputs)

Each cached module is one `cache.output` (and/or `cache.inputs`) node. The planner places it at
*every* call of the module that the forward pass makes (and, in `generate`, at every step), after
every other node at that moment, and the executor keeps a reference to the value it sees there,
copied when the forward pass ends: a cache sees the trace's writes into those values, even
in-place writes made later in the trace (as nnsight's cache, which keeps references). Modules that
never run (a `ModuleList`, an unused module) have no entry. As in nnsight 0.8, an entry's
`.output` is the value of the module's one call, or a list with one value per call when it ran
several times (generation steps); `len(entry)` counts the calls and `entry[i]` is call i alone.
Navigation errors keep their Python types: `cache.model.layers[99]` is an `IndexError`,
`cache["nowhere"]` a `KeyError` (both `NNsightError`s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from ..errors import CacheKeyError, ModuleAttributeError, ModuleIndexError, OutOfOrderError, TracingError
from .proxy import MISSING, READY, Proxy

if TYPE_CHECKING:
    from .tracer import Tracer

_PARTS = (("cache.inputs", "inputs"), ("cache.output", "output"))


def open_cache(tracer: "Tracer", modules: Iterable[Any] | None, include_inputs: bool,
               include_output: bool) -> "Cache":
    """Add the cache nodes of `modules` (envoys or paths; None: every module that runs)."""
    if not (include_inputs or include_output):
        raise TracingError("tracer.cache(include_output=False, include_inputs=False) caches nothing",
                           fix="Leave include_output=True, or set include_inputs=True.")
    model = tracer.model
    order = model._target.order
    if modules is None:
        paths = [path for path, _ in model._module.named_modules()]
        if order is not None:                    # only modules that run (containers never do)
            paths = [p for p in paths if order.calls.get(p, 0)]
    else:
        paths = [_path_of(model, m) for m in modules]
        if order is not None:
            for path in paths:
                if not order.calls.get(path, 0):
                    raise OutOfOrderError(
                        f"tracer.cache(modules=[...]) lists {path or 'the model'}, which "
                        f"{order.describe(path)}, so it would never have an entry", module=path,
                        fix="Cache modules that run (see print(model)); a ModuleList runs only through "
                            "its items: cache model.layers[0], not model.layers.")
    if order is not None:                        # entries in the order the modules finish, as nnsight's
        paths.sort(key=lambda p: order.position.get((p, 0, "output"), len(order)))
    cache = Cache(set(paths))
    saved = (tracer.step, tracer.repeat)
    if tracer.kind == "generate" and tracer.step >= 0:
        tracer.repeat = True                     # every generation step from here on
    try:
        for path in dict.fromkeys(paths):
            for op, part in _PARTS:
                if (include_inputs if part == "inputs" else include_output):
                    proxy = tracer.builder.add(op, (), module=path)    # saves itself (graph.ops.Op.saves)
                    object.__setattr__(proxy, "_save_id", proxy._id)
                    tracer.builder.saved.append(proxy)
                    cache._nodes.setdefault(path, {})[part] = proxy
    finally:
        tracer.step, tracer.repeat = saved
    return cache


def _path_of(model: Any, module: Any) -> str:
    if isinstance(module, str):
        path = module[len("model."):] if module.startswith("model.") and not _exists(model, module) else module
        if not _exists(model, path):
            raise CacheKeyError(f"tracer.cache(modules=[...]): the model has no module {module!r}",
                                fix="Use named_modules() paths (\"model.layers.0\") or envoys (model.model.layers[0]).")
        return path
    path = getattr(module, "_path", None)
    if path is None or getattr(module, "_root", None) is not model:
        raise TracingError(f"tracer.cache(modules=[...]) takes envoys of this model or their paths, got "
                           f"{type(module).__name__}")
    return path


def _exists(model: Any, path: str) -> bool:
    try:
        model._module.get_submodule(path)
    except AttributeError:
        return False
    return True


class CacheEntry:
    """A cached module: `.output`, `.inputs` (`(args, kwargs)`) and `.input` (the first positional
    argument, or the first keyword argument when called with keywords only), as nnsight 0.8 has
    them: the value of its one call, or a list with one value per call when it ran several times
    (generation steps). `len(entry)` is the number of calls; `entry[i]` is call i alone."""

    __slots__ = ("_calls", "_path")

    def __init__(self, path: str, calls: list[dict[str, Any]]):
        self._path = path
        self._calls = calls

    def _part(self, part: str) -> Any:
        if part not in self._calls[0]:
            option = "include_inputs=True" if part == "inputs" else "include_output=True"
            raise TracingError(f"{self._path or 'the model'}: its {part} were not cached",
                               fix=f"Use tracer.cache(..., {option}).")
        values = [call[part] for call in self._calls]
        return values[0] if len(values) == 1 else values

    @property
    def output(self) -> Any:
        return self._part("output")

    @property
    def inputs(self) -> Any:
        return self._part("inputs")

    @property
    def input(self) -> Any:
        inputs = self._part("inputs")
        firsts = [_first(args, kwargs) for args, kwargs in (inputs if len(self._calls) > 1 else [inputs])]
        return firsts[0] if len(firsts) == 1 else firsts

    def __len__(self) -> int:
        return len(self._calls)

    def __getitem__(self, call: int) -> "CacheEntry":
        if not isinstance(call, int):
            raise CacheKeyError(f"cache[{self._path!r}][{call!r}]: an entry is indexed by call number (int)",
                                fix=f'Use cache["{self._path}.{call}"] for a submodule.')
        n = len(self._calls)
        if not -n <= call < n:
            raise ModuleIndexError(
                f"cache[{self._path!r}][{call}] is out of range: {self._path or 'the model'} ran {n} "
                f"time{'s' if n != 1 else ''}", module=self._path, fix=f"Use a call index from 0 to {n - 1}.")
        return CacheEntry(self._path, [self._calls[call]])

    def __iter__(self):
        return (CacheEntry(self._path, [call]) for call in self._calls)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_brief(v)}" for k, v in self._calls[0].items())
        calls = f", {len(self._calls)} calls" if len(self._calls) > 1 else ""
        return f"CacheEntry({self._path!r}, {shown}{calls})"


def _first(args: tuple, kwargs: dict) -> Any:
    values = [*args, *kwargs.values()]
    return values[0] if values else None


def _brief(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"<{type(value).__name__} {tuple(shape)}>" if shape is not None else f"<{type(value).__name__}>"


class Cache(dict):
    """tracer.cache()'s mapping: named_modules() path -> CacheEntry (or a list of them, one per
    call); also `cache.model.layers[0].output`. Filled when the trace has run."""

    def __init__(self, requested: set[str]):
        super().__init__()
        self._requested = requested
        self._nodes: dict[str, dict[str, Proxy]] = {}
        self._filled = False

    def _fill(self) -> None:
        """Build the entries from the cache nodes' values (lists, one item per call that ran)."""
        if self._filled:
            return
        pending = [p for parts in self._nodes.values() for p in parts.values() if p._state not in (READY, MISSING)]
        if pending:
            raise TracingError(
                "the cache fills as the model runs: read it after the trace (inside the trace, use "
                "module.output)", fix="Move this line below the `with` block.")
        for path, parts in self._nodes.items():
            calls = {part: proxy._value for part, proxy in parts.items() if proxy._state == READY and proxy._value}
            if not calls:
                continue                                 # never ran: no entry (as in nnsight)
            count = min(len(v) for v in calls.values())
            dict.__setitem__(self, path, CacheEntry(path, [{part: v[i] for part, v in calls.items()}
                                                           for i in range(count)]))
        self._filled = True

    def _key(self, key: Any) -> str:
        self._fill()
        if not isinstance(key, str):
            raise CacheKeyError(f"cache keys are module paths (str), got {type(key).__name__} {key!r}",
                                fix='Use cache["model.layers.0"] or cache.model.layers[0].')
        if dict.__contains__(self, key):
            return key
        if key.startswith("model.") and dict.__contains__(self, key[len("model."):]):
            return key[len("model."):]                 # nnsight's envoy paths start at "model"
        why = ("it was cached but never ran in this forward pass" if key in self._requested
               else "it was not cached")
        raise CacheKeyError(f"the cache has no entry {key!r}: {why}", module=key,
                            fix=f"Cached modules: {', '.join(list(dict.keys(self))[:8])}"
                                f"{', ...' if len(self) > 8 else ''}.")

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self, self._key(key))

    def __contains__(self, key: Any) -> bool:
        try:
            self._key(key)
        except CacheKeyError:
            return False
        return True

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __iter__(self):
        self._fill()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._fill()
        return dict.__len__(self)

    def keys(self):
        self._fill()
        return dict.keys(self)

    def values(self):
        self._fill()
        return dict.values(self)

    def items(self):
        self._fill()
        return dict.items(self)

    def __repr__(self) -> str:
        if not self._filled and any(p._state not in (READY, MISSING) for parts in self._nodes.values()
                                    for p in parts.values()):
            return f"<Cache of {len(self._nodes)} modules: filled when the trace runs>"
        self._fill()
        return f"Cache({dict.__repr__(self)})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return CachePath(self, "")._step(name)

    def __dir__(self) -> list[str]:
        self._fill()
        return sorted({*object.__dir__(self), *(k.split(".")[0] for k in dict.keys(self) if k)})


class CachePath:
    """Attribute-style navigation of a Cache: `cache.model.layers[0].output`. nnsight's paths (which
    start at the root envoy, `cache.model.model.layers[0]` for a Llama) work too."""

    def __init__(self, cache: Cache, path: str):
        self._cache, self._path = cache, path

    def _has(self, path: str) -> bool:
        return any(key == path or key.startswith(path + ".") for key in dict.keys(self._cache))

    def _resolve(self, path: str) -> str | None:
        if self._has(path):
            return path
        if path.startswith("model.") and self._has(path[len("model."):]):
            return path[len("model."):]
        if path == "model":
            return ""                                    # nnsight's root envoy
        return None

    def _step(self, name: str) -> "CachePath":
        self._cache._fill()
        path = f"{self._path}.{name}" if self._path else name
        found = self._resolve(path)
        if found is None:
            raise ModuleAttributeError(
                f"the cache holds no module under {path!r}", module=path,
                fix=f"Cached modules: {', '.join(list(dict.keys(self._cache))[:8])} ...")
        return CachePath(self._cache, found)

    def _entry(self) -> CacheEntry:
        return self._cache[self._path]

    @property
    def output(self) -> Any:
        return self._entry().output

    @property
    def inputs(self) -> Any:
        return self._entry().inputs

    @property
    def input(self) -> Any:
        return self._entry().input

    def __len__(self) -> int:
        return len(self._entry())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._step(name)

    def __getitem__(self, index: int) -> "CachePath | CacheEntry":
        if not isinstance(index, int):
            raise CacheKeyError(f"{self._path}[{index!r}]: index a module list with an int",
                                fix=f'Or use cache["{self._path}.<name>"].')
        prefix = f"{self._path}." if self._path else ""
        items = sorted({int(k[len(prefix):].split(".")[0]) for k in dict.keys(self._cache)
                        if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()})
        if not items and dict.__contains__(self._cache, self._path):
            return self._entry()[index]                  # a leaf: index its calls
        n = (items[-1] + 1) if items else 0
        position = index + n if index < 0 else index
        if position not in items:
            raise ModuleIndexError(
                f"cache.{self._path or 'model'}[{index}] is out of range: the cache holds "
                f"{self._path or 'model'}[{items[0]}..{items[-1]}]" if items else
                f"cache.{self._path or 'model'}[{index}]: {self._path or 'the model'} holds no cached list items",
                module=self._path, fix="Use an index of a cached item.")
        return CachePath(self._cache, f"{prefix}{position}")

    def __dir__(self) -> list[str]:
        prefix = f"{self._path}." if self._path else ""
        names = {k[len(prefix):].split(".")[0] for k in dict.keys(self._cache) if k.startswith(prefix) and k != self._path}
        return sorted({*names, "output", "input", "inputs"})

    def __repr__(self) -> str:
        if dict.__contains__(self._cache, self._path):
            return repr(dict.__getitem__(self._cache, self._path))
        return f"<cache under {self._path!r}: {dir(self)}>"
