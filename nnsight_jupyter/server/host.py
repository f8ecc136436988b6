"""The model host's core: models and their workers, queues, dispatch, results, cancellation, faults.

Everything here runs on the server's event loop (worker callbacks hop onto it); model code never
does. A job is accepted only once the job store has committed it. Each model has one worker and
one queue; `scheduler.next_batch` picks what runs next. Faults lose nothing:

* a worker that dies takes its batch with it: each of its jobs is re-queued once (the shared model
  is never changed by a job, so running it again has no other effect), then fails with
  "WorkerRestarted"; queued jobs keep their place; the worker is started again;
* a batch that runs past `job_timeout` is stopped (its worker is restarted): a job that ran alone
  fails with "TimeLimitExceeded", jobs of a merged batch are re-queued to run alone;
* when the server restarts, `JobStore.recover` re-queues what was running;
* a worker stopped by a job (it crashed while the job ran alone, or the job ran past its time) is a
  strike against that job's owner, never against the model: an owner with `max_user_crashes`
  strikes in `crash_window` seconds has new jobs refused ("too_many_crashes") for that long. Only
  exits no job caused (loading, idle) count towards marking the model failed;
* anything one job's data makes go wrong here (a result the store cannot write, a result frame
  that cannot be read back, a listener that raises) fails or reports that job alone, and dispatch
  goes on.

Graphs are decoded and validated off the event loop, in a small thread pool (`submit` is a
coroutine), so one huge graph never freezes the other endpoints; a user's graphs being decoded
count towards their queue limit. That is the only time a graph is decoded: the worker gets the
decoded graph (`worker.prepare`). A job's invoke count and merge key live on its row, so a restarted
host queues it again as it was.

Listeners (the websocket handlers) subscribe to job ids and receive `(header, payload)` messages
as in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import protocol
from ..errors import NNsightError, ProtocolError, extra_fields
from ..execution.limits import format_bytes
from ..execution.merge import job_kind, merge_key
from ..graph.codec import decode
from .jobs import TERMINAL, DuplicateRequest, JobNotFound, JobRecord, JobStore
from .scheduler import Pending, next_batch, rotate
from .worker import LocalWorker, ModelSpec, prepare

Listener = Callable[[dict, "bytes | None"], None]


class HostError(NNsightError):
    """A request the host refuses; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str, error_type: str = "HostError"):
        self.code = code
        self.error_type = error_type
        super().__init__(message)


@dataclass
class _Busy:
    batch_id: str
    job_ids: list[str]
    owners: dict[str, str] = field(default_factory=dict)     # job id -> owner
    timer: Any = None
    started: float = 0.0


@dataclass
class HostedModel:
    """One hosted model: its worker, state, queue and running batch."""

    spec: ModelSpec
    state: str = "loading"          # loading | ready | failed | restarting
    error: str | None = None
    info: dict | None = None
    worker: Any = None
    queue: list[Pending] = field(default_factory=list)
    served: list[str] = field(default_factory=list)
    busy: _Busy | None = None
    solo: set[str] = field(default_factory=set)
    restarts: list[float] = field(default_factory=list)
    batches: int = 0
    last_batch: tuple[int, float] = (0, 0.0)     # size and seconds of the last finished batch
    waiting: bool = False                        # a short batching window is open
    killing: str | None = None                   # why the host is stopping this worker (not a crash)


