"""Shapes while tracing (issue 8, item 5): `len()`, unpacking and iteration where the rank or length
is known, sizes the model fixes as ints, sizes that vary per invoke as traced values, and clear
errors where nothing is known; results compared with plain PyTorch."""

import pytest
import torch

from nnsight_jupyter import NNsight
from nnsight_jupyter.errors import TracingError

PROMPTS = ("the cat sat", "a dog ran far away on the mat")


def test_view_of_an_unpacked_shape_equals_plain_pytorch_for_invokes_of_different_lengths(llama, raw_llama, encode):
    heads = llama.config.num_attention_heads
    with llama.trace() as tracer:
        saved = []
        for prompt in PROMPTS:
            with tracer.invoke(prompt):
                x = llama.model.layers[1].self_attn.o_proj.input
                saved.append(x.view(*x.shape[:-1], heads, x.shape[-1] // heads).save())
    for prompt, value in zip(PROMPTS, saved):
        captured = {}
        hook = raw_llama.model.layers[1].self_attn.o_proj.register_forward_pre_hook(
            lambda m, args: captured.setdefault("x", args[0].detach().clone()))
        with torch.no_grad():
            raw_llama(input_ids=encode(prompt))
        hook.remove()
        x = captured["x"]
        assert torch.allclose(value.value, x.view(*x.shape[:-1], heads, x.shape[-1] // heads), atol=1e-5)
    assert saved[0].value.shape[1] != saved[1].value.shape[1]      # the invokes' lengths differ


def test_fixed_sizes_are_ints_and_varying_ones_traced_values(llama):
    hidden = llama.config.hidden_size
    with llama.trace(PROMPTS[0]):
        h = llama.model.layers[0].output
        assert len(h.shape) == 3 and h.ndim == 3 and h.dim() == 3
        assert h.size(-1) == hidden and h.shape[-1] == hidden and h.shape[2] == hidden
        rows, positions, width = h.shape
        assert width == hidden and type(width) is int
        assert type(rows).__name__ == "Proxy" and type(positions).__name__ == "Proxy"
        split = h.view(rows, positions, 4, width // 4).save()
        per_head = [part.sum().save() for part in split[0, 0]]      # iteration over a fixed dim
        assert len(per_head) == 4 and len(split[0, 0]) == 4
    assert split.value.shape[2:] == (4, hidden // 4)
    for i, total in enumerate(per_head):
        assert torch.allclose(total.value, split.value[0, 0, i].sum())


def test_len_of_a_dim_that_varies_per_invoke_says_what_to_write(llama):
    with pytest.raises(TracingError, match=r"depends on the invoke.*x\.shape\[0\]") as info:
        with llama.trace(PROMPTS[0]):
            len(llama.model.layers[0].output)
    assert "test_shapes.py" in str(info.value)
    with pytest.raises(TracingError, match="depends on the invoke"):
        with llama.trace(PROMPTS[0]):
            for _row in llama.model.layers[0].output:
                pass


def test_len_of_a_value_whose_shape_is_unknown_says_so(llama):
    with pytest.raises(TracingError, match=r"not known while tracing.*\.save\(\)"):
        with llama.trace(PROMPTS[0]):
            h = llama.model.layers[0].output
            len(h.tolist())                    # a list made when the model runs: no length before


def test_plain_module_knows_ranks_but_no_sizes():
    torch.manual_seed(0)
    net = NNsight(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)))
    x = torch.randn(3, 6)
    with net.trace(x):                         # first trace: records the order and layouts
        net[0].output.save()
    net._target.layouts_for(net._target.build_batch(*_plain_batch(x)))
    with net.trace(x):
        h = net[0].output
        assert len(h.shape) == 2 and h.ndim == 2
        a, b = h.shape                         # sizes of a plain module's values are the input's
        assert type(a).__name__ == "Proxy" and type(b).__name__ == "Proxy"
        halves = h.view(a, 2, b // 2).save()
    assert torch.equal(halves.value, net._module[0](x).view(3, 2, 4))


def _plain_batch(x):
    from nnsight_jupyter.graph.nodes import Invoke, Run

    return Run(0, "trace", [Invoke(0, (x,))]), [(0, (x,), {}, False)]
