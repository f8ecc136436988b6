"""Head patching on SmolLM2 (30 layers x 9 heads): every rung of the plan ladder against plain PyTorch.

    .venv/bin/python -m benchmarks.patching [--quick]      # also run by benchmarks/run.py (make bench)

An IOI pair, patched at the last position, at about 15, 60 and 200 tokens (the longer prompts put a
neutral story in front of both). Contenders, all computing logit difference scores [30, 9] that are
checked equal (1e-4) before their times are reported:

* every plan of `patching.head_patching` (this project), and `attribution_patching` (approximate: its
  Pearson correlation with the exact scores is reported instead);
* plain PyTorch, three ways: **naive** (pre-hooks on o_proj, one forward per head and one clean forward
  per layer, as the case study's first rung), **KV reuse** (the corrupt prefix's transformers cache,
  repeated to 9 rows, and for each layer one batched forward of the last position through every layer),
  **minimal** (hand-written: for layer L only the last position, only layers L.., all 9 heads as 9 rows,
  attending to the prefix keys / values of the corrupt run by broadcasting, no copy).

The rungs that run one trace per patched run (naive, session, scalars, cached, plain naive) cost the
same for every layer (each run is a full forward); at 60 and 200 tokens they are timed on the first
`LONG_LAYERS` layers and scaled to 30, which the table marks. torch runs on one thread.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import warnings

import torch

PROMPT = ("When Mary and John went to the store,", " John gave a drink to", " Mary gave a drink to", " Mary", " John")
STORY = (" It was a warm morning in the small town by the river, and the market square was already busy with"
         " people buying bread, fruit and flowers from the stalls.")
LENGTHS = (15, 60, 200)
LONG_LAYERS = 3           # layers timed for the one-trace-per-run rungs at 60 and 200 tokens
PER_RUN = ("naive", "session", "scalars", "cached")
BASELINE_RUNS = 2          # the clean and the corrupt run of the per-run rungs
TARGET_SPEEDUP, TARGET_PLAIN = 25.0, 1.3


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def make_pair(tokenizer, length: int):
    """(clean ids, corrupt ids, answer, distractor) of about `length` tokens."""
    head, clean_tail, corrupt_tail, answer, distractor = PROMPT
    story, words = "", (STORY.split() * 20)
    while len(tokenizer(story + " " + head + clean_tail)["input_ids"]) < length - 2:    # "about" length
        story += " " + words.pop(0)
    clean = tokenizer((story + " " if story else "") + head + clean_tail)["input_ids"]
    corrupt = tokenizer((story + " " if story else "") + head + corrupt_tail)["input_ids"]
    assert len(clean) == len(corrupt)
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in (answer, distractor)]
    return torch.tensor([clean]), torch.tensor([corrupt]), ids[0][0], ids[1][0]


# ---------------------------------------------------------------- plain PyTorch


def _projections(hf):
    return [layer.self_attn.o_proj for layer in hf.model.layers]


def _clean_heads(hf, clean):
    """o_proj inputs of every layer in the clean run, [1, seq, hidden] each."""
    stored = {}
    handles = [p.register_forward_pre_hook(lambda m, a, i=i: stored.__setitem__(i, a[0].clone()))
               for i, p in enumerate(_projections(hf))]
    try:
        hf(clean)
    finally:
        for h in handles:
            h.remove()
    return stored


def plain_naive(hf, pair, layers):
    clean, corrupt, answer, distractor = pair
    cfg = hf.config
    n_heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    scores = torch.zeros(len(layers), n_heads)
    with torch.no_grad():
        for row, layer in enumerate(layers):
            stored = {}
            proj = _projections(hf)[layer]
            handle = proj.register_forward_pre_hook(lambda m, a: stored.__setitem__(0, a[0].clone()))
            hf(clean)
            handle.remove()
            for head in range(n_heads):
                cols = slice(head * head_dim, (head + 1) * head_dim)

                def patch(m, a, cols=cols):
                    x = a[0].clone()
                    x[:, -1, cols] = stored[0][:, -1, cols]
                    return (x,)

                handle = proj.register_forward_pre_hook(patch)
                try:
                    logits = hf(corrupt).logits
                finally:
                    handle.remove()
                scores[row, head] = logits[0, -1, answer] - logits[0, -1, distractor]
    return scores


def _row_patch(n_heads, head_dim, clean_last):
    """A pre-hook writing head h of the clean run into row h at the last position."""
    def patch(m, a):
        x = a[0].clone()
        for h in range(n_heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            x[h, -1, cols] = clean_last[0, cols]
        return (x,)
    return patch


def plain_kv(hf, pair):
    """Transformers' own cache of the corrupt prefix, repeated to 9 rows; every layer recomputed."""
    clean, corrupt, answer, distractor = pair
    cfg = hf.config
    n_heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    scores = torch.zeros(cfg.num_hidden_layers, n_heads)
    with torch.no_grad():
        stored = _clean_heads(hf, clean)
        prefix = hf(corrupt[:, :-1], use_cache=True).past_key_values
        last = corrupt[:, -1:].expand(n_heads, 1)
        for layer, proj in enumerate(_projections(hf)):
            cache = _repeat_cache(prefix, n_heads)
            handle = proj.register_forward_pre_hook(_row_patch(n_heads, head_dim, stored[layer][:, -1]))
            try:
                logits = hf(last, past_key_values=cache, use_cache=True).logits
            finally:
                handle.remove()
            scores[layer] = logits[:, -1, answer] - logits[:, -1, distractor]
    return scores


