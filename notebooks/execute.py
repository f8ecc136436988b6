"""Re-execute the tutorial notebooks in place, with a model host running: `python notebooks/execute.py [NAME ...]`.

Their outputs are committed so that a reader sees results on the page; this is how they were produced.
"""

import subprocess
import sys
from pathlib import Path

import nbformat
from conftest import start_tutorial_host

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> None:
    notebooks = [HERE / name for name in names] or sorted(HERE.glob("0*.ipynb"))
    host = start_tutorial_host()
    try:
        for notebook in notebooks:
            subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "notebook", "--inplace",
                            "--ExecutePreprocessor.timeout=900", str(notebook)], check=True, cwd=HERE)
            drop_widget_state(notebook)
    finally:
        host.stop()


def drop_widget_state(path: Path) -> None:
    """Remove the saved widget state (megabytes of plotly data): widgets need a live kernel anyway."""
    notebook = nbformat.read(path, as_version=4)
    if notebook.metadata.pop("widgets", None) is not None:
        nbformat.write(notebook, path)


if __name__ == "__main__":
    main(sys.argv[1:])
