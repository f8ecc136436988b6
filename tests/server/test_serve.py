"""`nnsight-jupyter serve` starts the headless host; a server with no models says so."""

import json
import os
import socket
import subprocess
import sys
import urllib.request


def _status(port, token):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/nnsight/api/status",
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_serve_hosts_the_given_model(tmp_path, tiny_model_dir, wait_until):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root_dir = tmp_path / "files"            # the job store must lie outside the server's root_dir
    root_dir.mkdir()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), JUPYTER_DATA_DIR=str(tmp_path / "data"))
    process = subprocess.Popen(
        [sys.executable, "-m", "nnsight_jupyter.cli", "serve", "--model", f"tiny={tiny_model_dir}",
         f"--port={port}", "--IdentityProvider.token=serve-token", f"--ServerApp.root_dir={root_dir}",
         f"--NNsightHost.db_path={tmp_path / 'jobs.sqlite'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = wait_until(lambda: (s := _status(port, "serve-token"))["models"].get("tiny", {}).get("state")
                            == "ready" and s, 120, "the served model becoming ready", ignore=(OSError,))
        assert status["models"]["tiny"]["state"] == "ready"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_no_models_configured_says_so(make_host, wait_until):
    host = make_host(models={}, start=False)
    host.start(wait_ready=False)
    status = wait_until(lambda: host.get("nnsight/api/status"), 60, "the host answering", ignore=(OSError,))
    assert status["models"] == {} and "no models configured" in status["message"]
