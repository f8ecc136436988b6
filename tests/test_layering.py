"""The package's layering (DESIGN.md "Layout"), pinned: every import of every module, parsed with `ast`.

Function-level imports count as much as top-level ones. Edges: `graph` imports nothing else of the
package (but `errors` and `_version`); `execution` never imports `tracing`, `client`, `server`;
`tracing` never imports `client` or `server`, and of `execution` only the model targets and the
local runner (never the executor: it knows runners through `graph.runner`); `server` never imports
`notebook`, `patching`, `tracing`, `client`; `client` never imports `server`. Importing
`nnsight_jupyter.server` or `.graph` loads no IPython, ipywidgets or plotly, and `graph.nodes`
loads only `graph` itself and the leaves.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nnsight_jupyter

PACKAGE = Path(nnsight_jupyter.__file__).parent
ROOT = "nnsight_jupyter"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or (PACKAGE.parent / relative / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every package module `path` imports, anywhere in it (`from X import a` counts X and X.a if a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if _is_module(f"{target}.{alias.name}"))
    return {m for m in found if m == ROOT or m.startswith(ROOT + ".")}


MODULES = {_module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _in(module: str, part: str) -> bool:
    full = f"{ROOT}.{part}"
    return module == full or module.startswith(full + ".")


def edges(part: str) -> dict[str, set[str]]:
    """Modules of `part` -> the package modules each imports."""
    return {m: deps for m, deps in MODULES.items() if _in(m, part)}


def offending(part: str, forbidden) -> list[str]:
    return sorted(f"{m} imports {d}" for m, deps in edges(part).items() for d in deps if forbidden(d))


def test_the_parser_sees_function_level_and_relative_imports():
    # a module of the real package whose imports are known: the root's function-level ones included
    root = MODULES[ROOT]
    assert f"{ROOT}.notebook" in root and f"{ROOT}.server.app" in root and f"{ROOT}._version" in root
    assert f"{ROOT}.tracing.remote" in MODULES[f"{ROOT}.client.connection"]
    assert f"{ROOT}.client.hosted" in MODULES[f"{ROOT}.client.connection"]   # `from . import hosted`


def test_graph_imports_nothing_else_of_the_package():
    allowed = {f"{ROOT}.errors", f"{ROOT}._version"}
    assert edges("graph")
    assert offending("graph", lambda d: not _in(d, "graph") and d not in allowed) == []


def test_execution_never_imports_tracing_client_or_server():
    assert offending("execution", lambda d: any(_in(d, p) for p in ("tracing", "client", "server",
                                                                  "notebook", "patching"))) == []


def test_tracing_knows_runners_only_through_the_protocol():
    allowed = {f"{ROOT}.execution", f"{ROOT}.execution.batching", f"{ROOT}.execution.runner",
               f"{ROOT}.execution.scan"}
    assert offending("tracing", lambda d: any(_in(d, p) for p in ("client", "server", "notebook", "patching"))) == []
    assert offending("tracing", lambda d: _in(d, "execution") and d not in allowed) == []
    # the graph builder and the tracers name no runner at all
    for module in ("builder", "tracer", "proxy", "envoy", "context"):
        assert not any(_in(d, "execution") for d in MODULES[f"{ROOT}.tracing.{module}"]), module


def test_server_never_imports_the_front_end_tracing_or_client():
    assert offending("server", lambda d: any(_in(d, p) for p in ("notebook", "patching", "tracing", "client"))) == []


def test_client_never_imports_server():
    assert offending("client", lambda d: _in(d, "server")) == []


def _loaded_after(statement: str) -> dict:
    code = (f"import sys, json\n{statement}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('nnsight_jupyter', 'IPython', 'ipywidgets', 'plotly', 'ipykernel'))))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    return {"package": [m for m in loaded if m.startswith(ROOT)],
            "front end": [m for m in loaded if not m.startswith(ROOT)]}


@pytest.mark.parametrize("module", ["nnsight_jupyter.server", "nnsight_jupyter.graph", "nnsight_jupyter"])
def test_importing_the_host_or_the_graph_loads_no_front_end(module):
    assert _loaded_after(f"import {module}")["front end"] == []


def test_the_graph_loads_only_itself_and_the_leaves():
    loaded = _loaded_after("import nnsight_jupyter.graph.nodes")["package"]
    leaves = {ROOT, f"{ROOT}._version", f"{ROOT}.errors"}
    assert [m for m in loaded if m not in leaves and not _in(m, "graph")] == []
