"""nbscale: Modal-style scaling of notebook functions on your own machines.

import nbscale
app = nbscale.App("sweep")

@app.function(max_containers=8)
def evaluate_model(x):
    return x ** 2

list(evaluate_model.map(range(1000)))
"""

from ._app import App, concurrent
from ._client import shutdown, status
from ._function import Function, FunctionCall, FunctionStats
from ._retries import Retries
from .exceptions import (
    CallCancelledError,
    ControlPlaneError,
    FunctionTimeoutError,
    InvalidError,
    LaunchError,
    NbscaleError,
    NotFoundError,
    RemoteError,
    ResourceExhaustedError,
    SerializationError,
    VersionMismatchError,
    WorkerLostError,
)

__version__ = "0.1.0"

__all__ = [
    "App",
    "CallCancelledError",
    "ControlPlaneError",
    "Function",
    "FunctionCall",
    "FunctionStats",
    "FunctionTimeoutError",
    "InvalidError",
    "LaunchError",
    "NbscaleError",
    "NotFoundError",
    "RemoteError",
    "ResourceExhaustedError",
    "Retries",
    "SerializationError",
    "VersionMismatchError",
    "WorkerLostError",
    "__version__",
    "concurrent",
    "shutdown",
    "status",
]
