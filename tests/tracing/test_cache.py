"""tracer.cache() as nnsight 0.8 has it, each value checked against plain PyTorch forward hooks."""

import pytest
import torch

import nnsight_jupyter as nj

PROMPT = "the cat sat on the mat"


def _hooked(model: torch.nn.Module, run, inputs: bool = False):
    """Every module's outputs (and (args, kwargs)) per call, from plain forward hooks."""
    outputs, args = {}, {}
    handles = []
    for path, sub in model.named_modules():
        handles.append(sub.register_forward_hook(
            lambda m, a, o, p=path: outputs.setdefault(p, []).append(o)))
        if inputs:
            handles.append(sub.register_forward_pre_hook(
                lambda m, a, k, p=path: args.setdefault(p, []).append((a, k)), with_kwargs=True))
    try:
        with torch.no_grad():
            result = run()
    finally:
        for handle in handles:
            handle.remove()
    return result, outputs, args


def _ids(tokenizer, prompt=PROMPT):
    return torch.tensor([tokenizer(prompt)["input_ids"]])


def test_cache_of_every_module_that_runs_equals_forward_hooks(llama, raw_llama, tokenizer):
    with llama.trace(PROMPT) as tracer:
        cache = tracer.cache()
    _, outputs, _ = _hooked(raw_llama, lambda: raw_llama(_ids(tokenizer)))
    assert set(cache) == set(outputs)                  # every module that ran, and only those
    assert "model.layers" not in cache and "model.layers.0" in cache and "" in cache
    for path, (output,) in outputs.items():
        if isinstance(output, torch.Tensor):
            assert torch.equal(cache[path].output, output), path
    assert torch.equal(cache[""].output.logits, outputs[""][0].logits)
    assert torch.equal(cache.model.layers[1].mlp.output, outputs["model.layers.1.mlp"][0])
    assert torch.equal(cache["model.model.layers.1"].output, outputs["model.layers.1"][0])  # nnsight's paths
    assert torch.equal(cache.model.model.norm.output, outputs["model.norm"][0])
    assert len(cache.model.layers[0]) == 1


def test_include_inputs_and_output_options(llama, raw_llama, tokenizer):
    with llama.trace(PROMPT) as tracer:
        cache = tracer.cache(modules=["model.layers.2", llama.model.layers[2].mlp], include_inputs=True,
                             include_output=False)
    _, _, inputs = _hooked(raw_llama, lambda: raw_llama(_ids(tokenizer)), inputs=True)
    (args, kwargs), = inputs["model.layers.2.mlp"]
    assert torch.equal(cache.model.layers[2].mlp.input, args[0])
    assert torch.equal(cache["model.layers.2.mlp"].inputs[0][0], args[0])
    (args, kwargs), = inputs["model.layers.2"]
    assert torch.equal(cache["model.layers.2"].input, args[0])
    assert set(cache["model.layers.2"].inputs[1]) == set(kwargs)
    with pytest.raises(nj.TracingError, match="include_output=True"):
        cache["model.layers.2"].output


def test_generation_gives_one_entry_per_step(llama, raw_llama, tokenizer):
    with llama.generate(PROMPT, max_new_tokens=3) as tracer:
        cache = tracer.cache(modules=[llama.model.layers[3]])
        ids = tracer.result.save()
    ids_ref, outputs, _ = _hooked(raw_llama, lambda: raw_llama.generate(
        _ids(tokenizer), attention_mask=torch.ones_like(_ids(tokenizer)), max_new_tokens=3, do_sample=False))
    assert torch.equal(ids.value, ids_ref)
    entry = cache["model.layers.3"]
    assert len(entry) == 3 == len(outputs["model.layers.3"])
    assert [o.shape[1] for o in entry.output] == [6, 1, 1]
    for step in range(3):
        assert torch.equal(entry.output[step], outputs["model.layers.3"][step])
        assert torch.equal(entry[step].output, outputs["model.layers.3"][step])    # nnsight 0.5's list form
        assert torch.equal(cache.model.layers[3][step].output, outputs["model.layers.3"][step])
    with pytest.raises(IndexError):
        entry[3]


