"""Errors keep their Python type and say what happened (issue 8, item 6): an index past the end is
an IndexError, a missing key a KeyError, a bad shape a RuntimeError-compatible ShapeMismatchError,
each with the user's line and the module; impossible traces are refused before the model runs;
ops that can't run in a trace are named by their public names; the types survive the wire fields."""

import pytest
import torch

import nnsight_jupyter as nj
from nnsight_jupyter.client.wire_errors import remote_error

PROMPT = "the cat sat on the mat"


def _raised(kind, model, body):
    with pytest.raises(kind) as info:
        with model.trace(PROMPT):
            body(model)
    return info.value


def test_an_index_past_the_end_is_an_index_error_with_line_and_module(llama):
    error = _raised(IndexError, llama, lambda m: m.model.layers[1].output[0, 99].save())
    assert isinstance(error, nj.NNsightError) and isinstance(error, nj.TracedIndexError)
    assert error.module == "model.layers.1" and "test_typed_errors.py" in error.where
    assert "out of bounds" in str(error) and "Index within the value's shape" in str(error)
    error = _raised(IndexError, llama, lambda m: m.model.layers[1].output.sum(dim=5).save())
    assert "Dimension out of range" in str(error)


def test_a_missing_key_is_a_key_error(llama):
    error = _raised(KeyError, llama, lambda m: m.output["no_such_key"].save())
    assert isinstance(error, nj.TracedKeyError) and "logits" in str(error)      # the fix lists the keys
    assert error.module == ""


def test_a_bad_shape_is_a_runtime_error_compatible_shape_mismatch(llama):
    error = _raised(RuntimeError, llama, lambda m: m.model.layers[1].output.view(5, 7).save())
    assert isinstance(error, nj.ShapeMismatchError) and error.module == "model.layers.1"
    assert "is invalid for input of size" in str(error)
    error = _raised(RuntimeError, llama, lambda m: (m.model.layers[1].output @ torch.ones(3, 3)).save())
    assert isinstance(error, nj.ShapeMismatchError)
    # an in-place write of the wrong shape (the engine's own check) is one too
    error = _raised(RuntimeError, llama, lambda m: m.model.layers[1].output.__setitem__((0, 0), torch.ones(7)))
    assert isinstance(error, nj.ShapeMismatchError)


def test_a_read_inside_a_skipped_module_is_refused_before_the_model_runs(llama, raw_llama, count_hooks):
    calls = []
    handle = raw_llama.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(nj.OutOfOrderError, match=r"model.layers.1.mlp.output is used, but model.layers.1 is "
                                                 r"skipped .* never runs.*Nothing was run") as info:
        with llama.trace(PROMPT):
            layer0 = llama.model.layers[0].output
            llama.model.layers[1].skip(layer0)
            llama.model.layers[1].mlp.output.save()
    handle.remove()
    assert calls == [] and info.value.module == "model.layers.1.mlp"
    assert count_hooks(raw_llama) == 0
    with llama.trace() as tracer:               # another invoke's rows still run the module: allowed
        with tracer.invoke(PROMPT):
            llama.model.layers[1].skip(llama.model.layers[0].output)
        with tracer.invoke("a dog"):
            inner = llama.model.layers[1].mlp.output.save()
    assert inner.value.shape[0] == 1


def test_an_invoke_inside_an_invoke_is_refused(llama):
    with pytest.raises(nj.TracingError, match="an invoke cannot be opened inside another invoke"):
        with llama.trace() as tracer:
            with tracer.invoke(PROMPT):
                with tracer.invoke("a dog"):
                    pass


def test_ops_off_the_list_are_named_by_their_public_names(llama):
    with pytest.raises(nj.OpNotAllowedError, match=r"torch\.cumulative_trapezoid is not on the allow-list") as info:
        with llama.trace(PROMPT):
            torch.cumulative_trapezoid(llama.model.layers[0].output)
    assert "_VariableFunctionsClass" not in str(info.value)
    with pytest.raises(nj.OpNotAllowedError, match=r"torch\.empty_like is refused.*torch\.zeros_like"):
        with llama.trace(PROMPT):
            torch.empty_like(llama.model.layers[0].output)


def test_methods_that_need_the_real_value_say_so(llama):
    for call in (lambda h: h.numpy(), lambda h: h.data_ptr()):
        with pytest.raises(nj.OpNotAllowedError, match=r"cannot run inside a trace: it needs the real value.*"
                                                        r"\.save\(\) the value"):
            with llama.trace(PROMPT):
                call(llama.model.layers[0].output)
    with pytest.raises(nj.OpNotAllowedError, match=r"\.to_tuple\(\.\.\.\) cannot run inside a trace"):
        with llama.trace(PROMPT):
            llama.output.to_tuple()


def test_a_proxy_of_a_failed_trace_says_the_trace_failed(llama):
    with pytest.raises(IndexError):
        with llama.trace(PROMPT):
            h = llama.model.layers[0].output.save()
            llama.model.layers[1].output[0, 99].save()
    with pytest.raises(nj.ValueNotReadyError, match=r"the trace this value belongs to failed \(TracedIndexError"):
        h.value
    with pytest.raises(ZeroDivisionError):
        with llama.trace(PROMPT):
            g = llama.model.layers[0].output.save()
            1 / 0
    with pytest.raises(nj.ValueNotReadyError, match="failed .ZeroDivisionError"):
        g.value


@pytest.mark.parametrize("kind, builtin", [(nj.TracedIndexError, IndexError), (nj.TracedKeyError, KeyError),
                                           (nj.ShapeMismatchError, RuntimeError), (nj.TracedTypeError, TypeError)])
def test_typed_errors_survive_the_wire_fields(kind, builtin):
    error = kind("getitem failed: IndexError: index 99", where="cell:3", module="model.layers.1",
                 shapes={"argument 0": (1, 6, 64)}, fix="Index within the value's shape (1, 6, 64).")
    again = remote_error({"type": "error", "error": error.fields()}, job_id="j1")
    assert type(again) is kind and isinstance(again, builtin) and isinstance(again, nj.NNsightError)
    assert (again.where, again.module, again.shapes, again.fix) == (error.where, error.module, error.shapes, error.fix)
    assert str(again) == str(error)
