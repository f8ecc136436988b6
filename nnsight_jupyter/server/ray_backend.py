"""The Ray Serve backend (`c.NNsightHost.backend = "ray"`): each hosted model is a Ray Serve deployment.

    c.NNsightHost.backend = "ray"
    c.NNsightHost.ray_address = "10.0.0.5:6379"     # a running cluster; "" starts a local Ray in the host
    c.NNsightHost.num_replicas = 2                  # replicas of each model's deployment
    c.NNsightHost.ray_actor_options = {"num_gpus": 1, "num_cpus": 4}     # per replica
    c.NNsightHost.max_ongoing_requests = 4          # per replica (a batch, plus room for cancels)
    c.NNsightHost.max_queued_requests = 16          # per caller; past it Serve refuses (backpressure)

`RayWorker` implements the same worker interface as `worker.LocalWorker` (`start`, `send`, `kill`,
`on_message`, `on_exit`), so the scheduler, the job store, co-tenant batching and the wire are the
local backend's. `ModelReplica` (one per replica) is what a worker process is: it loads the model
with `worker.load_target` and answers batch messages with `worker.serve_batch`, streaming each
message the local worker would send (progress, then "done") back to the host.

Failures:

* a replica that dies while it runs a batch (killed, out of memory, its node lost) ends the batch's
  stream with an error: the worker reports an exit, and the host does what it does when a worker
  process dies: each job of the batch is re-queued once (a job never changes the shared model, so
  running it again has no other effect; one retry, so a job that kills every replica it reaches is
  failed with "WorkerRestarted" instead of killing them all), queued jobs keep their place. Serve
  starts a new replica by itself; the next worker waits until the deployment is healthy again;
* a cluster that cannot be reached: `start` probes the address first (a TCP connect, 5 s) and bounds
  `ray.init` and the deployment's start by `start_timeout`; the model is then "failed" with the reason
  in the host's status, and jobs for it are refused at once. Nothing waits forever.

The host sends one batch at a time per model (the scheduler is unchanged), so several replicas give
failover and room for other hosts sharing the cluster, not parallel batches from one host.
Cancelling a running job reaches the replica that runs it when there is one replica (its next
generation step stops it); with several, it may reach another one, and the job then runs to its end
and its result is dropped (the job is already cancelled in the store).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .worker import ModelSpec, load_target, serve_batch

#: Ray's listeners bind to 127.0.0.1 only with this set (../shared/ENVIRONMENT.md, "Ray").
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: A local Ray on a busy machine: its raylet waits for the metrics agent's port file, and gives up
#: (and dies) when the agent is slow to start; more time for that (set only where not set already).
SLOW_START_ENV = {"RAY_agent_register_timeout_ms": "180000"}
_lock = threading.Lock()
_started_here = False
_deployed: set[str] = set()             # Serve applications this process deployed


@dataclass
class RaySettings:
    """The host's Ray configuration (`c.NNsightHost.*`), shared by every model's worker."""

    address: str = ""                   # "" : a local Ray, started by the host
    num_cpus: int | None = None         # CPUs of that local Ray
    num_replicas: int = 1
    ray_actor_options: dict = field(default_factory=dict)
    max_ongoing_requests: int = 4
    max_queued_requests: int = -1
    start_timeout: float = 600.0
    namespace: str = "nnsight-jupyter"


class RayUnavailable(RuntimeError):
    """The Ray cluster cannot be reached, or Ray / Serve is not installed."""


def probe(address: str, timeout: float = 5.0) -> None:
    """Raise RayUnavailable unless something answers a TCP connect at `address` ("host:port",
    "ray://host:port"); "auto" and "" are not probed."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address.strip())
    if match is None:
        return
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=timeout).close()
    except OSError as error:
        raise RayUnavailable(f"the Ray cluster at {address!r} cannot be reached ({type(error).__name__}: {error}); "
                             "start it (`ray start --head` on the head node) or fix c.NNsightHost.ray_address") from None


def connect(settings: RaySettings) -> None:
    """Connect this process to Ray (once): the cluster at `settings.address`, or a local Ray on
    127.0.0.1; then Serve, with no HTTP proxy (the host is the only caller)."""
    global _started_here
    with _lock:
        os.environ.update(LOOPBACK_ENV)
        for key, value in SLOW_START_ENV.items():
            os.environ.setdefault(key, value)
        try:
            import ray
            from ray import serve
        except ImportError as error:
            raise RayUnavailable(f'backend "ray" needs Ray Serve: pip install "nnsight-jupyter[ray]" ({error})') from None
        if not ray.is_initialized():
            if settings.address:
                probe(settings.address)
                ray.init(address=settings.address, namespace=settings.namespace, log_to_driver=False)
            else:
                _start_local(ray, settings)
                _started_here = True
        serve.start(proxy_location="Disabled", http_options={"host": "127.0.0.1"})


