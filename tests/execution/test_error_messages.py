"""Every error the engine raises while planning and running a graph: its class, its line, the module,
the shapes and the fix, as fields and in the message (one test per raise site)."""

from __future__ import annotations

import re

import pytest
import torch

import nnsight_jupyter as nj
from nnsight_jupyter.errors import ExecutionError, InputError, OutOfOrderError, ShapeMismatchError
from nnsight_jupyter.execution import execute
from nnsight_jupyter.execution.merge import execute_batch
from nnsight_jupyter.graph.nodes import Graph, Invoke, Node, Ref, Run
from nnsight_jupyter.graph.result import Result

PROMPT = "the cat sat on the mat"
LINE = re.compile(r"test_error_messages\.py:\d+: ")


def _raised(cls, model, body, *args, **kwargs) -> nj.NNsightError:
    with pytest.raises(cls) as info:
        with model.trace(*((PROMPT,) if not args else args), **kwargs):
            body(model)
    error = info.value
    assert type(error) is cls, f"{type(error).__name__}: {error}"
    return error


def _named(error: nj.NNsightError, module: str | None, *words: str) -> str:
    """The message starts with the user's line and names the module and each word (shapes, fix)."""
    message = str(error)
    assert LINE.match(message), message
    assert error.where and error.where.startswith("test_error_messages.py:")
    if module is not None:
        assert error.module == module and module in message, message
    assert error.fix and error.fix in message, message
    for word in words:
        assert word in message, (word, message)
    return message


class _Recorder:
    """A runner (`graph.runner.Runner`) that keeps the graph instead of running it."""

    def run(self, graph, observer=None):
        self.graph = graph
        return Result()


def _graph(model, body) -> Graph:
    recorder = _Recorder()
    with model.trace() as tracer:
        tracer.runner = recorder
        with tracer.invoke(PROMPT):
            body(model)
    return recorder.graph


@pytest.fixture
def forward_calls(llama):
    """How many real forward passes the tiny model ran (after its execution order was recorded)."""
    with llama.trace(PROMPT):
        llama.lm_head.output.save()
    calls = []
    handle = llama._module.register_forward_hook(lambda *args: calls.append(1))
    yield calls
    handle.remove()


# ---------------------------------------------------------------------------------- writes (executor)

def test_in_place_write_of_the_wrong_shape_names_module_both_shapes_and_fix(llama):
    def body(m):
        m.model.layers[0].output[:, 0] = torch.zeros(7)
    error = _raised(ShapeMismatchError, llama, body)
    _named(error, "model.layers.0", "model.layers.0.output", "(1, 64)", "(7,)", "Write a tensor of shape (1, 64)")
    assert error.shapes == {"target": (1, 6, 64), "indexed part": (1, 64), "written": (7,)}


def test_whole_slice_write_of_the_wrong_shape_inside_a_trace(llama):
    def body(m):
        h = m.model.layers[1].output
        h[:] = torch.zeros(2, 3)
    error = _raised(ShapeMismatchError, llama, body)
    _named(error, "model.layers.1", "model.layers.1.output", "(1, 6, 64)", "(2, 3)")


def test_in_place_write_past_the_end_names_the_shape_to_index_within(llama):
    def body(m):
        m.model.layers[0].output[:, 10] = 0
    error = _raised(nj.TracedIndexError, llama, body)          # an ExecutionError that is an IndexError
    assert isinstance(error, ExecutionError) and isinstance(error, IndexError)
    _named(error, "model.layers.0", "IndexError", "Index within the value's shape (1, 6, 64)")


def test_failing_op_names_module_shapes_and_fix(llama):
    def body(m):
        (m.model.layers[2].output @ torch.zeros(5, 5)).save()
    error = _raised(ShapeMismatchError, llama, body)           # an ExecutionError that is a RuntimeError
    assert isinstance(error, ExecutionError) and isinstance(error, RuntimeError)
    _named(error, "model.layers.2", "matmul failed", "(1, 6, 64)", "(5, 5)", "fit each other")


def test_replacing_an_output_by_a_wrong_shape_names_both_shapes(llama):
    def body(m):
        m.model.layers[1].output = torch.zeros(1, 6, 37)
    error = _raised(ShapeMismatchError, llama, body)
    _named(error, "model.layers.1", "model.layers.1.output", "(1, 6, 64)", "(1, 6, 37)")
    assert error.shapes == {"expected": (1, 6, 64), "written": (1, 6, 37)}


def test_setting_inputs_to_something_else_than_args_and_kwargs(llama):
    def body(m):
        m.model.layers[1].inputs = m.model.layers[1].input
    error = _raised(ShapeMismatchError, llama, body)
    _named(error, "model.layers.1", "(args, kwargs)", "Assign a pair")


# ---------------------------------------------------------------------------------- gradients

def test_gradient_read_in_the_wrong_order_is_refused_before_the_forward_pass(llama, forward_calls):
    def body(m):
        early, late = m.model.layers[0].output, m.model.layers[2].output
        with m.lm_head.output.sum().backward():
            early.grad.save()
            late.grad.save()
    error = _raised(OutOfOrderError, llama, body)
    message = _named(error, "model.layers.2", "model.layers.2.output.grad is used after model.layers.0.output.grad",
                     "Nothing was run", "Move this line above the other")
    assert re.search(r"\(line test_error_messages\.py:\d+\)", message)
    assert forward_calls == []


