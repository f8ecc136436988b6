"""Gradient code as nnsight writes it: `requires_grad_()`, `retain_grad()`, `backward(...)`.

    with model.trace(prompt):
        h = model.model.layers[2].output.save()
        h.requires_grad_()                 # accepted: values whose .grad is used require grad anyway
        h.retain_grad()                    # after the trace, h.grad holds its gradient
        logits = model.lm_head.output
        with logits.sum().backward(retain_graph=True):    # .grad readable and writable inside
            g1 = h.grad.save()
        (logits * 2).sum().backward()      # the plain call form: a second backward pass

Each `backward(gradient=None, retain_graph=None)` is one `backward` node with its arguments
`(loss, gradient, retain_graph)`; it runs after the forward pass, in program order with the other
backward passes and the code between them. `retain_grad()` marks a value: every later backward
pass of the trace gets a `grad.keep` node for it (unordered: it reads the gradient as it finally
arrives, after the block's own writes), and after the trace the saved value's `.grad` is their sum,
as torch accumulates it. Gradients reach activations only: the model's weights never get one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import TracingError
from .proxy import READY, BackwardContext, Proxy

if TYPE_CHECKING:
    from .builder import GraphBuilder


def require_grad(proxy: Proxy, requires_grad: bool = True) -> Proxy:
    """`h.requires_grad_()`: the value (made to require grad where it is computed) itself."""
    if proxy._state == READY:
        proxy._value.requires_grad_(requires_grad)
        return proxy
    if requires_grad is not True:
        raise TracingError(
            "requires_grad_(False) on a traced value is not supported: values whose .grad is not read "
            "take no part in backward anyway", fix="Use .detach() to cut a value out of the gradient.")
    return proxy._live("requires_grad_()").add("grad.require", (proxy,))


def retain_grad(proxy: Proxy) -> None:
    """`h.retain_grad()`: after the trace, the saved `h` has `.grad` (summed over backward passes)."""
    if proxy._state == READY:
        proxy._value.retain_grad()
        return
    builder = proxy._live("retain_grad()")
    builder.retained.setdefault(proxy._id, (proxy, []))


def backward(proxy: Proxy, gradient: Any = None, retain_graph: bool | None = None, create_graph: bool = False,
             inputs: Any = None) -> BackwardContext | None:
    """`loss.backward(...)` inside a trace: one backward pass after the forward; `with` it to read
    and write `.grad` of the values it reaches."""
    if proxy._state == READY:                    # a value after the trace: plain torch
        proxy._value.backward(gradient, retain_graph, create_graph, inputs)
        return None
    builder = proxy._live("backward()")
    if create_graph:
        raise TracingError("backward(create_graph=True) is not supported inside a trace",
                           fix="Take first-order gradients (.grad) only.")
    if inputs is not None:
        raise TracingError(
            "backward(inputs=...) is not supported: gradients flow to activations only (the model's "
            "weights never get one)", fix="Read `.grad` of the values you need inside `with loss.backward():`.")
    if retain_graph is not None and type(retain_graph) is not bool:
        raise TracingError(f"backward(retain_graph=...) takes True or False, got {type(retain_graph).__name__}")
    if gradient is not None and not isinstance(gradient, (Proxy, torch.Tensor)):
        raise TracingError(f"backward(gradient=...) takes a tensor shaped like the loss, got "
                           f"{type(gradient).__name__}", fix="Pass e.g. torch.ones_like(loss).")
    node = builder.add("backward", (proxy, gradient, retain_graph))
    _keep_retained(builder, node._id)
    return BackwardContext(builder, node._id)


def _keep_retained(builder: "GraphBuilder", backward_id: int) -> None:
    """A `grad.keep` node, in this backward pass, for every value marked with retain_grad()."""
    if not builder.retained:
        return
    tracer = builder.tracer()
    previous, tracer.backward = tracer.backward, backward_id
    try:
        for target, keeps in builder.retained.values():
            keep = builder.add("grad.keep", (target,))
            object.__setattr__(keep, "_save_id", keep._id)
            builder.saved.append(keep)
            keeps.append(keep)
    finally:
        tracer.backward = previous


def attach_retained(builder: "GraphBuilder") -> None:
    """After the run: each retained, saved value's `.grad` is the sum of its kept gradients."""
    for target, keeps in builder.retained.values():
        grads = [k._value for k in keeps if k._state == READY]
        if target._state != READY or not grads or not isinstance(target._value, torch.Tensor):
            continue
        total = grads[0]
        for grad in grads[1:]:
            total = total + grad
        target._value.grad = total