class Host:
    """Hosted models, their queues and workers, on one event loop."""

    def __init__(self, store: JobStore, specs: dict[str, ModelSpec], *, job_timeout: float = 600.0,
                 max_queued_per_user: int = 64, max_batch_jobs: int = 16, max_batch_invokes: int = 64,
                 max_graph_nodes: int = 100_000, max_graph_tensor_bytes: int = 64 << 20,
                 max_stored_bytes_per_user: int = 1 << 30, max_user_crashes: int = 3,
                 crash_window: float = 600.0, decode_threads: int = 2,
                 worker_factory: Callable[..., Any] = LocalWorker, log: Any = None):
        self.store = store
        self.max_graph_nodes = max_graph_nodes
        self.max_graph_tensor_bytes = max_graph_tensor_bytes
        self.max_stored_bytes_per_user = max_stored_bytes_per_user
        self.max_user_crashes = max_user_crashes
        self.crash_window = crash_window
        self.crashes: dict[str, list[float]] = {}       # owner -> times their jobs stopped the worker
        self.decoding: dict[str, int] = {}              # owner -> graphs being decoded now
        self.decoder = ThreadPoolExecutor(max_workers=max(1, decode_threads), thread_name_prefix="nnsight-decode")
        self.models = {name: HostedModel(spec) for name, spec in specs.items()}
        self.job_timeout = job_timeout
        self.max_queued_per_user = max_queued_per_user
        self.max_batch_jobs = max_batch_jobs
        self.max_batch_invokes = max_batch_invokes
        self.worker_factory = worker_factory
        self.log = log
        self.listeners: dict[str, set[Listener]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        """Recover the job store, rebuild the queues, start every model's worker (in the background)."""
        self.loop = asyncio.get_event_loop()
        if self.store.damaged and self.log:
            self.log.error("nnsight: %s", self.store.damaged)
        recovered = self.store.recover()
        if self.log and any(recovered.values()):
            self.log.info("nnsight: recovered jobs after restart: %s", recovered)
        for record in self.store.queued():
            model = self.models.get(record.model)
            if model is None:
                self.store.transition(record.id, "error", error_type="UnknownModel",
                                      error_message=f"model {record.model!r} is no longer hosted here")
                continue
            if record.invokes is None:        # stored by an older host: work its shape out once
                record = self._reshape(record)
                if record is None:
                    continue
            model.queue.append(self._pending(record))
        for name in self.models:
            self._start_worker(name)
        self._purge(min(60.0, max(0.5, self.store.result_ttl)))

    def _reshape(self, record: JobRecord) -> JobRecord | None:
        """Invokes and merge key of a queued job stored without them (schema 1), from its graph; a
        graph that no longer passes is failed (None)."""
        try:
            _, invokes, key, _ = self._inspect(self.store.graph(record.id))
        except HostError as error:
            self.store.transition(record.id, "error", error_type=error.error_type, error_message=str(error))
            return None
        record.invokes, record.merge_key = invokes, key
        return record

    def _purge(self, every: float) -> None:
        """Delete results fetched more than the store's TTL ago; again every `every` seconds."""
        if self.stopping:
            return
        removed = self.store.purge()
        if removed and self.log:
            self.log.info("nnsight: removed %d expired results", removed)
        self.loop.call_later(every, self._purge, every)

    def stop(self) -> None:
        self.stopping = True
        for model in self.models.values():
            if model.worker is not None:
                model.worker.kill()
        self.decoder.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def _start_worker(self, name: str) -> None:
        model = self.models[name]
        model.worker = self.worker_factory(
            model.spec,
            on_message=lambda message, name=name: self._hop(self._on_message, name, message),
            on_exit=lambda code, name=name: self._hop(self._on_exit, name, code),
        )
        model.worker.start()

    def _hop(self, fn: Callable, *args: Any) -> None:
        """Run `fn(*args)` on the event loop (worker callbacks come from reader threads)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ requests

    async def submit(self, owner: str, model_name: str, data: bytes, request_id: str | None = None) -> JobRecord:
        """Validate (off the event loop) and durably queue a job; HostError with the protocol code if
        refused. The job is committed to the store before this returns (and before it is acknowledged).

        Idempotent by request id: a submit with a request id this owner already used returns that
        job (a client's resend after a dropped socket), without decoding or queueing anything again."""
        graph_hash = hashlib.sha256(data).hexdigest()
        earlier = self.store.find_request(owner, request_id)
        if earlier is not None:
            return self._same_request(earlier, model_name, graph_hash)
        self._admit(owner, model_name)
        self.decoding[owner] = self.decoding.get(owner, 0) + 1
        try:
            loop = asyncio.get_running_loop()
            kind, invokes, key, prepared = await loop.run_in_executor(self.decoder, self._inspect, data)
        finally:
            self.decoding[owner] -= 1
            if not self.decoding[owner]:
                del self.decoding[owner]
        if self.stopping:
            raise HostError("model_not_ready", "the host is shutting down")
        model = self.models[model_name]
        if model.state == "failed":
            raise HostError("model_not_ready", f"model {model_name!r} failed: {model.error}")
        try:
            record = self.store.create(owner=owner, model=model_name, kind=kind, graph=data, graph_hash=graph_hash,
                                       request_id=request_id, invokes=invokes, merge_key=key)
        except DuplicateRequest as duplicate:        # the same request, decoded twice at once
            return self._same_request(duplicate.record, model_name, graph_hash)
        pending = self._pending(record)
        pending.prepared = prepared
        model.queue.append(pending)
        self._kick(model_name)
        return self.store.get(record.id)

    @staticmethod
    def _same_request(record: JobRecord, model_name: str, graph_hash: str) -> JobRecord:
        """The job an earlier submit of this request id made, if it carried the same graph for the same model."""
        if record.graph_hash != graph_hash or record.model != model_name:
            raise HostError("protocol", f"request id {record.request_id!r} was already used for another graph "
                            f"or model (job {record.id}, model {record.model!r}): a request id names one submit; "
                            "use a fresh one for each job")
        return record

    def _admit(self, owner: str, model_name: str) -> None:
        """The checks that need no decoding: the model, the user's queue and crash record."""
        model = self.models.get(model_name)
        if model is None:
            raise HostError("unknown_model", f"no hosted model {model_name!r}; hosted: {sorted(self.models)}")
        if model.state == "failed":
            raise HostError("model_not_ready", f"model {model_name!r} failed: {model.error}")
        waiting = self.store.count_queued(owner) + self.decoding.get(owner, 0)
        if waiting >= self.max_queued_per_user:
            raise HostError("queue_full", f"queue full: you already have {waiting} jobs queued or being "
                            f"checked on this host (the limit is {self.max_queued_per_user}, "
                            "c.NNsightHost.max_queued_per_user); wait for some to finish or cancel some",
                            "QueueFullError")
        blocked = self._crash_block(owner)
        if blocked:
            raise HostError("too_many_crashes", blocked, "WorkerCrashError")

    def _inspect(self, data: bytes) -> tuple[str, int, str | None, bytes | None]:
        """(kind, invokes, merge key, the graph prepared for the worker) of a graph, after the size
        limits, decoding and validation (in a thread: the only place a graph is decoded and
        validated, unless too large to keep prepared, see `worker.prepare`)."""
        if len(data) >= 8:
            _, header = struct.unpack_from("<4sI", data)
            body = len(data) - 8 - header
            if body > self.max_graph_tensor_bytes:
                raise HostError("graph_too_large", f"the graph carries {body} bytes of tensors "
                                f"({format_bytes(body)}), over this host's limit of {self.max_graph_tensor_bytes} "
                                "(c.NNsightHost.max_graph_tensor_bytes): send smaller tensors, or compute them "
                                "inside the trace", "ResourceLimitError")
        try:
            graph = decode(data)
        except NNsightError as error:
            raise HostError("invalid_graph", error.reason, type(error).__name__).at(
                where=error.where, module=error.module, shapes=error.shapes, fix=error.fix) from None
        except Exception as error:  # noqa: BLE001 - a decoder bug refuses this graph, nothing else
            raise HostError("invalid_graph", f"the graph could not be decoded: {type(error).__name__}: "
                            f"{error}", "GraphError") from None
        if len(graph.nodes) > self.max_graph_nodes:
            raise HostError("graph_too_large", f"the graph has {len(graph.nodes)} nodes, over this host's "
                            f"limit of {self.max_graph_nodes} (c.NNsightHost.max_graph_nodes): split the work "
                            "into several traces", "ResourceLimitError")
        return (job_kind(graph), sum(len(run.invokes) for run in graph.runs), merge_key(graph),
                prepare(graph, len(data)))

    def cancel(self, owner: str, job_id: str) -> JobRecord:
        record = self._own(owner, job_id)
        model = self.models.get(record.model)
        if record.status == "queued":
            if model is not None:
                model.queue = [p for p in model.queue if p.job_id != job_id]
            record = self.store.transition(job_id, "cancelled", detail="cancelled by its owner")
            self._notify_status(record)
            if model is not None:
                self._broadcast_positions(model)
        elif record.status == "running":
            record = self.store.transition(job_id, "cancelled", detail="cancelled by its owner while running")
            self._notify_status(record)
            if model is not None and model.worker is not None:
                model.worker.send({"type": "cancel", "job_id": job_id})
        else:
            raise HostError("finished", f"job {job_id} has already finished ({record.status})")
        return record

    def attach(self, owner: str, job_id: str, listener: Listener) -> JobRecord:
        """Subscribe `listener` to a job and send where it stands (its result, if finished)."""
        record = self._own(owner, job_id)
        self.subscribe(job_id, listener)
        if record.status == "done":
            self._deliver(record, [listener])
        else:
            listener(self._status_message(record), None)
        return record

    def subscribe(self, job_id: str, listener: Listener) -> None:
        self.listeners.setdefault(job_id, set()).add(listener)

    def unsubscribe(self, listener: Listener) -> None:
        for job_id in list(self.listeners):
            self.listeners[job_id].discard(listener)
            if not self.listeners[job_id]:
                del self.listeners[job_id]

    def _own(self, owner: str, job_id: str) -> JobRecord:
        try:
            return self.store.get_for(str(job_id), owner)
        except JobNotFound as error:
            raise HostError("not_found", str(error), "JobNotFound") from None

    # ------------------------------------------------------------------ dispatch

    def _kick(self, name: str, waited: bool = False) -> None:
        model = self.models[name]
        if waited:
            model.waiting = False
        if (model.state != "ready" or model.busy is not None or not model.queue or self.stopping
                or model.waiting):
            self._broadcast_positions(model)
            return
        if self.crashes:
            self._refuse_blocked(model)
            if not model.queue:
                return
        batch = next_batch(model.queue, model.served, max_jobs=self.max_batch_jobs,
                           max_invokes=self.max_batch_invokes)
        size, seconds = model.last_batch
        if not waited and batch[0].mergeable and len(batch) < size:
            # The last forward pass was shared by more jobs than are queued now: their owners are
            # probably about to send the next ones. Wait a tenth of a forward pass (25 ms at most).
            model.waiting = True
            self.loop.call_later(min(0.025, 0.1 * seconds), self._kick, name, True)
            return
        batch_id = uuid.uuid4().hex[:12]
        jobs = []
        for pending in batch:
            model.queue.remove(pending)
            record = self.store.transition(pending.job_id, "running", batch_id=batch_id,
                                           detail=f"batch {batch_id} with {len(batch)} job(s)")
            jobs.append({"job_id": pending.job_id, "solo": pending.solo, "prepared": pending.prepared,
                         "graph": self.store.graph(pending.job_id) if pending.prepared is None else b""})
            self._notify_status(record)
        rotate(model.served, batch[0].owner)
        model.busy = _Busy(batch_id, [p.job_id for p in batch], {p.job_id: p.owner for p in batch},
                           started=time.monotonic())
        model.busy.timer = self.loop.call_later(self.job_timeout, self._on_timeout, name, batch_id)
        model.batches += 1
        try:
            model.worker.send({"type": "batch", "batch_id": batch_id, "jobs": jobs})
        except OSError:
            pass        # the worker just died: its exit re-queues this batch
        self._broadcast_positions(model)

    def _on_message(self, name: str, message: dict) -> None:
        model = self.models[name]
        kind = message.get("type")
        if kind == "ready":
            model.state, model.info, model.error = "ready", message["info"], None
            self._kick(name)
        elif kind == "failed":
            model.state, model.error = "failed", message["error"]
            for pending in list(model.queue):
                self._fail_queued(pending.job_id, "ModelLoadError", f"model {name!r} failed to load: {message['error']}")
            model.queue.clear()
        elif kind == "progress":
            self._notify(message["job_id"], {"type": protocol.PROGRESS, "job_id": message["job_id"],
                                             "step": message["step"], "steps": message["steps"]})
        elif kind == "log":
            self._notify(message["job_id"], {"type": protocol.LOG, "job_id": message["job_id"],
                                             "line": message["line"], "text": message["text"]})
        elif kind == "done":
            self._on_done(model, message)

    def _on_done(self, model: HostedModel, message: dict) -> None:
        if model.busy is None or model.busy.batch_id != message["batch_id"]:
            return
        model.busy.timer.cancel()
        model.last_batch = (len(model.busy.job_ids), time.monotonic() - model.busy.started)
        batch_id, model.busy = model.busy.batch_id, None
        try:
            for job_id, report in message["jobs"].items():
                try:
                    self._finish(job_id, batch_id, report)
                except Exception as error:  # noqa: BLE001 - one job's bad result never stops the others
                    self._fail_running(job_id, "ResultError", f"the host could not finish this job: "
                                       f"{type(error).__name__}: {error}")
        finally:
            self._kick(model.spec.name)

    def _finish(self, job_id: str, batch_id: str, report: dict) -> None:
        """Store and deliver one job's result, or record its error."""
        record = self.store.get(job_id)
        if record.status != "running":       # cancelled meanwhile: the result is dropped
            return
        if not report["ok"]:
            error = report["error"]
            record = self.store.transition(job_id, "error", error_type=error["type"],
                                           error_message=error["message"], error_fields=extra_fields(error))
            self._notify_status(record)
            return
        batch_id = report.get("batch_id", batch_id)     # the forward pass it ran in (a split batch: <id>.<n>)
        header = {"type": protocol.RESULT, "batch_id": batch_id, "rows": report["rows"], "logs": report["logs"],
                  "missing": report["missing"]}
        try:
            frame = protocol.pack(header, report["payload"])
        except ProtocolError as error:
            self._fail_running(job_id, "ResourceLimitError", str(error))
            return
        stored = self.store.stored_bytes(record.owner)
        if stored + len(frame) > self.max_stored_bytes_per_user:
            self._fail_running(job_id, "ResourceLimitError", (
                f"the result takes {len(frame)} bytes and your results kept on this host already take "
                f"{stored}: together over the limit of {self.max_stored_bytes_per_user} bytes per user "
                f"({format_bytes(self.max_stored_bytes_per_user)}, c.NNsightHost.max_stored_bytes_per_user). "
                f"Fetch your results (they are deleted {self.store.result_ttl:g} s after the first fetch) "
                "or save less"))
            return
        try:
            record = self.store.store_result(job_id, frame, batch_id=batch_id, rows=report["rows"])
        except OSError as error:
            self._fail_running(job_id, "ResultWriteError", f"the host could not write this job's result "
                               f"({len(frame)} bytes) to disk: {error}. Try again later; tell the host's owner "
                               "if it persists")
            if self.log:
                self.log.error("nnsight: writing the result of job %s failed: %s", job_id, error)
            return
        self._deliver(record, list(self.listeners.get(job_id, ())))

    def _fail_running(self, job_id: str, error_type: str, message: str) -> None:
        """Fail a job that is still running (no-op if it already ended) and tell its listeners."""
        record = self.store.get(job_id)
        if record.status != "running":
            return
        record = self.store.transition(job_id, "error", error_type=error_type, error_message=message)
        self._notify_status(record)

    def _on_exit(self, name: str, exitcode: int | None) -> None:
        model = self.models[name]
        if self.stopping:
            return
        busy, model.busy = model.busy, None
        killed, model.killing = model.killing, None
        now = time.monotonic()
        if busy is not None:
            busy.timer.cancel()
            why = f"the model worker stopped (exit code {exitcode}) while this job ran"
            if len(busy.job_ids) > 1:
                model.solo.update(busy.job_ids)       # run each alone: the next crash names its job
            else:
                self._strike(busy.owners[busy.job_ids[0]], now)
            self._requeue_or_fail(model, busy.job_ids, "WorkerRestarted", why)
        elif killed is None:
            # No job ran and the host did not stop it: the model's own fault (loading, or the machine).
            model.restarts = [t for t in model.restarts if now - t < 60] + [now]
            if len(model.restarts) > 5:
                model.state, model.error = "failed", f"the worker stopped {len(model.restarts)} times in a minute"
                for pending in list(model.queue):
                    self._fail_queued(pending.job_id, "ModelLoadError", f"model {name!r} failed: {model.error}")
                model.queue.clear()
                return
        model.state = "restarting"
        self._start_worker(name)

    def _on_timeout(self, name: str, batch_id: str) -> None:
        model = self.models[name]
        if model.busy is None or model.busy.batch_id != batch_id:
            return
        busy, model.busy = model.busy, None
        if len(busy.job_ids) == 1:
            self._strike(busy.owners[busy.job_ids[0]], time.monotonic())
            self._fail_running(busy.job_ids[0], "TimeLimitExceeded", f"the job ran longer than this host's "
                               f"limit of {self.job_timeout:g} s and was stopped")
        else:
            model.solo.update(busy.job_ids)
            self._requeue_or_fail(model, busy.job_ids, "TimeLimitExceeded",
                                  f"the batch ran longer than {self.job_timeout:g} s")
        model.killing = "time limit"
        model.worker.kill()      # its exit restarts it

    # ------------------------------------------------------------------ users who stop the worker

    def _strike(self, owner: str, now: float) -> None:
        """Record that a job of `owner` stopped the worker (a crash or a time-limit kill)."""
        recent = [t for t in self.crashes.get(owner, ()) if now - t < self.crash_window]
        self.crashes[owner] = recent + [now]
        if self.log:
            self.log.warning("nnsight: a job of %r stopped the model worker (%d time(s) in %g s)",
                             owner, len(self.crashes[owner]), self.crash_window)

    def _crash_block(self, owner: str) -> str | None:
        """Why `owner`'s jobs are refused now, or None."""
        now = time.monotonic()
        recent = [t for t in self.crashes.get(owner, ()) if now - t < self.crash_window]
        if recent:
            self.crashes[owner] = recent
        else:
            self.crashes.pop(owner, None)
        if len(recent) < self.max_user_crashes:
            return None
        wait = self.crash_window - (now - recent[0])
        return (f"your jobs stopped the model worker {len(recent)} times in the last {self.crash_window:g} s "
                f"(the limit is {self.max_user_crashes}, c.NNsightHost.max_user_crashes): new jobs of yours "
                f"are refused for {wait:.0f} s more. Look at what your last jobs allocate or how long they run")

    def _refuse_blocked(self, model: HostedModel) -> None:
        for pending in list(model.queue):
            blocked = self._crash_block(pending.owner)
            if blocked:
                model.queue.remove(pending)
                self._fail_queued(pending.job_id, "WorkerCrashError", blocked)

    def _fail_queued(self, job_id: str, error_type: str, message: str) -> None:
        record = self.store.transition(job_id, "error", error_type=error_type, error_message=message)
        self._notify_status(record)

    def _requeue_or_fail(self, model: HostedModel, job_ids: list[str], error_type: str, why: str) -> None:
        for job_id in job_ids:
            record = self.store.get(job_id)
            if record.status != "running":
                continue
            if record.attempts < 2:
                record = self.store.transition(job_id, "queued", detail=f"re-queued: {why}")
                model.queue.append(self._pending(record, solo=job_id in model.solo))
            else:
                record = self.store.transition(job_id, "error", error_type=error_type,
                                               error_message=f"{why}; it was tried {record.attempts} times")
            self._notify_status(record)

    @staticmethod
    def _pending(record: JobRecord, solo: bool = False) -> Pending:
        """The scheduler's view of a queued job, from its row (invoke count and merge key included)."""
        return Pending(record.id, record.owner, record.seq, record.merge_key is not None, record.invokes or 1, solo,
                       key=record.merge_key or "")

    # ------------------------------------------------------------------ messages to listeners

    def _notify(self, job_id: str, header: dict, payload: bytes | None = None) -> None:
        for listener in list(self.listeners.get(job_id, ())):
            self._call(listener, header, payload)

    def _call(self, listener: Listener, header: dict, payload: bytes | None) -> None:
        try:
            listener(header, payload)
        except Exception as error:  # noqa: BLE001 - one broken listener never stops the host
            if self.log:
                self.log.warning("nnsight: a listener of job %s failed: %s", header.get("job_id"), error)

    def _status_message(self, record: JobRecord) -> dict:
        message: dict = {"type": protocol.STATUS, "job_id": record.id, "status": record.status}
        if record.status == "queued":
            message["position"] = self.store.position(record.id)
        if record.batch_id:
            message["batch_id"] = record.batch_id
        if record.rows is not None:
            message["rows"] = record.rows
        if record.status == "error":
            message["error"] = {**(record.error_fields or {}), "type": record.error_type,
                                "message": record.error_message}
        return message

    def _notify_status(self, record: JobRecord) -> None:
        self._notify(record.id, self._status_message(record))
        if record.status in TERMINAL and record.status != "done":
            self.listeners.pop(record.id, None)

    def _deliver(self, record: JobRecord, listeners: list[Listener]) -> None:
        if not listeners:
            return
        try:
            extra, payload = protocol.unpack(self.store.result(record.id))
        except JobNotFound as error:
            for listener in listeners:
                self._call(listener, {"type": protocol.ERROR, "code": "not_found", "job_id": record.id,
                                      "error": {"type": "JobNotFound", "message": str(error)}}, None)
            return
        except (OSError, NNsightError) as error:      # a damaged or unreadable result file
            if self.log:
                self.log.error("nnsight: the result file of job %s cannot be read: %s", record.id, error)
            for listener in listeners:
                self._call(listener, {"type": protocol.ERROR, "code": "result_damaged", "job_id": record.id,
                                      "error": {"type": "ResultDamagedError", "message": (
                                          f"the stored result of job {record.id} cannot be read ({error}); "
                                          "run the job again")}}, None)
            return
        header = {"type": protocol.RESULT, "job_id": record.id, "status": "done", **extra}
        for listener in listeners:
            self._call(listener, header, payload)
        self.listeners.pop(record.id, None)

    def _broadcast_positions(self, model: HostedModel) -> None:
        """Tell each queued job's listeners its place, when it has changed."""
        for index, pending in enumerate(sorted(model.queue, key=lambda p: p.seq)):
            if pending.position_sent != index and pending.job_id in self.listeners:
                pending.position_sent = index
                self._notify(pending.job_id, {"type": protocol.STATUS, "job_id": pending.job_id,
                                              "status": "queued", "position": index})

    # ------------------------------------------------------------------ REST views

    def status(self) -> dict:
        note = None if self.models else "no models configured: set c.NNsightHost.models to host some"
        if self.store.damaged:
            note = self.store.damaged if note is None else f"{note}; {self.store.damaged}"
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "message": note,
            "models": {name: {"state": m.state, "error": m.error, "queued": len(m.queue),
                              "running": len(m.busy.job_ids) if m.busy else 0, "batches": m.batches,
                              "worker_pid": getattr(m.worker, "pid", None)}
                       for name, m in self.models.items()},
            "limits": {"job_timeout": self.job_timeout, "max_queued_per_user": self.max_queued_per_user,
                       "max_batch_jobs": self.max_batch_jobs, "max_batch_invokes": self.max_batch_invokes,
                       "max_graph_nodes": self.max_graph_nodes,
                       "max_graph_tensor_bytes": self.max_graph_tensor_bytes,
                       "max_stored_bytes_per_user": self.max_stored_bytes_per_user,
                       "max_user_crashes": self.max_user_crashes, "crash_window": self.crash_window,
                       **self._spec_limits()},
        }

    def _spec_limits(self) -> dict:
        spec = next(iter(self.models.values())).spec if self.models else None
        if spec is None:
            return {}
        return {"max_result_bytes": spec.max_result_bytes, "max_job_memory_bytes": spec.max_job_memory_bytes,
                "max_log_bytes": spec.max_log_bytes}

    def describe(self, name: str) -> dict:
        model = self.models.get(name)
        if model is None:
            raise HostError("unknown_model", f"no hosted model {name!r}; hosted: {sorted(self.models)}")
        if model.info is None:
            raise HostError("model_not_ready", f"model {name!r} is {model.state}"
                            + (f": {model.error}" if model.error else ""))
        return {**model.info, "state": model.state}
