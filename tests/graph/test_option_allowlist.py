"""No code from a user runs, through any option: the keyword allow-list (graph/keywords.py).

Every keyword a graph hands to transformers or torch (options of trace / generate, keyword
inputs of invokes and module calls, keywords of torch functions and Tensor methods, flags of
model ops) is checked in graph/validate.py, on every path: the tracer at the user's line, `execute`
on a hand-built graph, the host as it decodes. `custom_generate=<dir>, trust_remote_code=True`
really imports and runs the directory's code when it reaches `model.generate` (the control test
below shows it), and is refused, by name, on each path, with nothing imported.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from nnsight_jupyter import LanguageModel
from nnsight_jupyter.errors import KeywordNotAllowedError
from nnsight_jupyter.execution import execute
from nnsight_jupyter.graph.codec import decode, encode
from nnsight_jupyter.graph.keywords import KEYWORDS, REFUSED
from nnsight_jupyter.graph.nodes import Graph, Invoke, Node, Ref, Run


@pytest.fixture
def custom_code(tmp_path):
    """A directory whose custom_generate/generate.py writes a marker file when it is imported."""
    marker = tmp_path / "imported.marker"
    code = tmp_path / "repo" / "custom_generate"
    code.mkdir(parents=True)
    (code / "generate.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("user code ran")

        def generate(model, **kwargs):
            return None
    """))
    return tmp_path / "repo", marker


@pytest.fixture
def llama(raw_llama, tokenizer):
    return LanguageModel(raw_llama, tokenizer=tokenizer)


def test_control_custom_generate_runs_user_code_when_it_reaches_transformers(raw_llama, custom_code):
    """Without the allow-list, these two options import and run the directory's code."""
    repo, marker = custom_code
    raw_llama.generate(torch.tensor([[1, 2]]), max_new_tokens=1, custom_generate=str(repo), trust_remote_code=True)
    assert marker.exists()


def test_generate_refuses_custom_generate_at_the_call(llama, custom_code):
    repo, marker = custom_code
    with pytest.raises(KeywordNotAllowedError) as info:
        with llama.generate("the cat", max_new_tokens=2, custom_generate=str(repo), trust_remote_code=True):
            llama.lm_head.output.save()
    message = str(info.value)
    assert "'custom_generate'" in message and "option of generate()" in message
    assert "imports and runs" in message and "max_new_tokens" in message      # why, and what is allowed
    assert not marker.exists()


@pytest.mark.parametrize("name, value", [
    ("trust_remote_code", True), ("assistant_model", "gpt2"), ("streamer", "stdout"),
    ("logits_processor", []), ("stopping_criteria", []), ("prefix_allowed_tokens_fn", None),
    ("generation_config", {"max_new_tokens": 2}), ("num_beams", 2), ("num_return_sequences", 2),
    ("return_dict_in_generate", True), ("tokenizer", None), ("cache_implementation", "static"),
])
def test_generate_refuses_options_off_the_list(llama, name, value):
    with pytest.raises(KeywordNotAllowedError, match=f"keyword '{name}' \\(option of generate\\(\\)"):
        with llama.generate("the cat", max_new_tokens=2, **{name: value}):
            pass


@pytest.mark.parametrize("name, value, words", [
    ("temperature", "hot", "must be a literal number, not str"),
    ("do_sample", 1, "must be a literal bool, not int"),
    ("eos_token_id", "</s>", "literal int or list of ints"),
    ("top_k", 2.5, "must be a literal int"),
])
def test_generate_refuses_options_of_the_wrong_type(llama, name, value, words):
    with pytest.raises(KeywordNotAllowedError, match=f"'{name}'.*{words}"):
        with llama.generate("the cat", max_new_tokens=2, **{name: value}):
            pass


def test_allowed_generate_options_run(llama):
    with llama.generate("the cat", max_new_tokens=2, do_sample=False, temperature=1.0, top_k=5,
                        repetition_penalty=1.0, use_cache=True) as tracer:
        ids = tracer.result.save()
    assert ids.shape == (1, 4)


def test_invoke_inputs_are_checked(llama, custom_code):
    repo, marker = custom_code
    with pytest.raises(KeywordNotAllowedError, match="'custom_generate' \\(keyword input of invoke 0 of run 0"):
        with llama.trace("the cat", custom_generate=str(repo)):
            pass
    with pytest.raises(KeywordNotAllowedError, match="'custom_generate'.*allowed: input_ids, attention_mask"):
        with llama.generate(max_new_tokens=2) as tracer:
            with tracer.invoke("the cat", custom_generate=str(repo), trust_remote_code=True):
                pass
    with pytest.raises(KeywordNotAllowedError, match="'use_cache'.*must be a bool, not str"):
        with llama.trace("the cat", use_cache="yes"):
            pass
    assert not marker.exists()
    with llama.trace("the cat", use_cache=False):                # a forward input: allowed
        llama.lm_head.output.save()


