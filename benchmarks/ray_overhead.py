"""The Ray Serve backend's overhead over the local worker process, for a small trace, in one run.

Two hosts on 127.0.0.1 serve the same tiny random Llama: one with `backend="local"` (a worker
process), one with `backend="ray"` (a Ray Serve deployment of one replica on a local Ray of 2 CPUs,
started by the host). One client (this process) runs the same remote trace (one layer's output
saved, the prompt of `benchmarks/remote.py`'s tiny plan) on each, interleaved, after checking the
two give bit-identical values. Reported: median and p99 of each, and of the paired difference.

    .venv/bin/python -m benchmarks.ray_overhead [--reps 200]

`run(reps)` returns the figures, `report(figures)` the README section; `benchmarks/run.py --ray`
(the default when Ray Serve is installed) adds it to the report.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.remote import ADMIN_TOKEN, USERS, frozen_gc, log, save_layer, summary_ms, tiny_prompts
from nnsight_jupyter.server.launch import HostProcess

REPS = 200
LAYER = 1


def available() -> bool:
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        return False
    return True


def run(reps: int = REPS) -> dict:
    """Start both hosts, time the trace on each (interleaved), stop them. The figures."""
    os.environ["NNSIGHT_JUPYTER_PROGRESS"] = "0"
    torch.set_num_threads(1)
    from nnsight_jupyter.client.connection import connect
    from nnsight_jupyter.models import tiny_llama, word_tokenizer

    with tempfile.TemporaryDirectory(prefix="nnsight-ray-bench-") as tmp:
        root = Path(tmp)
        tiny_llama(seed=0).save_pretrained(root / "tiny")
        word_tokenizer().save_pretrained(root / "tiny")
        models = {"tiny": {"source": str(root / "tiny"), "threads": 1}}
        hosts = {"local": HostProcess(root / "local", models, USERS, ADMIN_TOKEN),
                 "ray": HostProcess(root / "ray", models, USERS, ADMIN_TOKEN, backend="ray", ray_num_cpus=2)}
        connections = {}
        try:
            for name, host in hosts.items():
                start = time.perf_counter()
                host.start().wait_ready(timeout=600)
                log(f"ray bench: {name} host ready in {time.perf_counter() - start:.1f} s")
                connections[name] = connect(host.url, list(USERS)[0])
            remote = {name: c.model("tiny") for name, c in connections.items()}
            ids = tiny_prompts(remote["local"].tokenizer)[:1]
            a, b = (save_layer(remote[k], ids, LAYER) for k in ("local", "ray"))
            equal = bool(torch.equal(a, b))
            for _ in range(5):
                for model in remote.values():
                    save_layer(model, ids, LAYER)
            times: dict[str, list[float]] = {"local": [], "ray": []}
            with frozen_gc():
                for rep in range(reps):
                    for key in (("local", "ray") if rep % 2 == 0 else ("ray", "local")):
                        start = time.perf_counter()
                        save_layer(remote[key], ids, LAYER)
                        times[key].append(time.perf_counter() - start)
        finally:
            for connection in connections.values():
                connection.close()
            for host in hosts.values():
                host.stop()
    paired = [(r - loc) for loc, r in zip(times["local"], times["ray"])]
    return {"equal": equal, "reps": reps, "tokens": int(ids.shape[1]), "local": summary_ms(times["local"]),
            "ray": summary_ms(times["ray"]), "diff": summary_ms(paired),
            "diff_median_ms": statistics.median(paired) * 1e3}


def report(figures: dict) -> str:
    rows = [("local worker process", figures["local"]), ("Ray Serve deployment", figures["ray"]),
            ("paired difference (ray − local)", figures["diff"])]
    lines = ["## Ray Serve backend overhead (127.0.0.1)\n",
             f"One remote trace saving layer {LAYER}'s output of the tiny Llama ({figures['tokens']} tokens), "
             f"on a host with the local backend and one with the Ray backend (1 replica, local Ray of 2 CPUs), "
             f"interleaved, {figures['reps']} repetitions each; results bit-identical: {figures['equal']}.\n",
             "| backend | median ms | p99 ms | min ms |", "| --- | --- | --- | --- |"]
    lines += [f"| {label} | {s['median']:.2f} | {s['p99']:.2f} | {s['min']:.2f} |" for label, s in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=REPS)
    args = parser.parse_args(argv)
    print(report(run(args.reps)))


if __name__ == "__main__":
    main()
