"""The `nnsight-jupyter demo` command, on a tiny model saved to a local directory."""

import pytest

from nnsight_jupyter import cli
from nnsight_jupyter.models import tiny_llama, word_tokenizer


def test_demo_prints_a_patching_table(tmp_path, capsys):
    model, tokenizer = tiny_llama(seed=3), word_tokenizer()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert cli.main(["demo", "--model", str(tmp_path)]) == 0
    rows = cli.demo(str(tmp_path), every=1)
    out = capsys.readouterr().out
    assert "logit diff" in out and "recovered" in out
    assert [layer for layer, _, _ in rows] == [0, 1, 2, 3]
    # The patched position comes before the last token, so patching the last layer changes nothing.
    assert rows[-1][2] == pytest.approx(0.0, abs=1e-4)


def test_server_arguments_host_the_bundled_model_by_default():
    import json

    argv = cli.server_argv([], ["--port=9999"])
    models = json.loads(argv[0].split("=", 1)[1])
    assert models == {"smollm2-135m": {"source": "bundled:smollm2-135m", "dtype": "float32", "device_map": None}}
    assert "--ip=127.0.0.1" in argv and argv[-1] == "--port=9999"
    two = cli.server_argv(["a=/models/a", "b=bundled:smollm2-135m"], ["--ip=0.0.0.0"])
    assert set(json.loads(two[0].split("=", 1)[1])) == {"a", "b"} and "--ip=127.0.0.1" not in two
    with pytest.raises(SystemExit, match="NAME=SOURCE"):
        cli.server_argv(["nonsense"], [])


def test_lab_opens_on_the_first_tutorial_when_the_checkout_has_it(tmp_path):
    assert cli.open_on_tutorial(["--ip=127.0.0.1"], str(tmp_path)) == ["--ip=127.0.0.1"]
    (tmp_path / "notebooks").mkdir()
    (tmp_path / cli.TUTORIAL).write_text("{}")
    assert cli.open_on_tutorial(["--ip=127.0.0.1"], str(tmp_path))[-1] == f"--LabApp.default_url=/lab/tree/{cli.TUTORIAL}"
    assert cli.open_on_tutorial(["--LabApp.default_url=/lab"], str(tmp_path)) == ["--LabApp.default_url=/lab"]
