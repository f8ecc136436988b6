"""The job store is readable by the server's OS user only, and never lives inside the server's root_dir.

Permissions: directories the store creates and its result directory 0o700; the database, SQLite's
-wal / -shm files and every result file 0o600; set at creation whatever the umask, and tightened on
files an older version left looser. Location: a host whose job store would be inside root_dir keeps
the Jupyter server running, hosts nothing, and says why in its status (real server).
"""

from __future__ import annotations

import json
import os
import stat
import urllib.error
from pathlib import Path

import pytest

from nnsight_jupyter.server.app import served_by_contents
from nnsight_jupyter.server.jobs import JobStore
from nnsight_jupyter.server.launch import host_paths


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask000", "umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_store_files_are_owner_only_whatever_the_umask(tmp_path, umask):
    path = tmp_path / "new" / "deeper" / "jobs.sqlite"
    existing = _mode(tmp_path)
    store = JobStore(path)
    try:
        job = store.create(owner="alice", model="m", kind="trace", graph=b"g", graph_hash="h")
        store.transition(job.id, "running")
        store.store_result(job.id, b"payload")
        # While the store is open (WAL journal), SQLite's side files exist: they take the database's mode.
        for side in ("-wal", "-shm"):
            assert Path(f"{path}{side}").exists()
            assert _mode(Path(f"{path}{side}")) == 0o600, side
        assert _mode(path) == 0o600
        assert _mode(store._result_path(job.id)) == 0o600
        for folder in (tmp_path / "new", tmp_path / "new" / "deeper", store.result_dir):
            assert _mode(folder) == 0o700, folder
        # the folder that already existed is not the store's: left as it was
        assert _mode(tmp_path) == existing
    finally:
        store.close()


def test_files_left_looser_by_an_older_version_are_tightened(tmp_path):
    path = tmp_path / "jobs.sqlite"
    JobStore(path).close()
    results = Path(f"{path}.results")
    os.chmod(path, 0o644)
    os.chmod(results, 0o755)
    Path(f"{path}-wal").write_bytes(b"")
    os.chmod(f"{path}-wal", 0o644)
    before = _mode(tmp_path)
    JobStore(path).close()
    assert _mode(path) == 0o600 and _mode(results) == 0o700
    assert _mode(tmp_path) == before          # not the store's folder: never chmod'ed


def test_a_result_written_later_is_owner_only(tmp_path):
    old = os.umask(0)
    try:
        store = JobStore(tmp_path / "jobs.sqlite")
        for n in range(3):
            job = store.create(owner="bob", model="m", kind="trace", graph=bytes([n]), graph_hash=str(n))
            store.transition(job.id, "running")
            store.store_result(job.id, b"x" * (n + 1))
            assert _mode(store._result_path(job.id)) == 0o600
        store.close()
    finally:
        os.umask(old)


def _status(host, wait_until) -> dict:
    return wait_until(lambda: host.get("nnsight/api/status"), 60,
                      f"the host answering ({host.log_tail()})", ignore=(OSError,))


def test_job_store_inside_root_dir_is_refused_and_the_server_keeps_running(make_host, wait_until):
    host = make_host(start=False)
    inside = host_paths(host.root)["root_dir"] / "jobs.sqlite"
    host.host_config["db_path"] = str(inside)
    host.start(wait_ready=False)
    status = _status(host, wait_until)
    root = os.path.realpath(host_paths(host.root)["root_dir"])
    assert status["models"] == {}
    assert "inside the server's root_dir" in status["error"] and str(inside) in status["error"] and root in status["error"]
    assert "c.NNsightHost.db_path" in status["message"]
    assert not inside.exists() and not Path(f"{inside}.results").exists()
    with host.request("api/status") as response:            # the Jupyter server itself answers
        assert json.loads(response.read())["started"]
    client = host.socket("token-alice")
    client.submit(b"not even a graph", model="tiny")
    refused = client.recv()
    assert refused["type"] == "error" and refused["code"] == "unknown_model"
    assert "hosts nothing" in refused["error"]["message"] and "root_dir" in refused["error"]["message"]
    client.close()


def test_job_store_through_a_symlink_into_root_dir_is_refused(make_host, tmp_path, wait_until):
    host = make_host(start=False)
    link = tmp_path / "looks-outside"
    link.symlink_to(host_paths(host.root)["root_dir"], target_is_directory=True)
    host.host_config["db_path"] = str(link / "jobs.sqlite")
    host.start(wait_ready=False)
    status = _status(host, wait_until)
    assert status["models"] == {} and "inside the server's root_dir" in status["error"]


def test_only_folders_the_contents_api_can_serve_are_refused(tmp_path):
    root = tmp_path / "home"
    default = root / ".local" / "share" / "jupyter" / "nnsight_jupyter"
    assert not served_by_contents(default, root, allow_hidden=False)    # `jupyter lab` started from ~
    assert served_by_contents(default, root, allow_hidden=True)
    assert served_by_contents(root / "state", root, allow_hidden=False)
    assert served_by_contents(root, root, allow_hidden=False)
    assert not served_by_contents(tmp_path / "elsewhere", root, allow_hidden=True)


def test_default_store_in_a_hidden_folder_of_root_dir_is_hosted_and_not_served(make_host):
    host = make_host(start=False)
    hidden = host_paths(host.root)["root_dir"] / ".local" / "share" / "jobs.sqlite"
    host.host_config["db_path"] = str(hidden)
    host.start()
    assert host.get("nnsight/api/status")["models"]["tiny"]["state"] == "ready" and hidden.exists()
    for path in ("api/contents/.local/share/jobs.sqlite", "files/.local/share/jobs.sqlite"):
        try:
            with host.request(path):
                raise AssertionError(f"{path} was served")
        except urllib.error.HTTPError as error:
            assert error.code == 404