def _start_local(ray: Any, settings: RaySettings, attempts: int = 3) -> None:
    """A local Ray on 127.0.0.1. Ray gives its raylet a fixed 30 s to register with the GCS, which a
    busy machine can miss ("timed out during startup"): up to `attempts` tries."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=settings.num_cpus, include_dashboard=False, namespace=settings.namespace,
                     _node_ip_address="127.0.0.1", log_to_driver=False)
            return
        except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception for this
            ray.shutdown()
            if attempt == attempts or "timed out during startup" not in str(error):
                raise


def shutdown() -> None:
    """Stop the local Ray this process started; on a cluster named by address (left running),
    delete the applications this process deployed."""
    global _started_here
    with _lock:
        try:
            import ray
            from ray import serve
        except ImportError:
            return
        if not ray.is_initialized():
            return
        try:
            if _started_here:
                serve.shutdown()
            else:
                for name in list(_deployed):
                    serve.delete(name)
        finally:
            _deployed.clear()
            ray.shutdown()
            _started_here = False


def _bounded(fn: Callable[[], Any], seconds: float, what: str) -> Any:
    """fn() in a thread, RayUnavailable if it has not returned after `seconds` (it is left behind)."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True, name="nnsight-ray-start")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise RayUnavailable(f"{what} did not finish within {seconds:g} s (c.NNsightHost.ray_start_timeout)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def app_name(model: str) -> str:
    """The Serve application of a hosted model."""
    return "nnsight-" + re.sub(r"[^A-Za-z0-9_-]", "-", model)


