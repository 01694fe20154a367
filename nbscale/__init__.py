"""nbscale: Modal-style scaling of notebook functions on your own machines.

import nbscale
app = nbscale.App("sweep")

@app.function(max_containers=8)
def evaluate_model(x):
    return x ** 2

list(evaluate_model.map(range(1000)))
"""

from nbscale_runtime import __version__

from ._app import App, batched, concurrent
from ._client import shutdown, status
from ._cls import Cls, Obj, enter, exit, method, parameter
from ._config import config
from ._context import current_function_call_id, current_input_id, is_local
from ._function import Function, FunctionStats
from ._function_call import FunctionCall
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
    "Cls",
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
    "Obj",
    "RemoteError",
    "ResourceExhaustedError",
    "Retries",
    "SerializationError",
    "VersionMismatchError",
    "WorkerLostError",
    "__version__",
    "batched",
    "concurrent",
    "config",
    "current_function_call_id",
    "current_input_id",
    "enter",
    "exit",
    "is_local",
    "load_ipython_extension",
    "method",
    "monitor",
    "parameter",
    "shutdown",
    "status",
    "unload_ipython_extension",
]
