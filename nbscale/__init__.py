"""nbscale: Modal-style scaling of notebook functions on your own machines.

import nbscale
app = nbscale.App("sweep")

@app.function(max_containers=8)
def evaluate_model(x):
    return x ** 2

list(evaluate_model.map(range(1000)))
"""

import sys

from nbscale_runtime import __version__

# First: the zygote for this process's first call starts while the rest loads (_prestart.py).
from . import _prestart  # noqa: F401

# isort: split
from . import exception, functions
from ._app import App, batched, concurrent
from ._app_run import enable_output
from ._call_graph import InputInfo
from ._client import shutdown, status
from ._cls import Cls, Obj, enter, exit, method, parameter
from ._config import config
from ._context import current_function_call_id, current_input_id
from ._dict import Dict
from ._entrypoint import LocalEntrypoint
from ._function import Function, FunctionCall, FunctionStats
from ._image import Image
from ._ipython import load_ipython_extension, unload_ipython_extension
from ._labextension import _jupyter_labextension_paths as _jupyter_labextension_paths
from ._modal_name import answer_to_modal
from ._owner import is_local
from ._queue import Queue
from ._retries import Retries
from ._secret import Secret
from ._unsupported import (
    CloudBucketMount,
    Cron,
    Mount,
    NetworkFileSystem,
    Period,
    Proxy,
    Sandbox,
    Tunnel,
    asgi_app,
    fastapi_endpoint,
    forward,
    interact,
    web_endpoint,
    web_server,
    wsgi_app,
)
from ._views import monitor
from ._volume import Volume
from .exception import Error
from .exceptions import (
    CallCancelledError,
    CallDetachedError,
    ConnectionLostError,
    ControlPlaneError,
    DeadlockError,
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
    "CallDetachedError",
    "CloudBucketMount",
    "Cls",
    "ConnectionLostError",
    "ControlPlaneError",
    "Cron",
    "DeadlockError",
    "Dict",
    "Error",
    "Function",
    "FunctionCall",
    "FunctionStats",
    "FunctionTimeoutError",
    "Image",
    "ImageBuildError",
    "InputInfo",
    "InvalidError",
    "LaunchError",
    "LocalEntrypoint",
    "Mount",
    "NbscaleError",
    "NetworkFileSystem",
    "NotFoundError",
    "Obj",
    "Period",
    "Proxy",
    "Queue",
    "RemoteError",
    "ResourceExhaustedError",
    "Retries",
    "Sandbox",
    "Secret",
    "SerializationError",
    "Tunnel",
    "VersionMismatchError",
    "Volume",
    "WorkerLostError",
    "__version__",
    "asgi_app",
    "batched",
    "concurrent",
    "config",
    "current_function_call_id",
    "current_input_id",
    "enable_output",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "forward",
    "functions",
    "interact",
    "is_local",
    "load_ipython_extension",
    "method",
    "monitor",
    "parameter",
    "shutdown",
    "status",
    "unload_ipython_extension",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]

answer_to_modal(sys.modules[__name__])  # `from modal.exception import ...` in ported programs
