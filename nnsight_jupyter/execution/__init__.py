"""Execution: runs an intervention graph against a torch model (hooks, batching, skips, steps, gradients).

Never imports `tracing`: it sees only `graph` data and a target model.
"""

from .batching import LanguageTarget, ModuleTarget
from .executor import Result, execute
from .order import ExecutionOrder

__all__ = ["ExecutionOrder", "LanguageTarget", "ModuleTarget", "Result", "execute"]
