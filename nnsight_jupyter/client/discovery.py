"""Finding the Jupyter server that hosts the models.

`find_server()` looks in three places, in this order:

1. the arguments (`connect(url=..., token=...)`);
2. the environment variables ``NNSIGHT_JUPYTER_URL`` and ``NNSIGHT_JUPYTER_TOKEN``;
3. the runtime file of the Jupyter server that started this kernel: ``jpserver-<pid>.json`` in
   ``jupyter_core.paths.jupyter_runtime_dir()``, where pid is the kernel's parent process
   (``os.getppid()``); its ``url`` (which includes ``base_url``) and ``token`` are used.

Kernels started outside a Jupyter server (nbval, plain IPython, a script) have no such parent and
need the variables or the arguments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ..errors import NNsightError

__all__ = ["URL_ENV", "TOKEN_ENV", "find_server", "normalize_url"]

URL_ENV = "NNSIGHT_JUPYTER_URL"
TOKEN_ENV = "NNSIGHT_JUPYTER_TOKEN"


def normalize_url(url: str) -> tuple[str, str | None]:
    """(base URL ending in "/", token from a ``?token=`` query if there was one)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise NNsightError(
            f"cannot connect to {url!r}: only http:// and https:// Jupyter server URLs are supported "
            f"(a server on a unix socket needs an http address: set {URL_ENV})")
    token = (parse_qs(parts.query).get("token") or [None])[0]
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), token


def _runtime_file() -> Path | None:
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        return None
    return Path(jupyter_runtime_dir()) / f"jpserver-{os.getppid()}.json"


def _from_runtime_file(path: Path) -> tuple[str, str | None] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    url = info.get("url")
    base_url = info.get("base_url") or "/"
    if not url:
        if info.get("sock"):
            raise NNsightError(
                f"the Jupyter server of this kernel ({path}) listens on a unix socket ({info['sock']}), which "
                f"nnsight_jupyter cannot reach: start it with an http address, or set {URL_ENV} / {TOKEN_ENV}")
        host = info.get("hostname") or "localhost"
        port = info.get("port")
        if not port:
            return None
        url = f"{'https' if info.get('secure') else 'http'}://{host}:{port}"
    base, query_token = normalize_url(url)
    prefix = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
    if not urlsplit(base).path.endswith(prefix):      # a url without the base_url (older servers)
        base = base.rstrip("/") + prefix
    token = info.get("token") or query_token or None
    return base, token


def find_server(url: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """(base URL with a trailing slash, token or None) of the Jupyter server to talk to.

    The arguments win; then ``NNSIGHT_JUPYTER_URL`` / ``NNSIGHT_JUPYTER_TOKEN``; then the runtime file
    (``jpserver-<ppid>.json``) of the Jupyter server that started this kernel. A token given as an
    argument is used with any of these URLs. Raises NNsightError naming the three places if none has
    a server.
    """
    if url:
        base, query_token = normalize_url(url)
        return base, token or query_token or os.environ.get(TOKEN_ENV) or None
    env_url = os.environ.get(URL_ENV, "").strip()
    if env_url:
        base, query_token = normalize_url(env_url)
        return base, token or os.environ.get(TOKEN_ENV) or query_token or None
    path = _runtime_file()
    found = _from_runtime_file(path) if path is not None else None
    if found is not None:
        base, file_token = found
        return base, token or file_token
    where = str(path) if path is not None else "jpserver-<parent pid>.json (jupyter_core is not installed)"
    raise NNsightError(
        "cannot find the Jupyter server that hosts the models. Looked at: (1) the url= / token= "
        f"arguments of connect(): not given; (2) the environment variables {URL_ENV} / {TOKEN_ENV}: "
        f"{URL_ENV} is not set; (3) the runtime file of the Jupyter server that started this kernel: "
        f"{where} does not exist. Fix: pass connect(url='http://host:8888/', token='...'), or set "
        f"{URL_ENV} (and {TOKEN_ENV}) before starting the kernel: kernels started outside a Jupyter "
        "server, like nbval or plain IPython, always need them.")
