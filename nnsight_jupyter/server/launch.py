"""The command line of a Jupyter server hosting models on 127.0.0.1, with its own paths and user tokens.

Used by the integration tests and the remote benchmarks to start a real host as a subprocess:

    args, env = host_command(root, port, {"tiny": {"source": "/models/tiny"}}, {"token-a": "alice"}, "admin")
    subprocess.Popen(args, env=env)

Under `root`: `files/` is the server's root_dir (what the contents API serves), `state/` the job
store, `data/` and `runtime/` Jupyter's own folders; the job store is thus outside root_dir, as the host
requires. The team tokens are scoped to the host by `NNsightIdentityProvider`, which puts
`TeamScopeAuthorizer` in force by itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

IDENTITY_PROVIDER = "nnsight_jupyter.server.auth.NNsightIdentityProvider"


def host_paths(root: Path) -> dict[str, Path]:
    """Where a host started by `host_command(root, ...)` keeps things."""
    return {"root_dir": root / "files", "db_path": root / "state" / "jobs.sqlite",
            "data": root / "data", "runtime": root / "runtime"}


def host_command(root: Path, port: int, models: dict, user_tokens: dict[str, str], admin_token: str,
                 **host_config: Any) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of `python -m jupyter_server` with the extension; state lives under `root`.

    `host_config` are `NNsightHost` settings; `db_path` among them replaces the default one.
    """
    paths = host_paths(root)
    db_path = host_config.pop("db_path", paths["db_path"])
    paths["root_dir"].mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(paths["runtime"]), JUPYTER_DATA_DIR=str(paths["data"]),
               NNSIGHT_JUPYTER_PROGRESS="0")
    args = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--port-retries=0", "--allow-root", f"--IdentityProvider.token={admin_token}",
            f"--ServerApp.root_dir={paths['root_dir']}", f"--ServerApp.identity_provider_class={IDENTITY_PROVIDER}",
            f"--NNsightIdentityProvider.tokens={json.dumps(user_tokens)}",
            f"--NNsightHost.models={json.dumps(models)}", f"--NNsightHost.db_path={db_path}"]
    args += [f"--NNsightHost.{key}={value}" for key, value in host_config.items()]
    return args, env
