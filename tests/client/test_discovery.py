"""Finding the Jupyter server: arguments, then environment variables, then the kernel's parent's runtime file."""

from __future__ import annotations

import json
import os

import jupyter_core.paths
import pytest

from nnsight_jupyter.client.discovery import TOKEN_ENV, URL_ENV, find_server, normalize_url
from nnsight_jupyter.errors import NNsightError

PPID = 424242


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """An empty fake runtime dir; this process's parent pretends to be PPID."""
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setattr(jupyter_core.paths, "jupyter_runtime_dir", lambda: str(tmp_path))
    monkeypatch.setattr(os, "getppid", lambda: PPID)
    return tmp_path


def write_server(runtime, pid=PPID, **info):
    fields = {"url": "http://localhost:8888/", "base_url": "/", "token": "filetoken", "port": 8888,
              "hostname": "localhost", "sock": "", "secure": False, "pid": pid}
    fields.update(info)
    (runtime / f"jpserver-{pid}.json").write_text(json.dumps(fields))


def test_arguments_win_over_everything(runtime, monkeypatch):
    write_server(runtime)
    monkeypatch.setenv(URL_ENV, "http://envhost:1/")
    monkeypatch.setenv(TOKEN_ENV, "envtoken")
    assert find_server("http://arghost:9999/base", "argtoken") == ("http://arghost:9999/base/", "argtoken")


def test_url_argument_takes_token_from_environment_or_query(runtime, monkeypatch):
    assert find_server("http://arghost:1") == ("http://arghost:1/", None)
    assert find_server("arghost:1/x?token=abc") == ("http://arghost:1/x/", "abc")
    monkeypatch.setenv(TOKEN_ENV, "envtoken")
    assert find_server("http://arghost:1/") == ("http://arghost:1/", "envtoken")


def test_environment_before_runtime_file(runtime, monkeypatch):
    write_server(runtime)
    monkeypatch.setenv(URL_ENV, "https://envhost:8443/user/alice")
    monkeypatch.setenv(TOKEN_ENV, "envtoken")
    assert find_server() == ("https://envhost:8443/user/alice/", "envtoken")
    assert find_server(token="argtoken") == ("https://envhost:8443/user/alice/", "argtoken")


def test_runtime_file_of_the_parent_server(runtime):
    write_server(runtime, pid=PPID + 1, url="http://other:1/", token="other")   # another server: ignored
    write_server(runtime, url="http://127.0.0.1:8890/lab/base/", base_url="/lab/base/", token="tok")
    assert find_server() == ("http://127.0.0.1:8890/lab/base/", "tok")
    assert find_server(token="mine") == ("http://127.0.0.1:8890/lab/base/", "mine")


def test_runtime_file_without_base_url_in_url(runtime):
    write_server(runtime, url="http://127.0.0.1:8890/", base_url="/jh/", token="")
    assert find_server() == ("http://127.0.0.1:8890/jh/", None)


def test_runtime_file_without_url(runtime):
    write_server(runtime, url="", hostname="10.0.0.2", port=9000)
    assert find_server() == ("http://10.0.0.2:9000/", "filetoken")


def test_no_server_anywhere(runtime):
    write_server(runtime, pid=PPID + 1)   # a server, but not this kernel's parent
    with pytest.raises(NNsightError) as info:
        find_server()
    message = str(info.value)
    assert "url=" in message and "token=" in message
    assert URL_ENV in message and TOKEN_ENV in message
    assert f"jpserver-{PPID}.json" in message and str(runtime) in message
    assert "nbval" in message and "IPython" in message


def test_unreadable_runtime_file_counts_as_none(runtime):
    (runtime / f"jpserver-{PPID}.json").write_text("{not json")
    with pytest.raises(NNsightError, match="cannot find the Jupyter server"):
        find_server()


def test_unix_socket_server_says_what_to_do(runtime):
    write_server(runtime, url="", sock="/tmp/jupyter.sock")
    with pytest.raises(NNsightError, match="unix socket"):
        find_server()


def test_normalize_url_refuses_other_schemes():
    with pytest.raises(NNsightError, match="http"):
        normalize_url("ftp://host/")
