"""After any trace, successful or failed, no hook is left and the weights are unchanged."""

import pytest
import torch

import nnsight_jupyter as nj

PROMPT = "the cat sat on the mat"


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_no_hook_after_successful_trace(llama, raw_llama, count_hooks):
    with llama.trace(PROMPT):
        llama.model.layers[1].output[:, -1] = 0
        llama.model.layers[2].skip(llama.model.layers[2].input)
        llama.lm_head.output.save()
    assert count_hooks(raw_llama) == 0


@pytest.mark.parametrize("failure", ["out_of_order", "shape", "user_exception", "runtime"])
def test_no_hook_after_failed_trace(llama, raw_llama, count_hooks, failure):
    with pytest.raises(Exception) as info:
        with llama.trace(PROMPT):
            if failure == "out_of_order":
                llama.model.layers[3].output.save()
                llama.model.layers[1].output.save()
            elif failure == "shape":
                llama.model.layers[1].output = torch.zeros(1, 6, 3)
            elif failure == "user_exception":
                llama.model.layers[1].output.save()
                raise KeyError("user code failed")
            else:
                llama.model.layers[1].output[:, 99] = 0     # index error while the model runs
    if failure != "user_exception":
        assert isinstance(info.value, nj.NNsightError)
    assert count_hooks(raw_llama) == 0


def test_weights_unchanged_by_writes(llama, raw_llama):
    before = _weights(raw_llama)
    with llama.trace(PROMPT):
        llama.model.layers[0].mlp.output[:] = 0
        llama.model.layers[1].self_attn.heads[:, :, 1] = 5
        llama.model.layers[2].output = llama.model.layers[2].output * 3
        llama.lm_head.output.save()
    after = _weights(raw_llama)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("how", ["setitem", "inplace_method", "view_then_inplace"])
def test_weight_write_is_refused(llama, raw_llama, how):
    before = raw_llama.lm_head.weight.clone()
    with pytest.raises(nj.WeightWriteError, match="read-only"):
        with llama.trace(PROMPT):
            w = llama.lm_head.weight
            if how == "setitem":
                w[:] = 0
            elif how == "inplace_method":
                w.zero_()
            else:
                w.t()[0].mul_(2)
            llama.lm_head.output.save()
    assert torch.equal(raw_llama.lm_head.weight, before)


def test_reading_a_weight_for_a_logit_lens(llama, raw_llama, encode):
    with llama.trace(PROMPT):
        h = llama.model.norm.output
        lens = (h @ llama.lm_head.weight.T).save()
    with torch.no_grad():
        logits = raw_llama(input_ids=encode(PROMPT)).logits
    torch.testing.assert_close(lens.value, logits)


def test_saved_tensor_is_bit_identical_to_a_hook(llama, raw_llama, encode, reference):
    with llama.trace(PROMPT):
        attn = llama.model.layers[1].self_attn.output[0].save()
        h = llama.model.layers[2].output.save()
    _, rec = reference(raw_llama, encode(PROMPT), capture=["model.layers.2"])
    assert torch.equal(h.value, rec["model.layers.2"])
    assert attn.value.shape == (1, 6, 64)


def test_save_records_value_at_that_point(llama):
    with llama.trace(PROMPT):
        out = llama.model.layers[1].output
        before = out[:, -1].clone().save()
        snapshot = out.save()
        out[:, -1] = 0
        after = llama.model.layers[1].output.save()
    assert torch.count_nonzero(after.value[:, -1]) == 0
    assert torch.equal(snapshot.value[:, -1], before.value)
    assert torch.count_nonzero(snapshot.value[:, -1]) > 0


def test_no_gradient_reaches_weights(llama, raw_llama):
    for p in raw_llama.parameters():
        p.requires_grad_(False)
    with llama.trace(PROMPT):
        h = llama.model.layers[1].output
        loss = llama.lm_head.output[0, -1].log_softmax(-1)[5]
        with loss.backward():
            g = h.grad.save()
    assert g.value.shape == (1, 6, 64) and g.value.abs().sum() > 0
    assert all(p.grad is None for p in raw_llama.parameters())


def test_gradient_with_trainable_weights_leaves_no_weight_grad(llama, raw_llama):
    with llama.trace(PROMPT):
        h = llama.model.layers[1].output
        loss = llama.lm_head.output[0, -1].sum()
        with loss.backward():
            g = h.grad.save()
    assert g.value.abs().sum() > 0
    assert all(p.grad is None for p in raw_llama.parameters())


class _ReturnsItsWeight(torch.nn.Module):
    """A module whose output is its own parameter (its value shares the weight's storage)."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.ones(2, 3))

    def forward(self, x):
        return self.table


class _Outer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _ReturnsItsWeight()

    def forward(self, x):
        return self.inner(x) + x


def test_partial_set_output_into_a_module_value_that_is_a_weight_is_refused():
    """`.output = v` for one invoke of two copies into the module's value in place: refused at run
    time when that value is a parameter (no graph-level view to see)."""
    outer = _Outer()
    net = nj.NNsight(outer)
    before = outer.inner.table.detach().clone()
    with pytest.raises(nj.WeightWriteError, match="weights"):
        with net.trace() as tracer:
            with tracer.invoke(torch.zeros(1, 3)):
                net.inner.output = torch.zeros(1, 3)
            with tracer.invoke(torch.zeros(1, 3)):
                net.output.save()
    assert torch.equal(outer.inner.table, before)
