"""`%%trace` and `%nnsight` in IPython's own InteractiveShell, on a local tiny Llama: every option,
the status line, print(), names landing in the notebook, and every error path at the cell's lines."""

from __future__ import annotations

import pytest
import torch

import nnsight_jupyter as nj
from nnsight_jupyter.notebook.magics import MagicUsageError, NNsightMagics, split_expressions

PROMPT = "the cat sat on the mat"


@pytest.fixture
def nb(notebook, llama):
    notebook.ns.update(model=llama, torch=torch, prompt=PROMPT, other="hello world")
    return notebook


def test_load_ext_registers_both_magics(nb):
    magics = nb.shell.magics_manager.magics
    assert "trace" in magics["cell"] and "nnsight" in magics["line"]
    assert isinstance(magics["cell"]["trace"].__self__, NNsightMagics)
    nj.load_ipython_extension(nb.shell)            # loading again is harmless
    assert nb.run("%load_ext nnsight_jupyter").success


def test_trace_saves_land_as_tensors_equal_to_a_plain_trace(nb, llama):
    result = nb.run('%%trace model prompt\nh = model.model.layers[1].output.save()\n'
                    'unsaved = model.model.layers[2].output\nlogits = model.lm_head.output.save()\n')
    assert result.success, result.error_in_exec
    with llama.trace(PROMPT):
        h = llama.model.layers[1].output.save()
        logits = llama.lm_head.output.save()
    assert type(nb.ns["h"]) is torch.Tensor and torch.equal(nb.ns["h"], h.value)
    assert torch.equal(nb.ns["logits"], logits.value)
    assert isinstance(nb.ns["unsaved"], nj.Proxy)             # only saved names become values
    assert type(nb.ns["tracer"]).__name__ == "Tracer"


def test_several_inputs_are_one_invoke_each_and_the_body_sees_every_row(nb, llama):
    assert nb.run('%%trace model prompt other\nh = model.model.layers[0].output.save()\n'
                  'n = len(tracer.builder.graph.runs[0].invokes)\n').success
    with llama.trace() as tracer:
        with tracer.invoke(PROMPT):
            pass
        with tracer.invoke("hello world"):
            pass
        h = llama.model.layers[0].output.save()
    assert nb.ns["h"].shape[0] == 2 and torch.equal(nb.ns["h"], h.value)
    assert nb.ns["n"] == 3         # two inputs and the body's all-rows invoke


def test_inputs_are_python_expressions_split_outside_brackets_and_strings():
    assert split_expressions('model "a b" (x + 1) [1, 2] f(a, b)["k"] --max-new-tokens 3 # note') == [
        "model", '"a b"', "(x + 1)", "[1, 2]", 'f(a, b)["k"]', "--max-new-tokens", "3"]
    with pytest.raises(MagicUsageError, match="cannot read the magic line"):
        split_expressions('model "unterminated')


def test_an_input_expression_is_evaluated_in_the_notebook(nb, llama):
    nb.ns["prompts"] = [PROMPT, "hello world"]
    assert nb.run('%%trace model prompts[1]\nh = model.model.layers[0].output.save()\n').success
    with llama.trace("hello world"):
        h = llama.model.layers[0].output.save()
    assert torch.equal(nb.ns["h"], h.value)


def test_max_new_tokens_generates_and_the_status_counts_each_step(nb, llama):
    assert nb.run('%%trace model prompt --max-new-tokens 4\nids = tracer.result.save()\n').success
    with llama.generate(PROMPT, max_new_tokens=4) as tracer:
        ids = tracer.result.save()
    assert torch.equal(nb.ns["ids"], ids.value)
    texts = nb.status_texts()
    steps = [t for t in texts if "running · step" in t]
    assert [s.split("step ")[1].split(" ")[0] for s in steps] == ["1/4", "2/4", "3/4", "4/4"]
    assert "done in" in texts[-1] and "4 forward passes" in texts[-1] and "received" not in texts[-1]


def test_print_of_a_traced_value_prints_when_the_graph_runs(nb, capsys):
    assert nb.run('%%trace model prompt\nprint("norm", model.model.layers[0].output.norm())\n'
                  'n = model.model.layers[0].output.norm().save()\n').success
    out = capsys.readouterr().out
    assert f"norm {str(nb.ns['n'])}" in out and "Proxy" not in out


