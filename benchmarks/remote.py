"""Remote-host benchmarks: a real Jupyter server with the nnsight_jupyter extension on 127.0.0.1.

One server subprocess hosts the bundled SmolLM2-135M and a tiny random Llama (each in its own worker
process, one torch thread); this process is the client (one torch thread too). Per model:

  (1) round trip: one trace saving one layer's output, run locally (`LanguageModel(...)` in this
      process) and on the host (`connect(url, token).model(name)`), interleaved; the saved tensors
      are checked bit-identical (torch.equal) first. An instrumented second pass splits the remote
      round trip into its stages (client timestamps + the job store's own timestamps).
  (2) co-tenancy: 8 client threads, each with its own connection and user token, each submitting
      a forward-only trace of its own 16-token prompt (saving the last-position logits) R times back
      to back; against (a) the same 8 x R requests one at a time from one client and (b) the same
      prompts batched by hand in plain PyTorch in this process (R forwards of an [8, 16] batch).

`run(models, quick)` returns the figures; `report(figures)` the README section; `targets(figures)`
the key-target lines. Used by `benchmarks/run.py` (`--remote`, the default). Run alone:

    .venv/bin/python -m benchmarks.remote [--quick] [--models smollm2,tiny]
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from nnsight_jupyter.server.launch import HostProcess

# user0 runs the round trips and the one-at-a-time baseline; user1..user8 are the concurrent clients.
USERS = {f"token-user{i}": f"user{i}" for i in range(9)}
ADMIN_TOKEN = "bench-admin-token"
CLIENTS = 8
PROMPT_TOKENS = 16
TARGET_OVERHEAD_MS = 10.0  # remote median - local median, round trip (1)
TARGET_FRACTION = 0.8  # co-tenant throughput / hand-batched throughput (2)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the server (server.launch.HostProcess)


def bench_host(root: Path, models: dict) -> HostProcess:
    """`python -m jupyter_server` with the extension on 127.0.0.1, this benchmark's user tokens, own
    paths; `stop()` also ends the model workers it spawned (the same code the tests use)."""
    return HostProcess(root, models, USERS, ADMIN_TOKEN)


# ---------------------------------------------------------------- the models and prompts

SMOLLM2_SENTENCES = [
    "The Eiffel Tower is in the city of Paris, which is the capital of France. The Colosseum is in the city of Rome",
    "Water boils at one hundred degrees Celsius at sea level, and it freezes at zero degrees, which is why",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch of his old house",
    "In 1969, Neil Armstrong became the first person to walk on the Moon during the Apollo 11 mission, and",
    "Photosynthesis is the process by which green plants use sunlight to make food from carbon dioxide and water",
    "The stock market fell sharply on Monday after the central bank announced an unexpected rise in interest rates",
    "Shakespeare wrote many famous plays, including Hamlet, Macbeth and Romeo and Juliet, during the reign of Queen",
    "To make a simple bread, mix flour, water, salt and yeast, then knead the dough for ten minutes before",
]


def smollm2_prompts(tokenizer) -> torch.Tensor:
    """[8, 16] token ids: the first 16 tokens of 8 different sentences (no padding anywhere)."""
    rows = []
    for sentence in SMOLLM2_SENTENCES:
        ids = tokenizer(sentence, return_tensors="pt")["input_ids"][0, :PROMPT_TOKENS]
        assert ids.shape == (PROMPT_TOKENS,), (sentence, ids.shape)
        rows.append(ids)
    return torch.stack(rows)


def tiny_prompts(tokenizer) -> torch.Tensor:
    """[8, 16] random token ids of the tiny word-level vocabulary (past <pad> and <unk>)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(2, len(tokenizer), (CLIENTS, PROMPT_TOKENS), generator=generator)


@dataclass
class ModelPlan:
    title: str
    host_name: str
    layer: int  # the layer whose output (1) saves
    prompts: Callable[[Any], torch.Tensor]
    rt_reps: int  # (1): timed repetitions of each of local and remote
    b2b_reps: int  # (1): remote repetitions back to back
    breakdown_reps: int  # (1): instrumented remote repetitions
    r: int  # (2): requests per client per round
    rounds: int  # (2): rounds of (concurrent, one at a time, hand-batched), in rotating order


