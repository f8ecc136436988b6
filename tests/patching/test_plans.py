"""Every plan of every sweep gives the same scores, equal to plain PyTorch hooks, on both architectures."""

from __future__ import annotations

import pytest
import torch

from nnsight_jupyter import patching as P

from .conftest import PAIR


def plain_head_scores(model, position: int) -> torch.Tensor:
    """Head patching by hand: pre-hooks on the raw model's attention output projections."""
    raw = model._module
    tok = model.tokenizer
    clean, corrupt = (torch.tensor([tok(p)["input_ids"]]) for p in PAIR[:2])
    answer, distractor = (tok(w)["input_ids"][0] for w in PAIR[2:])
    layers = raw.model.layers if hasattr(raw, "model") else raw.transformer.h
    projections = [layer.self_attn.o_proj if hasattr(layer, "self_attn") else layer.attn.c_proj for layer in layers]
    n_heads = raw.config.num_attention_heads
    head_dim = raw.config.hidden_size // n_heads
    stored = {}

    def keep(i):
        return lambda module, args: stored.__setitem__(i, args[0].clone())

    handles = [p.register_forward_pre_hook(keep(i)) for i, p in enumerate(projections)]
    with torch.no_grad():
        raw(clean)
    for h in handles:
        h.remove()
    scores = torch.zeros(len(layers), n_heads)
    for layer, projection in enumerate(projections):
        for head in range(n_heads):
            cols = slice(head * head_dim, (head + 1) * head_dim)

            def patch(module, args, layer=layer, cols=cols):
                x = args[0].clone()
                x[:, position, cols] = stored[layer][:, position, cols]
                return (x,)

            handle = projection.register_forward_pre_hook(patch)
            with torch.no_grad():
                logits = raw(corrupt).logits[0, -1]
            handle.remove()
            scores[layer, head] = logits[answer] - logits[distractor]
    return scores


@pytest.mark.parametrize("position", [-1, 5])
def test_every_head_patching_plan_equals_plain_pytorch(model, position):
    expected = plain_head_scores(model, position)
    for plan in P.PLANS:
        result = P.head_patching(model, PAIR, positions=position, plan=plan)
        assert result.plan == plan and result.axes == ("layer", "head")
        torch.testing.assert_close(result.scores, expected, atol=1e-4, rtol=0, msg=lambda m: f"{plan}: {m}")


@pytest.mark.parametrize("sweep", [P.residual_patching, P.mlp_patching])
def test_every_position_sweep_plan_gives_the_same_scores(model, sweep):
    positions = [2, 8, -1]
    reference = sweep(model, PAIR, positions=positions, plan="naive")
    assert reference.axes == ("layer", "position") and reference.scores.shape == (len(reference.labels["layer"]), 3)
    for plan in P.PLANS[1:-1]:
        result = sweep(model, PAIR, positions=positions, plan=plan)
        torch.testing.assert_close(result.scores, reference.scores, atol=1e-4, rtol=0, msg=lambda m: f"{plan}: {m}")
    one = sweep(model, PAIR, positions=8, plan="kv")        # one position: the kv plan serves it
    torch.testing.assert_close(one.scores[:, 0], reference.scores[:, 1], atol=1e-4, rtol=0)


def test_residual_patching_at_every_layer_of_the_answer_position_recovers_everything(llama):
    # Patching the whole residual stream at the last position of the last layer gives the clean run's logits.
    result = P.residual_patching(llama, PAIR, positions=-1, metric="recovered")
    assert result.scores[-1, 0] == pytest.approx(1.0, abs=1e-4)


def test_the_default_plan_is_kv_for_one_position_and_skip_for_several(llama):
    assert P.head_patching(llama, PAIR).plan == "kv"
    assert P.head_patching(llama, PAIR, positions=[4, -1]).plan == "skip"
    assert P.residual_patching(llama, PAIR).plan == "skip"


def test_several_pairs_are_averaged_and_kept_per_pair(llama):
    other = ("the cat sat on the mat and john gave it to", "the cat sat on the mat and mary gave it to", "mary", "john")
    both = P.head_patching(llama, [PAIR, other])
    one = P.head_patching(llama, PAIR)
    two = P.head_patching(llama, other)
    torch.testing.assert_close(both.scores, (one.scores + two.scores) / 2)
    assert both.per_pair.shape == (2, *one.scores.shape)


def test_recovered_is_the_normalised_logit_difference(llama):
    raw = P.head_patching(llama, PAIR)
    recovered = P.head_patching(llama, PAIR, metric="recovered")
    clean, corrupt = raw.baselines["clean"][0], raw.baselines["corrupt"][0]
    torch.testing.assert_close(recovered.scores, (raw.scores - corrupt) / (clean - corrupt))
    assert recovered.metric == "recovered"


def test_a_metric_function_runs_where_the_model_runs(llama):
    def answer_logit(logits, answer, distractor):
        return logits[:, answer]

    result = P.head_patching(llama, PAIR, metric=answer_logit, plan="scalars")
    naive = P.head_patching(llama, PAIR, metric=answer_logit, plan="naive")
    torch.testing.assert_close(result.scores, naive.scores, atol=1e-5, rtol=0)
    assert result.metric == "answer_logit"


def test_costs_follow_the_ladder(llama):
    costs = {plan: P.head_patching(llama, PAIR, plan=plan).cost for plan in P.PLANS}
    n_layers, n_heads = 4, 4
    assert costs["naive"].requests == n_layers * (n_heads + 1) + 2
    assert all(costs[p].requests == 1 for p in P.PLANS[1:])
    assert costs["session"].forward_passes == n_layers * (n_heads + 1) + 2
    assert costs["cached"].forward_passes == n_layers * n_heads + 2
    assert costs["batched"].forward_passes == n_layers + 2
    assert costs["kv"].forward_passes == n_layers + 3
    assert costs["scalars"].bytes_received < costs["session"].bytes_received / 100


def test_progress_is_reported_per_layer(llama):
    seen = []
    P.head_patching(llama, [PAIR, PAIR], progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 8) for i in range(1, 9)]


def test_a_subset_of_layers_gives_those_rows_of_the_full_sweep(llama):
    full = P.head_patching(llama, PAIR, plan="skip")
    for plan in ("cached", "skip", "kv"):
        part = P.head_patching(llama, PAIR, plan=plan, layers=[1, -1])
        assert part.labels["layer"] == ["1", "3"]
        torch.testing.assert_close(part.scores, full.scores[[1, 3]], atol=1e-5, rtol=0)


@pytest.mark.parametrize("plan", ["naive", "batched"])
def test_progress_is_reported_once_per_layer_by_every_plan(llama, plan):
    seen = []
    P.head_patching(llama, PAIR, plan=plan, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 4) for i in range(1, 5)]


def test_several_pairs_are_one_request(llama):
    for plan in ("scalars", "batched", "kv"):
        assert P.head_patching(llama, [PAIR, PAIR], plan=plan).cost.requests == 1
    assert P.attribution_patching(llama, [PAIR, PAIR]).cost.requests == 2      # one per pair: see docs/patching.md
