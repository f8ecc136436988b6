"""Gradients as nnsight writes them, on a model host: equal to the same trace run locally."""

import torch

PROMPT = "the cat sat on the mat"


def _trace(model):
    with model.trace(PROMPT):
        h = model.model.layers[1].output.save()
        h.requires_grad_()
        h.retain_grad()
        logits = model.lm_head.output
        with logits.sum().backward(retain_graph=True):
            g1 = h.grad.save()
        with logits.backward(gradient=torch.ones(1, 6, 200) * 2, retain_graph=True):
            g2 = h.grad.save()
        logits[0, -1, 5].backward()
    return h, g1, g2


def test_remote_gradients_equal_local(connect_as, tiny_local):
    h, g1, g2 = _trace(connect_as("token-grace").model("tiny"))
    h_l, g1_l, g2_l = _trace(tiny_local)
    assert torch.equal(g1, g1_l) and torch.equal(g2, g2_l)
    assert torch.allclose(g2, g1 * 2)
    assert h.grad is not None and torch.equal(h.grad, h_l.grad)
    assert all(p.grad is None for p in tiny_local._module.parameters())