PLANS = {
    "smollm2": ModelPlan("SmolLM2-135M (bundled; 30 layers, hidden 576, vocab 49152)", "smollm2", 15,
                         smollm2_prompts, rt_reps=60, b2b_reps=20, breakdown_reps=20, r=10, rounds=2),
    "tiny": ModelPlan("tiny random Llama (4 layers, hidden 64, vocab 200)", "tiny", 2,
                      tiny_prompts, rt_reps=200, b2b_reps=100, breakdown_reps=50, r=25, rounds=2),
}
QUICK = {"rt_reps": 5, "b2b_reps": 5, "breakdown_reps": 3, "r": 2, "rounds": 1}


def host_models(tiny_dir: Path) -> dict:
    return {"smollm2": {"source": "bundled:smollm2-135m", "threads": 1},
            "tiny": {"source": str(tiny_dir), "threads": 1}}


def local_model(name: str, tiny_dir: Path):
    from nnsight_jupyter import LanguageModel

    return LanguageModel("smollm2-135m" if name == "smollm2" else str(tiny_dir))


# ---------------------------------------------------------------- statistics


def pct(samples, q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    xs = sorted(samples)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary_ms(samples_s) -> dict:
    ms = [s * 1e3 for s in samples_s]
    return {"n": len(ms), "median": statistics.median(ms), "p90": pct(ms, 90), "p99": pct(ms, 99),
            "min": min(ms)}


def value(x):
    return x if isinstance(x, torch.Tensor) else x.value


@contextlib.contextmanager
def frozen_gc():
    """Long-lived objects (torch, transformers, the models) out of the collector's sight, so that the
    `gc.collect()` between timed calls is quick (as in benchmarks/run.py)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# ---------------------------------------------------------------- (1) round trip


def save_layer(model, ids, layer):
    with model.trace(ids):
        h = model.model.layers[layer].output.save()
    return value(h)


def round_trip(local, remote, ids, layer, reps, b2b_reps) -> dict:
    a, b = save_layer(local, ids, layer), save_layer(remote, ids, layer)
    equal = bool(torch.equal(a, b))
    max_diff = float((a - b).abs().max()) if a.shape == b.shape else float("nan")
    for _ in range(3):  # warm both
        save_layer(local, ids, layer)
        save_layer(remote, ids, layer)
    times = {"local": [], "remote": []}
    with frozen_gc():
        for rep in range(reps):
            order = ("local", "remote") if rep % 2 == 0 else ("remote", "local")
            for key in order:
                model = local if key == "local" else remote
                gc.collect()
                start = time.perf_counter()
                save_layer(model, ids, layer)
                times[key].append(time.perf_counter() - start)
        # The same remote trace back to back: no local trace and no gc.collect() in between (a loop
        # over prompts in a notebook), so the next request leaves as soon as the last result arrived.
        gc.collect()
        back_to_back = []
        for _ in range(b2b_reps):
            start = time.perf_counter()
            save_layer(remote, ids, layer)
            back_to_back.append(time.perf_counter() - start)
    paired = [(r - loc) * 1e3 for loc, r in zip(times["local"], times["remote"])]
    return {"equal": equal, "max_diff": max_diff, "shape": tuple(a.shape),
            "local": summary_ms(times["local"]), "remote": summary_ms(times["remote"]),
            "paired_diff_median": statistics.median(paired), "b2b": summary_ms(back_to_back)}


STAGES = [
    ("trace", "client: trace body and exit, graph building, order check", "t0", "e0"),
    ("encode", "client: encode graph, pack frame", "e0", "sent"),
    ("to_host", "websocket → host: decode + validate graph, job row", "sent", "created"),
    ("dispatch", "host: commit job (fsync), `accepted`, dispatch, mark running (fsync)", "created", "started"),
    ("worker", "host → worker pipe, worker: decode, forward + hooks, encode result, pipe back, "
               "hop to event loop, result file (fsync)", "started", "finished"),
    ("store", "host: commit done (fsync), fsync dir, read result file", "finished", "fetched"),
    ("to_client", "host: commit fetched_at (fsync), frame, websocket → client recv + unpack", "fetched", "d0"),
    ("decode", "client: decode result values", "d0", "d1"),
    ("finish", "client: hand the saves back, leave the trace", "d1", "t1"),
]


def breakdown(connection, remote, ids, layer, reps, fsync_ms, local_ms, pause=True) -> dict:
    """Where the remote round trip goes: client timestamps (instrumented encode / send / decode) and
    the job store's timestamps (created, started, finished, fetched_at), all `time.time()` on this
    machine. The instrumentation wraps functions of this process only, for this pass only."""
    from nnsight_jupyter.client import jobs as jobs_mod
    from nnsight_jupyter.client import runner as runner_mod
    from nnsight_jupyter.client.transport import Socket
    from nnsight_jupyter.graph.codec import decode, encode_values

    marks: dict[str, float] = {}
    captured: dict[str, Any] = {}
    original_encode, original_decode = runner_mod.encode, jobs_mod.decode_values
    original_submit = Socket.send_frame

    def encode(graph):
        marks["e0"] = time.time()
        data = original_encode(graph)
        marks["e1"] = time.time()
        captured["graph"] = data
        return data

    def decode_values(payload):
        marks["d0"] = time.time()
        out = original_decode(payload)
        marks["d1"] = time.time()
        captured["result"] = payload
        return out

    def submit_frame(self, frame):
        marks["sent"] = time.time()
        return original_submit(self, frame)

    rows = []
    runner_mod.encode, jobs_mod.decode_values = encode, decode_values
    Socket.send_frame = submit_frame
    try:
        with frozen_gc():
            for _ in range(reps):
                if pause:
                    gc.collect()
                marks.clear()
                marks["t0"] = time.time()
                save_layer(remote, ids, layer)
                marks["t1"] = time.time()
                rows.append((dict(marks), remote._host.last_job_id))
    finally:
        runner_mod.encode, jobs_mod.decode_values = original_encode, original_decode
        Socket.send_frame = original_submit
    stages = {key: [] for key, *_ in STAGES}
    totals = []
    for m, job_id in rows:
        job = connection.job(job_id)
        m.update(created=job["created"], started=job["started"], finished=job["finished"],
                 fetched=job["fetched_at"])
        for key, _, a, b in STAGES:
            stages[key].append((m[b] - m[a]) * 1e3)
        totals.append((m["t1"] - m["t0"]) * 1e3)

    # In-process references for the worker's share: its decode, its encode (and the local trace of (1)).
    graph, result = captured["graph"], captured["result"]
    saved = value(save_layer(remote, ids, layer))

    def med_ms(fn, n=20):
        out = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
        return statistics.median(out)

    refs = {"decode_graph": med_ms(lambda: decode(graph)),
            "local_trace": local_ms,
            "encode_result": med_ms(lambda: encode_values({"0": saved})),
            "graph_bytes": len(graph), "result_bytes": len(result), "fsync": fsync_ms}
    return {"reps": reps, "stages": {k: statistics.median(v) for k, v in stages.items()},
            "total": statistics.median(totals), "refs": refs}


def fsync_cost(directory: Path, n: int = 20) -> float:
    """Median ms of writing 4 KiB and fsync'ing it, in the server's directory (the job store's)."""
    path = directory / "fsync-probe"
    out = []
    with open(path, "wb") as f:
        for _ in range(n):
            start = time.perf_counter()
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
            out.append((time.perf_counter() - start) * 1e3)
    path.unlink()
    return statistics.median(out)


# ---------------------------------------------------------------- (2) co-tenancy


def last_logits(model, ids):
    with model.trace(ids):
        out = model.lm_head.output[:, -1].save()
    return value(out)


def run_concurrent(models, prompts, r):
    """8 threads, client i sending prompts[i] r times back to back.
    (wall s, latencies s, [(connection, job id)], last results)"""
    n = len(models)
    barrier = threading.Barrier(n + 1)
    latencies: list[list[float]] = [[] for _ in range(n)]
    job_ids: list[list[str]] = [[] for _ in range(n)]
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def client(i):
        try:
            model, ids = models[i], prompts[i:i + 1]
            barrier.wait()
            for _ in range(r):
                start = time.perf_counter()
                results[i] = last_logits(model, ids)
                latencies[i].append(time.perf_counter() - start)
                job_ids[i].append((model._host.connection, model._host.last_job_id))
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), name=f"bench-client-{i}") for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return wall, [x for lat in latencies for x in lat], [j for ids in job_ids for j in ids], results


