"""Values on a model placed over several devices (accelerate's `dispatch_model`, `models.sharding`).

A sharded model's module values live where the module runs: layer 3's output on cuda:0, layer 20's
on cuda:1. The executor leaves reads where they are, and moves for the user what would otherwise
fail or be wrong:

* a write (`.output = v`, `.input = v`, `.inputs = ...`, `skip(v)`) is moved to the device of the
  value it replaces (`like`);
* an op whose tensor arguments sit on several devices runs on the first one's (`align`): a value
  read at layer 3 used at layer 20 just works;
* saved values come back on the CPU (`to_cpu`);
* a parameter of a module offloaded to the CPU or disk (on the meta device between forwards) is
  read from accelerate's offload map, as a copy (`offloaded`);
* the shapes-only forwards that record the execution order and layouts run without accelerate's
  hooks (`unhooked`).

On an unsharded model none of this runs (`is_sharded` is checked once per target).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from ..errors import ExecutionError


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether accelerate dispatched `module` (it has a device map and hooks)."""
    return bool(getattr(module, "hf_device_map", None)) or hasattr(module, "_hf_hook")


def device_of(value: Any) -> torch.device | None:
    """The device of the first tensor in `value` (tensors, tuples, lists, dicts, model outputs)."""
    if isinstance(value, torch.Tensor):
        return value.device
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = device_of(item)
            if found is not None:
                return found
    return None


def move(value: Any, device: torch.device | None) -> Any:
    """`value` with every tensor in it on `device` (containers rebuilt; the rest as it is)."""
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    if type(value) is tuple or type(value) is list:
        return type(value)(move(item, device) for item in value)
    if type(value) is dict:
        return {key: move(item, device) for key, item in value.items()}
    return value


def like(new: Any, current: Any) -> Any:
    """`new` moved to the device of `current`, the value it is written over."""
    return move(new, device_of(current))


def to_cpu(value: Any) -> Any:
    """A saved value with its tensors on the CPU."""
    return move(value, torch.device("cpu"))


def align(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Tensor arguments on several devices moved to the first one's device (unchanged otherwise)."""
    devices = {a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)}
    if len(devices) < 2:
        return args, kwargs
    first = device_of(list(args) + list(kwargs.values()))
    return move(tuple(args), first), move(dict(kwargs), first)


def offloaded(owner: torch.nn.Module, name: str, path: str) -> torch.Tensor:
    """Parameter or buffer `name` of an offloaded module (meta between forwards), read from the
    weights map of accelerate's `AlignDevicesHook`, as a copy (the map may be the disk file itself)."""
    hook = getattr(owner, "_hf_hook", None)
    for one in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        weights = getattr(one, "weights_map", None)
        if weights is not None and name in weights:
            return weights[name].detach().clone().to("cpu")
    raise ExecutionError(f"{path or 'model'}.{name} is offloaded and its weights cannot be found in accelerate's "
                         "offload map", fix="Read it from a module placed on a device, or host the model unsharded.")


@contextlib.contextmanager
def unhooked(module: torch.nn.Module) -> Iterator[None]:
    """accelerate's placement out of the way for a shapes-only forward (FakeTensorMode: the execution
    order and layouts, `execution.order`, `execution.layout`): each module's own forward instead of
    accelerate's, and every weight not on the CPU (on a GPU, or offloaded: meta) replaced by an
    unfilled CPU tensor of its shape (`torch.empty`: pages never touched, so no real memory), put
    back afterwards. Shapes do not depend on where weights live; nothing of the real model changes."""
    if not is_sharded(module):
        yield
        return
    forwards, weights = [], []
    for sub in module.modules():
        if "forward" in sub.__dict__ and hasattr(sub, "_old_forward"):
            forwards.append((sub, sub.__dict__["forward"]))
            sub.forward = sub._old_forward
        for table in (sub._parameters, sub._buffers):
            for name, tensor in table.items():
                if tensor is not None and tensor.device.type != "cpu":
                    weights.append((table, name, tensor))
                    stand_in = torch.empty(tensor.shape, dtype=tensor.dtype)
                    table[name] = torch.nn.Parameter(stand_in, False) if table is sub._parameters else stand_in
    try:
        yield
    finally:
        for table, name, tensor in weights:
            table[name] = tensor
        for sub, forward in forwards:
            sub.forward = forward
