"""JupyterLab with the extension and the model host on 127.0.0.1, and headless Chromium driving it.

`lab` starts `python -m jupyterlab` (`server.launch.HostProcess` with `app="jupyterlab"`) hosting the
bundled SmolLM2, as `make run` does; `page` is a Playwright page of Debian's chromium
(`executable_path`, never `playwright install`). `shots(name)` saves numbered screenshots under
`tests/labextension/screenshots/<test name>/`.

Chromium is installed by `make test` (apt-get) when missing; run outside make without it, these
tests are skipped with that reason (under CI they fail instead).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from nnsight_jupyter.server.launch import HostProcess

CHROMIUM = os.environ.get("NNSIGHT_JUPYTER_CHROMIUM", "/usr/bin/chromium")
#: ENVIRONMENT.md: the flags that work here.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "lab-test-token"
MODEL = "smollm2-135m"
SCREENSHOTS = Path(__file__).parent / "screenshots"


def _need_browser() -> None:
    missing = [] if Path(CHROMIUM).exists() else [CHROMIUM]
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if missing:
        why = f"browser tests need {', '.join(missing)}: `make test` installs them"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running JupyterLab with the host; `.started` is when its process was started (time.monotonic)."""
    _need_browser()
    root = tmp_path_factory.mktemp("lab")
    host = HostProcess(root, {MODEL: {"source": f"bundled:{MODEL}", "dtype": "float32", "device_map": None}},
                       {}, TOKEN, app="jupyterlab")
    host.started = time.monotonic()
    host.start()
    deadline = time.monotonic() + 120
    while True:                    # the server answering (not the model: the page shows that)
        try:
            host.get("api/status")
            break
        except OSError:
            if host.process.poll() is not None or time.monotonic() > deadline:
                host.stop()
                raise RuntimeError(f"JupyterLab did not start: {host.log_tail()}") from None
            time.sleep(0.2)
    yield host
    host.stop()


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, lab):
    """One JupyterLab page for the module's tests, in order; requests to nnsight/api/ are counted."""
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.nnsight_requests = []
    page.on("request", lambda r: page.nnsight_requests.append((time.monotonic(), r.url))
            if "/nnsight/api/" in r.url else None)
    yield page
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so that `shots` can tell a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def shots(request):
    """shot(name) saves `<NN>-<name>.png` of the page under screenshots/<test name>/."""
    folder = SCREENSHOTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    count = [0]

    def shot(page, name: str) -> Path:
        shot.page = page
        count[0] += 1
        path = folder / f"{count[0]:02d}-{name}.png"
        page.screenshot(path=str(path))
        return path

    shot.folder = folder
    shot.page = None
    yield shot
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed and shot.page is not None:
        shot(shot.page, "failed")
    print(f"screenshots: {folder}")


def write_notebook(lab: HostProcess, name: str, cells: list[str], kernel: str = "nnsight") -> str:
    """Put a notebook of code cells in the server's root folder (with the kernel spec named); its path."""
    from nnsight_jupyter.server.launch import host_paths

    spec = {"nnsight": ("Python 3 (nnsight)", "nnsight")}.get(kernel, (kernel, kernel))
    notebook = {"nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": spec[1], "display_name": spec[0], "language": "python"}},
                "cells": [{"cell_type": "code", "metadata": {}, "source": source, "outputs": [],
                           "execution_count": None, "id": f"cell{i}"} for i, source in enumerate(cells)]}
    path = host_paths(lab.root)["root_dir"] / name
    path.write_text(json.dumps(notebook))
    return name
