"""Random ops draw from a generator the job owns (issue 8, item 8): seeded per trace (`seed=`),
equal to plain PyTorch with a generator of that seed, reproducible, never touching the process-wide
generator, and independent between jobs that share a forward pass."""

import pytest
import torch

from nnsight_jupyter.execution.merge import execute_batch
from nnsight_jupyter.graph import sampling

PROMPT = "the cat sat on the mat"


def _noise(model, seed, prompt=PROMPT):
    with model.trace(prompt, seed=seed):
        h = model.model.layers[1].output
        noise = torch.randn_like(h).save()
        dropped = torch.nn.functional.dropout(h, p=0.5).save()
        picks = torch.multinomial(model.lm_head.output[0].softmax(-1), 2).save()
        filled = h.clone().normal_(0.0, 2.0).save()
        plain = h.save()
    return noise.value, dropped.value, picks.value, filled.value, plain.value


def test_seeded_random_ops_equal_plain_pytorch_with_that_seed(llama):
    noise, dropped, picks, filled, h = _noise(llama, seed=7)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(noise, torch.randn(h.shape, generator=g))
    keep = torch.zeros(h.shape).bernoulli_(0.5, generator=g)
    assert torch.equal(dropped, h * (keep / 0.5))
    assert (dropped == 0).any() and torch.allclose(dropped[dropped != 0], 2 * h[dropped != 0])
    assert picks.shape == (h.shape[1], 2)
    again = _noise(llama, seed=7)
    assert all(torch.equal(a, b) for a, b in zip((noise, dropped, picks, filled), again))
    other = _noise(llama, seed=8)
    assert not torch.equal(noise, other[0])


def test_the_process_wide_generator_is_neither_used_nor_changed(llama):
    state = torch.random.get_rng_state()
    _noise(llama, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_without_a_seed_the_trace_draws_one_from_the_notebook_generator(llama):
    torch.manual_seed(123)
    first = _noise(llama, seed=None)[0]
    torch.manual_seed(123)
    second = _noise(llama, seed=None)[0]
    assert torch.equal(first, second)
    assert not torch.equal(first, _noise(llama, seed=None)[0])


def test_two_jobs_in_one_forward_pass_draw_from_their_own_generators(llama, graph_of_trace):
    alone = [execute_batch([graph_of_trace(seed)], llama._target)[0] for seed in (1, 2)]
    merged = execute_batch([graph_of_trace(1), graph_of_trace(2)], llama._target)
    for solo, shared in zip(alone, merged):
        assert solo.error is None and shared.error is None
        assert solo.result.saved.keys() == shared.result.saved.keys()
        for key in solo.result.saved:
            assert torch.equal(solo.result.saved[key], shared.result.saved[key])
    assert merged[0].rows != merged[1].rows                  # they did share the batch
    first, second = (next(iter(o.result.saved.values())) for o in merged)
    assert not torch.equal(first, second)


@pytest.fixture
def graph_of_trace(llama):
    """graph_of_trace(seed) -> the graph of a trace with random ops (built, not run)."""
    def build(seed):
        with llama.trace(PROMPT, seed=seed) as tracer:
            tracer.runner = _Keep()
            torch.randn_like(llama.model.layers[1].output[:, :, 0]).save()
            torch.nn.functional.dropout(llama.model.layers[2].output).save()
        return tracer.runner.graph
    return build


class _Keep:
    """A runner that keeps the graph it is given (and runs nothing)."""

    def run(self, graph, observer=None):
        from nnsight_jupyter.graph.result import Result

        self.graph = graph
        return Result()


def test_seeded_functional_samplers_follow_torch_semantics():
    x = torch.randn(2, 3, 4, 5)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert sampling.dropout(g(), x, 0.5, training=False) is x
    assert torch.equal(sampling.dropout(g(), x, 1.0), torch.zeros_like(x))
    out = sampling.FUNCTIONAL["dropout2d"](g(), x, 0.5)
    zeroed = (out == 0).all(-1).all(-1)
    assert torch.equal(out[~zeroed], 2 * x[~zeroed])                 # whole channels are dropped or scaled
    soft = sampling.gumbel_softmax(g(), x, tau=0.5)
    assert torch.allclose(soft.sum(-1), torch.ones(2, 3, 4))
    hard = sampling.gumbel_softmax(g(), x, hard=True)
    assert torch.equal(hard.sum(-1), torch.ones(2, 3, 4)) and set(hard.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="between 0 and 1"):
        sampling.dropout(g(), x, 1.5)
