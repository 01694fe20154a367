"""The wire contract between clients, the control plane and workers.

Every ZeroMQ message is a multipart message:

    [header, payload_0, payload_1, ...]

The header is a small JSON array ``[op, field, field, ...]`` holding the fields of one of the
frozen dataclasses below in declaration order; payload frames carry opaque bytes (pickles and
their out-of-band buffers) that the control plane forwards without unpickling. Ops are
kebab-case and registered once here; ``PROTOCOL_VERSION`` changes whenever a message changes
shape, and peers refuse each other at the handshake when it differs.

Batches: ``submit-inputs``, ``run-inputs`` and ``outputs`` carry many inputs at once. Their
``items`` describe each input and where its bytes lie in the payload: ``blob`` (one frame of
concatenated in-band pickles, addressed by offset/length) followed by the out-of-band buffer
frames, addressed by a running count. Rows travel as plain JSON lists (no per-row object to
build or parse); their columns are named by the ``SUBMIT_*``, ``RUN_*``, ``OUT_*`` and
``PROGRESS_*`` constants below, and every reader indexes rows by those names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import wire
from .wire import Message, ProtocolError, decode, encode, op, ops
from .worker_messages import (
    CancelInputs,
    FunctionDef,
    GetInputs,
    Goodbye,
    Heartbeat,
    LendSlot,
    Outputs,
    Pong,
    Proceed,
    Register,
    Rejoin,
    RunInputs,
    Shutdown,
    SlotLent,
    Started,
    Streaming,
)

# A worker needs none of the client's messages (unless its code makes nested calls, which
# import the client): they load at first use, not in every worker's start (10 ms).
wire.declare_later("nbscale_runtime.client_messages")
if TYPE_CHECKING:
    from .client_messages import (
        CancelCall,
        DeployApp,
        Detach,
        DetachCall,
        DictRequest,
        GetCall,
        GetFirstOutputs,
        GetLogs,
        GetOutputs,
        GetStats,
        Hello,
        ListApps,
        LookupDeployed,
        ObjectDelete,
        ObjectLookup,
        Ping,
        Progress,
        QueueRequest,
        RegisterFunction,
        Reply,
        SpawnCalls,
        StopApp,
        StopPool,
        SubmitInputs,
        UpdateAutoscaler,
    )

PROTOCOL_VERSION = 12  # 6: register-function carries secrets; 7: spawn-calls,
# get-first-outputs; 8: Dict and Queue messages; 9: runs of inputs (count columns); 10: small
# inputs count a quarter of a map's window (a client's chunks of them outgrow an older
# control plane's window, which would throttle them forever); 11: packed runs of results; 12:
# packed runs of inputs (a submit-inputs run without sizes, run-inputs' packed column)

# Output statuses, as the worker reports them and the control plane forwards them.
STATUS_OK = "ok"
STATUS_ERROR = "error"  # user code raised; the payload is the pickled exception
STATUS_TIMEOUT = "timeout"  # the attempt ran past the function's timeout
STATUS_LOST = "lost"  # the worker died while running it
STATUS_CANCELLED = "cancelled"
STATUS_INIT_FAILED = "init-failed"  # the function could not be loaded on the worker
STATUS_REJECTED = "rejected"  # the control plane refused it (e.g. version mismatch)
STATUS_SERIALIZATION = "serialization-error"  # the result could not be pickled
STATUS_ENTER_FAILED = "enter-failed"  # a class's @enter raised on every start tried
# A value a generator yielded: not final, the input runs on; its final row follows.
STATUS_YIELD = "yield"

# Error kinds: the client exception (``nbscale.exceptions``, by class name) that a refused
# request (``Reply.error[0]``) or a rejected input's record (``{"kind", "message"}``) becomes.
ERROR_INVALID = "InvalidError"
ERROR_NOT_FOUND = "NotFoundError"
ERROR_RESOURCE_EXHAUSTED = "ResourceExhaustedError"
ERROR_VERSION_MISMATCH = "VersionMismatchError"
ERROR_LAUNCH = "LaunchError"
ERROR_CALL_CANCELLED = "CallCancelledError"
ERROR_CONTROL_PLANE = "ControlPlaneError"
ERROR_DEADLOCK = "DeadlockError"
ERROR_KINDS = frozenset(
    {
        ERROR_INVALID,
        ERROR_NOT_FOUND,
        ERROR_RESOURCE_EXHAUSTED,
        ERROR_VERSION_MISMATCH,
        ERROR_LAUNCH,
        ERROR_CALL_CANCELLED,
        ERROR_CONTROL_PLANE,
        ERROR_DEADLOCK,
    }
)

# --- the columns of batch rows --------------------------------------------------------------
# A ``*_WHERE`` slice is the row's (offset, length, nbufs) address in the payload, as
# ``serialization.split_payload`` takes it.

# A row may stand for a *run* of inputs: ``count`` consecutive indices from ``index``, whose
# pickles lie back to back, without out-of-band buffers (a map's small inputs and results,
# moved once per run instead of once per input); ``sizes``: each one's pickle length, by
# which the control plane cuts a run into per-input bytes where it keeps them (spawned
# calls, detached maps) without unpickling anything. ``count`` 0 is one input's own pickle
# (``sizes`` empty). A run without ``sizes`` is *packed*: one pickle of the list of its plain
# values (inputs that are each one such value and no keyword: ``packed_inputs.py``; results:
# ``packed.py``).

# submit-inputs: [index, offset, length, nbufs, count, sizes]
SUBMIT_INDEX = 0
SUBMIT_WHERE = slice(1, 4)
SUBMIT_COUNT = 4
SUBMIT_SIZES = 5

# spawn-calls: [call_id, offset, length, nbufs]: a call of one input, opened and closed
SPAWN_CALL_ID = 0
SPAWN_WHERE = slice(1, 4)

# run-inputs: [call_id, index, attempt, offset, length, nbufs, count, skip, packed]; a run's
# inputs are the pickles ``skip`` .. ``skip + count`` of those in its bytes (a queued run split
# for scheduling, a retry or a loss shares its bytes with the rest), or, ``packed``, the
# values ``skip`` .. ``skip + count`` of the list its bytes hold
RUN_CALL_ID = 0
RUN_INDEX = 1
RUN_ATTEMPT = 2
RUN_WHERE = slice(3, 6)
RUN_COUNT = 6
RUN_SKIP = 7
RUN_PACKED = 8

# outputs: [call_id, index, attempt, status, offset, length, nbufs, duration, worker_id, stdout,
#           stderr, count, sizes]; a run's row (``count`` > 0) is always "ok", printed
#           nothing, and its duration is the whole run's; a run's row without ``sizes`` is
#           *packed*: its results are plain scalars pickled as one list (``packed.py``)
OUT_CALL_ID = 0
OUT_INDEX = 1
OUT_ATTEMPT = 2
OUT_STATUS = 3
OUT_WHERE = slice(4, 7)
OUT_DURATION = 7  # seconds the attempt ran
OUT_WORKER_ID = 8  # "" when no worker ran it (rejected by the control plane)
OUT_STDOUT = 9  # what the attempt printed
OUT_STDERR = 10  # what it wrote to stderr
OUT_COUNT = 11
OUT_SIZES = 12


def row_count(count: int) -> int:
    """How many inputs a row's ``*_COUNT`` column stands for."""
    return count or 1


