"""Execution: runs an intervention graph against a torch model (hooks, batching, skips, steps, gradients).

Never imports `tracing`: it sees only `graph` data and a target model. `LocalRunner` is its
`graph.runner.Runner`; `execute` the function it wraps; `check_order` the pure check of a graph
against a model's execution order that a client runs before sending.
"""

from .batching import LanguageTarget, ModuleTarget
from .executor import execute
from .planner import check_order
from .runner import LocalRunner

__all__ = ["LanguageTarget", "LocalRunner", "ModuleTarget", "check_order", "execute"]
