"""Envoys: the module tree, attribute errors that stay AttributeError / IndexError, heads."""

import pytest
import torch

import nnsight_jupyter as nj


def test_unknown_attribute_is_attribute_error_with_suggestion(llama):
    with pytest.raises(nj.ModuleAttributeError) as info:
        llama.model.layers[0].mpl
    assert isinstance(info.value, AttributeError)
    assert "'mlp'" in str(info.value) and "model.layers.0" in str(info.value)
    assert not hasattr(llama.model, "nothing_here")
    assert getattr(llama.model, "nothing_here", 7) == 7


def test_index_past_the_end(llama):
    with pytest.raises(IndexError) as info:
        llama.model.layers[99]
    assert isinstance(info.value, nj.NNsightError)
    assert "0 to 3" in str(info.value)
    assert llama.model.layers[-1]._path == "model.layers.3"
    assert len(llama.model.layers) == 4 and [e._path for e in llama.model.layers][1] == "model.layers.1"


def test_plain_attributes_pass_through(llama, raw_llama):
    assert llama.config is raw_llama.config
    assert llama.model.layers[0].self_attn.head_dim == 16


def test_output_outside_a_trace(llama):
    with pytest.raises(nj.TracingError, match="inside"):
        llama.model.layers[0].output


def test_heads_on_a_non_attention_module(llama):
    with pytest.raises(nj.ModuleAttributeError, match="heads"):
        with llama.trace("hello"):
            llama.model.layers[0].mlp.heads.save()


def test_heads_write_by_assignment(llama, raw_llama, encode):
    with llama.trace("the cat sat on the mat"):
        heads = llama.model.layers[1].self_attn.heads
        llama.model.layers[1].self_attn.heads = heads * 0
        logits = llama.lm_head.output.save()
    h = raw_llama.model.layers[1].self_attn.o_proj.register_forward_pre_hook(lambda m, a: (a[0] * 0,))
    with torch.no_grad():
        expected = raw_llama(input_ids=encode("the cat sat on the mat")).logits
    h.remove()
    torch.testing.assert_close(logits.value, expected)


def test_module_call_outside_a_trace_runs_the_module(llama, raw_llama):
    x = torch.randn(1, 2, 64)
    torch.testing.assert_close(llama.model.norm(x), raw_llama.model.norm(x))
