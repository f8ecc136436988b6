"""Which queued jobs run next: round-robin by user, compatible jobs merged into one forward pass.

Rules (also in docs/scheduling.md):

* Users take turns: the next batch starts with the oldest queued job of the user served least
  recently, so one user's long queue cannot starve another's single job.
* A forward-only trace (one run, no gradients, no generation, no training) is *mergeable*: other
  users' (and the same user's) mergeable jobs with the same `key` (the canonical text of their
  invokes' keyword arguments, `execution.merge.merge_key`) join its batch, taken in turn across
  users, up to `max_jobs` jobs and `max_invokes` invokes. Every job keeps its own rows. (The worker
  checks again, with the model's recorded layouts, and runs alone a job that may not share.)
* Anything else (sessions, generation, gradients) runs alone. So does a job re-queued after it
  timed out in a merged batch (`solo`), so one slow job cannot take others down with it twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Pending:
    """A queued job, as the scheduler sees it."""

    job_id: str
    owner: str
    seq: int
    mergeable: bool
    invokes: int
    solo: bool = False
    position_sent: int | None = None   # the queue position its listeners were last told
    key: str = ""                      # jobs merge only with jobs of the same key (invoke keyword arguments)
    prepared: bytes | None = field(default=None, repr=False)   # the host's decoded graph (`worker.prepare`)


def next_batch(queue: list[Pending], served: list[str], *, max_jobs: int = 16, max_invokes: int = 64) -> list[Pending]:
    """The jobs to run next (empty if the queue is). `served`: owners, least recently served first."""
    if not queue:
        return []
    by_owner: dict[str, list[Pending]] = {}
    for job in sorted(queue, key=lambda j: j.seq):
        by_owner.setdefault(job.owner, []).append(job)

    def turn(owner: str) -> tuple[int, int]:
        rank = served.index(owner) if owner in served else -1
        return (rank, by_owner[owner][0].seq)

    owners = sorted(by_owner, key=turn)
    first = by_owner[owners[0]][0]
    if not first.mergeable or first.solo:
        return [first]
    batch, invokes = [first], first.invokes
    cursors = {owner: (1 if owner == owners[0] else 0) for owner in owners}
    progress, rounds = True, owners[1:] + owners[:1]     # the first user's next job waits its turn
    while progress and len(batch) < max_jobs:
        progress = False
        for owner in rounds:
            jobs = by_owner[owner]
            while cursors[owner] < len(jobs) and not _joins(jobs[cursors[owner]], first):
                cursors[owner] += 1
            if cursors[owner] >= len(jobs) or len(batch) >= max_jobs:
                continue
            job = jobs[cursors[owner]]
            if invokes + job.invokes > max_invokes:
                continue
            batch.append(job)
            invokes += job.invokes
            cursors[owner] += 1
            progress = True
    return batch


def _joins(job: Pending, first: Pending) -> bool:
    """Whether `job` may share `first`'s forward pass."""
    return job.mergeable and not job.solo and job.key == first.key


def rotate(served: list[str], owner: str) -> None:
    """Record that `owner` was just served: it goes to the back of the line."""
    if owner in served:
        served.remove(owner)
    served.append(owner)
