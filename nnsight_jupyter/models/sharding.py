"""Placing one model over several devices with accelerate (`device_map`, `max_memory`, disk offload).

    place(model, "auto", max_memory={0: "20GiB", 1: "20GiB", "cpu": "60GiB"})
    place(model, "balanced")                       # even split over the GPUs (accelerate's get_balanced_memory)
    place(model, {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "cpu",
                  "model.layers.2": "disk", ...}, offload_dir="/scratch/offload")

This is accelerate's own machinery, through its public API: `infer_auto_device_map` (with the model's
`_no_split_modules`, so a decoder layer is never cut in two) and `dispatch_model`, which attaches
`AlignDevicesHook`s: each module's inputs are moved to the device it runs on, modules placed on
"cpu" next to GPUs or on "disk" have their weights loaded just before their forward and dropped
after it (they are on the meta device in between). The intervention engine sees the module values
where they live; `execution.devices` moves what a trace writes to the device of what it replaces
and returns saved values on the CPU.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch

from ..errors import ModelLoadError

#: The named strategies accelerate knows; anything else must be a dict of module path -> device.
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def resolve_device_map(model: torch.nn.Module, device_map: Any, max_memory: dict | None = None) -> dict[str, Any]:
    """An explicit {module path: device} for `device_map` ("auto", "balanced", "balanced_low_0",
    "sequential", or already a dict), within `max_memory` ({device: bytes or "10GiB"}) when given."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if isinstance(device_map, dict):
        return _check_explicit(model, device_map)
    if device_map not in STRATEGIES:
        raise ModelLoadError(f"device_map {device_map!r} is not one accelerate knows",
                             fix=f"Use one of {', '.join(STRATEGIES)}, or a dict of module path -> device "
                                 '(an int GPU index, "cpu" or "disk").')
    no_split = list(getattr(model, "_no_split_modules", None) or [])
    memory = max_memory
    if device_map != "sequential" and torch.cuda.device_count() > 1:
        memory = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split,
                                     low_zero=device_map == "balanced_low_0")
    return dict(infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split))


def _check_explicit(model: torch.nn.Module, device_map: dict) -> dict[str, Any]:
    """An explicit map must name existing modules and cover every parameter."""
    names = dict(model.named_modules())
    unknown = [path for path in device_map if path and path not in names]
    if unknown:
        raise ModelLoadError(f"device_map names modules this model does not have: {unknown}",
                             fix="Use paths from model.named_modules() (e.g. 'model.layers.0').")
    covered = tuple(device_map)
    missing = [name for name, _ in model.named_parameters()
               if not any(path == "" or name == path or name.startswith(path + ".") for path in covered)]
    if missing:
        raise ModelLoadError(f"device_map leaves {len(missing)} parameters without a device, e.g. {missing[:3]}",
                             fix="Give every top-level module a device, or use device_map='auto'.")
    return {path: _device(value) for path, value in device_map.items()}


def _device(value: Any) -> Any:
    if isinstance(value, str) and value.isdigit():
        return int(value)                       # JSON config: "0" means GPU 0
    return value


def place(model: torch.nn.Module, device_map: Any, max_memory: dict | None = None,
          offload_dir: str | None = None) -> torch.nn.Module:
    """`model` dispatched over devices as `device_map` says (accelerate's hooks attached), weights of
    modules mapped to "disk" written under `offload_dir` (a fresh temporary folder if None)."""
    from accelerate import dispatch_model

    explicit = resolve_device_map(model, device_map, _memory(max_memory))
    if "disk" in explicit.values() and offload_dir is None:
        offload_dir = tempfile.mkdtemp(prefix="nnsight-offload-")
    try:
        model = dispatch_model(model, device_map=explicit, offload_dir=offload_dir)
    except (ValueError, RuntimeError) as error:
        raise ModelLoadError(f"accelerate could not place the model with device_map {explicit}: {error}",
                             fix="Check the devices exist here (torch.cuda.device_count()) and max_memory.") from None
    model.nnsight_device_map = explicit
    return model


def _memory(max_memory: dict | None) -> dict | None:
    """max_memory from JSON config: GPU indices come as strings ("0": "20GiB")."""
    if max_memory is None:
        return None
    return {_device(key): value for key, value in max_memory.items()}


def devices_of(model: torch.nn.Module) -> set[str]:
    """The places a dispatched model's modules live ("cpu", "cuda:0", "disk"...), or {} when not dispatched."""
    device_map = getattr(model, "hf_device_map", None) or getattr(model, "nnsight_device_map", None)
    if not device_map:
        return set()
    return {f"cuda:{d}" if isinstance(d, int) else str(d) for d in device_map.values()}
