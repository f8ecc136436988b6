"""Time plain PyTorch hooks, nnsight_jupyter and nnsight 0.8.1 side by side, interleaved, in one run.

    .venv/bin/python -m benchmarks.run [--write benchmarks/README.md] [--quick]
                                       [--models gpt2,smollm2] [--scenarios a,b,c]
                                       [--remote | --no-remote] [--remote-models smollm2,tiny]
                                       [--patching | --no-patching]

Each repetition runs every contender once, in an order that rotates from one repetition to the
next, so machine noise (this machine is shared) lands on all contenders alike. Before timing, the
three contenders' results are checked equal (assert_close) and the shared module is checked to
carry no leftover hooks. torch runs on one thread.

Then (`--remote`, the default) the remote-host benchmarks of `benchmarks/remote.py`: a real Jupyter
server with the extension on 127.0.0.1, round trips against local traces and 8 concurrent clients
against one-at-a-time and hand-batched PyTorch.

Then (`--patching`, the default) `benchmarks/patching.py`: head patching on SmolLM2, every plan of the
ladder against plain PyTorch sweeps, at about 15, 60 and 200 tokens.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from benchmarks import patching as patching_bench
from benchmarks import remote
from benchmarks.scenarios import MODELS, SCENARIOS

CONTENDERS = {"plain": "plain PyTorch", "nj": "nnsight_jupyter", "ns": "nnsight 0.8.1"}
# Repetitions per (model, scenario), sized so a full run stays under ~10 minutes on 2 cores.
# Seconds per repetition (all three contenders) here: gpt2 a 0.02, b 0.2, c 0.6; smollm2 a 0.5, b 5.5, c 12.
REPS = {("gpt2", "a"): 1500, ("gpt2", "b"): 150, ("gpt2", "c"): 50,
        ("smollm2", "a"): 100, ("smollm2", "b"): 20, ("smollm2", "c"): 10}
QUICK_REPS = 3
TARGET_RATIO = 1.05  # nnsight_jupyter / plain, tiny GPT-2 (a) and (b)
TARGET_SHARE = 0.5  # nnsight_jupyter's overhead / nnsight's overhead, tiny GPT-2 (a)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- checking and timing


def as_tensor(result):
    return torch.cat(result) if isinstance(result, list) else result


def assert_no_hooks(module):
    """Nothing a contender installed may stay on the shared module (it would slow the others)."""
    for name, sub in module.named_modules():
        left = [attr for attr in ("_forward_hooks", "_forward_pre_hooks") if getattr(sub, attr)]
        if "forward" in sub.__dict__:
            left.append("an instance `forward`")
        assert not left, f"{name or 'root'} still has {', '.join(left)}"


def check(setup, contenders):
    """Run each contender once (this also warms it up) and compare its result with plain's."""
    results = {}
    for key, fn in contenders.items():
        results[key] = as_tensor(fn(setup))
        assert_no_hooks(setup.hf)
    for key in contenders:
        torch.testing.assert_close(results[key], results["plain"], msg=lambda m: f"{key} != plain: {m}")


def time_interleaved(setup, contenders, reps):
    """{contender: [microseconds per call]}, each repetition running every contender once."""
    keys = list(contenders)
    times = {key: [] for key in keys}
    gc.collect()
    gc.freeze()  # the ~400k long-lived objects (torch, transformers, the model) leave the collector's sight
    for rep in range(reps):
        shift = rep % len(keys)
        for key in keys[shift:] + keys[:shift]:
            gc.collect()  # nobody pays for another contender's garbage
            start = time.perf_counter_ns()
            contenders[key](setup)
            times[key].append((time.perf_counter_ns() - start) / 1e3)
    assert_no_hooks(setup.hf)
    return times


def summarize(samples):
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return {"median": statistics.median(samples), "iqr": q3 - q1, "min": min(samples), "n": len(samples)}


# ---------------------------------------------------------------- the report


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs (nproc), {cpu}, {platform.system()} {platform.release()}"


def versions():
    import nnsight
    import transformers

    import nnsight_jupyter

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    return (f"python {platform.python_version()}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, nnsight {nnsight.__version__}, nnsight_jupyter "
            f"{nnsight_jupyter.__version__} (git {commit} + working tree)")


def fmt(us):
    return f"{us:,.0f}"


