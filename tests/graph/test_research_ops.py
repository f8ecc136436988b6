"""The allow-list covers what researchers write (issue 8, item 8): the torch functions and Tensor
methods of nnsight's tutorials (patching, logit lens, attribution patching, steering, dictionary
learning) and of TransformerLens-style analysis code run inside a trace and equal plain PyTorch on
the same values; random ops are seeded by the trace; refused ops name the fix; every new op is
checked again where a host decodes a graph."""

import pytest
import torch
import torch.nn.functional as F

from nnsight_jupyter.errors import KeywordNotAllowedError, OpNotAllowedError
from nnsight_jupyter.graph.codec import decode, encode
from nnsight_jupyter.graph.nodes import Graph, Invoke, Node, Ref, Run
from nnsight_jupyter.graph.ops import OPS, public_name

PROMPT = "the cat sat on the mat"

# f(h, logits) for h [1, seq, 64] (a layer's output) and logits [1, seq, 200]
ANALYSIS = {
    "einsum": lambda h, lg: torch.einsum("bsd,btd->bst", h, h),
    "topk": lambda h, lg: torch.topk(lg[0, -1], 5).indices,
    "softmax": lambda h, lg: lg.softmax(-1),
    "log_softmax": lambda h, lg: F.log_softmax(lg, dim=-1),
    "gelu": lambda h, lg: F.gelu(h, approximate="tanh"),
    "silu": lambda h, lg: F.silu(h),
    "relu": lambda h, lg: torch.relu(h),
    "leaky_relu": lambda h, lg: F.leaky_relu(h, negative_slope=0.1),
    "layer_norm": lambda h, lg: F.layer_norm(h, (64,)),
    "rms_norm": lambda h, lg: F.rms_norm(h, (64,)),
    "norm": lambda h, lg: h.norm(dim=-1),
    "vector_norm": lambda h, lg: torch.linalg.vector_norm(h, dim=-1),
    "where": lambda h, lg: torch.where(h > 0, h, torch.zeros_like(h)),
    "gather": lambda h, lg: lg.gather(-1, lg.argmax(-1, keepdim=True)),
    "scatter": lambda h, lg: torch.zeros_like(lg).scatter(-1, lg.argmax(-1, keepdim=True), 1.0),
    "scatter_add": lambda h, lg: torch.zeros(1, 4, 64).scatter_add(1, h.argsort(1) % 4, h),
    "cumsum": lambda h, lg: h.cumsum(1),
    "sort": lambda h, lg: torch.sort(lg, dim=-1, descending=True).values,
    "argsort": lambda h, lg: lg.argsort(-1),
    "stack_cat": lambda h, lg: torch.cat([torch.stack([h, h]), torch.stack([h, -h])], dim=0),
    "cosine_similarity": lambda h, lg: F.cosine_similarity(h[:, :-1], h[:, 1:], dim=-1),
    "logspace": lambda h, lg: torch.logspace(-2, 0, 5) * h[0, 0, :5],
    "linspace_arange": lambda h, lg: torch.linspace(0, 1, 64) * h + torch.arange(64),
    "kl_div": lambda h, lg: F.kl_div(lg.log_softmax(-1), lg.flip(1).log_softmax(-1), reduction="batchmean",
                                     log_target=True),
    "cross_entropy": lambda h, lg: F.cross_entropy(lg[0], lg[0].argmax(-1)),
    "take_along_dim": lambda h, lg: torch.take_along_dim(lg, lg.argmax(-1, keepdim=True), dim=-1),
    "masked_select": lambda h, lg: torch.masked_select(h, h > 0.5),
    "repeat_interleave_tile": lambda h, lg: h.repeat_interleave(2, dim=1) + h.tile(1, 2, 1),
    "movedim_swapaxes": lambda h, lg: h.movedim(-1, 0).swapaxes(1, 2),
    "unbind": lambda h, lg: torch.stack(h.unbind(1)[::-1], 1),
    "median_quantile": lambda h, lg: torch.stack([h.median(-1).values, torch.quantile(h, 0.9, dim=-1)]),
    "log1p_expm1": lambda h, lg: torch.log1p(h.abs()) + torch.expm1(h.clamp(max=1)),
    "nansum_nanmean": lambda h, lg: h.nansum(-1) + h.nanmean(-1),
    "diag_embed": lambda h, lg: torch.diag_embed(h[0, 0, :4]),
    "pairwise_distance": lambda h, lg: F.pairwise_distance(h[0, :-1], h[0, 1:]),
    "lerp": lambda h, lg: torch.lerp(h, h.flip(1), 0.25),
    "svdvals": lambda h, lg: torch.linalg.svdvals(h[0]),
    "unique": lambda h, lg: lg.argmax(-1).unique(),
    "one_hot": lambda h, lg: F.one_hot(lg.argmax(-1), 200),
}


