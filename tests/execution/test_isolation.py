"""Co-tenants see only their own rows: what a job gets never depends on who shares its forward pass.

Each test is something a co-tenant might try inside a merged batch (`execute_batch`, the path the
model host takes): read the KV cache, write the rotary tables, read the attention mask, replace a
module's inputs, pass keyword arguments, send an empty prompt. Then the invariance test: the same
job merged with different neighbours gets identical shapes and values as alone.
"""

import pytest
import torch

from nnsight_jupyter import LanguageModel
from nnsight_jupyter.errors import InputError, SharedValueError
from nnsight_jupyter.execution import execute
from nnsight_jupyter.execution.batching import Span, view
from nnsight_jupyter.execution.layout import record_language_layouts
from nnsight_jupyter.execution.merge import execute_batch, merge_key, why_not_mergeable
from nnsight_jupyter.graph.order import ExecutionOrder
from nnsight_jupyter.graph.result import Result
from nnsight_jupyter.models import word_tokenizer


class _Recorder:
    """A runner (`graph.runner.Runner`) that keeps the graph instead of running it, as a model host's client would."""

    def run(self, graph, observer=None):
        self.graph = graph
        return Result()


def _graph(model, body, *args, **kwargs):
    """Trace `body(model, tracer)` without running it (`args`/`kwargs`: the trace's own input)."""
    recorder = _Recorder()
    with model.trace(*args, **kwargs) as tracer:
        tracer.runner = recorder
        body(model, tracer)
    return recorder.graph


def _job(prompt, body=None, **kwargs):
    """A job of one invoke of `prompt` saving the last layer's output and the logits (+ `body`)."""
    def trace(m, tr):
        with tr.invoke(prompt, **kwargs):
            if body is not None:
                body(m)
            m.model.layers[1].output.save()
            m.lm_head.output.save()
    return trace


def _saved(outcome):
    return [outcome.result.saved[k] for k in sorted(outcome.result.saved)]


def _solo(model, graph):
    result = execute(graph, model._target, echo_logs=False)
    return [result.saved[k] for k in sorted(result.saved)]


def _assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if isinstance(b, torch.Tensor):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        else:
            assert a == b


def _layouts(model):
    return model._target.layouts_for(model._target.build_batch(
        _graph(model, _job("hello")).runs[0], [(0, ("hello",), {}, False)]))


NEIGHBOUR = _job("the cat sat on the mat and the dog ran quickly to the big red store")


def test_kv_cache_object_is_never_shared(llama):
    def spy(m, tr):
        with tr.invoke("hi"):
            m.output.cache.layers[0].values.save()

    graph = _graph(llama, spy)
    reason = why_not_mergeable(graph, _layouts(llama))
    assert "DynamicCache" in reason and "runs alone" in reason
    neighbour = _graph(llama, NEIGHBOUR)
    outcomes = execute_batch([graph, neighbour], llama._target)
    assert all(o.error is None for o in outcomes)
    assert outcomes[0].part != outcomes[1].part                # separate forward passes
    values = _saved(outcomes[0])[0]
    assert values.shape[0] == 1 and values.shape[2] == 1      # its own row and its one token only
    _assert_same(_saved(outcomes[0]), _solo(llama, graph))
    _assert_same(_saved(outcomes[1]), _solo(llama, neighbour))


def test_logits_through_model_output_still_merge(llama):
    def logits(m, tr):
        with tr.invoke("the cat"):
            m.output.logits.save()

    graph = _graph(llama, logits)
    assert why_not_mergeable(graph, _layouts(llama)) is None
    outcomes = execute_batch([graph, _graph(llama, NEIGHBOUR)], llama._target)
    assert outcomes[0].part == outcomes[1].part
    _assert_same(_saved(outcomes[0]), _solo(llama, graph))


def test_rotary_in_place_write_cannot_change_a_neighbour(llama):
    def vandal(m):
        m.model.rotary_emb.output[0][:] = 0                  # cos, in place

    graph = _graph(llama, _job("hello world", vandal))
    assert "padded" in why_not_mergeable(graph, _layouts(llama))
    neighbour = _graph(llama, NEIGHBOUR)
    outcomes = execute_batch([graph, neighbour, _graph(llama, _job("the cat"))], llama._target)
    assert outcomes[0].part not in (outcomes[1].part, outcomes[2].part)
    assert outcomes[1].part == outcomes[2].part              # the others still share a pass
    _assert_same(_saved(outcomes[1]), _solo(llama, neighbour))
    _assert_same(_saved(outcomes[0]), _solo(llama, graph))   # the write did reach its own logits


def test_attention_mask_does_not_tell_a_neighbours_length(llama):
    def peek(m, tr):
        with tr.invoke("the cat sat"):
            m.model.layers[0].self_attn.inputs[1]["attention_mask"].save()
            m.lm_head.output.save()

    graph = _graph(llama, peek)
    assert "padded" in why_not_mergeable(graph, _layouts(llama))
    seen = []
    for neighbours in ([], [NEIGHBOUR], [_job("a"), NEIGHBOUR]):
        outcomes = execute_batch([graph, *[_graph(llama, n) for n in neighbours]], llama._target)
        assert outcomes[0].error is None and outcomes[0].rows == (0, 1)
        seen.append(_saved(outcomes[0]))
    for other in seen[1:]:
        _assert_same(other, seen[0])


