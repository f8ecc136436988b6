"""nnsight_jupyter: interventions on language models from Jupyter.

The public API (fixed in DESIGN.md), re-exported here and nothing else.
"""

from .errors import (
    ControlFlowError,
    ExecutionError,
    GraphError,
    JobCancelledError,
    ModelLoadError,
    ModuleAttributeError,
    ModuleIndexError,
    NNsightError,
    OpNotAllowedError,
    OutOfOrderError,
    ProtocolError,
    QueueFullError,
    RemoteError,
    ShapeMismatchError,
    TracingError,
    ValueNotReadyError,
    WeightWriteError,
)
from .client import connect
from .tracing import LanguageModel, NNsight, Proxy, save

__version__ = "0.1.0"

__all__ = [
    "connect",
    "LanguageModel",
    "NNsight",
    "Proxy",
    "save",
    "NNsightError",
    "ControlFlowError",
    "ExecutionError",
    "GraphError",
    "JobCancelledError",
    "ModelLoadError",
    "ModuleAttributeError",
    "ModuleIndexError",
    "OpNotAllowedError",
    "OutOfOrderError",
    "ProtocolError",
    "QueueFullError",
    "RemoteError",
    "ShapeMismatchError",
    "TracingError",
    "ValueNotReadyError",
    "WeightWriteError",
]
