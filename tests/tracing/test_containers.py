"""Saved containers (`list().save()`, `dict().save()`, `nj.save(list())`) and the per-step collection
of repeated generation blocks, against plain PyTorch hooks and a hand-written greedy loop."""

from __future__ import annotations

import pytest
import torch

import nnsight_jupyter as nj

PROMPT = "the cat sat on the mat"
OTHER = "when mary and john went to the store"


def _layer_outputs(raw, tokenizer, prompt: str) -> list[torch.Tensor]:
    """Plain PyTorch: every decoder layer's output, by forward hooks."""
    seen: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out))
             for layer in raw.model.layers]
    try:
        with torch.no_grad():
            raw(**tokenizer(prompt, return_tensors="pt"))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _logits(raw, tokenizer, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return raw(**tokenizer(prompt, return_tensors="pt")).logits


def _greedy(raw, tokenizer, prompt: str, steps: int, eos: int | None = None) -> list[torch.Tensor]:
    """Plain PyTorch greedy decoding: the last position's logits of each step that runs."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits = raw(input_ids=ids).logits[:, -1]
            out.append(logits)
            token = logits.argmax(-1, keepdim=True)
            ids = torch.cat([ids, token], dim=1)
            if eos is not None and token.item() == eos:
                break
    return out


def _close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- traces, invokes, sessions


def test_list_save_holds_every_appended_value(llama, raw_llama, tokenizer):
    with llama.trace(PROMPT):
        results = list().save()
        for layer in llama.model.layers:
            results.append(layer.output[:, -1])          # not saved themselves
    expected = _layer_outputs(raw_llama, tokenizer, PROMPT)
    assert type(results) is list and len(results) == len(expected)
    for got, want in zip(results, expected):
        assert type(got) is torch.Tensor
        _close(got, want[:, -1])


def test_dict_save_nj_save_and_nested_values(llama, raw_llama, tokenizer):
    with llama.trace(PROMPT):
        by_name = dict().save()
        pairs = nj.save(list())
        by_name["first"] = llama.model.layers[0].output
        pairs.append((llama.model.layers[1].output[:, 0], {"mlp": llama.model.layers[2].mlp.output, "n": 3}))
        by_name["last"] = llama.model.layers[3].output[:, -1]
        pairs.extend([llama.lm_head.output.softmax(-1)])
    layers = _layer_outputs(raw_llama, tokenizer, PROMPT)
    _close(by_name["first"], layers[0])
    _close(by_name["last"], layers[3][:, -1])
    (first, nested), probs = pairs
    _close(first, layers[1][:, 0])
    assert set(nested) == {"mlp", "n"} and nested["n"] == 3
    assert nested["mlp"].shape == layers[2].shape
    _close(probs, _logits(raw_llama, tokenizer, PROMPT).softmax(-1))


def test_container_saved_after_filling_keeps_its_identity(llama, raw_llama, tokenizer):
    with llama.trace(PROMPT):
        outs = [llama.model.layers[i].output[:, -1] for i in range(2)]
        nj.save(outs)                                     # the same list, not rebound
    layers = _layer_outputs(raw_llama, tokenizer, PROMPT)
    _close(outs[0], layers[0][:, -1])
    _close(outs[1], layers[1][:, -1])


def test_appends_inside_invokes_see_their_own_rows(llama, raw_llama, tokenizer):
    with llama.trace() as tracer:
        results = list().save()
        for prompt in (PROMPT, OTHER):
            with tracer.invoke(prompt):
                results.append(llama.lm_head.output[:, -1])
    _close(results[0], _logits(raw_llama, tokenizer, PROMPT)[:, -1])
    _close(results[1], _logits(raw_llama, tokenizer, OTHER)[:, -1])


def test_session_list_collects_from_every_trace(llama, raw_llama, tokenizer):
    with llama.session():
        results = list().save()
        for prompt in (PROMPT, OTHER, PROMPT):
            with llama.trace(prompt):
                results.append(llama.lm_head.output[:, -1].log_softmax(-1).max(-1).values)
    for got, prompt in zip(results, (PROMPT, OTHER, PROMPT)):
        _close(got, _logits(raw_llama, tokenizer, prompt)[:, -1].log_softmax(-1).max(-1).values)


def test_appended_value_written_later_at_the_same_module_shows_the_write(llama):
    # nnsight appends the tensor itself: a later in-place write into it shows (0.8.1, checked).
    with llama.trace(PROMPT):
        h = llama.model.layers[0].output
        results = list().save()
        results.append(h[0, 0, :4])
        h[:] = 0
    assert torch.equal(results[0], torch.zeros(4))


# ----------------------------------------------------------------------------- repeated generation blocks


@pytest.fixture
def free_llama(raw_llama, tokenizer):
    raw_llama.generation_config.eos_token_id = None
    return nj.LanguageModel(raw_llama, tokenizer=tokenizer)


def test_all_collects_one_entry_per_step(free_llama, raw_llama, tokenizer):
    with free_llama.generate(PROMPT, max_new_tokens=4) as tracer:
        results = list().save()
        by_step = dict().save()
        pairs = nj.save(list())
        for step in tracer.all():
            logits = free_llama.lm_head.output[:, -1]
            results.append(logits)
            by_step[step] = logits.argmax(-1)
            pairs.append((step, logits.max(-1).values))
            last = logits.save()                          # a plain save: the last step's (as nnsight)
    expected = _greedy(raw_llama, tokenizer, PROMPT, 4)
    assert len(results) == 4
    for got, want in zip(results, expected):
        _close(got, want)
    assert list(by_step) == [0, 1, 2, 3]
    assert [int(v) for v in by_step.values()] == [int(w.argmax(-1)) for w in expected]
    assert [s for s, _ in pairs] == [0, 1, 2, 3]
    _close(pairs[2][1], expected[2].max(-1).values)
    _close(last.value, expected[-1])


def test_open_iter_collects_from_its_first_step(free_llama, raw_llama, tokenizer):
    with free_llama.generate(PROMPT, max_new_tokens=4) as tracer:
        results = list().save()
        for _ in tracer.iter[1:]:
            results.append(free_llama.lm_head.output[:, -1])
    expected = _greedy(raw_llama, tokenizer, PROMPT, 4)
    assert len(results) == 3
    for got, want in zip(results, expected[1:]):
        _close(got, want)


def test_early_stop_gives_as_many_entries_as_steps_ran(raw_llama, tokenizer):
    raw_llama.generation_config.eos_token_id = None
    eos = int(_greedy(raw_llama, tokenizer, PROMPT, 2)[1].argmax(-1))    # the token step 1 makes
    raw_llama.generation_config.eos_token_id = eos
    model = nj.LanguageModel(raw_llama, tokenizer=tokenizer)
    with model.generate(PROMPT, max_new_tokens=6) as tracer:
        results = list().save()
        for _ in tracer.all():
            results.append(model.lm_head.output[:, -1])
        never = list().save()
        for _ in tracer.iter[4:]:                          # a repeated block that never runs
            never.append(model.lm_head.output[:, 0])
            late = model.lm_head.output.save()
        for _ in tracer.iter[4:6]:                         # steps that never run: left out
            results.append(model.lm_head.output[:, 0])
    expected = _greedy(raw_llama, tokenizer, PROMPT, 6, eos=eos)
    assert len(expected) == 2 and len(results) == 2 and never == []
    with pytest.raises(nj.ValueNotReadyError, match="step 4"):
        late.value                                         # reported, not silently missing
    for got, want in zip(results, expected):
        _close(got, want)


def test_plain_list_of_values_saved_in_a_repeated_block(free_llama, raw_llama, tokenizer):
    hs = []
    with free_llama.generate(PROMPT, max_new_tokens=3) as tracer:
        for _ in tracer.all():
            hs.append(free_llama.lm_head.output[:, -1].save())
    expected = _greedy(raw_llama, tokenizer, PROMPT, 3)
    assert len(hs) == 3
    for got, want in zip(hs, expected):
        _close(got, want)


# ----------------------------------------------------------------------------- wrong use


def test_save_is_on_lists_and_dicts_only_inside_a_trace(llama):
    assert not hasattr([], "save") and not hasattr({}, "save")
    with llama.trace(PROMPT):
        assert hasattr([], "save") and hasattr({}, "save")
    assert not hasattr([], "save")
    with pytest.raises(nj.TracingError, match="outside a trace"):
        nj.save(list())


def test_saving_a_set_or_other_object_is_refused(llama):
    with pytest.raises(nj.TracingError, match="set"):
        with llama.trace(PROMPT):
            nj.save({llama.lm_head.output})
    with llama.trace(PROMPT):
        assert nj.save(3) == 3                           # plain values pass through
        assert not hasattr(set(), "save") and not hasattr((1,), "save")
        pair = nj.save((llama.model.layers[0].output, llama.lm_head.output))
    assert pair[1].value.shape == (1, 6, 200)            # a tuple's traced values are saved one by one


def test_cache_entries_in_a_repeated_block_are_not_taken_per_step(free_llama):
    # Only saves and saved containers collect per step; a cache entry keeps its own calls (one per step, as
    # nnsight's cache does during generation: tracing/cache.py), not one list of them per step.
    with free_llama.generate(PROMPT, max_new_tokens=3) as tracer:
        for _ in tracer.all():
            cache = tracer.cache(modules=[free_llama.model.layers[0]])
    calls = cache["model.layers.0"].output
    assert len(calls) == 3 and [c.shape[1] for c in calls[1:]] == [1, 1]
    assert all(c.shape[0] == 1 and c.shape[2] == 64 for c in calls)
