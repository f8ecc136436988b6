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


# ------------------------------------------------------------------------------ errors as data

def test_message_is_composed_from_the_fields():
    from nnsight_jupyter.errors import ShapeMismatchError

    error = ShapeMismatchError("the value does not fit", where="cell.py:3", module="model.layers.0",
                               shapes={"expected": (1, 6, 64), "written": [7]}, fix="Write a (1, 6, 64) tensor.")
    assert error.shapes == {"expected": (1, 6, 64), "written": (7,)}
    assert str(error) == ("cell.py:3: the value does not fit (module model.layers.0) (shapes: expected "
                          "(1, 6, 64), written (7,)). Write a (1, 6, 64) tensor.")
    named = ShapeMismatchError("model.layers.0.output has shape (1, 6, 64)", module="model.layers.0",
                               shapes={"expected": (1, 6, 64)}, fix="Fix it.")
    assert str(named) == "model.layers.0.output has shape (1, 6, 64). Fix it."    # named once, not twice
    assert str(nj.NNsightError("plain")) == "plain" and nj.NNsightError("plain").fix is None


def test_at_fills_only_missing_fields_and_returns_the_error():
    error = nj.ExecutionError("boom", where="a.py:1", shapes={"x": (2,)})
    assert error.at(where="b.py:9", module="lm_head", shapes={"y": (3,)}, fix="Do this.") is error
    assert (error.where, error.module, error.shapes, error.fix) == ("a.py:1", "lm_head", {"x": (2,)}, "Do this.")
    error.at(module="other", fix="Other.")
    assert (error.module, error.fix) == ("lm_head", "Do this.")
    assert str(error) == "a.py:1: boom (module lm_head) (shapes: x (2,)). Do this."


def test_fields_round_trip_gives_the_same_error():
    from nnsight_jupyter.errors import FIELDS, ModuleIndexError

    error = ModuleIndexError("layers[9] is out of range", where="c.py:2", module="model.layers", fix="Use 0..3.")
    data = error.fields()
    assert data["type"] == "ModuleIndexError" and data["message"] == str(error)
    assert set(data) - {"type", "message"} <= set(FIELDS)
    again = ModuleIndexError.from_fields(data)
    assert str(again) == str(error) and isinstance(again, IndexError)
    assert (again.reason, again.where, again.module, again.shapes, again.fix) == \
        (error.reason, error.where, error.module, error.shapes, error.fix)
    remote = nj.RemoteError.from_fields({"reason": "r", "line": "x.py:1", "shapes": {"a": [1, "x"]}},
                                        remote_type="TimeLimitExceeded")
    assert remote.remote_type == "TimeLimitExceeded" and remote.shapes == {} and str(remote) == "x.py:1: r"


def test_dual_inheritance_still_behaves_like_the_builtins(llama):
    assert not hasattr(llama.model, "not_a_module")
    assert getattr(llama.model, "not_a_module", 7) == 7
    with pytest.raises(IndexError):
        llama.model.layers[99]


def test_errors_module_imports_nothing_of_the_package():
    import ast
    from pathlib import Path

    import nnsight_jupyter.errors as errors

    tree = ast.parse(Path(errors.__file__).read_text())
    imported = {n.module if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [None])}
    assert imported <= {"__future__", "typing"}, imported


def _reach_a_missing_module(model):
    return model.model.not_a_module


def test_tracing_errors_get_the_innermost_user_line_once(llama):
    with pytest.raises(nj.ModuleAttributeError) as info:
        with llama.trace(PROMPT):
            _reach_a_missing_module(llama)
    line = _reach_a_missing_module.__code__.co_firstlineno + 1
    assert info.value.where == f"test_errors.py:{line}"
    assert str(info.value).startswith(f"test_errors.py:{line}: ") and str(info.value).count("test_errors.py") == 1


def test_executor_errors_keep_the_line_they_got_first(llama):
    with pytest.raises(nj.ShapeMismatchError) as info:
        with llama.trace(PROMPT):
            llama.model.layers[1].output = torch.zeros(2)
    assert str(info.value).count("test_errors.py:") == 1 and info.value.module == "model.layers.1"