def run_sequential(model, prompts, r):
    """One client, the same 8 x r requests one at a time."""
    latencies, job_ids, results = [], [], [None] * len(prompts)
    start = time.perf_counter()
    for _ in range(r):
        for i in range(len(prompts)):
            t = time.perf_counter()
            results[i] = last_logits(model, prompts[i:i + 1])
            latencies.append(time.perf_counter() - t)
            job_ids.append((model._host.connection, model._host.last_job_id))
    return time.perf_counter() - start, latencies, job_ids, results


def hand_batched_forward(hf, prompts):
    saved = []
    handle = hf.lm_head.register_forward_hook(lambda m, args, out: saved.append(out[:, -1].detach()))
    try:
        with torch.no_grad():
            hf(prompts)
    finally:
        handle.remove()
    return saved[0]


def run_hand_batched(hf, prompts, r):
    """Plain PyTorch here: r forwards of the [8, 16] batch, a hook saving the last-position logits."""
    latencies, out = [], None
    start = time.perf_counter()
    for _ in range(r):
        t = time.perf_counter()
        out = hand_batched_forward(hf, prompts)
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - start, latencies, [], list(out.split(1))


def co_tenancy(server, plan, local, prompts, r, rounds) -> dict:
    from nnsight_jupyter.client.connection import connect

    tokens = list(USERS)
    connections = [connect(server.url, tokens[1 + i]) for i in range(CLIENTS)]
    solo = connect(server.url, tokens[0])
    try:
        models = [c.model(plan.host_name) for c in connections]
        solo_model = solo.model(plan.host_name)
        hf = local._module

        # Warm-up (opens the sockets) and the check: every remote result against the hand-batched row.
        reference = hand_batched_forward(hf, prompts)
        checks = {}
        for mode, results in (("concurrent", run_concurrent(models, prompts, 1)[3]),
                              ("sequential", run_sequential(solo_model, prompts, 1)[3])):
            diffs = [float((results[i] - reference[i:i + 1]).abs().max()) for i in range(CLIENTS)]
            checks[mode] = max(diffs)
            for i in range(CLIENTS):
                torch.testing.assert_close(results[i], reference[i:i + 1], rtol=1e-4, atol=1e-4)

        runners = {"concurrent": lambda: run_concurrent(models, prompts, r),
                   "sequential": lambda: run_sequential(solo_model, prompts, r),
                   "hand": lambda: run_hand_batched(hf, prompts, r)}
        keys = list(runners)
        acc = {k: {"wall": 0.0, "latencies": [], "job_ids": []} for k in keys}
        with frozen_gc():
            for rnd in range(rounds):
                shift = rnd % len(keys)
                for key in keys[shift:] + keys[:shift]:
                    gc.collect()
                    wall, latencies, job_ids, _ = runners[key]()
                    acc[key]["wall"] += wall
                    acc[key]["latencies"] += latencies
                    acc[key]["job_ids"] += job_ids
                    log(f"  {plan.host_name} (2) round {rnd + 1} {key}: {wall:.2f} s")

        # Forward passes on the host: the distinct batch ids of each mode's jobs (GET jobs/<id> as the
        # job's own user; the per-user listing GET jobs shows only the newest 50).
        batch_of = {job_id: owner.job(job_id)["batch_id"]
                    for k in ("concurrent", "sequential") for owner, job_id in acc[k]["job_ids"]}
        figures = {}
        requests = CLIENTS * r * rounds
        for k in keys:
            lat = summary_ms(acc[k]["latencies"])
            entry = {"requests": requests, "wall": acc[k]["wall"], "throughput": requests / acc[k]["wall"],
                     "p50": lat["median"], "p99": lat["p99"]}
            if k == "hand":
                entry["passes"] = r * rounds
            else:
                batches = [batch_of[job_id] for _, job_id in acc[k]["job_ids"]]
                entry["passes"] = len(set(batches))
                sizes: dict[str, int] = {}
                for b in batches:
                    sizes[b] = sizes.get(b, 0) + 1
                entry["max_jobs_per_pass"] = max(sizes.values())
                histogram: dict[int, int] = {}
                for size in sizes.values():
                    histogram[size] = histogram.get(size, 0) + 1
                entry["pass_sizes"] = dict(sorted(histogram.items()))
            figures[k] = entry
        hand = figures["hand"]["throughput"]
        for k in keys:
            figures[k]["fraction"] = figures[k]["throughput"] / hand
        return {"r": r, "rounds": rounds, "checks": checks, "modes": figures}
    finally:
        for c in connections + [solo]:
            c.close()


