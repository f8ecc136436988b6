"""The runner protocol (`graph.runner`): the local runner and its observer, and tracing through any runner.

A trace ends by handing its graph to the tracer's runner (`tracer.runner`, a `graph.runner.Runner`)
with the tracer's observer (`tracer.observer`). The local runner reports ``status("running")``,
each generation step, each ``print()`` line as it runs, and ``done`` / ``error`` last.
"""

from __future__ import annotations

import pytest
import torch

import nnsight_jupyter as nj
from nnsight_jupyter.execution import LocalRunner
from nnsight_jupyter.graph.result import Result
from nnsight_jupyter.graph.runner import TERMINAL, Observer, Runner

PROMPT = "hello world"


class Events:
    """An observer that writes down everything it hears, in order."""

    def __init__(self):
        self.events: list[tuple] = []

    def status(self, state, **detail):
        self.events.append(("status", state, type(detail.get("error")).__name__ if "error" in detail else None))

    def progress(self, step, steps):
        self.events.append(("progress", step, steps))

    def log(self, line, text):
        self.events.append(("log", line.split(":")[0], text))


class Recorder:
    """A runner that keeps every graph and runs it with another runner (what a test or a dry run plugs in)."""

    def __init__(self, then: Runner):
        self.then = then
        self.graphs = []

    def run(self, graph, observer=None) -> Result:
        self.graphs.append(graph)
        return self.then.run(graph, observer)


def test_runners_and_observers_satisfy_the_protocols(llama):
    assert isinstance(llama._runner(None), LocalRunner) and isinstance(llama._runner(None), Runner)
    assert isinstance(Events(), Observer)


def test_local_runner_reports_status_and_log_lines_in_order(llama, capsys):
    events = Events()
    with llama.trace(PROMPT) as tracer:
        tracer.observer = events
        h = llama.model.layers[0].output
        print("first", h.shape)
        out = llama.lm_head.output.save()
        print("second", out.shape)
    assert events.events == [("status", "running", None),
                             ("log", "test_runner.py", "first torch.Size([1, 2, 64])"),
                             ("log", "test_runner.py", "second torch.Size([1, 2, 200])"),
                             ("status", "done", None)]
    assert capsys.readouterr().out == ""          # the observer got the lines instead of stdout
    assert out.shape == (1, 2, 200)


def test_without_an_observer_lines_are_printed(llama, capsys):
    with llama.trace(PROMPT):
        print("shape", llama.model.layers[0].output.shape)
    assert capsys.readouterr().out == "shape torch.Size([1, 2, 64])\n"


def test_local_runner_reports_generation_steps(llama):
    events = Events()
    with llama.generate(PROMPT, max_new_tokens=3) as tracer:
        tracer.observer = events
        for _ in tracer.all():
            llama.lm_head.output.save()
        ids = tracer.result.save()
    assert [e for e in events.events if e[0] == "progress"] == [("progress", 1, 3), ("progress", 2, 3),
                                                                 ("progress", 3, 3)]
    assert events.events[0] == ("status", "running", None) and events.events[-1] == ("status", "done", None)
    assert ids.shape == (1, 5)


def test_a_failing_run_ends_with_an_error_status(llama):
    events = Events()
    with pytest.raises(nj.NNsightError) as info:
        with llama.trace(PROMPT) as tracer:
            tracer.observer = events
            llama.model.layers[0].output[:] = torch.zeros(3, 3)     # fails as the model runs
    assert events.events[0] == ("status", "running", None)
    assert events.events[-1] == ("status", "error", type(info.value).__name__)
    assert [e[1] for e in events.events if e[0] == "status" and e[1] in TERMINAL] == ["error"]


def test_a_partial_observer_is_enough(llama):
    class OnlyLogs:
        def __init__(self):
            self.lines = []

        def log(self, line, text):
            self.lines.append(text)

    only = OnlyLogs()
    with llama.trace(PROMPT) as tracer:
        tracer.observer = only
        print("logits", llama.lm_head.output.shape)
    assert only.lines == ["logits torch.Size([1, 2, 200])"]


def test_any_runner_can_run_a_trace(llama):
    recorder = Recorder(llama._runner(None))
    with llama.trace(PROMPT) as tracer:
        tracer.runner = recorder
        recorded = llama.lm_head.output.save()
    with llama.trace(PROMPT):
        direct = llama.lm_head.output.save()
    assert torch.equal(recorded.value, direct.value)
    (graph,) = recorder.graphs
    assert [run.kind for run in graph.runs] == ["trace"]
    assert "module.output" in {node.op for node in graph.nodes}



def test_traces_inside_a_session_run_with_the_sessions_runner(llama):
    recorder = Recorder(llama._runner(None))
    with llama.trace(PROMPT):
        direct = llama.lm_head.output.save()
    with llama.session() as session:
        session.runner = recorder
        with llama.trace(PROMPT):
            clean = llama.model.layers[1].output
        with llama.trace(PROMPT):
            llama.model.layers[1].output = clean
            patched = llama.lm_head.output.save()
    (graph,) = recorder.graphs                    # one request: both traces
    assert [run.kind for run in graph.runs] == ["trace", "trace"]
    assert torch.equal(patched.value, direct.value)


def test_a_trace_inside_a_session_cannot_choose_its_own_runner(llama):
    with llama.session() as session:
        session.runner = Recorder(llama._runner(None))
        with llama.trace(PROMPT):                     # no remote=: the session's runner
            llama.lm_head.output.save()
    with pytest.raises(nj.TracingError, match="runs where the session runs"):
        with llama.session() as session:
            session.runner = Recorder(llama._runner(None))
            with llama.trace(PROMPT, remote=False):   # this model's local runner, not the session's
                pass


def test_remote_true_without_a_connection_says_to_connect(llama):
    with pytest.raises(nj.TracingError, match=r"remote=True .* not connected .*connect\(\) first"):
        llama.trace(PROMPT, remote=True)
