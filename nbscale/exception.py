"""Modal's module name for its exceptions, so that a Modal program's imports work as they
are: with ``import nbscale as modal``, ``from modal.exception import NotFoundError`` and
``except modal.exception.FunctionTimeoutError`` find nbscale's classes.

It holds every class of ``nbscale.exceptions`` under its own name, and Modal's names that
mean the same thing here:

    Error                 NbscaleError (the base of every nbscale error)
    DeserializationError  SerializationError (ours covers pickling and unpickling)
    VersionError          VersionMismatchError
    TimeoutError          the builtin TimeoutError, a base of FunctionTimeoutError as on Modal
    InputCancellation     raised inside a running input when its call is cancelled

Modal's names for what nbscale does not have (sandboxes, web endpoints, object stores in the
cloud: ``SandboxTimeoutError``, ``AuthError``, ``OutputExpiredError``, ...) are left out: a
program that catches one of them names something that cannot happen here.
"""

from __future__ import annotations

import builtins

from nbscale_runtime.intake import InputCancelled

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

Error = NbscaleError
DeserializationError = SerializationError
VersionError = VersionMismatchError
TimeoutError = builtins.TimeoutError
InputCancellation = InputCancelled

__all__ = [
    "CallCancelledError",
    "CallDetachedError",
    "ConnectionLostError",
    "ControlPlaneError",
    "DeadlockError",
    "DeserializationError",
    "Error",
    "FunctionTimeoutError",
    "ImageBuildError",
    "InputCancellation",
    "InvalidError",
    "LaunchError",
    "NbscaleError",
    "NotFoundError",
    "RemoteError",
    "ResourceExhaustedError",
    "SerializationError",
    "TimeoutError",
    "VersionError",
    "VersionMismatchError",
    "WorkerLostError",
]