# ---------------------------------------------------------------- all of it


def run(models=("smollm2", "tiny"), quick=False) -> dict:
    """Start the server, measure (1) and (2) for each model, stop the server. {model: figures}."""
    os.environ["NNSIGHT_JUPYTER_PROGRESS"] = "0"
    torch.set_num_threads(1)
    from nnsight_jupyter.client.connection import connect
    from nnsight_jupyter.models import tiny_llama, word_tokenizer

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="nnsight-bench-") as tmp:
        root = Path(tmp)
        tiny_dir = root / "tiny-llama"
        tiny_llama(seed=0).save_pretrained(tiny_dir)
        word_tokenizer().save_pretrained(tiny_dir)
        server_root = root / "server"
        server_root.mkdir()
        server = bench_host(server_root, host_models(tiny_dir))
        start = time.perf_counter()
        try:
            server.start().wait_ready()
            log(f"remote: server with {', '.join(server.models)} ready in {time.perf_counter() - start:.1f} s "
                f"at {server.url}")
            fsync_ms = fsync_cost(server_root)
            for name in models:
                plan = PLANS[name]
                reps = {k: QUICK[k] if quick else getattr(plan, k) for k in QUICK}
                start = time.perf_counter()
                local = local_model(name, tiny_dir)
                prompts = plan.prompts(local.tokenizer)
                connection = connect(server.url, list(USERS)[0])
                try:
                    remote = connection.model(plan.host_name)
                    ids = prompts[:1]
                    figures = {"prompt_tokens": PROMPT_TOKENS}
                    figures["rt"] = round_trip(local, remote, ids, plan.layer, reps["rt_reps"], reps["b2b_reps"])
                    rt = figures["rt"]
                    log(f"remote: {name} (1) x{reps['rt_reps']}: local {rt['local']['median']:.2f} ms, remote "
                        f"{rt['remote']['median']:.2f} ms, paired diff {rt['paired_diff_median']:+.2f} ms, "
                        f"bit-identical {rt['equal']}; remote back to back {rt['b2b']['median']:.2f} ms")
                    figures["breakdown"] = breakdown(connection, remote, ids, plan.layer, reps["breakdown_reps"],
                                                     fsync_ms, rt["local"]["median"])
                finally:
                    connection.close()
                figures["co"] = co_tenancy(server, plan, local, prompts, reps["r"], reps["rounds"])
                co = figures["co"]["modes"]
                log(f"remote: {name} (2): co-tenant {co['concurrent']['throughput']:.1f} req/s in "
                    f"{co['concurrent']['passes']} passes, one at a time {co['sequential']['throughput']:.1f}, "
                    f"hand-batched {co['hand']['throughput']:.1f} "
                    f"({time.perf_counter() - start:.1f} s for {name})")
                out[name] = figures
                del local
                gc.collect()
        finally:
            server.stop()
    return out


