"""The patching library on a hosted model: the same call as locally, the same scores, and a whole sweep is
one job on a real host (tests/patching/ holds the local tests)."""

from __future__ import annotations

import warnings

import torch

from nnsight_jupyter import patching as P

PAIR = ("when mary and john went to the store john gave a book to",
        "when mary and john went to the store mary gave a book to", "mary", "john")


def _jobs(host):
    """The ids of this user's newest jobs (the listing holds the newest 50: count new ids, not rows)."""
    return {job["id"] for job in host.get("nnsight/api/jobs", token="token-grace")["jobs"]}


def test_a_hosted_sweep_is_one_job_and_equals_the_local_one(connect_as, jupyter_host, tiny_local):
    model = connect_as("token-grace").model("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        local = P.head_patching(tiny_local, PAIR)
        for plan in ("kv", "batched"):
            before = _jobs(jupyter_host)
            seen = []
            remote = P.head_patching(model, PAIR, plan=plan, progress=lambda done, total: seen.append(done))
            assert len(_jobs(jupyter_host) - before) == 1 and remote.cost.requests == 1
            torch.testing.assert_close(remote.scores, local.scores, atol=1e-5, rtol=0)
            assert seen == [1, 2, 3, 4]                   # progress came from the job's log lines
        residual = P.residual_patching(model, PAIR, positions=[2, -1])
        torch.testing.assert_close(residual.scores, P.residual_patching(tiny_local, PAIR, positions=[2, -1]).scores,
                                   atol=1e-5, rtol=0)
        stats = P.logit_stats(model, PAIR[0], answer="mary", distractor="john")
        assert stats.tokens == P.logit_stats(tiny_local, PAIR[0]).tokens
        lens = P.logit_lens(model, PAIR[0], positions=-1, k=3)
        torch.testing.assert_close(lens.probs, P.logit_lens(tiny_local, PAIR[0], positions=-1, k=3).probs)