def table(stats):
    """stats: {scenario: {contender: summary}} of one model."""
    lines = ["| scenario | contender | reps | median µs | IQR µs | min µs | ratio vs plain | overhead µs |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for scenario, by_contender in stats.items():
        plain = by_contender["plain"]["median"]
        for key, s in by_contender.items():
            ratio, over = ("—", "—") if key == "plain" else (f"{s['median'] / plain:.3f}",
                                                             f"{s['median'] - plain:+,.0f}")
            label = f"({scenario}) {SCENARIOS[scenario][0]}" if key == "plain" else ""
            lines.append(f"| {label} | {CONTENDERS[key]} | {s['n']} | "
                         f"{fmt(s['median'])} | {fmt(s['iqr'])} | {fmt(s['min'])} | {ratio} | {over} |")
    return "\n".join(lines)


def targets(stats, remote_figures=None):
    lines = []

    def verdict(ok):
        return "met" if ok else "**not met**"

    for model in stats:
        by = stats[model]
        if "a" in by:
            plain, nj, ns = (by["a"][k]["median"] for k in ("plain", "nj", "ns"))
            ratio = nj / plain
            share = (nj - plain) / (ns - plain) if ns > plain else float("nan")
            lines.append(f"* {model} (a): nnsight_jupyter / plain = **{ratio:.3f}** (target ≤ {TARGET_RATIO}: "
                         f"{verdict(ratio <= TARGET_RATIO)}); nnsight_jupyter's overhead is **{share:.2f}** of "
                         f"nnsight's ({fmt(nj - plain)} µs vs {fmt(ns - plain)} µs; target ≤ {TARGET_SHARE}: "
                         f"{verdict(share <= TARGET_SHARE)})")
        if "b" in by:
            ratio = by["b"]["nj"]["median"] / by["b"]["plain"]["median"]
            lines.append(f"* {model} (b): nnsight_jupyter / hand-written batched hooks = **{ratio:.3f}** "
                         f"(target ≤ {TARGET_RATIO}: {verdict(ratio <= TARGET_RATIO)})")
    if isinstance(remote_figures, dict):
        lines += remote.targets(remote_figures)
    return "\n".join(lines)


def codec_figures():
    try:
        from benchmarks import graph_codec
    except ImportError as error:
        return f"not measured (benchmarks/graph_codec.py: {error})"
    try:
        m = graph_codec.measure()
    except Exception as error:  # noqa: BLE001 - report it, the other figures still stand
        return f"not measured (graph_codec.measure() failed: {type(error).__name__}: {error})"
    return (f"{m['nodes']}-node graph, {m['bytes']:,} bytes on the wire: encode **{m['encode_ms']} ms**, "
            f"decode + validate **{m['decode_ms']} ms** (medians; `benchmarks/graph_codec.py`)")


HEADER = """\
# Benchmarks

Generated by `make bench` (`python -m benchmarks.run --write benchmarks/README.md`); do not edit by hand.

**Method.** Three contenders do exactly the same work on the same model object and the same
[1, 16] input ids, and return the same tensors (checked with `torch.testing.assert_close` once
before timing). Timing is interleaved: each repetition runs every contender once, in an order
that rotates between repetitions, so noise on this shared machine hits all three alike.
`torch.set_num_threads(1)`; long-lived objects frozen out of the garbage collector
(`gc.freeze()`) and `gc.collect()` before every timed call, so no contender pays for another's
garbage; wall time of the whole call (building the trace, running the model, collecting the saves). The shared module is checked
to carry no leftover hooks before and after timing.

* **plain PyTorch**: hand-written `register_forward_hook` / `register_forward_pre_hook` on the raw
  transformers module under `torch.no_grad()`: register, forward, remove.
* **nnsight_jupyter**: `nnsight_jupyter.LanguageModel(hf_model, tokenizer=tok)`, same module object.
* **nnsight 0.8.1**: `nnsight.LanguageModel(...)` around a deepcopy of the module (nnsight leaves
  a wrapper `forward` on every submodule it wraps, which would tax the plain contender).

Scenarios (see `benchmarks/scenarios.py`):

* **(a)** one trace saving one layer's output (GPT-2 `transformer.h[2]`, SmolLM2 `model.layers[15]`).
* **(b)** 32 invokes of the same prompt in one trace; invoke *i* zeroes head *i* mod n_heads of
  layer (*i* // n_heads) mod n_layers at the last position and saves its last-position logits.
  nnsight_jupyter writes `attn.heads[:, -1, h] = 0`; nnsight writes the head's columns of the
  output projection's `.input`; plain runs the prompt repeated in 32 rows with pre-hooks on the
  output projections zeroing (row, columns).
* **(c)** a session of 32 traces, each saving the layer of (a); plain: 32 hooked forwards.

Ratio = median contender / median plain; overhead = median contender − median plain.

The remote host (a real Jupyter server on 127.0.0.1: round trips, 8 concurrent clients) has a
section of its own below.
"""


def report(stats, codec, quick, remote_figures=None, patching_section=None):
    parts = [HEADER, "## Key targets\n", targets(stats, remote_figures), ""]
    for model, by_scenario in stats.items():
        parts += [f"## {MODELS[model][0]}\n", table(by_scenario), ""]
    parts += ["## Graph wire format\n", codec, ""]
    if isinstance(remote_figures, dict):
        parts += [remote.report(remote_figures, quick)]
    elif isinstance(remote_figures, str):
        parts += ["## Remote host (127.0.0.1)\n", remote_figures, ""]
    if patching_section:
        parts += [patching_section, ""]
    parts += ["## Run\n",
              f"* date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}"
              + (" (**--quick**: few repetitions, figures are rough)" if quick else ""),
              f"* versions: {versions()}",
              f"* machine: {machine()}; torch threads: {torch.get_num_threads()}", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH", help="write the Markdown report to PATH")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPS} repetitions each (a smoke run)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of: " + ", ".join(MODELS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of: a, b, c")
    parser.add_argument("--remote", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the remote-host benchmarks (benchmarks/remote.py; default: on)")
    parser.add_argument("--remote-models", default=",".join(remote.PLANS),
                        help="comma list of: " + ", ".join(remote.PLANS))
    parser.add_argument("--patching", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the head-patching plans benchmark (benchmarks/patching.py; default: on)")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    scenarios = [s for s in args.scenarios.split(",") if s]
    remote_models = [m for m in args.remote_models.split(",") if m]
    for name in remote_models:
        if name not in remote.PLANS:
            parser.error(f"unknown remote model {name!r}")
    for name in models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}")
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")

    torch.set_num_threads(1)
    os.environ["NNSIGHT_JUPYTER_PROGRESS"] = "0"  # no progress bars for remote jobs
    started = time.perf_counter()
    log("graph codec ...")  # first, while the process holds no model
    codec = codec_figures()
    stats = {}
    for model in models:
        start = time.perf_counter()
        setup = MODELS[model][1]()
        assert_no_hooks(setup.hf)
        log(f"{model}: set up in {time.perf_counter() - start:.1f} s")
        stats[model] = {}
        for scenario in scenarios:
            contenders = SCENARIOS[scenario][1]
            reps = QUICK_REPS if args.quick else REPS[(model, scenario)]
            start = time.perf_counter()
            check(setup, contenders)
            times = time_interleaved(setup, contenders, reps)
            stats[model][scenario] = {key: summarize(t) for key, t in times.items()}
            medians = ", ".join(f"{k} {fmt(s['median'])} µs" for k, s in stats[model][scenario].items())
            log(f"{model} ({scenario}) x{reps} in {time.perf_counter() - start:.1f} s: {medians}")
        del setup
        gc.unfreeze()
        gc.collect()

    remote_figures, failed = None, False
    if args.remote and remote_models:
        start = time.perf_counter()
        try:
            remote_figures = remote.run(remote_models, quick=args.quick)
        except Exception as error:  # noqa: BLE001 - keep the local figures; report it and fail at the end
            import traceback

            traceback.print_exc()
            remote_figures = f"not measured: {type(error).__name__}: {error}"
            failed = True
        log(f"remote: {time.perf_counter() - start:.1f} s")

    patching_section = None
    if args.patching:
        start = time.perf_counter()
        try:
            patching_section = patching_bench.report(patching_bench.run(quick=args.quick))
        except Exception as error:  # noqa: BLE001 - keep the other figures; report it and fail at the end
            import traceback

            traceback.print_exc()
            patching_section = f"## Head patching\n\nnot measured: {type(error).__name__}: {error}"
            failed = True
        log(f"patching: {time.perf_counter() - start:.1f} s")

    text = report(stats, codec, args.quick, remote_figures, patching_section)
    print(text)
    if args.write:
        with open(args.write, "w") as f:
            f.write(text)
        log(f"wrote {args.write}")
    log(f"total: {time.perf_counter() - started:.1f} s")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
