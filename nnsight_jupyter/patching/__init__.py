"""Ready experiments: head / residual / MLP patching sweeps, attribution patching, logit lens, logit statistics.

    from nnsight_jupyter import patching as P
    res = P.head_patching(model, (clean, corrupt, " Mary", " John"), positions=-1)
    res.scores, res.axes, res.cost, res.figure()

Each takes a local LanguageModel or a hosted one (`nj.connect().model(name)`), the same call. See
docs/patching.md for the plans (`plan=`) and what each costs.
"""

from __future__ import annotations

from .attribution import attribution_patching
from .cost import Cost
from .errors import AnswerTokenError, ArchitectureError, PairLengthError, PatchingError, PlanError, PositionError
from .heads_detail import HeadDetail, patch_one_head
from .lens import logit_lens, logit_stats
from .metrics import logit_diff
from .pairs import Pair, PairSet, pairs
from .plans import PLANS
from .result import LensResult, LogitStats, PatchingResult
from .sweeps import head_patching, mlp_patching, residual_patching

__all__ = ["head_patching", "residual_patching", "mlp_patching", "attribution_patching", "patch_one_head", "logit_lens",
           "logit_stats", "pairs", "Pair", "PairSet", "Cost", "PatchingResult", "HeadDetail", "LensResult", "LogitStats",
           "PLANS", "logit_diff", "PatchingError", "PairLengthError", "AnswerTokenError", "PositionError",
           "ArchitectureError", "PlanError"]
