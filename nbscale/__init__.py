"""nbscale: Modal-style scaling of notebook functions on your own machines.

import nbscale
app = nbscale.App("sweep")

@app.function(max_containers=8)
def evaluate_model(x):
    return x ** 2

list(evaluate_model.map(range(1000)))
"""

from nbscale_runtime import __version__

from ._app import App, concurrent
from ._client import shutdown, status
from ._config import config
from ._function import Function, FunctionCall, FunctionStats
from ._image import Image
from ._ipython import load_ipython_extension, unload_ipython_extension
from ._labextension import _jupyter_labextension_paths as _jupyter_labextension_paths
from ._retries import Retries
from ._views import monitor
from .exceptions import (
    CallCancelledError,
    ConnectionLostError,
    ControlPlaneError,
    FunctionTimeoutError,
    ImageBuildError,
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

__all__ = [
    "App",
    "CallCancelledError",
    "ConnectionLostError",
    "ControlPlaneError",
    "Function",
    "FunctionCall",
    "FunctionStats",
    "FunctionTimeoutError",
    "Image",
    "ImageBuildError",
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
    "config",
    "load_ipython_extension",
    "monitor",
    "shutdown",
    "status",
    "unload_ipython_extension",
]
