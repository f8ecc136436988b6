"""Co-tenancy: several jobs' graphs in one forward pass equal their solo runs; one failure stays local."""

import torch

from nnsight_jupyter.execution import execute
from nnsight_jupyter.execution.merge import execute_batch, why_not_mergeable
from nnsight_jupyter.graph.result import Result


class _Recorder:
    """A runner (`graph.runner.Runner`) that keeps the graph instead of running it, as a model host's client would."""

    def run(self, graph, observer=None):
        self.graph = graph
        return Result()


def _graph(model, body):
    """Trace `body(model, tracer)` without running it; return (graph, saved proxies)."""
    recorder = _Recorder()
    with model.trace() as tracer:
        tracer.runner = recorder
        saved = body(model, tracer)
    return recorder.graph, saved


def _solo(model, graph):
    return execute(graph, model._target, echo_logs=False)


def test_merged_jobs_equal_solo_runs(llama):
    def job_a(m, tr):
        with tr.invoke("the cat sat on the mat"):
            return [m.model.layers[1].output.save(), m.lm_head.output.save()]

    def job_b(m, tr):
        with tr.invoke("hello"):
            m.model.layers[0].output[:, -1] = 0
            out = m.lm_head.output.save()
        with tr.invoke():
            everything = m.lm_head.output.save()
        return [out, everything]

    def job_c(m, tr):
        with tr.invoke(["when mary and john went to the store", "the cat"]):
            return [m.model.layers[2].self_attn.heads.save()]

    graphs = [_graph(llama, job)[0] for job in (job_a, job_b, job_c)]
    outcomes = execute_batch(graphs, llama._target)
    assert all(o.error is None for o in outcomes)
    for graph, outcome in zip(graphs, outcomes):
        solo = _solo(llama, graph)
        assert solo.saved.keys() == outcome.result.saved.keys()
        for key in solo.saved:
            torch.testing.assert_close(outcome.result.saved[key], solo.saved[key], atol=1e-5, rtol=1e-4)
    assert [o.rows for o in outcomes] == [(0, 1), (1, 2), (2, 4)]
    # The no-input invoke of job b saw job b's row only.
    b_everything = outcomes[1].result.saved[max(outcomes[1].result.saved)]
    assert b_everything.shape == (1, 1, 200)


def test_failing_job_fails_alone(llama):
    def good(m, tr):
        with tr.invoke("the cat sat on the mat"):
            return [m.lm_head.output.save()]

    def bad_runtime(m, tr):
        with tr.invoke("hello world"):
            m.model.layers[1].output[:, 50] = 0          # IndexError while the model runs
            return [m.lm_head.output.save()]

    def bad_order(m, tr):
        with tr.invoke("hello world"):
            m.model.layers[3].output.save()
            return [m.model.layers[1].output.save()]

    graphs = [_graph(llama, job)[0] for job in (good, bad_runtime, bad_order, good)]
    outcomes = execute_batch(graphs, llama._target)
    assert outcomes[0].error is None and outcomes[3].error is None
    assert "IndexError" in str(outcomes[1].error)
    assert type(outcomes[2].error).__name__ == "OutOfOrderError"
    solo = _solo(llama, graphs[0])
    for outcome in (outcomes[0], outcomes[3]):
        for key, value in solo.saved.items():
            torch.testing.assert_close(outcome.result.saved[key], value, atol=1e-5, rtol=1e-4)


def test_incompatible_graphs_are_named(llama):
    def grads(m, tr):
        with tr.invoke("hello"):
            h = m.model.layers[0].output
            with m.lm_head.output.sum().backward():
                return [h.grad.save()]

    graph, _ = _graph(llama, grads)
    assert why_not_mergeable(graph) == "gradients run alone"
