"""Every user-facing error: one family, the user's line, the module path, the shapes and the fix."""

import re

import pytest
import torch

import nnsight_jupyter as nj

PROMPT = "the cat sat on the mat"


def test_every_error_is_an_nnsight_error():
    for name in nj.__all__:
        obj = getattr(nj, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, nj.NNsightError)


def test_shape_mismatch_names_line_module_shapes_and_fix(llama):
    with pytest.raises(nj.ShapeMismatchError) as info:
        with llama.trace(PROMPT):
            llama.model.layers[1].output = torch.zeros(1, 6, 37)
    message = str(info.value)
    assert re.match(r"test_errors\.py:\d+: ", message)
    assert "model.layers.1.output" in message and "(1, 6, 64)" in message and "(1, 6, 37)" in message
    assert "Write a tensor of shape (1, 6, 64)" in message


def test_failing_tensor_op_names_the_line_and_op(llama):
    with pytest.raises(nj.ExecutionError) as info:
        with llama.trace(PROMPT):
            h = llama.model.layers[0].output
            (h @ torch.zeros(5, 5)).save()
    message = str(info.value)
    assert re.match(r"test_errors\.py:\d+: matmul failed: RuntimeError", message)


def test_out_of_order_names_both_modules(llama):
    with pytest.raises(nj.OutOfOrderError) as info:
        with llama.trace(PROMPT):
            llama.model.layers[3].output.save()
            llama.model.layers[1].mlp.output.save()
    message = str(info.value)
    assert "model.layers.1.mlp.output is used after model.layers.3.output" in message
    assert "Move this line above the other" in message


def test_error_where_is_the_user_line(llama):
    with pytest.raises(nj.NNsightError) as info:
        with llama.trace(PROMPT):
            llama.model.layers[0].output[:, 10] = 0
    assert info.value.where.startswith("test_errors.py:")
    assert "IndexError" in info.value.reason
