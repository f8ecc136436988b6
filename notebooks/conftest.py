"""nbval run of the tutorial notebooks, and the model host they need outside JupyterLab (also for `execute.py`).

Inside `make run`'s JupyterLab a notebook's `nj.connect()` finds the server that started its kernel. A kernel
started by nbval or `jupyter nbconvert` has no such server, so this starts one (`server.launch.HostProcess`,
SmolLM2 hosted on 127.0.0.1 with a user token of its own) and puts `NNSIGHT_JUPYTER_URL` /
`NNSIGHT_JUPYTER_TOKEN` in this process's environment, which the kernels it starts inherit (with progress
bars off, so that the outputs are the same on every run).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from nnsight_jupyter.client.discovery import TOKEN_ENV, URL_ENV
from nnsight_jupyter.server.launch import HostProcess

PROGRESS_ENV = "NNSIGHT_JUPYTER_PROGRESS"
MODELS = {"smollm2-135m": {"source": "bundled:smollm2-135m", "dtype": "float32", "device_map": None}}


def start_tutorial_host(root: Path | None = None) -> HostProcess:
    """Start the host, wait until SmolLM2 is loaded, export its URL and a user token; the caller stops it."""
    user_token = secrets.token_hex(16)
    root = Path(root or tempfile.mkdtemp(prefix="nnsight-tutorial-host-"))
    host = HostProcess(root, MODELS, {user_token: "reader"}, secrets.token_hex(16)).start()
    try:
        host.wait_ready(timeout=600)
    except BaseException:
        host.stop()
        raise
    os.environ[URL_ENV] = host.url
    os.environ[TOKEN_ENV] = user_token
    os.environ.setdefault(PROGRESS_ENV, "0")      # no tqdm bars in the kernels' outputs (loading, remote jobs)
    return host


_hosts: list[HostProcess] = []


def pytest_sessionstart(session) -> None:
    _hosts.append(start_tutorial_host())


def pytest_sessionfinish(session, exitstatus) -> None:
    while _hosts:
        _hosts.pop().stop()
