"""Envoys: a tree that mirrors the wrapped model's modules.

`model.model.layers[5]` is the envoy of the module at path ``model.layers.5``. Inside a trace its
`.output`, `.input` and `.inputs` read and write that module's values (nodes anchored at the
module), `.skip(v)` replaces its forward, calling it runs the module on traced values, and
`.heads` (attention modules of known architectures) is a [batch, seq, n_heads, head_dim] view of
the input of the attention output projection. Outside a trace an envoy forwards attribute access
to the module, so `model.config` and friends keep working.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Iterator

import torch

from ..errors import ModuleAttributeError, ModuleIndexError, OutOfOrderError, TracingError
from . import context

if TYPE_CHECKING:
    from .proxy import Proxy

_PROPERTIES = ("output", "input", "inputs", "heads")
# Attention output projections, by child name, for `.heads`.
_HEAD_PROJECTIONS = ("o_proj", "c_proj", "out_proj", "dense")


class Envoy:
    """Proxy-side handle on one module of the wrapped model."""

    def __init__(self, module: torch.nn.Module, path: str = "", root: "Envoy | None" = None):
        d = self.__dict__
        d["_module"] = module
        d["_path"] = path
        d["_root"] = root if root is not None else self
        d["_children"] = {}

    # ------------------------------------------------------------------ tree

    def _child(self, name: str) -> "Envoy":
        child = self._children.get(name)
        if child is None:
            path = f"{self._path}.{name}" if self._path else name
            child = Envoy(self._module._modules[name], path, self._root)
            self._children[name] = child
        return child

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        module = self.__dict__["_module"]
        if name in module._modules and module._modules[name] is not None:
            return self._child(name)
        if name in module._parameters or name in module._buffers:
            tracer = context.current()
            if tracer is not None and tracer.model is self._root:
                return tracer.builder.add("module.param", (self._path, name))
            return getattr(module, name)
        try:
            return getattr(module, name)
        except AttributeError:
            pass
        known = [*module._modules, *module._parameters]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        children = ", ".join(list(module._modules)[:12]) or "none"
        raise ModuleAttributeError(
            f"{self._where()} ({type(module).__name__}) has no submodule or attribute {name!r}.{hint} "
            f"Its submodules: {children}.")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PROPERTIES:
            object.__setattr__(self, name, value)
            return
        raise TracingError(f"cannot set {name!r} on {self._where()}: only .output, .input, .inputs and "
                           ".heads can be assigned (inside a trace)")

    def __getitem__(self, key: int | str | slice) -> Any:
        module = self._module
        names = list(module._modules)
        if isinstance(key, slice):
            return [self._child(n) for n in names[key]]
        if isinstance(key, str):
            if key not in module._modules:
                raise ModuleIndexError(f"{self._where()} has no entry {key!r}; it has {names[:12]}")
            return self._child(key)
        n = len(names)
        if not isinstance(key, int) or not -n <= key < n:
            raise ModuleIndexError(
                f"{self._where()}[{key}] is out of range: {self._where()} ({type(module).__name__}) holds "
                f"{n} module{'s' if n != 1 else ''}, so use an index from 0 to {n - 1} (or -1 to -{n}).")
        return self._child(names[key % n])

    def __len__(self) -> int:
        return len(self._module._modules)

    def __iter__(self) -> Iterator["Envoy"]:
        return (self._child(name) for name in list(self._module._modules))

    def __repr__(self) -> str:
        return repr(self._module)

    def __dir__(self) -> list[str]:
        """Tab completion (IPython's jedi completer calls it): the submodules, parameters and buffers,
        the module's own data attributes (`config`, `head_dim`: the envoy forwards them) and the
        envoy's API (`output`, `input`, `skip`, `trace`, ...), as nnsight's envoys list them."""
        module = self._module
        names = {*module._modules, *module._parameters, *module._buffers}
        names.update(n for n, v in vars(module).items() if not n.startswith("_") and not callable(v))
        names.update(n for n in object.__dir__(self) if not n.startswith("_"))
        return sorted(n for n in names if n.isidentifier())

    def _where(self) -> str:
        return self._path or "model"

    def modules(self) -> Iterator["Envoy"]:
        """This envoy and every envoy below it, in named_modules() order."""
        for path, _ in self._module.named_modules():
            yield self._at(path)

    def _at(self, path: str) -> "Envoy":
        envoy = self
        for part in path.split(".") if path else ():
            envoy = envoy._child(part)
        return envoy

    # ------------------------------------------------------------------ interventions

    def _tracer(self, what: str):
        tracer = context.current()
        if tracer is None:
            raise TracingError(f"{self._where()}.{what} is only available inside `with model.trace(...):`")
        if tracer.model is not self._root:
            raise TracingError(f"{self._where()} belongs to another model than the open trace")
        if tracer.step < 0:
            raise OutOfOrderError(
                f"{self._where()}.{what} after a `tracer.all()` / open `tracer.iter[a:]` loop: every "
                "generation step has run by then", module=self._path, fix="Move it inside the loop.")
        return tracer

    def _access(self, op: str, *args: Any, length: int | None = None) -> "Proxy":
        tracer = self._tracer(op.split(".")[-1].replace("set_", ""))
        return tracer.builder.add(op, args, module=self._path, length=length)

    @property
    def output(self) -> "Proxy":
        """The module's output (its first call, or the call/step of the open tracer.iter)."""
        tracer = self._tracer("output")
        order = self._root._target.order
        length = order.lengths.get((self._path, tracer.call, "output")) if order is not None else None
        return tracer.builder.add("module.output", (), module=self._path, length=length)

    @output.setter
    def output(self, value: Any) -> None:
        self._access("module.set_output", value)

    @property
    def input(self) -> "Proxy":
        """The module's first positional argument (first keyword argument if called with keywords only)."""
        return self._access("module.input")

    @input.setter
    def input(self, value: Any) -> None:
        self._access("module.set_input", value)

    @property
    def inputs(self) -> "Proxy":
        """`(args, kwargs)` of the module's call."""
        return self._access("module.inputs", length=2)

    @inputs.setter
    def inputs(self, value: Any) -> None:
        self._access("module.set_inputs", value)

    def skip(self, value: Any) -> None:
        """Do not run this module's forward; use `value` as its output (for this invoke's rows)."""
        self._access("module.skip", value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracer = context.current()
        if tracer is None:
            return self._module(*args, **kwargs)
        return tracer.builder.add("module.call", (self._path, *args), kwargs)

    # ------------------------------------------------------------------ attention heads

    def _heads_spec(self) -> tuple["Envoy", int, int]:
        cached = self.__dict__.get("_heads")
        if cached is None:
            cached = self.__dict__["_heads"] = self._find_heads()
        return cached

    def _find_heads(self) -> tuple["Envoy", int, int]:
        module = self._module
        projection = next((n for n in _HEAD_PROJECTIONS if n in module._modules), None)
        config = getattr(module, "config", None)
        n_heads = getattr(module, "num_heads", None) or getattr(config, "num_attention_heads", None)
        head_dim = getattr(module, "head_dim", None)
        if projection is None or not (n_heads or head_dim):
            raise ModuleAttributeError(
                f"{self._where()} ({type(module).__name__}) has no .heads: it is available on attention "
                "modules with an output projection (o_proj / c_proj / out_proj), such as Llama-family "
                "self_attn and GPT-2 attn.")
        proj = module._modules[projection]
        width = getattr(proj, "in_features", None) or proj.weight.shape[0]
        if head_dim is None:
            head_dim = width // n_heads
        return self._child(projection), width // head_dim, head_dim

    @property
    def heads(self) -> "Proxy":
        """[batch, seq, n_heads, head_dim] view of the attention output projection's input."""
        projection, n_heads, head_dim = self._heads_spec()
        return projection.input.unflatten(-1, (n_heads, head_dim))

    @heads.setter
    def heads(self, value: Any) -> None:
        projection, _, _ = self._heads_spec()
        tracer = self._tracer("heads")
        flat = tracer.builder.add("Tensor.flatten", (value, -2))
        projection.input = flat
