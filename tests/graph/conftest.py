"""One real model host for the hosted cases of the allow-list tests.

It is the server tests' own `JupyterHost` (tests/server/conftest.py, loaded from its file: test
folders are not packages) hosting the tiny Llama of `tiny_model_dir` (tests/conftest.py), started once for the
whole session and shared by test_allowlist_writes.py and test_option_allowlist.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_server_conftest", Path(__file__).parents[1] / "server" / "conftest.py")
server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(server)


@pytest.fixture(scope="session")
def allowlist_host(tmp_path_factory, tiny_model_dir):
    """A running Jupyter server hosting that model as "tiny"."""
    host = server.JupyterHost(tmp_path_factory.mktemp("allowlist-host"),
                              {"tiny": {"source": str(tiny_model_dir), "threads": 1}}, max_queued_per_user=40).start()
    yield host
    host.stop()
