"""The executor's side of saved containers and repeated blocks: a `save` / `collect` node of a
repeated block keeps one value per generation step that ran; a `collect` node is taken where its
value is computed (unordered), not where the container was filled."""

from __future__ import annotations

import torch

import nnsight_jupyter as nj
from nnsight_jupyter.execution.executor import execute
from nnsight_jupyter.graph.result import Result


class _Recorder:
    """A runner that keeps the graph instead of running it."""

    def run(self, graph, observer=None):
        self.graph = graph
        return Result()


def test_repeated_save_is_a_list_of_every_step(raw_llama, tokenizer):
    raw_llama.generation_config.eos_token_id = None
    model = nj.LanguageModel(raw_llama, tokenizer=tokenizer)
    recorder = _Recorder()
    with model.generate("hello world", max_new_tokens=3) as tracer:
        tracer.runner = recorder
        for _ in tracer.all():
            model.lm_head.output[:, -1].save()
    graph = recorder.graph
    result = execute(graph, model._target, echo_logs=False)
    (save,) = [node for node in graph.nodes if node.op == "save"]
    assert save.repeat and isinstance(result.saved[save.id], list) and len(result.saved[save.id]) == 3
    ids = tokenizer("hello world", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for step, logits in enumerate(result.saved[save.id]):
            expected = raw_llama(input_ids=ids).logits[:, -1]
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-4)
            ids = torch.cat([ids, expected.argmax(-1, keepdim=True)], dim=1)


def test_collect_is_taken_where_the_value_is_computed(llama, raw_llama, tokenizer):
    with llama.trace("the cat sat on the mat"):
        h = llama.model.layers[0].output
        results = list().save()
        results.append(h)
        llama.model.layers[1].output.sum()
        h[:] = 0                          # runs at layers.1 (the invoke's cursor): after the collect
    captured = {}
    hook = raw_llama.model.layers[0].register_forward_hook(lambda m, a, out: captured.setdefault("h", out))
    with torch.no_grad():
        raw_llama(**tokenizer("the cat sat on the mat", return_tensors="pt"))
    hook.remove()
    torch.testing.assert_close(results[0], captured["h"], atol=1e-5, rtol=1e-4)
    assert results[0].abs().sum() > 0
