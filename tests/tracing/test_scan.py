"""model.scan(...): shapes under fake tensors, no real compute; Tab completion of envoys."""

import pytest
import torch

import nnsight_jupyter as nj

PROMPT = "the cat sat on the mat"


def _shapes(raw, tokenizer):
    """Every module's output shape from a plain forward with hooks."""
    shapes, handles = {}, []
    for path, sub in raw.named_modules():
        handles.append(sub.register_forward_hook(
            lambda m, a, o, p=path: shapes.setdefault(p, o.shape if isinstance(o, torch.Tensor) else None) and None))
    try:
        with torch.no_grad():
            raw(torch.tensor([tokenizer(PROMPT)["input_ids"]]))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def test_scan_gives_every_module_shape_without_computing(llama, raw_llama, tokenizer, monkeypatch):
    expected = _shapes(raw_llama, tokenizer)
    calls = []
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: calls.append(x) or torch.nn.functional.linear(
        x, self.weight, self.bias))
    with llama.scan(PROMPT) as scan:
        width = llama.model.layers[0].output.shape[-1]           # fixed by the model: a plain int (shapes.py)
        length = llama.model.layers[0].output.shape[1].save()    # varies with the prompt: traced, then saved
        llama.model.layers[1].output[:, -1] = 0                  # a valid write: checked, nothing computed
        logits = llama.lm_head.output.save()
    assert calls and all(isinstance(x, torch._subclasses.fake_tensor.FakeTensor) for x in calls)
    assert width == 64 and length == 6
    assert logits.shape == (1, 6, 200) and logits.device.type == "meta"     # shape and dtype, no data
    shapes = scan.shapes
    for path, shape in expected.items():
        if shape is not None:
            assert shapes[path] == shape, path
    assert "model.layers" not in shapes
    assert llama.scan("hello world").shapes["model.layers.3"] == (1, 2, 64)


def test_scan_reports_a_shape_error_before_any_real_run(llama):
    with pytest.raises(nj.ExecutionError, match=r"index 9 is out of bounds.*model.layers.1"):
        with llama.scan("hello world"):
            llama.model.layers[1].output[:, 9] = 0
    with pytest.raises(nj.TracingError, match="needs an input"):
        llama.scan()
    with pytest.raises(nj.TracingError, match="on its own"):
        with llama.session():
            with llama.scan(PROMPT):
                pass


def test_scan_of_a_plain_module(tokenizer):
    net = nj.NNsight(torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)))
    shapes = net.scan(torch.zeros(4, 3)).shapes
    assert shapes == {"0": (4, 5), "1": (4, 5), "2": (4, 2), "": (4, 2)}


def test_tab_completion_lists_submodules(llama):
    names = dir(llama.model)
    assert {"layers", "embed_tokens", "norm", "output", "input", "inputs", "skip"} <= set(names)
    assert {"model", "lm_head", "trace", "generate", "scan", "config", "tokenizer"} <= set(dir(llama))
    assert {"q_proj", "o_proj", "heads", "head_dim"} <= set(dir(llama.model.layers[0].self_attn))
    assert "weight" in dir(llama.lm_head)


def test_ipython_completer_offers_submodules(llama):
    """IPython's default completer (jedi) completes `model.model.<Tab>` from the envoy's __dir__
    (jedi does not run `layers[0]` to complete after an index: `layer = model.model.layers[0]` does)."""
    from IPython.core.completer import provisionalcompleter
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.user_ns["model"] = llama
    try:
        with provisionalcompleter():
            offered = {c.text for c in shell.Completer.completions("model.model.", 12)}
    finally:
        InteractiveShell.clear_instance()       # the singleton is not this test's to keep (tests/notebook makes its own)
    assert {"layers", "embed_tokens", "norm", "output", "skip"} <= offered