def _repeat_cache(cache, rows):
    import copy

    fresh = copy.deepcopy(cache)
    fresh.batch_repeat_interleave(rows)
    return fresh


def plain_minimal(hf, pair):
    """The least work an exact sweep can do: for layer L, only the last position of 9 rows (one per head),
    only layers L.., attending to the corrupt prefix's keys / values by broadcasting (never copied)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    clean, corrupt, answer, distractor = pair
    cfg, model = hf.config, hf.model
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim, group = cfg.hidden_size // n_heads, n_heads // n_kv
    seq = corrupt.shape[1]
    with torch.no_grad():
        stored = _clean_heads(hf, clean)
        out = hf(corrupt[:, :-1], use_cache=True, output_hidden_states=False)
        prefix = [(layer.keys, layer.values) for layer in out.past_key_values.layers]   # [1, kv, p, d]
        resid = {}
        handles = [layer.register_forward_pre_hook(lambda m, a, i=i: resid.__setitem__(i, a[0][:, -1:].clone()))
                   for i, layer in enumerate(model.layers)]
        try:
            hf(corrupt[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        finally:
            for h in handles:
                h.remove()
        position = torch.tensor([[seq - 1]])
        dummy = resid[0]
        cos, sin = model.rotary_emb(dummy, position)
        eye = torch.eye(n_heads, dtype=torch.bool)[:, :, None]                 # row h patches head h
        scores = torch.zeros(cfg.num_hidden_layers, n_heads)
        for start in range(cfg.num_hidden_layers):
            x = resid[start].expand(n_heads, 1, -1)
            for index in range(start, cfg.num_hidden_layers):
                block = model.layers[index]
                attn = block.self_attn
                h = block.input_layernorm(x)
                q = attn.q_proj(h).view(n_heads, 1, n_heads, head_dim).transpose(1, 2)
                k = attn.k_proj(h).view(n_heads, 1, n_kv, head_dim).transpose(1, 2)
                v = attn.v_proj(h).view(n_heads, 1, n_kv, head_dim).transpose(1, 2)
                q, k = apply_rotary_pos_emb(q, k, cos, sin)
                pk, pv = prefix[index]
                qg = q.view(n_heads, n_kv, group, 1, head_dim)                   # rows, kv, group, 1, d
                s_prefix = torch.einsum("rkgqd,kpd->rkgqp", qg, pk[0]) * attn.scaling
                s_self = torch.einsum("rkgqd,rkqd->rkgq", qg, k)[..., None] * attn.scaling
                weights = torch.softmax(torch.cat([s_prefix, s_self], -1), -1)
                mixed = (torch.einsum("rkgqp,kpd->rkgqd", weights[..., :-1], pv[0])
                         + weights[..., -1:] * v[:, :, None])
                heads = mixed.reshape(n_heads, n_heads, 1, head_dim).transpose(1, 2)   # rows, 1, heads, d
                if index == start:
                    clean_heads = stored[index][:, -1].view(1, 1, n_heads, head_dim)
                    heads = torch.where(eye[:, None], clean_heads, heads)
                x = x + attn.o_proj(heads.reshape(n_heads, 1, -1))
                x = x + block.mlp(block.post_attention_layernorm(x))
            logits = hf.lm_head(model.norm(x))[:, -1]
            scores[start] = logits[:, answer] - logits[:, distractor]
    return scores


# ---------------------------------------------------------------- running


def timed(fn):
    gc.collect()
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def run(quick: bool = False) -> dict:
    """Figures for the report: {length: [(contender, seconds, forward passes, bytes, note)]}, checks, targets."""
    from nnsight_jupyter import LanguageModel
    from nnsight_jupyter import patching as P

    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(1)
    model = LanguageModel("smollm2-135m")
    hf = model._module
    n_layers = hf.config.num_hidden_layers
    lengths = LENGTHS[:1] if quick else LENGTHS
    figures = {"rows": {}, "checks": [], "n_layers": n_layers, "quick": quick}
    for length in lengths:
        pair = make_pair(model.tokenizer, length)
        clean, corrupt, answer, distractor = pair
        data = P.pairs(model, clean, corrupt, answer, distractor)
        tokens = int(clean.shape[1])
        short = length == LENGTHS[0] and not quick
        subset = list(range(n_layers)) if short else list(range(LONG_LAYERS))
        scale = n_layers / len(subset)
        log(f"patching bench: {tokens} tokens")
        P.head_patching(model, data, plan="batched", layers=[0])            # one-time layout recording
        exact, t_min = timed(lambda: plain_minimal(hf, pair))
        rows = [("plain PyTorch: minimal recomputation", t_min, None, None, "")]
        kv_plain, t_kv = timed(lambda: plain_kv(hf, pair))
        torch.testing.assert_close(kv_plain, exact, atol=1e-4, rtol=0)
        rows.append(("plain PyTorch: KV reuse, all layers", t_kv, None, None, ""))
        naive_plain, t = timed(lambda: plain_naive(hf, pair, subset))
        torch.testing.assert_close(naive_plain, exact[subset], atol=1e-4, rtol=0)
        rows.append(("plain PyTorch: naive", t * scale, None, None, "" if scale == 1 else f"layers 0-{subset[-1]}, x{scale:g}"))
        for plan in P.PLANS:
            layers = subset if plan in PER_RUN else None
            result, t = timed(lambda: P.head_patching(model, data, plan=plan, layers=layers))
            torch.testing.assert_close(result.scores, exact[layers or slice(None)], atol=1e-4, rtol=0)
            factor = scale if plan in PER_RUN else 1
            note = "" if factor == 1 else f"layers 0-{subset[-1]}, x{factor:g}"
            # the clean and corrupt baseline runs happen once, whatever the number of layers
            passes = round(BASELINE_RUNS + (result.cost.forward_passes - BASELINE_RUNS) * factor)
            size = int(result.cost.bytes_received * factor)
            if factor != 1:
                note += " (bytes ≈)"
            rows.append((f"nnsight_jupyter plan={plan}", t * factor, passes, size, note))
            log(f"  {plan}: {t * factor:.2f} s")
        default = P.head_patching(model, data)
        approx, t = timed(lambda: P.attribution_patching(model, data))
        pearson = float(torch.corrcoef(torch.stack([approx.scores.flatten(), exact.flatten()]))[0, 1])
        rows.append(("nnsight_jupyter attribution_patching (approximate)", t, approx.cost.forward_passes,
                     approx.cost.bytes_received, f"Pearson r = {pearson:.3f} with the exact scores"))
        figures["rows"][tokens] = {"rows": rows, "default": default.plan, "pearson": pearson}
        figures["checks"].append(f"{tokens} tokens: every exact contender's scores equal plain minimal's within 1e-4")
    return figures


def _time_of(rows, prefix):
    return next(t for name, t, *_ in rows if name.startswith(prefix))


def report(figures) -> str:
    lines = ["## Head patching (SmolLM2-135M, 30 x 9 heads, IOI pair, last position)\n",
             "`benchmarks/patching.py`: every rung of `patching.head_patching(plan=...)` and three plain PyTorch "
             "sweeps, scores checked equal (1e-4) before timing is reported; one run each, torch on one thread. "
             "Rungs marked *x10* ran one trace per patched run on the first layers only and are scaled "
             "(each such run is a full forward, the same for every layer).\n"]
    targets = []
    for tokens, entry in figures["rows"].items():
        rows = entry["rows"]
        naive = _time_of(rows, "nnsight_jupyter plan=naive")
        default = _time_of(rows, f"nnsight_jupyter plan={entry['default']}")
        minimal = _time_of(rows, "plain PyTorch: minimal")
        lines += [f"### {tokens} tokens (default plan: `{entry['default']}`)\n",
                  "| contender | wall s | forward passes | bytes received | vs project naive | note |",
                  "|---|--:|--:|--:|--:|---|"]
        for name, t, passes, size, note in rows:
            lines.append(f"| {name} | {t:.2f} | {'' if passes is None else passes} | "
                         f"{'' if size is None else f'{size:,}'} | {naive / t:.1f}x | {note} |")
        lines.append("")
        speedup, plain = naive / default, default / minimal
        targets.append(f"* {tokens} tokens: default plan **{speedup:.1f}x** faster than naive (target ≥ {TARGET_SPEEDUP:g}: "
                       f"{'met' if speedup >= TARGET_SPEEDUP else '**not met**'}); default / plain minimal = "
                       f"**{plain:.2f}** (target ≤ {TARGET_PLAIN}: {'met' if plain <= TARGET_PLAIN else '**not met**'}); "
                       f"attribution patching Pearson r = {entry['pearson']:.3f}")
    speedups = [_time_of(e["rows"], "nnsight_jupyter plan=naive") / _time_of(e["rows"], f"nnsight_jupyter plan={e['default']}")
                for e in figures["rows"].values()]
    if len(speedups) > 1:
        grows = all(a < b for a, b in zip(speedups, speedups[1:]))
        targets.append(f"* default vs naive at {' / '.join(str(t) for t in figures['rows'])} tokens: "
                       f"{' / '.join(f'{x:.1f}x' for x in speedups)} (must grow with length: "
                       f"{'met' if grows else '**not met**'})")
    return "\n".join(lines[:2] + ["### Targets\n"] + targets + [""] + lines[2:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the ~15-token pair only, per-run rungs on 3 layers")
    args = parser.parse_args(argv)
    print(report(run(quick=args.quick)))


if __name__ == "__main__":
    main()
