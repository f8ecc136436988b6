"""Proxies: control flow refused at once, len/unpacking, values after the trace, print() logs."""

import pytest
import torch

import nnsight_jupyter as nj

PROMPT = "the cat sat on the mat"


def test_if_on_proxy_names_the_fix(llama, raw_llama):
    calls = []
    handle = raw_llama.model.embed_tokens.register_forward_pre_hook(lambda m, a: calls.append(1))
    with pytest.raises(nj.ControlFlowError, match="torch.where") as info:
        with llama.trace(PROMPT):
            if llama.model.layers[0].output.sum() > 0:
                pass
    handle.remove()
    assert calls == []
    assert "test_proxy.py" in str(info.value) or "Nothing was run" in str(info.value)


def test_len_of_unknown_shape_is_refused(llama):
    with pytest.raises(nj.TracingError, match="shape"):
        with llama.trace(PROMPT):
            len(llama.model.layers[0].output)


def test_inputs_unpacks_into_args_and_kwargs(llama):
    with llama.trace(PROMPT):
        args, kwargs = llama.model.layers[1].inputs
        hidden = args[0].save()
    assert hidden.value.shape == (1, 6, 64)


def test_value_before_run_and_unsaved_value(llama):
    with llama.trace(PROMPT):
        h = llama.model.layers[0].output
        saved = h.save()
        with pytest.raises(nj.ValueNotReadyError, match="has not run yet"):
            saved.value
        unsaved = h * 2
    with pytest.raises(nj.ValueNotReadyError, match="not saved"):
        unsaved.value
    assert isinstance(saved.value, torch.Tensor)


def test_finished_proxy_behaves_like_its_value(llama):
    with llama.trace(PROMPT):
        h = llama.model.layers[0].output.save()
    assert h.shape == (1, 6, 64)
    assert torch.equal(torch.softmax(h, -1), torch.softmax(h.value, -1))


def test_using_an_unsaved_value_after_the_trace_is_refused(llama):
    with llama.trace(PROMPT):
        h = llama.model.layers[0].output
    with pytest.raises(nj.TracingError, match="already run"):
        h.mean()


def test_print_inside_a_trace_becomes_a_log(llama, capsys):
    with llama.trace(PROMPT) as tracer:
        h = llama.model.layers[0].output
        print("norm:", h.norm())
        tracer.log("shape", h.shape)
    out = capsys.readouterr().out
    assert "norm: tensor(" in out and "shape torch.Size([1, 6, 64])" in out
    logs = tracer.builder.result.logs
    assert [text.split()[0] for _, text in logs] == ["norm:", "shape"]
    assert all(line.startswith("test_proxy.py:") for line, _ in logs)


def test_print_of_plain_values_is_untouched(llama, capsys):
    with llama.trace(PROMPT):
        print("plain", 3)
        llama.lm_head.output.save()
    assert capsys.readouterr().out == "plain 3\n"
    import builtins
    assert builtins.print is print


def test_op_off_the_allow_list_is_refused_when_built(llama):
    with pytest.raises(nj.OpNotAllowedError, match="allow-list"):
        with llama.trace(PROMPT):
            torch.save(llama.model.layers[0].output, "/tmp/x.pt")


def test_private_attribute_of_proxy_is_not_a_node(llama):
    with llama.trace(PROMPT):
        h = llama.model.layers[0].output
        assert not hasattr(h, "_private_thing")
        llama.lm_head.output.save()


def test_top_level_names_are_rebound(llama):
    namespace = {"model": llama}
    code = compile(
        "with model.trace('the cat sat on the mat'):\n"
        "    h = model.model.layers[1].output.save()\n"
        "    unsaved = model.model.layers[2].output\n",
        "<cell>", "exec")
    exec(code, namespace)
    assert type(namespace["h"]) is torch.Tensor
    assert type(namespace["unsaved"]) is nj.Proxy


def test_finished_proxy_supports_python_protocols(llama):
    with llama.trace(PROMPT):
        top = llama.lm_head.output[0, -1].argmax().save()
        row = llama.lm_head.output[0, -1].save()
    assert int(top) == int(top.value) and float(row[0]) == float(row.value[0])
    assert len(row) == 200 and bool(row.sum() != 0)
    assert torch.equal(torch.as_tensor(row), row.value)
    assert torch.equal(row * 2, row.value * 2)


def test_tuple_output_unpacks_where_its_length_is_known(llama):
    with llama.trace(PROMPT):
        attn_out, weights = llama.model.layers[0].self_attn.output
        attn = attn_out.save()
    assert attn.value.shape == (1, 6, 64)