# progress ``running``: [worker_id, [index, ...]]; ``retrying``: [index, attempt, status]
PROGRESS_WORKER_ID = 0
PROGRESS_INDICES = 1
RETRY_INDEX = 0
RETRY_ATTEMPT = 1
RETRY_STATUS = 2

# streaming (a worker's, and progress ``streaming``): an input running now, when it started
# (seconds since the epoch) and what it printed since the last report:
# [call_id, index, attempt, started_at, text]
STREAM_CALL_ID = 0
STREAM_INDEX = 1
STREAM_ATTEMPT = 2
STREAM_STARTED = 3
STREAM_TEXT = 4


def output_row(
    call_id: str,
    index: int,
    attempt: int,
    status: str,
    where: Sequence[int],
    duration: float = 0.0,
    worker_id: str = "",
    stdout: str = "",
    stderr: str = "",
    count: int = 0,
    sizes: Sequence[int] = (),
) -> list[Any]:
    """An ``outputs`` row; ``where`` is its (offset, length, nbufs) in the payload; ``count``
    > 0: the row of a run of that many inputs, their results' pickles back to back, each
    ``sizes`` long."""
    offset, length, nbufs = where
    return [
        call_id,
        index,
        attempt,
        status,
        offset,
        length,
        nbufs,
        duration,
        worker_id,
        stdout,
        stderr,
        count,
        list(sizes),
    ]


def __getattr__(name: str) -> type[Message]:
    """A client's message, at the first use of any (``protocol.Hello``, ``from .protocol
    import Hello``): ``ops()`` imports them (``wire``'s one loader, as a decode does), and
    all of them become this module's own then, as fast as the others. Private names are
    never messages (the import system asks for ``__path__``)."""
    if not name.startswith("_"):
        found = {cls.__name__: cls for cls in ops().values()}
        globals().update(found)
        if name in found:
            return found[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The messages, and how they travel, live in rooms of their own (``client_messages.py``,
# ``worker_messages.py``, ``wire.py``); this module is where every reader finds them.
__all__ = [
    "CancelCall",
    "CancelInputs",
    "DeployApp",
    "Detach",
    "DetachCall",
    "DictRequest",
    "FunctionDef",
    "GetCall",
    "GetFirstOutputs",
    "GetInputs",
    "GetLogs",
    "GetOutputs",
    "GetStats",
    "Goodbye",
    "Heartbeat",
    "Hello",
    "LendSlot",
    "ListApps",
    "LookupDeployed",
    "Message",
    "ObjectDelete",
    "ObjectLookup",
    "Outputs",
    "Ping",
    "Pong",
    "Proceed",
    "Progress",
    "ProtocolError",
    "QueueRequest",
    "Register",
    "RegisterFunction",
    "Rejoin",
    "Reply",
    "RunInputs",
    "Shutdown",
    "SlotLent",
    "SpawnCalls",
    "Started",
    "StopApp",
    "StopPool",
    "Streaming",
    "SubmitInputs",
    "UpdateAutoscaler",
    "decode",
    "encode",
    "op",
    "ops",
]