def test_a_cache_sees_the_traces_writes_as_nnsight_does(llama, raw_llama, tokenizer):
    """nnsight's cache runs after the trace's own writes and keeps references: it sees a write at
    the module, and an in-place write into the same value later in the trace."""
    with llama.trace(PROMPT) as tracer:
        cache = tracer.cache(modules=[llama.model.layers[0], llama.model.layers[1], llama.lm_head])
        llama.model.layers[0].output[:, 0] = 0
        h = llama.model.layers[1].output
        llama.model.layers[2].output[:] = llama.model.layers[2].output * 0.5
        h[:, -1] = 1.0                                  # written after layers.2 ran
    handles = [raw_llama.model.layers[0].register_forward_hook(lambda m, a, o: o.index_fill_(1, torch.tensor([0]), 0)),
               raw_llama.model.layers[2].register_forward_hook(lambda m, a, o: o * 0.5)]
    try:
        _, outputs, _ = _hooked(raw_llama, lambda: raw_llama(_ids(tokenizer)))
    finally:
        for handle in handles:
            handle.remove()
    assert cache["model.layers.0"].output[:, 0].abs().sum() == 0
    assert torch.equal(cache["model.layers.0"].output, outputs["model.layers.0"][0])
    expected = outputs["model.layers.1"][0].clone()
    expected[:, -1] = 1.0
    assert torch.equal(cache["model.layers.1"].output, expected)
    assert torch.equal(cache["lm_head"].output, outputs["lm_head"][0])


def test_cache_navigation_errors_keep_their_python_types(llama):
    with llama.trace(PROMPT) as tracer:
        cache = tracer.cache()
        with pytest.raises(nj.TracingError, match="after the trace"):
            cache["model.layers.0"].output
    with pytest.raises(IndexError) as index:
        cache.model.layers[99]
    assert isinstance(index.value, nj.NNsightError) and "model.layers[0..3]" in str(index.value)
    with pytest.raises(KeyError) as key:
        cache["model.layers.9"]
    assert isinstance(key.value, nj.NNsightError) and "not cached" in str(key.value)
    with pytest.raises(AttributeError):
        cache.model.nothing_here
    assert "model.layers.9" not in cache and cache.get("model.layers.9") is None
    assert torch.equal(cache.model.layers[-1].output, cache["model.layers.3"].output)


def test_gpt2_cache_with_nnsight_paths(gpt2, raw_gpt2, tokenizer):
    with gpt2.trace(PROMPT) as tracer:
        cache = tracer.cache()
    _, outputs, _ = _hooked(raw_gpt2, lambda: raw_gpt2(_ids(tokenizer)))
    assert torch.equal(cache.model.transformer.h[1].mlp.output, outputs["transformer.h.1.mlp"][0])
    assert torch.equal(cache.transformer.h[1].mlp.output, outputs["transformer.h.1.mlp"][0])
    assert torch.equal(cache["model.transformer.ln_f"].output, outputs["transformer.ln_f"][0])


def test_cache_inside_a_session_and_a_batch(llama, raw_llama, tokenizer):
    with llama.session():
        with llama.trace("hello world"):
            clean = llama.model.layers[1].output
        with llama.trace() as tracer:
            with tracer.invoke(PROMPT):
                pass
            with tracer.invoke("hello world"):
                llama.model.layers[1].output[:] = clean
                cache = tracer.cache(modules=[llama.model.layers[1], llama.model.layers[2]])
    _, outputs, _ = _hooked(raw_llama, lambda: raw_llama(_ids(tokenizer, "hello world")))
    assert torch.allclose(cache["model.layers.1"].output, outputs["model.layers.1"][0], atol=1e-5)
    assert torch.allclose(cache["model.layers.2"].output, outputs["model.layers.2"][0], atol=1e-5)
    assert cache["model.layers.2"].output.shape == (1, 2, 64)   # the invoke's own rows


def test_bad_cache_requests_say_what_to_do(llama):
    with pytest.raises(nj.TracingError, match="caches nothing"):
        with llama.trace(PROMPT) as tracer:
            tracer.cache(include_output=False)
    with pytest.raises(KeyError, match="no module 'model.nowhere'"):
        with llama.trace(PROMPT) as tracer:
            tracer.cache(modules=["model.nowhere"])
    with pytest.raises(nj.OutOfOrderError, match=r"model.layers\[0\], not model.layers"):
        with llama.trace(PROMPT) as tracer:
            tracer.cache(modules=[llama.model.layers])


def test_a_full_cache_result_holds_each_activation_once(llama):
    """No KV cache copies ride along (one per entry would multiply the size): the wire bytes of a
    full cache with inputs are its tensors' bytes plus a small header."""
    from nnsight_jupyter.graph.values import encode_values

    with llama.trace(PROMPT) as tracer:
        cache = tracer.cache(include_inputs=True)
    saved = tracer.builder.result.saved
    tensors = []

    def collect(value):
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, dict):
            [collect(v) for v in value.values()]
        elif isinstance(value, (list, tuple)):
            [collect(v) for v in value]

    collect(list(saved.values()))
    size = len(encode_values({str(k): v for k, v in saved.items()}))
    assert size < sum(t.nbytes for t in tensors) + 64 * 1024
    assert "not kept by tracer.cache()" in cache[""].output.past_key_values
