"""A second `make run` (`nnsight-jupyter lab`) while a host runs prints that one's address instead of starting."""

import os

from nnsight_jupyter import cli
from nnsight_jupyter.server.launch import host_paths


def test_lab_finds_the_running_host_and_says_so(jupyter_host, monkeypatch, capsys):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(host_paths(jupyter_host.root)["runtime"]))
    monkeypatch.setattr(os, "execv", lambda *args: (_ for _ in ()).throw(AssertionError(f"started: {args}")))
    assert cli.main(["lab"]) == 0
    out = capsys.readouterr().out
    assert "already running" in out
    assert f"{jupyter_host.url}lab?token={jupyter_host.admin_token}" in out


def test_lab_starts_when_none_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    started = []
    monkeypatch.setattr(os, "execv", lambda path, argv: started.append(argv))
    assert cli.main(["lab", "--port=0"]) == 0
    assert started and started[0][1:3] == ["-m", "jupyterlab"] and "--ip=127.0.0.1" in started[0]
