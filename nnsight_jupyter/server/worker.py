"""Model workers: each hosted model lives once, in a process of its own.

The host's event loop never runs model code: it sends a worker batches of encoded graphs and hears
back encoded results. `Worker` is the interface a scheduler talks to; `LocalWorker` implements it
with a `multiprocessing` process (spawned) and a pipe. The messages are the host's own dicts (the
pipe pickles them; that is the host's plumbing): user bytes travel inside them as `bytes` and are
only ever decoded by `graph.codec`, never unpickled.

A graph is decoded and validated once, by the host, when it is submitted. The host pickles the
`Graph` its own decoder built (`prepare`, in its decode thread: plain data and tensors, the host's
own object, never the user's bytes) and the worker unpickles it (`graph_for`) instead of decoding
and validating the wire bytes again, stamping it validated (`graph.validate.seal`): for an 11-node
trace that is 28 us instead of 156 us in the worker, for a 32-invoke, 352-node one 1.06 ms instead
of 2.18 ms. Graphs over `PREPARED_MAX_BYTES` on the wire (their tensors dominate: holding a second
copy in the host's memory while they wait costs more than it saves), and jobs the host did not
decode itself (recovered after a restart, re-queued), are sent as bytes and decoded by the worker.

host -> worker   {"type": "batch", "batch_id", "jobs": [{"job_id", "graph": bytes, "prepared": bytes | None,
                  "solo": bool}]}
                 {"type": "cancel", "job_id"}            {"type": "stop"}
worker -> host   {"type": "ready", "info": {...}}          {"type": "failed", "error": str}
                 {"type": "progress", "job_id", "step", "steps"}
                 {"type": "log", "job_id", "line", "text"}    (a print() of a job that runs alone, as it runs)
                 {"type": "done", "batch_id", "jobs": {job_id: {"ok": True, "payload", "rows", "batch_id",
                  "logs", "missing"} | {"ok": False, "error": {"type", "message", and the
                  error's fields: "reason", "line", "module", "shapes", "fix" (NNsightError.fields)}}}}
                 (a job's own "batch_id" is "<batch_id>.<n>" when the batch's jobs ran in several forward
                 passes: some could not share one)
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

#: Wire bytes up to which the host keeps a prepared (decoded, pickled) graph for the worker.
PREPARED_MAX_BYTES = 1 << 20


def prepare(graph: Any, wire_bytes: int) -> bytes | None:
    """Host side: the decoded and validated `graph` (built by `graph.codec.decode`) pickled for the
    worker, or None when its wire form is over PREPARED_MAX_BYTES (the worker decodes those)."""
    if wire_bytes > PREPARED_MAX_BYTES:
        return None
    return pickle.dumps(graph, protocol=pickle.HIGHEST_PROTOCOL)


def graph_for(job: dict) -> Any:
    """Worker side: the Graph of a job of a batch message: the host's prepared graph (decoded and
    validated there; stamped so that it is not validated again), else its wire bytes decoded."""
    from ..graph.codec import decode
    from ..graph.validate import seal

    prepared = job.get("prepared")
    if prepared is None:
        return decode(job["graph"])
    graph = pickle.loads(prepared)      # the host's own object over the host's own pipe
    seal(graph)
    return graph


@dataclass
class ModelSpec:
    """One hosted model, as configured (`c.NNsightHost.models[name]`)."""

    name: str
    source: str
    dtype: str = "float32"
    device_map: Any = None
    threads: int | None = None
    max_result_bytes: int = 256 << 20
    max_job_memory_bytes: int | None = None     # execution.limits: bytes a job's ops may allocate
    max_log_bytes: int | None = None            # execution.limits: log bytes a job may print
    extra: dict = field(default_factory=dict)


class Worker(Protocol):
    """What the scheduler needs from a model worker (a local process, or a Ray Serve deployment)."""

    spec: ModelSpec

    def start(self) -> None: ...
    def send(self, message: dict) -> None: ...
    def kill(self) -> None: ...


class LocalWorker:
    """A worker process on this machine. `on_message(message)` / `on_exit(exitcode)` are called from a
    reader thread; the host hops them onto its event loop."""

    def __init__(self, spec: ModelSpec, on_message: Callable[[dict], None], on_exit: Callable[[int | None], None]):
        self.spec = spec
        self.on_message = on_message
        self.on_exit = on_exit
        self.process: Any = None
        self.conn: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        self.process = context.Process(target=worker_main, args=(child, self.spec), daemon=True,
                                       name=f"nnsight-worker-{self.spec.name}")
        self.process.start()
        child.close()
        self.conn = parent
        threading.Thread(target=self._read, args=(parent, self.process), daemon=True,
                         name=f"nnsight-reader-{self.spec.name}").start()

    def _read(self, conn: Any, process: Any) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            self.on_message(message)
        process.join(timeout=5)
        if process is self.process:
            self.on_exit(process.exitcode)

    def send(self, message: dict) -> None:
        with self._lock:
            self.conn.send(message)

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


# ----------------------------------------------------------------------------- inside the worker


def describe(name: str, model: Any, tokenizer: Any, order: Any) -> dict:
    """What a client needs to build a weightless copy: config, module tree, order, tokenizer."""
    from ..models import config_dict, module_tree

    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    special = {key: getattr(tokenizer, key, None) for key in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return {
        "name": name,
        "config": config_dict(model),
        "module_tree": module_tree(model),
        "execution_order": order.to_json(),
        "tokenizer": {"tokenizer_json": backend.to_str() if backend is not None else None,
                      "special_tokens": {k: str(v) for k, v in special.items() if v is not None},
                      "padding_side": "left"},
    }


def load_model(spec: ModelSpec) -> tuple[Any, Any]:
    """Load the model for a spec on CPU, then place it with accelerate when a device_map is given."""
    import torch

    from ..models import load_pretrained

    dtype = getattr(torch, spec.dtype)
    model, tokenizer = load_pretrained(spec.source, dtype=dtype)
    if spec.device_map is not None:
        from accelerate import dispatch_model, infer_auto_device_map

        device_map = spec.device_map
        if device_map == "auto":
            device_map = infer_auto_device_map(model)
        model = dispatch_model(model, device_map=device_map)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, tokenizer


def worker_main(conn: Any, spec: ModelSpec) -> None:
    """The worker process: load the model, then run batches until told to stop."""
    import torch

    from ..execution import limits

    if spec.threads:
        torch.set_num_threads(spec.threads)
    limits.configure(max_job_memory_bytes=spec.max_job_memory_bytes, max_log_bytes=spec.max_log_bytes)
    try:
        from ..execution.batching import LanguageTarget

        model, tokenizer = load_model(spec)
        target = LanguageTarget(model, tokenizer)
        target.record_order(layouts=True)
        conn.send({"type": "ready", "info": describe(spec.name, model, tokenizer, target.order)})
    except BaseException as error:  # noqa: BLE001 - report any load failure to the host
        conn.send({"type": "failed", "error": f"{type(error).__name__}: {error}"})
        return
    inbox: queue.Queue = queue.Queue()
    cancelled: set[str] = set()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                os._exit(0)     # the host is gone (even killed): stop at once, mid-job too
            if message.get("type") == "stop":
                inbox.put(message)
                return
            if message.get("type") == "cancel":
                cancelled.add(message["job_id"])
            else:
                inbox.put(message)

    threading.Thread(target=read, daemon=True).start()
    while True:
        message = inbox.get()
        if message["type"] == "stop":
            return
        if message["type"] == "batch":
            try:
                report = run_batch(message, target, spec, conn, cancelled)
            except Exception as error:  # noqa: BLE001 - a bug fails this batch's jobs, never the worker
                report = {"type": "done", "batch_id": message["batch_id"],
                          "jobs": {job["job_id"]: _failure(_internal(error)) for job in message["jobs"]}}
            conn.send(report)


def _internal(error: BaseException) -> Exception:
    """An NNsightError for an exception that is not one (a bug, or a library's own error)."""
    from ..errors import NNsightError

    if isinstance(error, NNsightError):
        return error
    return NNsightError(f"internal error: {type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}")


def _failure(error: BaseException) -> dict:
    """A failed job's report: the error's type, message and fields (line, module, shapes, fix)."""
    from ..errors import NNsightError

    if isinstance(error, NNsightError):
        return {"ok": False, "error": error.fields()}
    return {"ok": False, "error": {"type": type(error).__name__, "message": str(error)}}


def run_batch(message: dict, target: Any, spec: ModelSpec, conn: Any, cancelled: set[str]) -> dict:
    """Each job's graph (`graph_for`), mergeable ones run together and the rest alone, results encoded."""
    from ..errors import JobCancelledError, NNsightError
    from ..execution import execute
    from ..execution.merge import JobOutcome, job_kind
    from ..graph.codec import encode_values

    outcomes: dict[str, JobOutcome] = {}
    graphs: dict[str, Any] = {}
    for job in message["jobs"]:
        try:
            graphs[job["job_id"]] = graph_for(job)
        except Exception as error:  # noqa: BLE001 - a graph that cannot be decoded fails its job only
            outcomes[job["job_id"]] = JobOutcome(error=_internal(error))
    # Forward-only traces go to execute_batch, which merges those that may share a forward pass
    # (same invoke keyword arguments, no shared value reached) and runs the others alone.
    traces = [j for j in graphs if job_kind(graphs[j]) == "trace"]
    alone = [j for j in graphs if j not in traces]
    if traces:
        again = _run_merged(traces, graphs, target, outcomes)
        alone.extend(again)
        traces = [j for j in traces if j not in again]
    # The forward pass each job ran in: the batch's id, or <id>.<n> when the batch was split.
    passes = {outcomes[j].part for j in traces} | ({-1} if traces and alone else set())
    ran_in = {j: f"{message['batch_id']}.{outcomes[j].part}" if len(passes) > 1 else message["batch_id"]
              for j in traces}
    ran_in.update({j: f"{message['batch_id']}.alone{n}" if len(graphs) > 1 else message["batch_id"]
                   for n, j in enumerate(alone)})
    for job_id in alone:
        graph = graphs[job_id]
        steps = graph.runs[-1].options.get("max_new_tokens", 0) if graph.runs else 0

        def on_step(step: int, job_id: str = job_id, steps: int = steps) -> None:
            if job_id in cancelled:
                raise JobCancelledError("cancelled while running")
            conn.send({"type": "progress", "job_id": job_id, "step": step + 1, "steps": steps})

        def on_log(line: str, text: str, job_id: str = job_id) -> None:
            conn.send({"type": "log", "job_id": job_id, "line": line, "text": text})

        try:
            result = execute(graph, target, echo_logs=False, on_step=on_step, on_log=on_log)
            outcomes[job_id] = JobOutcome(result=result, rows=(0, result.rows))
        except Exception as error:  # noqa: BLE001 - a bug must fail the job, not the worker
            outcomes[job_id] = JobOutcome(error=_internal(error))
    report: dict[str, dict] = {}
    for job_id, outcome in outcomes.items():
        if outcome.error is not None:
            report[job_id] = _failure(outcome.error)
            continue
        result = outcome.result
        try:
            payload = encode_values({str(k): v for k, v in result.saved.items()})
        except Exception as error:  # noqa: BLE001 - a value the codec cannot send fails its job only
            report[job_id] = _failure(error if isinstance(error, NNsightError) else _internal(error))
            continue
        if len(payload) > spec.max_result_bytes:
            report[job_id] = {"ok": False, "error": {
                "type": "ResultTooLarge",
                "message": f"the saved values take {len(payload)} bytes, over this host's limit of "
                           f"{spec.max_result_bytes}: save less (a slice, a mean) or ask for a higher limit"}}
            continue
        report[job_id] = {"ok": True, "payload": payload, "rows": list(outcome.rows or (0, 0)),
                          "batch_id": ran_in.get(job_id, message["batch_id"]),
                          "logs": [list(entry) for entry in result.logs],
                          "missing": {str(k): v for k, v in result.missing.items()}}
    return {"type": "done", "batch_id": message["batch_id"], "jobs": report}


def _run_merged(job_ids: list[str], graphs: dict, target: Any, outcomes: dict) -> list[str]:
    """Run mergeable jobs in one forward pass; return the ids to run alone instead.

    A failure that names no one job (the forward pass raised, or every job got the very same error
    object) cannot be blamed on any of them: those jobs run again, each alone, so only the job that
    causes it fails."""
    from ..execution.merge import execute_batch

    try:
        results = execute_batch([graphs[j] for j in job_ids], target)
    except Exception:  # noqa: BLE001 - not attributable to one job: run each alone
        return list(job_ids)
    shared = [o.error for o in results if o.error is not None]
    again = []
    for job_id, outcome in zip(job_ids, results):
        if outcome.error is not None and sum(e is outcome.error for e in shared) > 1:
            again.append(job_id)
        else:
            outcomes[job_id] = outcome
    return again
