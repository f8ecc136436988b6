"""Tracer contexts: nesting rules, remote, iteration bounds, sessions, generation edge cases."""

import pytest
import torch

import nnsight_jupyter as nj


def test_trace_inside_trace_is_refused(llama):
    with pytest.raises(nj.TracingError, match="session"):
        with llama.trace("hello"):
            with llama.trace("world"):
                pass


def test_remote_needs_a_host(llama):
    with pytest.raises(nj.TracingError, match="remote"):
        llama.trace("hello", remote=True)


def test_grad_outside_backward_block(llama):
    with pytest.raises(nj.TracingError, match="loss.backward"):
        with llama.trace("hello"):
            llama.model.layers[0].output.grad


def test_module_read_after_open_loop_is_refused(llama):
    with pytest.raises(nj.OutOfOrderError, match="inside the loop"):
        with llama.generate("hello", max_new_tokens=2) as tracer:
            for _ in tracer.all():
                llama.lm_head.output.save()
            llama.lm_head.output.save()


def test_code_after_all_loop_still_runs(llama):
    with llama.generate("hello world", max_new_tokens=3) as tracer:
        for _ in tracer.all():
            last = llama.lm_head.output[:, -1].argmax(-1).save()
        ids = tracer.result.save()
        doubled = (tracer.result * 2).save()
    assert torch.equal(doubled.value, ids.value * 2)
    assert ids.value[0, -1] == last.value[0]


def test_iter_saves_from_steps_that_never_ran_are_reported(raw_llama, tokenizer):
    raw_llama.generation_config.eos_token_id = None
    model = nj.LanguageModel(raw_llama, tokenizer=tokenizer)
    with model.generate("hello", max_new_tokens=2) as tracer:
        for step in tracer.iter[0:2]:
            model.lm_head.output.save()
        first = tracer.result.save()
    assert first.value.shape[1] == 3
    # Ask for a step past the end: its save is reported, not silently missing.
    with model.generate("hello", max_new_tokens=2) as tracer:
        for step in tracer.iter[3:4]:
            late = model.lm_head.output.save()
    with pytest.raises(nj.ValueNotReadyError, match="step 3"):
        late.value


def test_session_with_three_traces_and_cross_values(llama, encode, raw_llama):
    with llama.session():
        with llama.trace("hello world"):
            a = llama.model.layers[0].output[:, -1]
        with llama.trace("the cat sat on the mat"):
            b = llama.model.layers[0].output[:, -1]
        with llama.trace("when mary and john went to the store"):
            llama.model.layers[0].output[:, -1] = (a + b) / 2
            out = llama.lm_head.output.save()
    assert out.value.shape == (1, 8, 200)


def test_cache_attribute_access_and_inputs(llama):
    with llama.trace("hello world") as tracer:
        cache = tracer.cache(modules=[llama.model.layers[1], llama.model.layers[0]], include_inputs=True)
        later = llama.model.layers[0].output.save()   # a cache does not move the order cursor
    assert torch.equal(cache.model.layers[0].output, later.value)
    assert torch.equal(cache["model.layers.1"].inputs[0][0], cache["model.layers.0"].output)
    with pytest.raises(IndexError):               # not cached: nnsight's IndexError (an NNsightError)
        cache.model.layers[3]