def test_gradient_write_after_an_earlier_read_is_refused_before_the_forward_pass(llama, forward_calls):
    def body(m):
        early, late = m.model.layers[0].output, m.model.layers[3].output
        with m.lm_head.output.sum().backward():
            early.grad.save()
            late.grad = torch.zeros(1, 6, 64)
    error = _raised(OutOfOrderError, llama, body)
    _named(error, "model.layers.3", "model.layers.3.output.grad is used after model.layers.0.output.grad")
    assert forward_calls == []


def test_gradients_in_the_order_they_arrive_still_run(llama, forward_calls):
    with llama.trace(PROMPT):
        early, late = llama.model.layers[0].output, llama.model.layers[2].output
        with llama.lm_head.output.sum().backward():
            late.grad = late.grad * 2
            g = early.grad.save()
    assert g.value.shape == (1, 6, 64) and g.value.abs().sum() > 0
    assert forward_calls == [1]           # the counter counts: the refusals above ran nothing


def test_gradient_write_of_the_wrong_shape(llama):
    def body(m):
        h = m.model.layers[1].output
        with m.lm_head.output.sum().backward():
            h.grad = torch.zeros(3)
    error = _raised(ShapeMismatchError, llama, body)
    _named(error, "model.layers.1", "(1, 6, 64)", "(3,)", "Write a tensor of shape (1, 6, 64) to .grad")


def test_gradient_of_a_value_not_computed_in_the_forward_pass(llama, forward_calls):
    graph = Graph(runs=[Run(0, "trace", [Invoke(0, (PROMPT,))])],
                  nodes=[Node(0, "torch.zeros", (3,), line="u.py:1"),
                         Node(1, "module.output", (), module="lm_head", line="u.py:2"),
                         Node(2, "Tensor.sum", (Ref(1),), module=None, line="u.py:3"),
                         Node(3, "backward", (Ref(2),), line="u.py:4"),
                         Node(4, "grad", (Ref(0),), backward=3, line="u.py:5")])
    with pytest.raises(ExecutionError) as info:
        execute(graph, llama._target, echo_logs=False)
    assert str(info.value).startswith("u.py:5: .grad of a value that is not computed in the forward pass")
    assert "Nothing was run" in info.value.fix and forward_calls == []


def test_gradients_with_several_invokes_name_the_fix(llama):
    with pytest.raises(ExecutionError) as info:
        with llama.trace() as tracer:
            with tracer.invoke(PROMPT):
                h = llama.model.layers[1].output
                with llama.lm_head.output.sum().backward():
                    h.grad.save()
            with tracer.invoke("hello"):
                llama.lm_head.output.save()
    assert "not supported yet" in str(info.value) and "Use one invoke per trace" in info.value.fix


# ---------------------------------------------------------------------------------- order (planner)

def test_module_call_that_never_happens_names_the_calls_it_has(llama):
    graph = _graph(llama, lambda m: m.model.norm.output.save())
    graph.nodes[0].call = 5
    with pytest.raises(OutOfOrderError) as info:
        execute(graph, llama._target, echo_logs=False)
    assert info.value.module == "model.norm" and "call index below 1" in info.value.fix


def test_forward_read_out_of_order_names_module_and_fix(llama, forward_calls):
    def body(m):
        m.model.layers[3].output.save()
        m.model.layers[1].mlp.output.save()
    error = _raised(OutOfOrderError, llama, body)
    _named(error, "model.layers.1.mlp", "model.layers.1.mlp.output is used after model.layers.3.output",
           "Nothing was run")
    assert forward_calls == []


def test_module_read_after_an_open_generation_loop(llama):
    with pytest.raises(OutOfOrderError) as info:
        with llama.generate("hello", max_new_tokens=2) as tracer:
            for _ in tracer.all():
                llama.lm_head.output.save()
            llama.lm_head.output.save()
    assert info.value.module == "lm_head" and info.value.fix == "Move it inside the loop."
    assert LINE.match(str(info.value))


# ---------------------------------------------------------------------------------- inputs (batching)

def test_trace_without_input_is_an_input_error_with_the_with_line(llama):
    with pytest.raises(InputError) as info:
        with llama.trace():
            llama.lm_head.output.save()
    assert LINE.match(str(info.value)) and "Pass a prompt to .trace(...)" in info.value.fix


def test_empty_prompt_is_an_input_error(llama):
    with pytest.raises(InputError) as info:
        with llama.trace(""):
            llama.lm_head.output.save()
    assert "empty prompt" in str(info.value) and info.value.fix


def test_wrong_input_type_is_an_input_error(llama):
    with pytest.raises(InputError) as info:
        with llama.trace(3.5):
            llama.lm_head.output.save()
    assert "float" in str(info.value) and "Pass a string" in info.value.fix


# ---------------------------------------------------------------------------------- merged jobs

def test_a_job_that_cannot_share_a_forward_pass_is_an_execution_error(llama):
    def body(m):
        h = m.model.layers[1].output
        with m.lm_head.output.sum().backward():
            h.grad.save()
    outcome, = execute_batch([_graph(llama, body)], llama._target)
    assert type(outcome.error) is ExecutionError and "gradients run alone" in str(outcome.error)
    assert outcome.error.fix


def test_hand_built_graph_with_a_missing_parameter(llama):
    graph = Graph(runs=[Run(0, "trace", [Invoke(0, (PROMPT,))])],
                  nodes=[Node(0, "module.param", ("lm_head", "bias"), line="u.py:1"),
                         Node(1, "save", (Ref(0),), line="u.py:2")])
    with pytest.raises(ExecutionError) as info:
        execute(graph, llama._target, echo_logs=False)
    assert str(info.value).startswith("u.py:1: lm_head has no parameter or buffer 'bias'")
    assert "named_parameters" in info.value.fix
