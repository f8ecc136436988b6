"""Round-robin by user and merging rules, on the pure scheduling function."""

from nnsight_jupyter.server.scheduler import Pending, next_batch, rotate


def _q(*jobs):
    return [Pending(f"j{i}", owner, i, mergeable, 1, solo) for i, (owner, mergeable, solo) in enumerate(jobs)]


def test_users_take_turns_and_compatible_jobs_merge():
    queue = _q(("a", True, False), ("a", True, False), ("a", True, False), ("b", True, False), ("c", False, False))
    batch = next_batch(queue, served=[], max_jobs=3)
    assert [j.job_id for j in batch] == ["j0", "j3", "j1"]          # a, then b, then a again


def test_least_recently_served_user_goes_first():
    queue = _q(("a", True, False), ("b", True, False))
    served = []
    rotate(served, "b")
    rotate(served, "a")
    assert next_batch(queue, served, max_jobs=1)[0].owner == "b"


def test_incompatible_and_solo_jobs_run_alone():
    assert [j.job_id for j in next_batch(_q(("a", False, False), ("b", True, False)), [])] == ["j0"]
    assert [j.job_id for j in next_batch(_q(("a", True, True), ("b", True, False)), [])] == ["j0"]
    queue = _q(("a", True, False), ("b", False, False), ("b", True, True), ("c", True, False))
    assert [j.job_id for j in next_batch(queue, [])] == ["j0", "j3"]


def test_invoke_budget_limits_the_batch():
    queue = [Pending("big", "a", 0, True, 60), Pending("small", "b", 1, True, 10), Pending("tiny", "c", 2, True, 4)]
    assert [j.job_id for j in next_batch(queue, [], max_invokes=64)] == ["big", "tiny"]
    assert next_batch([], []) == []
