"""Invokes become one batch; each sees only its own rows, padded to its own longest prompt."""

import torch

SHORT = "hello world"
LONG = "when mary and john went to the store john gave a book to"
MID = "the cat sat on the mat"


def test_each_invoke_sees_exactly_its_tokens(llama, encode, raw_llama, reference):
    with llama.trace() as tracer:
        with tracer.invoke(SHORT):
            short = llama.model.layers[1].output.save()
        with tracer.invoke(LONG):
            long = llama.model.layers[1].output.save()
    assert short.value.shape == (1, 2, 64) and long.value.shape == (1, 13, 64)
    for prompt, got in ((SHORT, short), (LONG, long)):
        _, rec = reference(raw_llama, encode(prompt), capture=["model.layers.1"])
        torch.testing.assert_close(got.value, rec["model.layers.1"], atol=1e-5, rtol=1e-4)


def test_invoke_of_two_prompts_is_padded_to_its_own_longest(llama, encode, raw_llama, reference):
    with llama.trace() as tracer:
        with tracer.invoke([SHORT, MID]):
            pair = llama.lm_head.output.save()
        with tracer.invoke(LONG):
            pass
    assert pair.value.shape[:2] == (2, 6)
    out_short, _ = reference(raw_llama, encode(SHORT))
    out_mid, _ = reference(raw_llama, encode(MID))
    torch.testing.assert_close(pair.value[0, -2:], out_short.logits[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pair.value[1], out_mid.logits[0], atol=1e-5, rtol=1e-4)


def test_write_to_padded_invoke_reaches_only_its_rows(llama, encode, raw_llama, reference):
    steer = torch.randn(64, generator=torch.Generator().manual_seed(0))
    with llama.trace() as tracer:
        with tracer.invoke(LONG):
            clean = llama.lm_head.output.save()
        with tracer.invoke(SHORT):
            llama.model.layers[0].output = llama.model.layers[0].output + steer
            steered = llama.lm_head.output.save()

    def add(out):
        return out + steer

    exp, _ = reference(raw_llama, encode(SHORT), edit={"model.layers.0": add})
    exp_clean, _ = reference(raw_llama, encode(LONG))
    torch.testing.assert_close(steered.value, exp.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(clean.value, exp_clean.logits, atol=1e-5, rtol=1e-4)


def test_skip_in_one_invoke_leaves_the_other(llama, encode, raw_llama, reference):
    with llama.trace() as tracer:
        with tracer.invoke(MID):
            llama.model.layers[2].skip(llama.model.layers[2].input)
            skipped = llama.lm_head.output.save()
        with tracer.invoke(LONG):
            normal = llama.lm_head.output.save()
    captured = {}

    def identity_layer2(out):
        return captured["in"]

    h = raw_llama.model.layers[2].register_forward_pre_hook(lambda m, a: captured.__setitem__("in", a[0]))
    exp_skip, _ = reference(raw_llama, encode(MID), edit={"model.layers.2": identity_layer2})
    h.remove()
    exp_normal, _ = reference(raw_llama, encode(LONG))
    torch.testing.assert_close(skipped.value, exp_skip.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(normal.value, exp_normal.logits, atol=1e-5, rtol=1e-4)


def test_batched_generation_equals_solo(llama):
    with llama.generate(max_new_tokens=3) as tracer:
        with tracer.invoke(SHORT):
            a = tracer.result.save()
        with tracer.invoke(MID):
            b = tracer.result.save()
    for prompt, got in ((SHORT, a), (MID, b)):
        with llama.generate(prompt, max_new_tokens=3) as tracer:
            solo = tracer.result.save()
        assert torch.equal(got.value, solo.value)
        assert got.value.shape[1] == len(prompt.split()) + 3


def test_nnsight_invokes_concatenate_rows():
    import nnsight_jupyter as nj

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    wrapped = nj.NNsight(net)
    x1, x2 = torch.randn(2, 3), torch.randn(5, 3)
    with wrapped.trace() as tracer:
        with tracer.invoke(x1):
            wrapped[0].output[:] = 0
            first = wrapped[2].output.save()
        with tracer.invoke(x2):
            second = wrapped[2].output.save()
    with torch.no_grad():
        torch.testing.assert_close(first.value, net[2](net[1](torch.zeros(2, 4))))
        torch.testing.assert_close(second.value, net(x2))