def test_set_inputs_changes_only_the_jobs_rows(llama):
    def replace(m):
        m.model.layers[0].mlp.inputs = ((m.model.layers[0].mlp.input * 0,), {})

    graph = _graph(llama, _job("hello world", replace))
    neighbour = _graph(llama, NEIGHBOUR)
    outcomes = execute_batch([graph, neighbour], llama._target)
    assert outcomes[0].part == outcomes[1].part               # merged: tensors are per row
    _assert_same(_saved(outcomes[0]), _solo(llama, graph))
    _assert_same(_saved(outcomes[1]), _solo(llama, neighbour))


def test_set_inputs_with_a_new_keyword_is_refused_for_part_of_a_batch(llama):
    def add_key(m):
        m.model.layers[0].mlp.inputs = ((m.model.layers[0].mlp.input,), {"scale": 2})

    graph = _graph(llama, _job("hello world", add_key))
    neighbour = _graph(llama, NEIGHBOUR)
    outcomes = execute_batch([graph, neighbour], llama._target)
    assert isinstance(outcomes[0].error, SharedValueError)
    assert "add or remove keys" in str(outcomes[0].error) and "model.layers.0.mlp.inputs" in str(outcomes[0].error)
    _assert_same(_saved(outcomes[1]), _solo(llama, neighbour))
    # The same inside one trace of two invokes: one invoke may not change what the other's rows get.
    with pytest.raises(SharedValueError, match="add or remove keys"):
        with llama.trace() as tracer:
            with tracer.invoke("hello"):
                llama.model.layers[0].mlp.inputs = ((llama.model.layers[0].mlp.input,), {"scale": 2})
            with tracer.invoke("the cat"):
                llama.lm_head.output.save()


def test_jobs_merge_only_when_their_invoke_keywords_agree(llama):
    keep = [_graph(llama, _job("the cat sat", logits_to_keep=1)), _graph(llama, _job("hello", logits_to_keep=1))]
    plain = _graph(llama, _job("the dog"))
    assert merge_key(keep[0]) == merge_key(keep[1]) != merge_key(plain)
    outcomes = execute_batch([keep[0], plain, keep[1]], llama._target)
    assert outcomes[0].part == outcomes[2].part != outcomes[1].part
    for graph, outcome in zip([keep[0], plain, keep[1]], outcomes):
        _assert_same(_saved(outcome), _solo(llama, graph))
    assert _saved(outcomes[0])[1].shape == (1, 1, 200)      # logits_to_keep=1 reached that job only
    assert _saved(outcomes[1])[1].shape == (1, 2, 200)


def test_tensor_keyword_arguments_run_alone(llama):
    graph = _graph(llama, _job("the cat", position_ids=torch.tensor([[0, 1]])))
    assert merge_key(graph) is None
    assert "position_ids" in why_not_mergeable(graph)


def test_invokes_of_one_trace_must_agree_on_keywords(llama):
    with pytest.raises(InputError, match="different keyword arguments"):
        with llama.trace() as tracer:
            with tracer.invoke("the cat", logits_to_keep=1):
                llama.lm_head.output.save()
            with tracer.invoke("hello"):
                llama.lm_head.output.save()


def test_empty_prompt_fails_its_job_alone(llama):
    good = [_graph(llama, _job("the cat")), _graph(llama, NEIGHBOUR)]
    outcomes = execute_batch([good[0], _graph(llama, _job("")), good[1]], llama._target)
    assert isinstance(outcomes[1].error, InputError) and "empty prompt" in str(outcomes[1].error)
    assert outcomes[0].part == outcomes[2].part
    for graph, outcome in zip(good, (outcomes[0], outcomes[2])):
        _assert_same(_saved(outcome), _solo(llama, graph))


@pytest.mark.parametrize("prompts", [["the cat sat on the mat"], ["hello", "the cat sat on the mat"],
                                     ["one two", "three four"]])
def test_a_job_gets_the_same_whoever_shares_its_forward_pass(llama, prompts):
    def job(m, tr):
        with tr.invoke(prompts):
            m.model.layers[0].input.save()
            m.model.layers[1].self_attn.output[0].save()
            m.model.layers[2].self_attn.heads.save()
            m.model.layers[3].mlp.output[:, -1] = 0
            m.lm_head.output.save()
        with tr.invoke():
            m.model.norm.output.save()

    graph = _graph(llama, job)
    alone = _solo(llama, graph)
    neighbourhoods = [
        [_job("a")],
        [NEIGHBOUR],
        [_job(["when mary and john went to the store", "the"]), _job("big red dog"), NEIGHBOUR],
    ]
    for neighbours in neighbourhoods:
        for position in (0, len(neighbours)):                  # first in the batch, or last
            others = [_graph(llama, n) for n in neighbours]
            graphs = others[:position] + [graph] + others[position:]
            outcomes = execute_batch(graphs, llama._target)
            assert len({o.part for o in outcomes}) == 1        # one forward pass for all
            _assert_same(_saved(outcomes[position]), alone)


