"""A Jupyter server hosting models on 127.0.0.1, with its own paths and user tokens, as a subprocess.

Used by the integration tests and the remote benchmarks (one copy of the process handling):

    host = HostProcess(root, {"tiny": {"source": "/models/tiny"}}, {"token-a": "alice"}, "admin").start()
    host.wait_ready()          # every model ready (a model that failed to load raises)
    host.stop()                # SIGTERM, then SIGKILL; then its model workers, whatever was left

`host_command` is the command line alone.

Under `root`: `files/` is the server's root_dir (what the contents API serves), `state/` the job
store, `data/` and `runtime/` Jupyter's own folders; the job store is thus outside root_dir, as the host
requires. The team tokens are scoped to the host by `NNsightIdentityProvider`, which puts
`TeamScopeAuthorizer` in force by itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

IDENTITY_PROVIDER = "nnsight_jupyter.server.auth.NNsightIdentityProvider"


def host_paths(root: Path) -> dict[str, Path]:
    """Where a host started by `host_command(root, ...)` keeps things."""
    return {"root_dir": root / "files", "db_path": root / "state" / "jobs.sqlite",
            "data": root / "data", "runtime": root / "runtime"}


def host_command(root: Path, port: int, models: dict, user_tokens: dict[str, str], admin_token: str,
                 app: str = "jupyter_server", **host_config: Any) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of `python -m <app>` (`jupyter_server`, or `jupyterlab` for the browser
    tests) with the extension; state lives under `root`.

    `host_config` are `NNsightHost` settings; `db_path` among them replaces the default one.
    """
    paths = host_paths(root)
    db_path = host_config.pop("db_path", paths["db_path"])
    paths["root_dir"].mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(paths["runtime"]), JUPYTER_DATA_DIR=str(paths["data"]),
               JUPYTERLAB_WORKSPACES_DIR=str(paths["data"] / "lab-workspaces"), NNSIGHT_JUPYTER_PROGRESS="0")
    args = [sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--port-retries=0", "--allow-root", f"--IdentityProvider.token={admin_token}",
            f"--ServerApp.root_dir={paths['root_dir']}", f"--ServerApp.identity_provider_class={IDENTITY_PROVIDER}",
            f"--NNsightIdentityProvider.tokens={json.dumps(user_tokens)}",
            f"--NNsightHost.models={json.dumps(models)}", f"--NNsightHost.db_path={db_path}"]
    args += [f"--NNsightHost.{key}={value}" for key, value in host_config.items()]
    return args, env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HostProcess:
    """A host started by `host_command` in a session of its own, so that `stop` also ends the model
    workers it spawned (its process group). Logs go to `root/server.log`; `worker_pids` are the
    workers it reported while it was waited for."""

    def __init__(self, root: Path, models: dict, user_tokens: dict[str, str], admin_token: str,
                 port: int | None = None, app: str = "jupyter_server", **host_config: Any):
        self.root = Path(root)
        self.app = app
        self.models = models
        self.user_tokens = user_tokens
        self.admin_token = admin_token
        self.host_config = host_config
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen | None = None
        self.worker_pids: set[int] = set()
        self._log: Any = None

    def start(self) -> HostProcess:
        """Start the server (not waiting for it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        args, env = host_command(self.root, self.port, self.models, self.user_tokens, self.admin_token,
                                 app=self.app, **dict(self.host_config))
        self._log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 240.0) -> dict:
        """Wait until every hosted model is ready; its status. RuntimeError if the server exits or a
        model fails to load, TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}): {self.log_tail()}")
            try:
                status = self.get("nnsight/api/status")
            except (OSError, urllib.error.URLError, ValueError):
                status = None
            if status is not None:
                self._note_workers(status)
                states = {name: m["state"] for name, m in status["models"].items()}
                if "failed" in states.values():
                    raise RuntimeError(f"a model failed to load: {status['models']}")
                if all(state == "ready" for state in states.values()):
                    return status
            time.sleep(0.2)       # polling a subprocess: nothing to wait on but its answers
        raise TimeoutError(f"models not ready after {timeout:.0f} s: {self.log_tail()}")

    def get(self, path: str, token: str | None = None) -> Any:
        """GET `path` (under the server's URL) as JSON, with `token` (default: the admin token)."""
        request = urllib.request.Request(self.url + path,
                                         headers={"Authorization": f"token {token or self.admin_token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def _note_workers(self, status: dict) -> None:
        for model in status.get("models", {}).values():
            if isinstance(model, dict) and isinstance(model.get("worker_pid"), int):
                self.worker_pids.add(model["worker_pid"])

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0, end_workers: bool = True) -> None:
        """Send `sig` (SIGTERM: a clean shutdown; SIGKILL: a crash), SIGKILL after `timeout` s; then
        SIGKILL whatever is left of its process group (its model workers), unless `end_workers` is
        False (to see the workers stop by themselves)."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(sig)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if end_workers:
                try:
                    os.killpg(process.pid, signal.SIGKILL)   # the group it leads: the workers it spawned
                except (ProcessLookupError, PermissionError):
                    pass
        if self._log is not None:
            self._log.close()
            self._log = None
