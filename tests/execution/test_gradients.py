"""Gradient code as nnsight writes it, against plain PyTorch autograd on the same model."""

import copy

import pytest
import torch

import nnsight_jupyter as nj

PROMPT = "the cat sat on the mat"


def _reference(raw, tokenizer, layer: int, losses):
    """Plain PyTorch: layer `layer`'s output retained; `losses(logits)` gives [(loss, kwargs)] run in turn.
    Returns the gradient of that output after each backward pass (as torch accumulates it)."""
    captured = {}
    handle = raw.model.layers[layer].register_forward_hook(lambda m, a, o: captured.setdefault("h", o))
    try:
        logits = raw(torch.tensor([tokenizer(PROMPT)["input_ids"]])).logits
    finally:
        handle.remove()
    h = captured["h"]
    h.retain_grad()
    grads = []
    for loss, kwargs in losses(logits):
        loss.backward(**kwargs)
        grads.append(h.grad.clone())
    return grads


def _copy(raw):
    """A twin of the model with trainable weights, for the plain-PyTorch reference."""
    return copy.deepcopy(raw).requires_grad_(True)


@pytest.fixture(params=["frozen", "trainable"])
def frozen(request, raw_llama):
    if request.param == "frozen":
        for p in raw_llama.parameters():
            p.requires_grad_(False)
    return request.param == "frozen"


def test_requires_grad_retain_grad_and_plain_backward(frozen, raw_llama, tokenizer):
    """nnsight's test_retain_grad: after the trace the saved value's .grad is torch's."""
    model = nj.LanguageModel(raw_llama, tokenizer=tokenizer)
    with model.trace(PROMPT):
        h = model.model.layers[2].output.save()
        h.requires_grad_()
        h.retain_grad()
        model.lm_head.output.sum().backward()
    assert all(p.grad is None for p in raw_llama.parameters())        # weights never get grads
    [expected] = _reference(_copy(raw_llama), tokenizer, 2, lambda logits: [(logits.sum(), {})])
    assert h.grad is not None and torch.allclose(h.grad, expected, atol=1e-6)


def test_several_backward_passes_with_retain_graph_and_gradient(frozen, raw_llama, tokenizer):
    """nnsight's test_multi_backward, plus gradient= and an accumulating retain_grad()."""
    model = nj.LanguageModel(raw_llama, tokenizer=tokenizer)
    with model.trace(PROMPT):
        h = model.model.layers[1].output.save()
        h.retain_grad()
        logits = model.lm_head.output
        with logits.sum().backward(retain_graph=True):
            g1 = h.grad.save()
        logits = logits * 2
        weights = torch.arange(200.0).expand(1, 6, 200)
        with logits.backward(gradient=weights, retain_graph=True):
            g2 = h.grad.save()
        (logits[0, -1, 3]).backward()
    assert all(p.grad is None for p in raw_llama.parameters())
    accumulated = _reference(_copy(raw_llama), tokenizer, 1, lambda logits: [
        (logits.sum(), {"retain_graph": True}), (logits * 2, {"gradient": weights, "retain_graph": True}),
        ((logits * 2)[0, -1, 3], {})])
    assert torch.allclose(g1, accumulated[0], atol=1e-6)
    assert torch.allclose(g2, accumulated[1] - accumulated[0], atol=1e-5)
    assert not torch.allclose(g1, g2)
    assert torch.allclose(h.grad, accumulated[2], atol=1e-5)        # retain_grad sums every pass


def test_gradient_write_in_one_pass_leaves_the_next_alone(raw_llama, tokenizer):
    model = nj.LanguageModel(raw_llama, tokenizer=tokenizer)
    with model.trace(PROMPT):
        early = model.model.layers[0].output
        late = model.model.layers[2].output
        logits = model.lm_head.output
        with logits.sum().backward(retain_graph=True):
            late.grad = late.grad * 0
            zero = early.grad.save()
        with logits.sum().backward():
            plain = early.grad.save()
    assert zero.abs().sum() == 0
    [expected] = _reference(_copy(raw_llama), tokenizer, 0, lambda logits: [(logits.sum(), {})])
    assert torch.allclose(plain, expected, atol=1e-6)


def test_a_second_backward_without_retain_graph_says_so(llama):
    with pytest.raises(nj.ExecutionError, match="retain_graph=True"):
        with llama.trace(PROMPT):
            h = llama.model.layers[0].output.save()
            h.retain_grad()
            logits = llama.lm_head.output
            logits.sum().backward()
            logits.mean().backward()


def test_bad_backward_arguments_are_refused_clearly(llama):
    with pytest.raises(nj.ShapeMismatchError, match=r"needs gradient= .*torch.ones_like\(loss\)"):
        with llama.trace(PROMPT):
            llama.lm_head.output.backward()
    with pytest.raises(nj.ShapeMismatchError, match=r"gradient=.*\(3,\)"):
        with llama.trace(PROMPT):
            logits = llama.lm_head.output
            logits.backward(gradient=torch.ones(3))
    with pytest.raises(nj.TracingError, match="weights never get one"):
        with llama.trace(PROMPT):
            llama.lm_head.output.sum().backward(inputs=[llama.model.layers[0].output])
    with pytest.raises(nj.TracingError, match="requires_grad_\\(False\\)"):
        with llama.trace(PROMPT):
            llama.model.layers[0].output.requires_grad_(False)
    with pytest.raises(nj.TracingError, match="create_graph"):
        with llama.trace(PROMPT):
            llama.lm_head.output.sum().backward(create_graph=True)


def test_requires_grad_on_a_weight_is_refused(llama):
    with pytest.raises(nj.NNsightError, match="weights"):
        with llama.trace(PROMPT):
            llama.lm_head.weight.requires_grad_()
            llama.lm_head.output.save()