class ModelReplica:
    """One replica of a hosted model's deployment: what a local worker process is, as a Serve class."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.target, self.info = load_target(spec)
        self.cancelled: set[str] = set()

    def describe(self) -> dict:
        return {"info": self.info, "pid": os.getpid()}

    async def run(self, message: dict):
        """A batch message; yields the messages a local worker sends (progress..., then "done")."""
        import asyncio

        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()

        class Stream:
            """What `serve_batch` sends its progress through (the local worker's pipe)."""

            @staticmethod
            def send(item: dict) -> None:
                loop.call_soon_threadsafe(out.put_nowait, item)

        work = loop.run_in_executor(None, serve_batch, message, self.target, self.spec, Stream, self.cancelled)
        while not (work.done() and out.empty()):
            getter = asyncio.ensure_future(out.get())
            await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        yield work.result()

    async def cancel(self, job_id: str) -> bool:
        self.cancelled.add(job_id)
        return True


def deploy(spec: ModelSpec, settings: RaySettings) -> Any:
    """The handle of `spec`'s Serve application, deployed (or redeployed, unchanged) and healthy."""
    from ray import serve

    options = {**spec.extra.get("ray", {})}
    deployment = serve.deployment(ModelReplica).options(
        name="model", num_replicas=options.get("num_replicas", settings.num_replicas),
        ray_actor_options=options.get("ray_actor_options", settings.ray_actor_options) or {"num_cpus": 1},
        max_ongoing_requests=options.get("max_ongoing_requests", settings.max_ongoing_requests),
        max_queued_requests=options.get("max_queued_requests", settings.max_queued_requests))
    handle = serve.run(deployment.bind(spec), name=app_name(spec.name), route_prefix=None)
    _deployed.add(app_name(spec.name))
    return handle


def replica_states(name: str) -> dict:
    """{"status": deployment status, "replicas": {state: count}, "message": ...} of a model's deployment."""
    from ray import serve

    application = serve.status().applications.get(app_name(name))
    if application is None:
        return {"status": "NOT_DEPLOYED", "replicas": {}}
    deployment = application.deployments.get("model")
    if deployment is None:
        return {"status": _name(application.status), "replicas": {}}
    return {"status": _name(deployment.status), "message": deployment.message or None,
            "replicas": {_name(state): count for state, count in deployment.replica_states.items()}}


def _name(state: Any) -> str:
    """"RUNNING" for ReplicaState.RUNNING (Serve's states are str enums)."""
    return str(getattr(state, "value", state))


class RayWorker:
    """A hosted model's Serve deployment, seen by the host as a worker (`worker.Worker`).

    Callbacks (`on_message`, `on_exit`) come from this worker's threads, as a LocalWorker's do from
    its reader thread; `on_exit` is called at most once per worker (the host then starts another)."""

    def __init__(self, spec: ModelSpec, on_message: Callable[[dict], None], on_exit: Callable[[int | None], None],
                 settings: RaySettings | None = None):
        self.spec = spec
        self.on_message = on_message
        self.on_exit = on_exit
        self.settings = settings or RaySettings()
        self.handle: Any = None
        self.pid: int | None = None             # the process of the replica that answered first
        self.error: str | None = None
        self.replicas: dict = {}
        self._exited = False
        self._exit_lock = threading.Lock()

    # -- the Worker interface
    def start(self) -> None:
        threading.Thread(target=self._start, daemon=True, name=f"nnsight-ray-{self.spec.name}").start()

    def send(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "batch":
            threading.Thread(target=self._run, args=(message,), daemon=True,
                             name=f"nnsight-ray-batch-{message['batch_id']}").start()
        elif kind == "cancel" and self.handle is not None:
            threading.Thread(target=self._cancel, args=(message["job_id"],), daemon=True).start()

    def kill(self) -> None:
        """Stop the deployment (a batch past its time limit, or the host stopping): its replicas are
        killed; the host's next worker deploys it again."""
        handle, self.handle = self.handle, None
        if handle is not None:
            threading.Thread(target=self._delete, daemon=True).start()

    def status(self) -> dict:
        """What the host's status shows for this model's worker."""
        return {"backend": "ray", "address": self.settings.address or "local", "error": self.error,
                "deployment": self.replicas.get("status"), "replicas": self.replicas.get("replicas", {})}

    # -- threads
    def _start(self) -> None:
        timeout = self.settings.start_timeout
        try:
            _bounded(lambda: connect(self.settings), timeout, "connecting to Ray and starting Serve")
            self.handle = _bounded(lambda: deploy(self.spec, self.settings), timeout,
                                   f"deploying model {self.spec.name!r} on Ray Serve")
            described = self.handle.describe.remote().result(timeout_s=timeout)
        except BaseException as error:  # noqa: BLE001 - any start failure is the model's state
            self.error = f"Ray Serve backend: {type(error).__name__}: {error}"
            self._message({"type": "failed", "error": self.error})
            return
        self.pid = described["pid"]
        self._message({"type": "ready", "info": described["info"]})
        threading.Thread(target=self._watch, daemon=True, name=f"nnsight-ray-watch-{self.spec.name}").start()

    def _run(self, message: dict) -> None:
        from ray.serve.exceptions import BackPressureError

        handle = self.handle
        try:
            if handle is None:
                raise RuntimeError("the deployment is stopped")
            for item in handle.options(stream=True).run.remote(message):
                self._message(item)
        except BackPressureError as error:
            why = (f"the model's Ray Serve deployment refused the batch: its queue is full ({error}); "
                   "c.NNsightHost.max_queued_requests. Send the job again later")
            self._message({"type": "done", "batch_id": message["batch_id"], "jobs": {
                job["job_id"]: {"ok": False, "error": {"type": "QueueFullError", "message": why}}
                for job in message["jobs"]}})
        except BaseException as error:  # noqa: BLE001 - the replica died (or the cluster went): a worker exit
            self.error = f"the replica running a batch stopped: {type(error).__name__}: {str(error)[:300]}"
            self._exit()

    def _cancel(self, job_id: str) -> None:
        try:
            self.handle.cancel.remote(job_id).result(timeout_s=30)
        except Exception:  # noqa: BLE001 - the job's result is dropped by the host anyway
            pass

    def _delete(self) -> None:
        try:
            from ray import serve

            serve.delete(app_name(self.spec.name))
        except Exception:  # noqa: BLE001 - Ray gone: nothing left to stop
            pass
        self._exit()

    def _watch(self) -> None:
        """Keep `replicas` current (the host's status reads it, never Ray itself: a lost cluster
        cannot make the status hang)."""
        while not self._exited:
            try:
                self.replicas = replica_states(self.spec.name)
            except Exception as error:  # noqa: BLE001 - shown in the status
                self.replicas = {"status": "UNREACHABLE", "replicas": {}, "message": str(error)[:300]}
            time.sleep(1.0)      # a status poll: nothing to wait on

    def _message(self, message: dict) -> None:
        if not self._exited:
            self.on_message(message)

    def _exit(self) -> None:
        with self._exit_lock:
            if self._exited:
                return
            self._exited = True
        self.on_exit(None)