def test_gpt2_job_is_the_same_merged_or_alone(gpt2):
    def job(m, tr):
        with tr.invoke(["hello", "the cat sat on the mat"]):
            m.transformer.h[0].attn.output[0].save()
            m.transformer.h[1].output.save()
            m.lm_head.output.save()

    graph = _graph(gpt2, job)
    outcomes = execute_batch([_graph(gpt2, _gpt2_job("the dog ran quickly to the big red store")), graph],
                             gpt2._target)
    assert outcomes[0].part == outcomes[1].part
    _assert_same(_saved(outcomes[1]), _solo(gpt2, graph))


def _gpt2_job(prompt):
    def trace(m, tr):
        with tr.invoke(prompt):
            m.lm_head.output.save()
    return trace


# ----------------------------------------------------------------------------- dims, heads == tokens


class _SplitHeads(torch.nn.Module):
    def forward(self, x):                      # [batch, seq, 16] -> [batch, 4 heads, seq, 4]
        return x.view(x.shape[0], x.shape[1], 4, 4).transpose(1, 2)


class _MergeHeads(torch.nn.Module):
    def forward(self, x, table):               # `table`: one tensor every row shares
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], 16) * table


class _HeadsLM(torch.nn.Module):
    """A toy causal LM whose `split` output is [batch, heads, seq, head_dim] with 4 heads."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(200, 16)
        self.split, self.merge = _SplitHeads(), _MergeHeads()
        self.head = torch.nn.Linear(16, 200)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return self.head(self.merge(self.split(self.embed(input_ids)), torch.ones(16)))


@pytest.fixture
def heads_lm():
    return LanguageModel(_HeadsLM(), tokenizer=word_tokenizer())


def test_dims_are_recorded_not_guessed():
    layouts = record_language_layouts(_HeadsLM())
    split = layouts[("split", 0, "output")]
    assert (split.batch, split.seq, split.alone) == (0, (2,), None)
    table = layouts[("merge", 0, "input")].child(0).child(1)
    assert (table.batch, table.seq, table.alone) == (None, (), None)      # shared by every row: copied
    order = ExecutionOrder([("split", 0, "output")], layouts={("split", 0, "output"): split})
    again = ExecutionOrder.from_json(order.to_json()).layouts[("split", 0, "output")]
    assert (again.batch, again.seq) == (0, (2,))
    assert ExecutionOrder.from_json({"events": [["a", 0, "output"]]}).layouts is None   # older descriptions


def test_layouts_travel_with_the_execution_order(llama):
    import json

    order = ExecutionOrder(llama._target.order.events, layouts=_layouts(llama))
    again = ExecutionOrder.from_json(json.loads(json.dumps(order.to_json())))
    assert repr(again.layouts) == repr(order.layouts)
    cache = again.layouts[("", 0, "output")].child("cache")
    assert "DynamicCache" in cache.alone


def test_heads_equal_tokens_slices_the_sequence_dim(heads_lm):
    # 4 heads and a batch padded to 4 tokens: [batch, 4, 4, 4]. Guessing dims from sizes would cut heads.
    def short(m, tr):
        with tr.invoke("the cat"):
            m.split.output.save()
            m.head.output.save()

    def four(m, tr):
        with tr.invoke("one two three four"):
            m.split.output.save()

    graph = _graph(heads_lm, short)
    outcomes = execute_batch([_graph(heads_lm, four), graph], heads_lm._target)
    assert outcomes[0].part == outcomes[1].part
    assert _saved(outcomes[1])[0].shape == (1, 4, 2, 4)
    _assert_same(_saved(outcomes[1]), _solo(heads_lm, graph))
    value = torch.arange(2 * 4 * 4 * 4.0).reshape(2, 4, 4, 4)
    split = record_language_layouts(_HeadsLM())[("split", 0, "output")]
    mine = view(value, Span(1, 2, pad=2), size=2, seq_len=4, layout=split)
    assert torch.equal(mine, value[1:2, :, 2:])


def test_a_shared_tensor_is_a_private_copy(heads_lm):
    def read_table(m, tr):
        with tr.invoke("the cat"):
            m.merge.inputs[0][1].save()
            m.head.output.save()

    def write_table(m, tr):
        with tr.invoke("the cat"):
            m.merge.inputs[0][1][:] = 0                      # in place, into what every row shares
            m.head.output.save()

    reader, writer = _graph(heads_lm, read_table), _graph(heads_lm, write_table)
    outcomes = execute_batch([writer, reader], heads_lm._target)
    assert outcomes[0].part == outcomes[1].part
    _assert_same(_saved(outcomes[1]), _solo(heads_lm, reader))       # the neighbour is untouched
    assert isinstance(outcomes[0].error, SharedValueError)           # and the writer is told, not ignored
    assert "private copy" in str(outcomes[0].error)
