"""Random ops that draw from a generator the job owns, never from the process-wide one.

On a shared host several users' jobs run in one process: an op that drew from torch's global
generator would make one job's numbers depend on what its co-tenants drew, and a job could steer
another's (or reseed it). Every random op of the allow-list (`graph.ops.Op.sample`) is therefore
called as ``sample(generator, *args, **kwargs)`` with the `torch.Generator` of the job, seeded from
the run's ``seed=`` option (`model.trace(prompt, seed=0)`), so results are reproducible and jobs
cannot disturb each other (`execution.executor` owns the generators).

Most torch samplers take ``generator=``; the nn.functional ones that don't (dropout and friends,
gumbel_softmax) are written here from samplers that do, with torch's semantics.
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def device_of(args: tuple, kwargs: dict) -> torch.device:
    """The device a random op draws on: its ``device=`` keyword, else its first tensor argument's."""
    device = kwargs.get("device")
    if device is not None:
        return torch.device(device)
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def native(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A sampler that takes ``generator=`` itself."""
    def sample(generator: torch.Generator, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, generator=generator, **kwargs)
    sample.__name__ = f"sample_{getattr(fn, '__name__', 'op')}"
    return sample


def _keep_mask(generator: torch.Generator, input: torch.Tensor, shape: tuple, p: float) -> torch.Tensor:
    return torch.zeros(shape, dtype=input.dtype, device=input.device).bernoulli_(1 - p, generator=generator)


def _drop(generator: torch.Generator, input: torch.Tensor, p: float, training: bool, inplace: bool,
          shape: tuple) -> torch.Tensor:
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input.zero_() if inplace else torch.zeros_like(input)
    mask = _keep_mask(generator, input, shape, p) / (1 - p)
    return input.mul_(mask) if inplace else input * mask


def dropout(generator: torch.Generator, input: torch.Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False) -> torch.Tensor:
    """`torch.nn.functional.dropout`, drawing from `generator`."""
    return _drop(generator, input, p, training, inplace, tuple(input.shape))


def _channel_dropout(dims: int) -> Callable[..., torch.Tensor]:
    """`dropout1d` / `dropout2d` / `dropout3d`: whole channels are zeroed, for inputs of `dims`
    spatial dims with (N, C, ...) or without (C, ...) a batch dim."""
    def channel_dropout(generator: torch.Generator, input: torch.Tensor, p: float = 0.5, training: bool = True,
                        inplace: bool = False) -> torch.Tensor:
        if input.dim() not in (dims + 1, dims + 2):
            raise RuntimeError(f"dropout{dims}d: expected a {dims + 1}-D or {dims + 2}-D input, got "
                               f"{input.dim()}-D (shape {tuple(input.shape)})")
        channels = input.dim() - dims
        shape = tuple(input.shape[:channels]) + (1,) * dims
        return _drop(generator, input, p, training, inplace, shape)
    channel_dropout.__name__ = f"dropout{dims}d"
    return channel_dropout


def gumbel_softmax(generator: torch.Generator, logits: torch.Tensor, tau: float = 1, hard: bool = False,
                   eps: float = 1e-10, dim: int = -1) -> torch.Tensor:
    """`torch.nn.functional.gumbel_softmax`, drawing from `generator`."""
    gumbels = -torch.zeros_like(logits).exponential_(generator=generator).log()
    soft = ((logits + gumbels) / tau).softmax(dim)
    if not hard:
        return soft
    index = soft.max(dim, keepdim=True)[1]
    one_hot = torch.zeros_like(logits).scatter_(dim, index, 1.0)
    return one_hot - soft.detach() + soft


#: Seeded versions of the nn.functional samplers that take no ``generator=``, by name.
FUNCTIONAL: dict[str, Callable[..., Any]] = {
    "dropout": dropout, "dropout1d": _channel_dropout(1), "dropout2d": _channel_dropout(2),
    "dropout3d": _channel_dropout(3), "gumbel_softmax": gumbel_softmax,
}
