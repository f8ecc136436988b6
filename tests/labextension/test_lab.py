"""The JupyterLab extension, the nnsight kernel and the host, in headless Chromium (steps in order).

Each test saves screenshots of its steps under screenshots/<test name>/ (see conftest.py). The tests
check what the page shows; they time nothing (the time from start to ready is printed, not asserted).
"""

from __future__ import annotations

import time

import pytest

from .conftest import MODEL, TOKEN, write_notebook

CONNECT = ("import nnsight_jupyter as nj\n"
           "host = nj.connect()\n"
           f"model = host.model({MODEL!r})\n"
           "print('connected as', host.status()['user'])")
#: A job that runs until it is cancelled (thousands of steps; no early end of sequence).
LONG_JOB = ('with model.generate("Once upon a time", max_new_tokens=3000, min_new_tokens=3000, remote=True) as tracer:\n'
            "    story = tracer.result.save()")
TRACE = ('%%trace model "The capital of France is"\n'
         "logits = model.lm_head.output[:, -1].save()")
DECODE = "print('next token:', repr(model.tokenizer.decode(logits.argmax(-1))))"
EXPLORER = ("from nnsight_jupyter.notebook.widgets import HeadPatchingExplorer\n"
            "explorer = HeadPatchingExplorer(model, clean='When Mary and John went to the store, John gave a drink to',\n"
            "                                corrupt='When Mary and John went to the store, Mary gave a drink to',\n"
            "                                answer=' Mary', distractor=' John')\n"
            "explorer")
READY = '.nnsight-StatusItem[data-state="ready"]'
#: Cells of a.ipynb, by index.
CELL_CONNECT, CELL_LONG, CELL_TRACE, CELL_DECODE, CELL_EXPLORER = range(5)


def _notebook_needs_front_end():
    from importlib.util import find_spec

    if find_spec("nnsight_jupyter.notebook") is None:
        pytest.skip("needs the notebook front end (%%trace, branch notebook-magics) merged")


@pytest.fixture(scope="module")
def notebooks(lab):
    write_notebook(lab, "a.ipynb", [CONNECT, LONG_JOB, TRACE, DECODE, EXPLORER])
    write_notebook(lab, "b.ipynb", [CONNECT, LONG_JOB])
    return "a.ipynb", "b.ipynb"


def _active(page):
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")


