"""The root package is exactly the public API of DESIGN.md, and names the hooks Jupyter looks for.

`__all__`: `LanguageModel`, `NNsight`, `connect`, `save`, `Proxy`, and the error family (every
`NNsightError` subclass in `errors`), each loaded on first use. `__version__` comes from the leaf
`_version`. `jupyter server extension enable nnsight_jupyter` finds the host through
`_jupyter_server_extension_points`; `%load_ext nnsight_jupyter` loads the notebook front end.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nnsight_jupyter as nj
from nnsight_jupyter import errors

API = ["connect", "LanguageModel", "NNsight", "Proxy", "save"]


def test_all_is_the_api_and_the_whole_error_family():
    family = [name for name, value in vars(errors).items()
              if isinstance(value, type) and issubclass(value, errors.NNsightError)]
    assert "NNsightError" in family and "OutOfOrderError" in family and "WorkerCrashError" in family
    assert nj.__all__ == API + family


def test_every_public_name_resolves_to_its_object():
    from nnsight_jupyter.client import connect
    from nnsight_jupyter.tracing import LanguageModel, NNsight, Proxy, save

    assert (nj.connect, nj.LanguageModel, nj.NNsight, nj.Proxy, nj.save) == (connect, LanguageModel, NNsight, Proxy, save)
    for name in nj.__all__[len(API):]:
        assert getattr(nj, name) is getattr(errors, name)
    assert set(nj.__all__) <= set(dir(nj))


def test_star_import_gives_exactly_all():
    namespace: dict = {}
    exec("from nnsight_jupyter import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(nj.__all__)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'execute'"):
        nj.execute
    assert getattr(nj, "no_such_name", None) is None


def test_version_lives_in_a_leaf_module():
    from nnsight_jupyter import _version

    assert nj.__version__ == _version.__version__
    tree = ast.parse(Path(_version.__file__).read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def test_server_extension_point_names_the_host():
    from nnsight_jupyter.server.app import NNsightHost

    assert nj._jupyter_server_extension_points() == [{"module": "nnsight_jupyter.server", "app": NNsightHost}]


JUPYTER_CONFIG = Path(__file__).resolve().parents[1] / "jupyter-config"


def _jupyter(config_dir: Path, *args: str) -> str:
    """`jupyter server extension ARGS` against `config_dir` only; its output without colours."""
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config_dir), "JUPYTER_CONFIG_PATH": str(config_dir)}
    done = subprocess.run([sys.executable, "-m", "jupyter_server.extension.serverextension", *args],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)


def _state(listing: str, config_dir: Path) -> str:
    """'enabled' / 'disabled' for nnsight_jupyter in the part of `list` about `config_dir`."""
    part = listing.split(f"Config dir: {config_dir}")[1].split("Config dir:")[0]
    return re.search(r"^\s*nnsight_jupyter (enabled|disabled)$", part, re.M).group(1)


def test_jupyter_server_extension_enable_disable_and_list(tmp_path):
    # what installing the package puts in a Jupyter config dir (pip's data files, or `make install`)
    shutil.copytree(JUPYTER_CONFIG / "jupyter_server_config.d", tmp_path / "jupyter_server_config.d")
    assert "Extension successfully disabled" in _jupyter(tmp_path, "disable", "--user", "nnsight_jupyter")
    assert _state(_jupyter(tmp_path, "list"), tmp_path) == "disabled"
    enabled = _jupyter(tmp_path, "enable", "--user", "nnsight_jupyter")
    assert "nnsight_jupyter  OK" in enabled and "Extension successfully enabled" in enabled   # validated
    listing = _jupyter(tmp_path, "list")
    assert _state(listing, tmp_path) == "enabled"
    assert f"nnsight_jupyter {nj.__version__} OK" in listing


def test_the_extension_package_validates_and_points_at_the_host():
    from jupyter_server.extension.manager import ExtensionPackage

    from nnsight_jupyter.server.app import NNsightHost

    package = ExtensionPackage(name="nnsight_jupyter", enabled=True)
    assert package.validate()
    (point,) = package.extension_points.values()
    assert type(point.app) is NNsightHost and point.module.__name__ == "nnsight_jupyter.server"


def test_load_ipython_extension_is_the_notebook_front_ends():
    # what it registers is tested in tests/notebook/test_magics.py, in IPython's own shell
    from nnsight_jupyter import notebook

    assert callable(notebook.load_ipython_extension)
    assert "IPython" not in notebook.__dict__            # the package itself imports nothing heavy