def test_session_runs_the_body_as_one_request(nb, llama):
    cell = ("%%trace model --session\n"
            "with model.trace(other):\n"
            "    clean = model.model.layers[1].output[:, -1]\n"
            "with model.trace(prompt):\n"
            "    model.model.layers[1].output[:, -1] = clean\n"
            "    patched = model.lm_head.output.save()\n")
    assert nb.run(cell).success
    assert type(nb.ns["tracer"]).__name__ == "Session"
    with llama.session():
        with llama.trace("hello world"):
            clean = llama.model.layers[1].output[:, -1]
        with llama.trace(PROMPT):
            llama.model.layers[1].output[:, -1] = clean
            patched = llama.lm_head.output.save()
    assert torch.equal(nb.ns["patched"], patched.value)
    assert "2 forward passes" in nb.status_texts()[-1]


def test_status_line_is_one_display_updated_in_place_with_a_text_fallback(nb):
    assert nb.run('%%trace model prompt\nh = model.model.layers[0].output.save()\n').success
    statuses = [o for o in nb.outputs if "nnsight-status" in o["data"]["text/html"]]
    assert len({o["display_id"] for o in statuses}) == 1 and statuses[0]["display_id"]
    assert not statuses[0]["update"] and all(o["update"] for o in statuses[1:])
    final = statuses[-1]["data"]
    assert final["text/plain"].startswith("nnsight · LlamaForCausalLM: done in ") and "1 forward pass" in final["text/plain"]
    assert "nnsight-status-done" in final["text/html"]


# ----------------------------------------------------------------------------- errors


