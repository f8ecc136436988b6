"""Encode / decode speed of the graph wire format (JSON + safetensors) for a 1000-node graph.

`measure()` returns the median milliseconds of `encode` and `decode` (decode includes the full
validation) over several repetitions. Run it as a script to print them:

    .venv/bin/python benchmarks/graph_codec.py
"""

from __future__ import annotations

import gc
import statistics
import time

import torch

from nnsight_jupyter.graph import Graph, Invoke, Node, Ref, Run, decode, encode


def build_graph(n_nodes: int = 1000) -> Graph:
    """A realistic graph: per layer, reads of module outputs, slicing, arithmetic with a few small
    steering tensors, an in-place write into an activation, a parameter read, softmax, saves."""
    torch.manual_seed(0)
    steer = [torch.randn(576) for _ in range(3)]
    mask = torch.tensor([True, False, True, True])
    runs = [Run(0, "trace", [Invoke(0, ("The Eiffel Tower is in the city of",)),
                             Invoke(1, ("The Colosseum is in the city of",))]),
            Run(1, "generate", [Invoke(0, (), {}, all_rows=True)], {"max_new_tokens": 4})]
    nodes: list[Node] = []

    def add(op, args=(), kwargs=None, **where):
        node = Node(len(nodes), op, args, kwargs, line=f"/home/me/patching.ipynb:{10 + len(nodes) % 40}",
                    **where)
        nodes.append(node)
        return Ref(node.id)

    layer = 0
    while len(nodes) < n_nodes - 12:
        path = f"model.layers.{layer % 30}"
        invoke = layer % 2
        h = add("module.output", module=path, invoke=invoke)
        last = add("getitem", (h, (slice(None, None, None), -1, slice(0, 576, None))), invoke=invoke)
        scaled = add("mul", (last, 2.5), invoke=invoke)
        steered = add("add", (scaled, steer[layer % 3]), invoke=invoke)
        add("setitem", (h, (slice(None), slice(-3, None)), steered), invoke=invoke)
        normed = add("Tensor.norm", (steered,), {"dim": -1, "keepdim": True}, invoke=invoke)
        add("save", (normed,), invoke=invoke)
        probs = add("torch.nn.functional.softmax", (h,), {"dim": -1, "dtype": torch.float32}, invoke=invoke)
        add("save", (add("getitem", (probs, (0, Ellipsis, mask))),), invoke=invoke)
        layer += 1
    w = add("module.param", ("lm_head", "weight"))
    final = add("module.output", module="model.norm")
    logits = add("matmul", (final, add("Tensor.t", (w,))))
    add("save", (add("Tensor.softmax", (logits, -1)),))
    while len(nodes) < n_nodes:
        add("module.output", run=1, module="lm_head", step=1, repeat=True)
    return Graph(runs=runs, nodes=nodes, model="smollm2-135m")


def measure(n_nodes: int = 1000, repeat: int = 50) -> dict:
    """Median (and best) encode / decode milliseconds for a graph of `n_nodes` nodes.

    Decode includes the full validation. The best time shows the cost without interference from
    other processes on the machine; the median is the figure to compare."""
    graph = build_graph(n_nodes)
    data = encode(graph)
    decode(data)  # warm up (imports, caches)
    gc.collect()
    enc, dec = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        data = encode(graph)
        t1 = time.perf_counter()
        decode(data)
        t2 = time.perf_counter()
        enc.append((t1 - t0) * 1e3)
        dec.append((t2 - t1) * 1e3)
    return {"nodes": len(graph.nodes), "bytes": len(data),
            "encode_ms": round(statistics.median(enc), 3), "decode_ms": round(statistics.median(dec), 3),
            "encode_best_ms": round(min(enc), 3), "decode_best_ms": round(min(dec), 3)}


if __name__ == "__main__":
    print(measure())
