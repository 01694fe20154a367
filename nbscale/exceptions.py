"""Everything nbscale raises itself.

Exceptions raised by *your* function on a worker are not wrapped: they come back as their
own type, with the remote traceback attached. The tree of nbscale's own errors:

    NbscaleError
    ├── InvalidError                  bad arguments or use of the API
    ├── SerializationError            a function, argument or result cannot be pickled
    ├── ResourceExhaustedError        a queue limit refused the inputs
    ├── FunctionTimeoutError          an attempt ran past ``timeout`` (also a TimeoutError)
    ├── WorkerLostError               the worker died while running an input
    ├── VersionMismatchError          caller and worker cannot exchange pickles or messages
    ├── LaunchError                   workers for the function could not be started
    ├── ImageBuildError               a worker image could not be built
    ├── NotFoundError                 no such pool or function call
    ├── CallCancelledError            the function call was cancelled
    ├── CallDetachedError             a blocking map was detached: it runs on, unwatched
    ├── DeadlockError                 nested calls wait on a pool that every one of them fills
    ├── ControlPlaneError             the control plane cannot be reached or failed
    │   └── ConnectionLostError       it was reached, then lost (also a ConnectionError)
    └── RemoteError                   a remote exception whose type cannot be rebuilt here
"""

from __future__ import annotations

from typing import Any


class NbscaleError(Exception):
    """Raised for errors of nbscale itself; the base of every exception below."""


class InvalidError(NbscaleError):
    """Raised when the API is called with bad arguments or in a way it does not support."""


class SerializationError(NbscaleError):
    """Raised when a function, an argument or a result cannot be pickled or unpickled."""


class ResourceExhaustedError(NbscaleError):
    """Raised when a queue limit refuses inputs; ``limit`` names the setting."""

    def __init__(self, message: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class FunctionTimeoutError(NbscaleError, TimeoutError):
    """Raised when one attempt of an input runs longer than the function's ``timeout``."""


class WorkerLostError(NbscaleError):
    """Raised when the worker running an input dies and no retries are left (a loss that
    was the user's: the input crashed it or ran out of memory), or when the infrastructure
    lost it too many times in a row (killed from outside; not counted against retries)."""

    def __init__(
        self, message: str, exit_code: int | None = None, logs: str = "", index: int | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.logs = logs
        self.index = index


class VersionMismatchError(NbscaleError):
    """Raised when the caller and a worker or the control plane use incompatible versions."""


class LaunchError(NbscaleError):
    """Raised when workers for a function cannot be started."""


class ImageBuildError(NbscaleError):
    """Raised when a worker image (``nbscale.Image``) cannot be built."""


class NotFoundError(NbscaleError):
    """Raised when a pool or function call id is unknown to the control plane."""


class CallCancelledError(NbscaleError):
    """Raised when waiting on a function call that was cancelled."""


class CallDetachedError(NbscaleError):
    """Raised in a blocking ``.map()`` detached from its view (its Detach button): the call
    stops waiting while its other inputs keep running; ``resume`` is the
    ``nbscale.FunctionCall.from_id(...)`` line that gets their results."""

    def __init__(self, message: str, call_id: str = "", resume: str = "") -> None:
        super().__init__(message)
        self.call_id = call_id
        self.resume = resume


class DeadlockError(NbscaleError):
    """Raised when a nested call can never run: every slot of its pool holds an input
    that waits on calls to that same pool, and the pool may not grow (``max_containers``)
    nor lend its slots (``@concurrent`` workers run several inputs at once)."""


class ControlPlaneError(NbscaleError):
    """Raised when the control plane cannot be reached or fails a request."""


class ConnectionLostError(ControlPlaneError, ConnectionError):
    """Raised when the control plane this process used is gone (its process died, or it
    stopped answering) while a call waited on it, or when no restarted one can be found.
    ``endpoint`` is where it was; ``server_url`` the Jupyter server's URL, when known."""

    def __init__(
        self, message: str, endpoint: str | None = None, server_url: str | None = None
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.server_url = server_url


class RemoteError(NbscaleError):
    """Raised for a remote exception whose type cannot be rebuilt in this process.

    ``remote_type`` is the exception's qualified type name on the worker; the message ends
    with the remote traceback."""

    def __init__(self, message: str, remote_type: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


# The control plane names errors by class name on the wire (``Reply.error[0]``, a rejected
# input's record): ``nbscale_runtime.protocol.ERROR_KINDS``, each of them a class here.
_BY_NAME: dict[str, type[NbscaleError]] = {
    cls.__name__: cls
    for cls in (
        InvalidError,
        ResourceExhaustedError,
        VersionMismatchError,
        LaunchError,
        NotFoundError,
        CallCancelledError,
        DeadlockError,
        ControlPlaneError,
    )
}


def from_wire(kind: str, message: str, details: dict[str, Any] | None = None) -> NbscaleError:
    """The exception for an error the control plane sent back."""
    cls = _BY_NAME.get(kind, ControlPlaneError)
    if cls is ResourceExhaustedError:
        return ResourceExhaustedError(message, (details or {}).get("limit"))
    return cls(message)