def _error_lines(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_a_trace_error_on_cell_line_3_is_reported_as_line_3_in_text_and_traceback(nb, capsys):
    result = nb.run("%%trace model prompt\n"
                    "h = model.model.layers[0].output.save()\n"
                    "model.model.layers[1].output[:] = torch.zeros(5)\n")
    error = result.error_in_exec
    assert isinstance(error, nj.ShapeMismatchError)
    assert str(error).startswith(f"Cell In[{nb.number}], line 3: ")
    shown = _error_lines(capsys)
    tail = shown[shown.index(f"Cell In[{nb.number}], line 3\n"):]
    assert "----> 3 model.model.layers[1].output[:] = torch.zeros(5)" in tail
    assert "executor.py" not in shown and "RuntimeError" not in shown
    assert "color: #c62828" in nb.outputs[-1]["data"]["text/html"]                  # the status in red
    assert f"Cell In[{nb.number}], line 3" in nb.status_texts()[-1]
    assert isinstance(nb.ns["h"], nj.Proxy)       # nothing ran: no name was rebound


def test_an_error_found_while_tracing_points_at_its_line(nb, capsys):
    result = nb.run("%%trace model prompt\nh = model.model.layers[0].output\n\nif h.sum() > 0:\n    pass\n")
    assert isinstance(result.error_in_exec, nj.ControlFlowError)
    assert str(result.error_in_exec).startswith(f"Cell In[{nb.number}], line 4: ")
    assert "----> 4 if h.sum() > 0:" in _error_lines(capsys)


def test_an_out_of_order_error_names_both_cell_lines(nb):
    result = nb.run("%%trace model prompt\nb = model.model.layers[2].output.save()\na = model.model.layers[0].output.save()\n")
    error = result.error_in_exec
    assert isinstance(error, nj.OutOfOrderError)
    assert str(error).startswith(f"Cell In[{nb.number}], line 3: ")
    assert f"(line Cell In[{nb.number}], line 2)" in str(error) and "ipython-input" not in str(error)


def test_a_python_error_in_the_body_keeps_its_own_traceback_at_the_cell_line(nb, capsys):
    result = nb.run("%%trace model prompt\nh = model.model.layers[0].output.save()\nx = undefined_name\n")
    assert isinstance(result.error_in_exec, NameError)
    assert "----> 3 x = undefined_name" in _error_lines(capsys)


def test_a_syntax_error_in_the_body_names_the_cell_line(nb, capsys):
    result = nb.run("%%trace model prompt\nh = 1\nx = = 2\n")
    assert isinstance(result.error_in_exec, SyntaxError) and result.error_in_exec.lineno == 3


@pytest.mark.parametrize("line, match", [
    ("modl prompt", r"the MODEL expression `modl` failed: NameError"),
    ("model missing_name", r"the INPUT 1 expression `missing_name` failed: NameError"),
    ("prompt", r"MODEL `prompt` is a str, not a model"),
    ("model prompt --remot", r"unrecognized arguments: --remot"),
    ("model prompt --max-new-tokens x", r"invalid int value"),
    ("model prompt --max-new-tokens 0", r"at least 1"),
    ("model prompt --session", r"--session .* takes no INPUT"),
    ("--remote", r"needs a MODEL"),
    ("", r"needs a MODEL"),
    ("net prompt --max-new-tokens 2", r"NNsight, which only traces"),
])
def test_bad_magic_lines_are_typed_usage_errors_at_the_magic_line(nb, capsys, line, match):
    nb.ns["net"] = nj.NNsight(torch.nn.Linear(2, 2))
    result = nb.run(f"%%trace {line}\nh = 1\n")
    error = result.error_in_exec
    assert isinstance(error, MagicUsageError) and isinstance(error, nj.NNsightError)
    assert str(error).startswith(f"Cell In[{nb.number}], line 1: ")
    assert pytest.importorskip("re").search(match, str(error)), str(error)
    shown = _error_lines(capsys)
    assert f"----> 1 %%trace {line}".rstrip() in shown and "magics.py" not in shown


def test_remote_without_a_connection_says_to_connect(nb):
    from nnsight_jupyter.client import current_connection

    assert current_connection() is None
    result = nb.run("%%trace model prompt --remote\nh = model.model.layers[0].output.save()\n")
    assert isinstance(result.error_in_exec, nj.TracingError) and "connect()" in str(result.error_in_exec)


# ----------------------------------------------------------------------------- %nnsight without a host


@pytest.mark.parametrize("line, match", [
    ("bogus", r"invalid choice: 'bogus'"),
    ("", r"required: COMMAND"),
    ("cancel", r"cancel needs a job id"),
    ("attach", r"attach needs a job id"),
    ("models extra", r"models takes no argument"),
    ("jobs --token t", r"jobs takes no argument; URL and --token go with connect"),
    ("connect --tok t", r"unrecognized arguments"),
])
def test_bad_nnsight_commands_are_typed_usage_errors(nb, line, match):
    import re

    result = nb.run(f"x = 1\n%nnsight {line}\n")
    error = result.error_in_exec
    assert isinstance(error, MagicUsageError) and re.search(match, str(error)), str(error)
    assert str(error).startswith(f"Cell In[{nb.number}], line 2: ")


def test_a_command_without_a_reachable_host_says_where_it_looked(nb, monkeypatch):
    monkeypatch.setenv("NNSIGHT_JUPYTER_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("NNSIGHT_JUPYTER_TOKEN", "t")
    result = nb.run("%nnsight models\n")
    assert isinstance(result.error_in_exec, nj.NNsightError)
    assert "cannot reach the Jupyter server at http://127.0.0.1:9/" in str(result.error_in_exec)


def test_help_is_generated_from_magic_arguments(nb, capsys):
    assert "%nnsight [--token T] COMMAND [URL|ID]" in NNsightMagics.nnsight.__doc__
    assert "%trace [--remote] [--session] [--max-new-tokens N] MODEL [INPUT ...]" in NNsightMagics.trace.__doc__
    assert all(word in NNsightMagics.nnsight.__doc__ for word in ("connect", "models", "status", "jobs", "cancel",
                                                                  "attach", "--token"))
    assert all(word in NNsightMagics.trace.__doc__ for word in ("MODEL", "INPUT", "--remote", "--session",
                                                                "--max-new-tokens"))
    nb.run("%nnsight?")
    shown = capsys.readouterr().out
    assert "%nnsight [--token T] COMMAND [URL|ID]" in shown and "cancel ID" in shown
