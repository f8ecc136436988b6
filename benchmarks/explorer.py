"""The head-patching explorer's sweep on a hosted model against the same sweep run locally in the kernel.

    .venv/bin/python -m benchmarks.explorer [--quick] [--reps N]

One server subprocess (`benchmarks.remote.bench_host`) hosts the bundled SmolLM2-135M (threads=1); the
kernel side loads the same model locally. Each repetition presses the explorer's run button once on the
hosted model and once on the local one (order alternating), with the IOI pair of about 15 tokens, patch
at the last position, the default plan; before timing, the two heatmaps are checked equal (1e-4). The
target (issue 9): hosted / local at most 1.3x. torch runs on one thread here, as in the host's worker.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.remote import bench_host

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
TARGET = 1.3


def explorer_for(model):
    from nnsight_jupyter.notebook.widgets import HeadPatchingExplorer

    return HeadPatchingExplorer(model, CLEAN, CORRUPT, " Mary", " John", position=-1)


def press(explorer) -> float:
    start = time.perf_counter()
    explorer.run_button.click()
    elapsed = time.perf_counter() - start
    if explorer.status.last_error is not None:
        raise explorer.status.last_error
    return elapsed


def run(quick: bool = False, reps: int = 10) -> dict:
    """The figures (same interface as benchmarks/patching.py: `report(run(quick))` is a README section)."""
    import os

    reps = 3 if quick else reps
    from nnsight_jupyter import LanguageModel, connect

    os.environ["NNSIGHT_JUPYTER_PROGRESS"] = "0"
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        host = bench_host(Path(root), {"smollm2": {"source": "bundled:smollm2-135m", "threads": 1}}).start()
        try:
            host.wait_ready()
            connection = connect(host.url, "token-user0")
            explorers = {"hosted": explorer_for(connection.model("smollm2")),
                         "local": explorer_for(LanguageModel("smollm2-135m"))}
            for explorer in explorers.values():          # warm-up, and the two heatmaps must agree
                press(explorer)
            torch.testing.assert_close(torch.tensor(explorers["hosted"].heatmap.data[0].z),
                                       torch.tensor(explorers["local"].heatmap.data[0].z), atol=1e-4, rtol=1e-4)
            times: dict[str, list[float]] = {"hosted": [], "local": []}
            for rep in range(reps):
                for name in (("hosted", "local") if rep % 2 == 0 else ("local", "hosted")):
                    times[name].append(press(explorers[name]))
            plan = explorers["local"].result.plan
            connection.close()
        finally:
            host.stop()
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    return {"plan": plan, "reps": reps, "medians": medians, "ratio": medians["hosted"] / medians["local"]}


def report(figures: dict) -> str:
    m = figures["medians"]
    verdict = "met" if figures["ratio"] <= TARGET else "NOT met"
    return ("## Head-patching explorer: hosted vs local\n\n"
            f"SmolLM2-135M (30 x 9 heads), IOI pair, last position, plan {figures['plan']}, {figures['reps']} "
            f"repetitions (the run button pressed), median: hosted {m['hosted']:.3f} s, local {m['local']:.3f} s, "
            f"**hosted / local {figures['ratio']:.2f}x** (target <= {TARGET}x: {verdict})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    print(report(run(args.quick, args.reps)), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