def test_analysis_ops_in_a_trace_equal_plain_pytorch(llama):
    with llama.trace(PROMPT):
        h = llama.model.layers[2].output.save()
        logits = llama.lm_head.output.save()
        traced = {name: fn(h, logits).save() for name, fn in ANALYSIS.items()}
    for name, fn in ANALYSIS.items():
        expected = fn(h.value if not isinstance(h, torch.Tensor) else h, logits if isinstance(logits, torch.Tensor)
                      else logits.value)
        value = traced[name] if isinstance(traced[name], torch.Tensor) else traced[name].value
        assert torch.equal(value, expected), name


def test_public_names_are_the_ones_users_write():
    assert public_name(torch.logspace) == "torch.logspace"
    assert public_name(torch.Tensor.numpy) == "torch.Tensor.numpy"
    assert public_name(F.gelu) == "torch.nn.functional.gelu"
    assert public_name(torch.linalg.vector_norm) == "torch.linalg.vector_norm"
    for name in ("torch.logspace", "torch.randn", "torch.randn_like", "torch.multinomial", "torch.nn.functional.dropout",
                 "Tensor.normal_", "Tensor.bernoulli_", "torch.nn.functional.gelu", "torch.einsum", "torch.scatter"):
        assert name in OPS, name
    for refused in ("torch.empty", "torch.empty_like", "Tensor.new_empty", "torch.manual_seed", "Tensor.numpy"):
        assert refused not in OPS


def _graph(*nodes, options=None):
    return Graph(runs=[Run(0, "trace", [Invoke(0, ("x",))], options or {})],
                 nodes=[Node(0, "module.output", module="lm_head"), *nodes])


def test_the_host_decodes_new_ops_and_refuses_the_rest():
    graph = decode(encode(_graph(Node(1, "torch.randn_like", (Ref(0),)), Node(2, "Tensor.normal_", (Ref(1), 0.0, 1.0)),
                                 Node(3, "torch.logspace", (0, 1, 5)), Node(4, "save", (Ref(2),)),
                                 options={"seed": 3})))
    assert [n.op for n in graph.nodes][1:4] == ["torch.randn_like", "Tensor.normal_", "torch.logspace"]
    assert graph.runs[0].options == {"seed": 3}
    with pytest.raises(OpNotAllowedError, match=r"torch\.empty is refused.*torch\.zeros"):
        decode(encode(_graph(Node(1, "torch.empty", (2, 3)))))
    with pytest.raises(OpNotAllowedError, match=r"torch\.Tensor\.numpy cannot run inside a trace"):
        decode(encode(_graph(Node(1, "Tensor.numpy", (Ref(0),)))))
    with pytest.raises(KeywordNotAllowedError, match="'seed'.*must be a literal int"):
        decode(encode(_graph(options={"seed": "0"})))
    with pytest.raises(KeywordNotAllowedError, match="'generator'"):   # a generator is the host's, never sent
        decode(encode(_graph(Node(1, "torch.randn_like", (Ref(0),), {"generator": 0}))))
