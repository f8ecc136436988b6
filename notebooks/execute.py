"""Re-execute the tutorial notebooks in place, with a model host running: `python notebooks/execute.py [NAME ...]`.

Their outputs are committed so that a reader sees results on the page; this is how they were produced.
"""

import subprocess
import sys
from pathlib import Path

from tutorial_host import start_tutorial_host

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> None:
    notebooks = [HERE / name for name in names] or sorted(HERE.glob("0*.ipynb"))
    host = start_tutorial_host()
    try:
        for notebook in notebooks:
            subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "notebook", "--inplace",
                            "--ExecutePreprocessor.timeout=900", str(notebook)], check=True, cwd=HERE)
    finally:
        host.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