def test_module_call_and_torch_keywords_are_checked(llama):
    cases = [
        (lambda h: llama.lm_head(h, custom_generate="repo"), "'custom_generate' (keyword argument of 'module.call')"),
        (lambda h: torch.softmax(h, dim=-1, out=h), "'out'"),
        (lambda h: h.sum(dim=-1, keepdim="yes"), "'keepdim' (keyword argument of 'Tensor.sum') must be a bool"),
        (lambda h: torch.nn.functional.gelu(h, approximate="exec"), "must be one of 'none' or 'tanh'"),
        (lambda h: h.to(device="/etc/passwd"), "'device'"),
        (lambda h: h.mean(dim=-1, trust_remote_code=True), "'trust_remote_code' (keyword argument of 'Tensor.mean')"),
    ]
    for make, words in cases:
        with pytest.raises(KeywordNotAllowedError) as info:
            with llama.trace("the cat"):
                make(llama.model.norm.output)
        assert words in str(info.value), str(info.value)
        assert str(info.value).startswith("test_option_allowlist.py:")        # the user's own line
    with llama.trace("the cat"):
        s = llama.model.norm.output.sum(dim=-1, keepdim=True).save()
        p = torch.nn.functional.gelu(llama.model.norm.output, approximate="tanh").save()
    assert s.shape == (1, 2, 1) and p.shape[:2] == (1, 2)


# ----------------------------------------------------------------------------- hand-crafted graphs

def _graph(kind="trace", options=None, invoke_kwargs=None, nodes=()):
    return Graph(runs=[Run(0, kind, [Invoke(0, ("the cat",), dict(invoke_kwargs or {}))], dict(options or {}))],
                 nodes=[Node(0, "module.output", module="lm_head"), *nodes])


CRAFTED = [
    (dict(kind="generate", options={"max_new_tokens": 2, "custom_generate": "/tmp/repo", "trust_remote_code": True}),
     "'custom_generate' (option of generate(), run 0)"),
    (dict(kind="generate", options={"max_new_tokens": 2, "trust_remote_code": True}), "'trust_remote_code'"),
    (dict(kind="generate", options={"generation_config": {"max_new_tokens": 2}}), "'generation_config'"),
    (dict(kind="generate", options={"max_new_tokens": Ref(0)}), "must be a literal int, not a value computed"),
    (dict(kind="generate", options={"max_new_tokens": "4"}), "must be a literal int, not str"),
    (dict(options={"max_new_tokens": 2}), "option of trace(), run 0) is not allowed; allowed: seed"),
    (dict(invoke_kwargs={"custom_generate": "/tmp/repo"}), "'custom_generate' (keyword input of invoke 0"),
    (dict(kind="generate", options={"max_new_tokens": 2}, invoke_kwargs={"streamer": "x"}), "'streamer'"),
    (dict(nodes=[Node(1, "module.call", ("lm_head", Ref(0)), {"trust_remote_code": True})]),
     "'trust_remote_code' (keyword argument of 'module.call')"),
    (dict(nodes=[Node(1, "torch.softmax", (Ref(0),), {"dim": -1, "out": Ref(0)})]), "'out'"),
    (dict(nodes=[Node(1, "Tensor.to", (Ref(0),), {"device": "file:///etc"})]), "'device'"),
    (dict(nodes=[Node(1, "torch.nn.functional.cross_entropy", (Ref(0), Ref(0)), {"reduction": "os.system"})]),
     "'reduction'"),
    (dict(nodes=[Node(1, "add", (Ref(0), 1), {"alpha": 2})]), "'alpha' (keyword argument of 'add') is not allowed; "
                                                                "it takes no keyword arguments"),
    (dict(nodes=[Node(1, "save", (Ref(0),), {"path": "/tmp/x"})]), "'path' (keyword argument of 'save')"),
]


@pytest.mark.parametrize("spec, words", CRAFTED)
def test_decode_refuses_crafted_keywords(spec, words):
    data = encode(_graph(**spec))                 # encode does not validate: this is what a client could send
    with pytest.raises(KeywordNotAllowedError) as info:
        decode(data)
    assert words in str(info.value), str(info.value)


@pytest.mark.parametrize("spec, words", CRAFTED)
def test_execute_refuses_crafted_keywords(spec, words, llama):
    with pytest.raises(KeywordNotAllowedError) as info:
        execute(_graph(**spec), llama._target, echo_logs=False)
    assert words in str(info.value), str(info.value)


def test_every_refused_name_is_off_every_section():
    for name in REFUSED:
        assert all(name not in section for section in KEYWORDS.values()), name


# ----------------------------------------------------------------------------- hosted

def test_host_refuses_custom_generate_with_the_name(allowlist_host, custom_code):
    """A hand-crafted graph (what a client that skips the tracer could send): refused as the host
    decodes it, naming the option; the custom code was never imported. The host keeps serving."""
    repo, marker = custom_code
    client = allowlist_host.socket("token-bob")
    graph = _graph("generate", {"max_new_tokens": 2, "custom_generate": str(repo), "trust_remote_code": True})
    client.submit(encode(graph), request_id="cg")
    error = client.until(lambda m: m["type"] in ("error", "result") or m.get("status") == "error")
    assert error["type"] == "error" and error["code"] == "invalid_graph", error
    text = json.dumps(error)
    assert "custom_generate" in text and "KeywordNotAllowed" in text and "max_new_tokens" in text
    assert not marker.exists()
    client.submit(encode(_graph("generate", {"max_new_tokens": 2}, nodes=[Node(1, "tracer.result"),
                                                                        Node(2, "save", (Ref(1),))])), request_id="ok")
    ok = client.until(lambda m: m["type"] in ("error", "result") or m.get("status") == "error")
    assert ok["type"] == "result", ok
    client.close()