# ---------------------------------------------------------------- the report


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets(figures: dict) -> list[str]:
    """Key-target lines: the targets are SmolLM2's; the tiny model's figures are for reference."""
    lines = []
    for name, f in figures.items():
        rt, co = f["rt"], f["co"]["modes"]
        over = rt["remote"]["median"] - rt["local"]["median"]
        targeted = name == "smollm2"
        verdict = (f"target ≤ {TARGET_OVERHEAD_MS:g} ms: {_verdict(over <= TARGET_OVERHEAD_MS)}; "
                   if targeted else "no target; ")
        b2b = rt["b2b"]["median"] - rt["local"]["median"]
        lines.append(f"* {name} remote round trip (1): remote − local = **{over:+.1f} ms** ({verdict}medians; "
                     f"paired {rt['paired_diff_median']:+.1f} ms; back to back {b2b:+.1f} ms); "
                     f"saved tensors bit-identical: {'yes' if rt['equal'] else '**no**'}")
        frac = co["concurrent"]["fraction"]
        verdict = (f"target ≥ {TARGET_FRACTION}: {_verdict(frac >= TARGET_FRACTION)}; " if targeted
                   else "no target; ")
        lines.append(f"* {name} co-tenancy (2): 8 concurrent clients reach **{frac:.3f}** of hand-batched "
                     f"throughput ({verdict}one at a time: {co['sequential']['fraction']:.3f}; "
                     f"{co['concurrent']['passes']} forward passes for {co['concurrent']['requests']} requests)")
    return lines


