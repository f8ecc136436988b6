"""IPython's own `InteractiveShell` with `%load_ext nnsight_jupyter`, whose displays are recorded.

`notebook` runs cells with `run_cell` (as a kernel does) and keeps what the cell displayed: every
`publish` of IPython's display system (`DisplayPublisher`, the class kernels extend), with its
display id and whether it updated one in place. The server tests' `jupyter_host` (loaded from its
file, as tests/graph/conftest.py does) hosts the tiny Llama for the remote cases.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

_spec = importlib.util.spec_from_file_location("_server_conftest_nb", Path(__file__).parents[1] / "server" / "conftest.py")
server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(server)
# The server tests' fixtures: `jupyter_host` (a running server hosting the tiny Llama as "tiny", one
# for this folder's session), `keep_worker_busy` and what it needs.
jupyter_host = server.jupyter_host
keep_worker_busy = server.keep_worker_busy
graph_of = server.graph_of
tiny_local = server.tiny_local


class RecordingPublisher(DisplayPublisher):
    """IPython's display publisher, keeping each published bundle instead of printing it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outputs: list[dict] = []

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        self.outputs.append({"data": data, "display_id": (transient or {}).get("display_id"), "update": update})


class Notebook:
    """Runs cells in the shared shell; `outputs` are what the last cell displayed."""

    def __init__(self, shell: InteractiveShell, publisher: RecordingPublisher):
        self.shell = shell
        self.publisher = publisher
        self.ns = shell.user_ns

    def run(self, source: str):
        """Run one cell (stored in the history, as a kernel does); its ExecutionResult."""
        self.publisher.outputs.clear()
        self.number = self.shell.execution_count
        return self.shell.run_cell(source, store_history=True)

    @property
    def outputs(self) -> list[dict]:
        return self.publisher.outputs

    def status_texts(self) -> list[str]:
        """The text/plain of every status-line display of the last cell."""
        return [o["data"]["text/plain"] for o in self.outputs if "nnsight-status" in o["data"].get("text/html", "")]


@pytest.fixture(scope="session")
def _shell():
    shell = InteractiveShell.instance(colors="nocolor")
    publisher = RecordingPublisher(shell=shell)
    shell.display_pub = publisher
    shell.run_line_magic("load_ext", "nnsight_jupyter")
    return shell, publisher


@pytest.fixture
def notebook(_shell, monkeypatch):
    """The shell, with the status line drawn at every event (no throttling) for this test."""
    from nnsight_jupyter.notebook.status import StatusLine

    monkeypatch.setattr(StatusLine, "min_interval", 0.0)
    shell, publisher = _shell
    return Notebook(shell, publisher)
