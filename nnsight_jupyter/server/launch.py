"""The command line of a Jupyter server hosting models on 127.0.0.1, with its own paths and user tokens.

Used by the integration tests and the remote benchmarks to start a real host as a subprocess:

    args, env = host_command(root, port, {"tiny": {"source": "/models/tiny"}}, {"token-a": "alice"}, "admin")
    subprocess.Popen(args, env=env)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def host_command(root: Path, port: int, models: dict, user_tokens: dict[str, str], admin_token: str,
                 **host_config: Any) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of `python -m jupyter_server` with the extension; state lives under `root`."""
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(root / "runtime"), JUPYTER_DATA_DIR=str(root / "data"),
               NNSIGHT_JUPYTER_PROGRESS="0")
    args = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--port-retries=0", "--allow-root", f"--ServerApp.token={admin_token}", f"--ServerApp.root_dir={root}",
            "--ServerApp.identity_provider_class=nnsight_jupyter.server.auth.NNsightIdentityProvider",
            f"--NNsightIdentityProvider.tokens={json.dumps(user_tokens)}",
            f"--NNsightHost.models={json.dumps(models)}", f"--NNsightHost.db_path={root / 'jobs.sqlite'}"]
    args += [f"--NNsightHost.{key}={value}" for key, value in host_config.items()]
    return args, env