SECTION = """\
## Remote host (127.0.0.1)

`benchmarks/remote.py`. One real Jupyter server (`python -m jupyter_server` with the extension,
a subprocess on 127.0.0.1, nine user tokens) hosts the bundled SmolLM2-135M (`"threads": 1`) and a
tiny random Llama saved to a temp dir (`"threads": 1`), each in its own worker process. This
process is the client, with `torch.set_num_threads(1)` and `NNSIGHT_JUPYTER_PROGRESS=0`.
**The host's worker, the Jupyter server and this benchmark process share this machine's
{cpus} cores**, so client-side work and host-side work compete for the same CPUs (in (2) the 8 client
threads also share one Python interpreter). Inputs are [1, 16] token-id tensors: 16 tokens of 8
different prompts (the SmolLM2 ones cut from 8 sentences, the tiny model's random ids), so no
batch needs padding.

* **(1) round trip**: one trace saving one layer's output (`model.layers[{smol_layer}].output` on SmolLM2,
  `model.layers[{tiny_layer}].output` on the tiny Llama), locally (`LanguageModel(...)` in this process) and
  on the host (`connect(url, token).model(name)`), interleaved (local and remote alternate, the order
  flipping every repetition), `gc.collect()` before each (long-lived objects `gc.freeze()`d, as above).
  Wall time of the whole `with model.trace(...)`.
  Then "remote, back to back": the remote trace alone in a tight loop (no local trace, no
  `gc.collect()` between), as a loop over prompts in a notebook would send it.
  Checked once before timing: the remote saved tensor `torch.equal` to the local one.
  The breakdown comes from a second, instrumented pass (client timestamps around encode / send / decode,
  and the job store's `created`, `started`, `finished`, `fetched_at`; one clock, one machine).
* **(2) co-tenancy**: the same forward-only trace (16-token prompt, save `lm_head.output[:, -1]`) from
  8 client threads, each its own `connect()` with its own user token, each sending its own prompt R
  times back to back, so the host merges queued jobs into shared forward passes. Against **one at a
  time**: the same 8 × R requests sent sequentially from one client (no overlap: no co-tenancy), and
  **hand-batched**: plain PyTorch in this process, R forwards of the [8, 16] batch with a hook saving
  the last-position logits. The three run in rotating order, {rounds} round(s) of R = {r}. Forward passes =
  distinct `batch_id`s of the jobs (`GET nnsight/api/jobs`). Latency = one request's whole trace
  (hand-batched: one [8, 16] forward). Checked once before timing: every remote result is close
  (atol = rtol = 1e-4) to its row of the hand-batched forward.
"""


