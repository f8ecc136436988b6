"""The `nnsight-jupyter` command.

    nnsight-jupyter lab   [--model NAME=SOURCE ...] [JUPYTER ARGS]   JupyterLab with the model host
    nnsight-jupyter serve [--model NAME=SOURCE ...] [JUPYTER ARGS]   the same host, headless, for a team
    nnsight-jupyter demo  [--every N]   load the bundled SmolLM2, patch the residual stream of a clean
                                        indirect-object prompt into a corrupted one, layer by layer,
                                        and print the logit-difference table.

`lab` first looks for a server of this user's Jupyter runtime directory that already hosts models
(a `make run` still running): it prints that one's URL and exits instead of starting a second one.

Both servers host `smollm2-135m` (the bundled model) unless --model says otherwise; other arguments
go to Jupyter as they are (e.g. --port=9999, --NNsightHost.job_timeout=60).

`serve` is a team host: it uses `NNsightIdentityProvider` (unless another identity provider is
given), so per-user tokens, set in Jupyter's config (`c.NNsightIdentityProvider.tokens = {"<token>":
"alice", ...}` in jupyter_server_config.py, or a file passed with --config=FILE), reach only the
model host; the server's own token (--IdentityProvider.token) reaches everything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

DEFAULT_MODEL = "smollm2-135m=bundled:smollm2-135m"

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
ANSWERS = (" Mary", " John")


def demo(model_name: str = "smollm2-135m", every: int = 1) -> list[tuple[int, float, float]]:
    """Residual-stream patching at the subject position; returns (layer, logit diff, recovered)."""
    from . import LanguageModel, patching

    started = time.perf_counter()
    model = LanguageModel(model_name)
    loaded = time.perf_counter() - started
    tok = model.tokenizer
    clean_ids, corrupt_ids = tok(CLEAN)["input_ids"], tok(CORRUPT)["input_ids"]
    if len(clean_ids) != len(corrupt_ids):
        raise SystemExit("the demo prompts must tokenize to the same length")
    position = next(i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a != b and i > 3)
    layers = list(range(0, len(model.model.layers), every))

    result = patching.residual_patching(model, (CLEAN, CORRUPT, *ANSWERS), positions=position, layers=layers)
    clean, corrupt = result.baselines["clean"][0], result.baselines["corrupt"][0]
    rows = [(i, float(v), (float(v) - corrupt) / (clean - corrupt)) for i, v in zip(layers, result.scores[:, 0])]
    print(f"{model_name}: loaded in {loaded:.1f} s; patched with plan {result.plan!r}: {result.cost}")
    print(f"clean:   {CLEAN!r} -> logit diff (Mary - John) {clean:+.2f}")
    print(f"corrupt: {CORRUPT!r} -> {corrupt:+.2f}")
    print(f"patching the residual stream at token {position} ({tok.decode([clean_ids[position]])!r}) "
          "from clean into corrupt:")
    print(f"{'layer':>5}  {'logit diff':>10}  {'recovered':>9}")
    for layer, value, recovered in rows:
        bar = "#" * max(0, min(40, round(recovered * 40)))
        print(f"{layer:>5}  {value:>+10.2f}  {recovered:>9.2f}  {bar}")
    return rows


def server_argv(models: list[str], extra: list[str], team: bool = False) -> list[str]:
    """Jupyter arguments for a server hosting `models` ("NAME=SOURCE"), bound to 127.0.0.1 by default.

    `team`: per-user tokens scoped to the host (`server.auth.NNsightIdentityProvider`), unless `extra`
    names another identity provider.
    """
    hosted = {}
    for entry in models or [DEFAULT_MODEL]:
        name, sep, source = entry.partition("=")
        if not sep or not name or not source:
            raise SystemExit(f"--model takes NAME=SOURCE (e.g. {DEFAULT_MODEL}), got {entry!r}")
        hosted[name] = {"source": source, "dtype": "float32", "device_map": None}
    argv = [f"--NNsightHost.models={json.dumps(hosted)}"]
    if team and not any(a.startswith("--ServerApp.identity_provider_class") for a in extra):
        from .server.launch import IDENTITY_PROVIDER

        argv.append(f"--ServerApp.identity_provider_class={IDENTITY_PROVIDER}")
    if not any(a.startswith("--ip") for a in extra):
        argv.append("--ip=127.0.0.1")
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in extra:
        argv.append("--allow-root")
    return argv + extra


#: The notebook JupyterLab opens on when started from a checkout (`make run`), if it is there.
TUTORIAL = "notebooks/01_quickstart.ipynb"


def open_on_tutorial(argv: list[str], root: str = ".") -> list[str]:
    """`argv` plus a default URL opening the first tutorial, when the server's root (the current
    folder) holds it and `argv` names no default URL of its own."""
    if any("default_url" in a for a in argv) or not os.path.exists(os.path.join(root, TUTORIAL)):
        return argv
    return [*argv, f"--LabApp.default_url=/lab/tree/{TUTORIAL}"]


def running_host(timeout: float = 2.0) -> dict | None:
    """The runtime info (`url`, `token`, `pid`, ...) of a running Jupyter server of this user that
    answers `nnsight/api/status` (a model host), or None."""
    import urllib.request

    from jupyter_server.serverapp import list_running_servers

    for info in list_running_servers():
        request = urllib.request.Request(info["url"] + "nnsight/api/status",
                                         headers={"Authorization": f"token {info.get('token', '')}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                json.loads(response.read())
        except (OSError, ValueError):
            continue
        return info
    return None


def lab_url(info: dict) -> str:
    """The address to open for a server's runtime info: its /lab page, with the token if it has one."""
    token = info.get("token")
    return info["url"] + "lab" + (f"?token={token}" if token else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnsight-jupyter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="residual patching on the bundled model, printed as a table")
    run_demo.add_argument("--model", default="smollm2-135m")
    run_demo.add_argument("--every", type=int, default=1, help="patch every N-th layer")
    for name, help_text in (("lab", "JupyterLab with the model host"), ("serve", "the model host, headless")):
        server = commands.add_parser(name, help=help_text)
        server.add_argument("--model", action="append", default=[], metavar="NAME=SOURCE",
                            help=f"a model to host (repeatable; default {DEFAULT_MODEL})")
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        if extra:
            parser.error(f"unknown arguments: {extra}")
        demo(args.model, args.every)
    elif args.command == "lab" and (running := running_host()) is not None:
        print(f"nnsight-jupyter: JupyterLab with the model host is already running (pid {running.get('pid')}):\n"
              f"    {lab_url(running)}\n"
              f"Open that address, or stop it first (Ctrl-C in its terminal, or `jupyter server stop "
              f"{running.get('port')}`).")
    elif args.command in ("lab", "serve"):
        # Replace this process with Jupyter's own command line, which parses the JSON of the models.
        app = ["-m", "jupyterlab"] if args.command == "lab" else ["-m", "jupyter_server", "--no-browser"]
        argv = server_argv(args.model, extra, team=args.command == "serve")
        if args.command == "lab":
            argv = open_on_tutorial(argv)
        os.execv(sys.executable, [sys.executable, *app, *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
