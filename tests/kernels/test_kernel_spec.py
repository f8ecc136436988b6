"""The "Python 3 (nnsight)" kernel spec (kernels/nnsight): a real kernel started from it has the magics."""

import json
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[2] / "kernels"


def test_spec_names_no_server_and_no_token():
    spec = json.loads((KERNELS / "nnsight" / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (nnsight)"
    assert "--IPKernelApp.extensions=nnsight_jupyter" in spec["argv"]
    text = json.dumps(spec).lower()
    assert "token" not in text and "http" not in text and "env" not in spec


def test_a_kernel_from_the_spec_has_the_extension_loaded():
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    manager = KernelManager(kernel_name="nnsight", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(KERNELS)]))
    seen: list = []
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        reply = client.execute_interactive(
            "ip = get_ipython(); print('nnsight_jupyter' in ip.extension_manager.loaded, "
            "'trace' in ip.magics_manager.magics['cell'], 'nnsight' in ip.magics_manager.magics['line'])",
            output_hook=lambda message: seen.append(message), timeout=120)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok"
    printed = "".join(m["content"].get("text", "") for m in seen if m["msg_type"] == "stream")
    assert printed.split() == ["True", "True", "True"], printed