def _fmt_ms(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def report(figures: dict, quick: bool = False) -> str:
    smol, tiny = PLANS["smollm2"], PLANS["tiny"]
    first = next(iter(figures.values()), None)
    parts = [SECTION.format(cpus=os.cpu_count(), smol_layer=smol.layer, tiny_layer=tiny.layer,
                            rounds=first["co"]["rounds"] if first else "?",
                            r=", ".join(f"{f['co']['r']} ({n})" for n, f in figures.items())),
             "The targets (SmolLM2) and how they fare are under *Key targets* at the top.", ""]

    lines = ["### (1) Round trip of one small trace: remote vs local\n",
             "| model | where | reps | median ms | p90 ms | min ms | remote − local (median) ms | "
             "paired difference (median) ms | bit-identical |",
             "|---|---|--:|--:|--:|--:|--:|--:|---|"]
    for name, f in figures.items():
        rt = f["rt"]
        over = rt["remote"]["median"] - rt["local"]["median"]
        lines.append(f"| {name} | local | {rt['local']['n']} | {_fmt_ms(rt['local']['median'])} | "
                     f"{_fmt_ms(rt['local']['p90'])} | {_fmt_ms(rt['local']['min'])} | — | — | |")
        lines.append(f"| | remote | {rt['remote']['n']} | {_fmt_ms(rt['remote']['median'])} | "
                     f"{_fmt_ms(rt['remote']['p90'])} | {_fmt_ms(rt['remote']['min'])} | {over:+.1f} | "
                     f"{rt['paired_diff_median']:+.1f} | "
                     f"{'yes' if rt['equal'] else 'no (max |Δ| %.3g)' % rt['max_diff']} |")
        b2b = rt["b2b"]
        lines.append(f"| | remote, back to back | {b2b['n']} | {_fmt_ms(b2b['median'])} | {_fmt_ms(b2b['p90'])} | "
                     f"{_fmt_ms(b2b['min'])} | {b2b['median'] - rt['local']['median']:+.1f} | — | |")
    parts += ["\n".join(lines), ""]

    names = list(figures)
    lines = ["### Where a remote round trip goes\n",
             "Medians per stage of an instrumented pass (the stages' medians need not add up exactly to the "
             "median total).\n",
             "| stage | " + " | ".join(f"{n} ms" for n in names) + " |",
             "|---|" + "--:|" * len(names)]
    for key, label, *_ in STAGES:
        lines.append(f"| {label} | " + " | ".join(f"{figures[n]['breakdown']['stages'][key]:.2f}" for n in names)
                     + " |")
    lines.append("| **total (median)** | " + " | ".join(f"**{figures[n]['breakdown']['total']:.2f}**"
                                                       for n in names) + " |")
    lines.append("| *instrumented reps* | " + " | ".join(str(figures[n]["breakdown"]["reps"]) for n in names)
                 + " |")
    refs = [("local_trace", "for reference: the same trace locally (forward + hooks; median of (1))", "{:.2f} ms"),
            ("decode_graph", "for reference: decode + validate this graph, here (host and worker each do it)",
             "{:.2f} ms"),
            ("encode_result", "for reference: encode the saved tensor, here", "{:.2f} ms"),
            ("fsync", "for reference: one 4 KiB write + fsync in the job store's directory", "{:.2f} ms"),
            ("graph_bytes", "graph frame payload", "{:,} B"),
            ("result_bytes", "result frame payload", "{:,} B")]
    lines.append("| *worker stage − the same trace locally (the worker's own overhead)* | "
                 + " | ".join(f"{figures[n]['breakdown']['stages']['worker'] - figures[n]['breakdown']['refs']['local_trace']:.2f}"  # noqa: E501
                              for n in names) + " |")
    for key, label, form in refs:
        lines.append(f"| *{label}* | " + " | ".join(form.format(figures[n]["breakdown"]["refs"][key])
                                                     for n in names) + " |")
    parts += ["\n".join(lines), ""]

    lines = ["### (2) 8 concurrent clients with co-tenant batching\n",
             "| model | mode | requests | wall s | throughput req/s | p50 latency ms | p99 latency ms | "
             "forward passes | jobs per pass (size×passes) | throughput / hand-batched |",
             "|---|---|--:|--:|--:|--:|--:|--:|---|--:|"]
    labels = {"concurrent": "8 concurrent clients (co-tenant)", "sequential": "one at a time, one client",
              "hand": "hand-batched plain PyTorch [8, 16]"}
    for name, f in figures.items():
        modes = f["co"]["modes"]
        for i, key in enumerate(("concurrent", "sequential", "hand")):
            m = modes[key]
            sizes = m.get("pass_sizes", {CLIENTS: m["passes"]})
            sizes = ", ".join(f"{size}×{count}" for size, count in sizes.items())
            lines.append(f"| {name if i == 0 else ''} | {labels[key]} | {m['requests']} | {m['wall']:.2f} | "
                         f"{m['throughput']:.1f} | {_fmt_ms(m['p50'])} | {_fmt_ms(m['p99'])} | {m['passes']} | "
                         f"{sizes} | {m['fraction']:.2f} |")
    checks = "; ".join(f"{name}: co-tenant {f['co']['checks']['concurrent']:.1e}, one at a time "
                       f"{f['co']['checks']['sequential']:.1e}" for name, f in figures.items())
    parts += ["\n".join(lines), "",
              f"Largest |remote − hand-batched| of the last-position logits in the check: {checks}.", ""]
    if quick:
        parts += ["(**--quick**: few repetitions, figures are rough)", ""]
    return "\n".join(parts)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", default=",".join(PLANS), help="comma list of: " + ", ".join(PLANS))
    args = parser.parse_args(argv)
    figures = run([m for m in args.models.split(",") if m], args.quick)
    print(report(figures, args.quick))


if __name__ == "__main__":
    main()