def _run_cell(page, index: int) -> None:
    cell = _active(page).locator(".jp-CodeCell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def _output(page, index: int, text: str, timeout: float = 180_000):
    output = _active(page).locator(".jp-CodeCell").nth(index).locator(".jp-OutputArea-output", has_text=text)
    output.first.wait_for(timeout=timeout)
    return output.first


def _open(page, name: str) -> None:
    page.locator(".jp-DirListing-itemText", has_text=name).first.dblclick()
    _active(page).locator(".jp-Toolbar", has_text="Python 3 (nnsight)").first.wait_for()
    _active(page).locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(timeout=120_000)


def _dismiss_news(page) -> None:
    """JupyterLab asks once whether to fetch Jupyter news (a toast over the panel): answer no."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator(".jp-toast-button", has_text="No").first.click(timeout=5_000)
    except PlaywrightTimeout:
        pass


def _panel(page):
    panel = page.locator("#nnsight-panel")
    if not panel.is_visible():
        page.locator(".nnsight-StatusItem").click()
    panel.wait_for(state="visible")
    return panel


def test_status_bar_reaches_ready_and_panel_shows_the_model(lab, page, notebooks, shots):
    page.goto(f"{lab.url}lab?token={TOKEN}")
    page.locator(".nnsight-StatusItem").wait_for()
    shots(page, "lab-opened")
    page.locator(READY).wait_for(timeout=300_000)
    print(f"from starting JupyterLab to the status bar showing {MODEL} ready: "
          f"{time.monotonic() - lab.started:.1f} s")
    assert f"{MODEL} ready" in page.locator(".nnsight-StatusItem").inner_text()
    shots(page, "status-ready")
    _dismiss_news(page)
    panel = _panel(page)
    card = panel.locator(f'.nnsight-Model[data-model="{MODEL}"]')
    facts = card.locator(".nnsight-ModelFacts").inner_text()
    assert "float32" in facts and "cpu" in facts and "134.5M parameters" in facts, facts
    card.locator(".nnsight-TreeSummary").click()
    card.locator('.nnsight-TreeNode[data-path="model.model"] > summary').click()
    card.locator('.nnsight-TreeNode[data-path="model.model.layers"] > summary').click()
    layer = card.locator('.nnsight-TreeNode[data-path="model.model.layers[29]"]')
    layer.wait_for()
    assert card.locator('.nnsight-TreeNode[data-path^="model.model.layers["]').count() == 30
    shots(page, "panel-module-tree")


def test_idle_polling_rate(page):
    """The panel's own load on the host while nothing runs (printed for the report, not asserted)."""
    before = len(page.nnsight_requests)
    page.wait_for_timeout(20_000)      # (a plain sleep would hold back playwright's events)
    made = len(page.nnsight_requests) - before
    print(f"idle: {made} requests to nnsight/api/ in 20 s = {made / 20:.2f} requests/s per open JupyterLab")
    assert made >= 1           # it follows the host (every 5 s when idle)


def test_copy_a_module_path_into_a_cell(page, shots):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    panel = _panel(page)
    copy = panel.locator('.nnsight-TreeNode[data-path="model.model.layers[29]"] > summary .nnsight-Copy')
    copy.click()
    assert page.evaluate("navigator.clipboard.readText()") == "model.model.layers[29]"
    shots(page, "copied")


def test_nnsight_kernel_in_the_launcher_and_a_notebook_connects(page, notebooks, shots):
    page.locator(".jp-LauncherCard", has_text="Python 3 (nnsight)").first.wait_for()
    shots(page, "launcher")
    _open(page, notebooks[0])
    _run_cell(page, 0)
    _output(page, 0, "connected as")
    shots(page, "connected")


def test_trace_cell_against_the_hosted_model(page, shots):
    _notebook_needs_front_end()
    _run_cell(page, CELL_TRACE)
    _output(page, CELL_TRACE, "done in")
    _run_cell(page, CELL_DECODE)
    _output(page, CELL_DECODE, "next token: ' Paris'")
    shots(page, "trace-done")


def test_cancel_a_long_job_from_the_panel(page, shots):
    _run_cell(page, CELL_LONG)
    panel = _panel(page)
    running = panel.locator('.nnsight-Job[data-status="running"]')
    running.first.wait_for(timeout=120_000)
    shots(page, "long-job-running")
    running.first.locator(".nnsight-Cancel").click()
    _output(page, 1, "JobCancelledError", timeout=60_000)
    panel.locator('.nnsight-Job[data-status="cancelled"]').first.wait_for()
    shots(page, "cancelled")


def test_two_notebooks_run_jobs_at_once_and_the_panel_shows_both(page, notebooks, shots):
    _run_cell(page, 1)                           # a.ipynb: a long job again
    page.locator(".jp-DirListing-itemText", has_text=notebooks[1]).first.wait_for()
    _open(page, notebooks[1])
    _run_cell(page, 0)
    _output(page, 0, "connected as")
    _run_cell(page, 1)
    panel = _panel(page)
    active = panel.locator('.nnsight-Job[data-status="running"], .nnsight-Job[data-status="queued"]')
    deadline = time.monotonic() + 120
    while active.count() < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    shots(page, "two-jobs")
    assert active.count() == 2, panel.inner_text()
    queue = panel.locator(".nnsight-QueueEntry")
    assert queue.count() == 2, panel.inner_text()
    busy = len(page.nnsight_requests)
    page.wait_for_timeout(10_000)
    made = len(page.nnsight_requests) - busy
    print(f"busy: {made} requests to nnsight/api/ in 10 s = {made / 10:.2f} requests/s per open JupyterLab")
    for _ in range(2):
        active.first.locator(".nnsight-Cancel").click()
        page.wait_for_timeout(500)
    _output(page, 1, "JobCancelledError", timeout=60_000)
    deadline = time.monotonic() + 60
    while active.count() and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert active.count() == 0, panel.inner_text()
    shots(page, "both-cancelled")


def test_head_patching_explorer_heatmap_click_updates_the_detail(page, notebooks, shots):
    _notebook_needs_front_end()
    page.locator(".lm-TabBar-tab", has_text=notebooks[0]).first.click()
    _run_cell(page, CELL_EXPLORER)
    cell = _active(page).locator(".jp-CodeCell").nth(CELL_EXPLORER)
    cell.locator(".widget-button", has_text="Run sweep").first.click()
    cell.locator(".widget-html", has_text="Click a head for its detail").first.wait_for(timeout=600_000)
    heatmap = cell.locator(".js-plotly-plot").first
    heatmap.scroll_into_view_if_needed()
    shots(page, "sweep-done")
    heatmap.locator(".heatmaplayer image").first.wait_for(state="attached", timeout=60_000)   # cells drawn
    area = heatmap.locator(".nsewdrag").first
    box = area.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.3)
    detail = cell.locator(".widget-html h4", has_text="layer")
    detail.first.wait_for(timeout=300_000)
    shots(page, "head-detail")
    title = detail.first.inner_text()
    page.mouse.click(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.8)
    cell.locator(".widget-html h4", has_text="layer").filter(has_not_text=title).first.wait_for(timeout=300_000)
    shots(page, "another-head")
