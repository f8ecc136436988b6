"""The Jupyter server extension: `NNsightHost`, configured with traitlets.

    c.NNsightHost.models = {"smollm2": {"source": "bundled:smollm2-135m", "dtype": "float32",
                                        "device_map": None}}
    c.NNsightHost.backend = "local"            # worker processes on this machine; "ray": Ray Serve
                                               # (ray_address, num_replicas, ray_actor_options,
                                               # max_ongoing_requests, max_queued_requests: ray_backend.py)
    c.NNsightHost.job_timeout = 600            # seconds
    c.NNsightHost.max_result_bytes = 256 MiB
    c.NNsightHost.max_queued_per_user = 64

Limits on what one job or one user may take (docs/security.md, sections 5 and 6); every refusal
names the limit, its setting and the figure:

    c.NNsightHost.max_job_memory_bytes = 2 GiB      # bytes a job's ops may allocate in the worker
    c.NNsightHost.max_log_bytes = 256 KiB           # print() output of one job
    c.NNsightHost.max_stored_bytes_per_user = 1 GiB # results kept on disk for one user
    c.NNsightHost.max_frame_bytes = 256 MiB         # one websocket message
    c.NNsightHost.max_graph_nodes = 100000          # nodes of one graph
    c.NNsightHost.max_graph_tensor_bytes = 64 MiB   # tensors sent with one graph
    c.NNsightHost.max_user_crashes = 3              # worker stops a user's jobs may cause ...
    c.NNsightHost.crash_window = 600                # ... in this many seconds, before theirs are refused

Installing the package enables it in every Jupyter server (jupyter_server_config.d). With no models
configured it hosts none and says so in its status; `make run` and `nnsight-jupyter serve` host
`smollm2-135m`. Models load in the background after the server starts.

The job store (`db_path`, default `<jupyter data dir>/nnsight_jupyter/jobs.sqlite`, results beside it)
must lie where the contents API cannot serve it: outside the server's root_dir, or in a hidden folder
under it (the default, for a server started from a home directory) while `ContentsManager.allow_hidden`
is off. If it doesn't, the server runs but hosts nothing, and its status says why (`RefusedHost`).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import tempfile
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Dict, Float, Int, TraitError, Unicode, Union, validate

from .auth import UnsafeConfigError
from .handlers import JobsHandler, ModelsHandler, ModelTreeHandler, PanelHandler, ResultHandler, SocketHandler, StatusHandler
from .host import Host, HostError
from .jobs import JobStore
from .worker import ModelSpec

#: Ray Serve settings a model's entry may set for itself (else the host's).
RAY_PER_MODEL = ("num_replicas", "ray_actor_options", "max_ongoing_requests", "max_queued_requests")
DEFAULT_MODELS = {"smollm2-135m": {"source": "bundled:smollm2-135m", "dtype": "float32", "device_map": None}}


def served_by_contents(folder: Path, root: Path, allow_hidden: bool) -> bool:
    """Whether Jupyter's contents, files and view endpoints can serve files in `folder` (both real
    paths): it is `root` or under it, and no part of it below `root` is hidden ('.x') from them.

    A server started from a home directory keeps the default store under `~/.local/share`: hidden,
    so not served unless `ContentsManager.allow_hidden` is set."""
    if folder != root and root not in folder.parents:
        return False
    hidden = any(part.startswith(".") for part in folder.relative_to(root).parts)
    return allow_hidden or not hidden


class RefusedHost(Host):
    """The host of a server whose host configuration was refused: it hosts nothing and its status says why.

    The Jupyter server itself keeps running; the job store is an empty one in a private temporary
    directory (no job is ever accepted into it), removed when the server stops.
    """

    def __init__(self, reason: str, **limits):
        self.reason = reason
        self._scratch = tempfile.mkdtemp(prefix="nnsight-jupyter-refused-")
        super().__init__(JobStore(Path(self._scratch) / "jobs.sqlite"), {}, **limits)

    def status(self) -> dict:
        return {**super().status(), "message": f"hosting no models: {self.reason}", "error": self.reason}

    async def submit(self, owner: str, model_name: str, data: bytes, request_id: str | None = None):
        raise HostError("unknown_model", f"no hosted model {model_name!r}: this host hosts nothing, {self.reason}")

    def describe(self, name: str) -> dict:
        raise HostError("unknown_model", f"no hosted model {name!r}: this host hosts nothing, {self.reason}")

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._scratch, ignore_errors=True)


class NNsightHost(ExtensionApp):
    """Hosts models once and runs intervention graphs sent by kernels over websockets."""

    name = "nnsight_jupyter"
    description = "nnsight-jupyter model host"
    load_other_extensions = True

    models = Union([Dict(), Unicode()], default_value={}, config=True, help=(
        'Models to host: {"name": {"source": "bundled:<name>" | "<local HF dir>", "dtype": "float32", '
        '"device_map": null | "auto" | "balanced" | {"module.path": 0 | "cpu" | "disk"}, "max_memory": null | '
        '{"0": "20GiB", "cpu": "60GiB"}, "offload_dir": null, "threads": null}}.'))
    backend = Unicode("local", config=True, help=(
        'Where workers run: "local" (worker processes on this machine) or "ray" (a Ray Serve deployment per model, '
        "server/ray_backend.py)."))
    ray_address = Unicode("", config=True, help=(
        'Ray cluster address for backend "ray" ("head:6379", "ray://head:10001", "auto"); empty: a local Ray '
        "on 127.0.0.1, started by the host."))
    ray_num_cpus = Int(0, config=True, help="CPUs of the local Ray the host starts (0: every CPU).")
    ray_start_timeout = Float(600.0, config=True, help="Seconds connecting to Ray and deploying a model may take.")
    num_replicas = Int(1, config=True, help='Replicas of each model\'s Ray Serve deployment (backend "ray").')
    ray_actor_options = Dict(default_value={}, config=True, help=(
        'Resources of each replica, as Ray Serve takes them ({"num_gpus": 1, "num_cpus": 4}; default 1 CPU).'))
    max_ongoing_requests = Int(4, config=True, help=(
        "Requests one replica takes at once (a batch, plus room for cancels; at least 2)."))
    max_queued_requests = Int(-1, config=True, help=(
        "Requests a caller may queue for a deployment before Serve refuses them (-1: no limit)."))
    job_timeout = Float(600.0, config=True, help="Seconds a job (or a batch) may run.")
    max_result_bytes = Int(256 << 20, config=True, help="Largest result a job may return, in bytes.")
    max_frame_bytes = Int(256 << 20, config=True, help="Largest websocket message accepted, in bytes.")
    max_queued_per_user = Int(64, config=True, help="Queued jobs a user may have at once.")
    max_job_memory_bytes = Int(2 << 30, config=True, help=(
        "Bytes the ops of one job may allocate in the worker (0: no limit); checked before an op whose "
        "size is predictable runs, and on every value it makes."))
    max_log_bytes = Int(256 << 10, config=True, help="Bytes of print() output one job may produce (0: no limit).")
    max_stored_bytes_per_user = Int(1 << 30, config=True, help="Bytes of results kept on disk for one user.")
    max_graph_nodes = Int(100_000, config=True, help="Nodes one graph may have.")
    max_graph_tensor_bytes = Int(64 << 20, config=True, help="Bytes of tensors one graph may carry.")
    max_user_crashes = Int(3, config=True, help=(
        "Times a user's jobs may stop the model worker (a crash, or a time-limit kill) within crash_window "
        "seconds; past it, that user's jobs are refused until the window has passed."))
    crash_window = Float(600.0, config=True, help="Seconds over which max_user_crashes counts.")
    max_batch_jobs = Int(16, config=True, help="Jobs merged into one forward pass at most.")
    max_batch_invokes = Int(64, config=True, help="Invokes (batch entries) in one forward pass at most.")
    db_path = Unicode("", config=True, help="SQLite job store (default: <jupyter data dir>/nnsight_jupyter/jobs.sqlite).")
    result_ttl = Float(3600.0, config=True, help="Seconds a fetched result is kept.")

    @validate("models")
    def _parse_models(self, proposal):
        """Accept a dict, or its JSON / Python-literal text (as given on the command line)."""
        value = proposal["value"]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    raise TraitError(f"NNsightHost.models must be a dict (JSON), got {value!r}") from None
        if not isinstance(value, dict):
            raise TraitError(f"NNsightHost.models must be a dict of name -> settings, got {type(value).__name__}")
        return value

    @validate("backend")
    def _check_backend(self, proposal):
        if proposal["value"] not in ("local", "ray"):
            raise TraitError(f'NNsightHost.backend must be "local" or "ray", got {proposal["value"]!r}')
        return proposal["value"]

    def worker_factory(self):
        """What makes each model's worker: a local process, or (backend "ray") a Ray Serve deployment."""
        from .worker import LocalWorker

        if self.backend != "ray":
            return LocalWorker
        from functools import partial

        from .ray_backend import RaySettings, RayWorker

        settings = RaySettings(address=self.ray_address, num_cpus=self.ray_num_cpus or None,
                               num_replicas=self.num_replicas, ray_actor_options=dict(self.ray_actor_options),
                               max_ongoing_requests=max(2, self.max_ongoing_requests),
                               max_queued_requests=self.max_queued_requests, start_timeout=self.ray_start_timeout)
        return partial(RayWorker, settings=settings)

    def specs(self) -> dict[str, ModelSpec]:
        specs = {}
        for name, entry in self.models.items():
            if isinstance(entry, str):
                entry = {"source": entry}
            if "source" not in entry:
                raise ValueError(f"NNsightHost.models[{name!r}] needs a 'source'")
            specs[name] = ModelSpec(name=name, source=entry["source"], dtype=entry.get("dtype", "float32"),
                                    device_map=entry.get("device_map"), threads=entry.get("threads"),
                                    max_memory=entry.get("max_memory"), offload_dir=entry.get("offload_dir"),
                                    max_result_bytes=self.max_result_bytes,
                                    max_job_memory_bytes=self.max_job_memory_bytes or None,
                                    max_log_bytes=self.max_log_bytes or None,
                                    extra={"ray": {k: entry[k] for k in RAY_PER_MODEL if k in entry}})
        return specs

    def job_store_path(self) -> Path:
        """The job store's database file: `db_path`, or the default; never inside the server's root_dir.

        The store (every user's graphs, prompts and results) must not be reachable through the contents,
        files or view endpoints, so `UnsafeConfigError` names both paths when it would be.
        """
        path = Path(self.db_path or os.path.join(jupyter_data_dir(), "nnsight_jupyter", "jobs.sqlite"))
        path = Path(os.path.realpath(path.expanduser()))
        root = Path(os.path.realpath(Path(self.serverapp.root_dir).expanduser()))
        allow_hidden = bool(getattr(self.serverapp.contents_manager, "allow_hidden", False))
        if served_by_contents(path.parent, root, allow_hidden):   # results live beside the database
            raise UnsafeConfigError(
                f"the job store {path} would be inside the server's root_dir {root}, where the contents API "
                "serves it (every user's graphs, prompts and results): set c.NNsightHost.db_path to a file "
                f"outside {root}, or start the server with a narrower c.ServerApp.root_dir")
        return path

    def initialize_settings(self) -> None:
        limits = dict(job_timeout=self.job_timeout, max_queued_per_user=self.max_queued_per_user,
                      max_batch_jobs=self.max_batch_jobs, max_batch_invokes=self.max_batch_invokes,
                      max_graph_nodes=self.max_graph_nodes, max_graph_tensor_bytes=self.max_graph_tensor_bytes,
                      max_stored_bytes_per_user=self.max_stored_bytes_per_user,
                      max_user_crashes=self.max_user_crashes, crash_window=self.crash_window, log=self.log)
        try:
            store = JobStore(self.job_store_path(), result_ttl=self.result_ttl)
        except UnsafeConfigError as error:
            self.log.error("nnsight: hosting no models: %s", error)
            self.host = RefusedHost(str(error), **limits)
        else:
            self.host = Host(store, self.specs(), worker_factory=self.worker_factory(), **limits)
        self.settings.update({"nnsight_host": self.host, "nnsight_backend": self.backend,
                              "nnsight_max_frame_bytes": self.max_frame_bytes})
        if not self.models:
            self.log.info("nnsight: no models configured (c.NNsightHost.models); hosting none")

    def initialize_handlers(self) -> None:
        self.handlers.extend([
            (r"/nnsight/ws", SocketHandler),
            (r"/nnsight/api/status", StatusHandler),
            (r"/nnsight/api/models", ModelsHandler),
            (r"/nnsight/api/models/([^/]+)", ModelsHandler),
            (r"/nnsight/api/models/([^/]+)/tree", ModelTreeHandler),
            (r"/nnsight/api/panel", PanelHandler),
            (r"/nnsight/api/jobs", JobsHandler),
            (r"/nnsight/api/jobs/([0-9a-f]{1,64})", JobsHandler),
            (r"/nnsight/api/jobs/([0-9a-f]{1,64})/result", ResultHandler),
        ])

    async def _start_extension(self) -> None:
        self.host.start()

    def initialize(self) -> None:
        super().initialize()
        from tornado.ioloop import IOLoop

        IOLoop.current().add_callback(self._start_extension)

    async def stop_extension(self) -> None:
        self.host.stop()
        if self.backend == "ray":
            from .ray_backend import shutdown

            shutdown()
