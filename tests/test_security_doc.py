"""docs/security.md names, for every claim, the test that proves it: those tests must exist.

A reference is written in backticks, either `tests/<dir>/<file>.py::test_name`, `<file>.py::test_name`
(a file name under tests/) or a bare `test_name` (a test defined somewhere under tests/).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
REFERENCE = re.compile(r"`((?:[\w/]+\.py::)?test_\w+)`")


def _tests_by_file() -> dict[Path, set[str]]:
    found = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        found[path] = {node.name for node in ast.walk(tree)
                       if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")}
    return found


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    return {part.splitlines()[0]: part for part in parts}


def test_every_test_named_in_security_md_exists():
    tests = _tests_by_file()
    everywhere = set().union(*tests.values())
    missing = []
    for reference in REFERENCE.findall(DOC.read_text()):
        file, _, name = reference.rpartition("::")
        if not file:
            if name not in everywhere:
                missing.append(reference)
            continue
        files = [p for p in tests if p == ROOT / file or (p.name == file and "/" not in file)]
        if not any(name in tests[p] for p in files):
            missing.append(reference)
    assert not missing, f"docs/security.md names tests that do not exist: {sorted(set(missing))}"


def test_every_numbered_section_of_security_md_names_its_tests():
    sections = {title: body for title, body in _sections(DOC.read_text()).items() if title[:1].isdigit()}
    assert len(sections) == 6, sorted(sections)
    bare = [title for title, body in sections.items() if not REFERENCE.search(body)]
    assert not bare, f"sections of docs/security.md that name no test: {bare}"
