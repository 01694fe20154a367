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

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar, dataclass_transform

PROTOCOL_VERSION = 9  # 6: register-function carries secrets; 7: spawn-calls,
# get-first-outputs; 8: Dict and Queue messages; 9: runs of inputs (count columns)

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
# (``sizes`` empty).

# submit-inputs: [index, offset, length, nbufs, count, sizes]
SUBMIT_INDEX = 0
SUBMIT_WHERE = slice(1, 4)
SUBMIT_COUNT = 4
SUBMIT_SIZES = 5

# spawn-calls: [call_id, offset, length, nbufs]: a call of one input, opened and closed
SPAWN_CALL_ID = 0
SPAWN_WHERE = slice(1, 4)

# run-inputs: [call_id, index, attempt, offset, length, nbufs, count, skip]; a run's inputs
# are the elements ``skip`` .. ``skip + count`` of the list pickled (a queued run split for
# scheduling, a retry or a loss shares its pickle with the rest)
RUN_CALL_ID = 0
RUN_INDEX = 1
RUN_ATTEMPT = 2
RUN_WHERE = slice(3, 6)
RUN_COUNT = 6
RUN_SKIP = 7

# outputs: [call_id, index, attempt, status, offset, length, nbufs, duration, worker_id, stdout,
#           stderr, count, sizes]; a run's row (``count`` > 0) is always "ok", printed
#           nothing, and its duration is the whole run's
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


_REGISTRY: dict[str, type[Message]] = {}


_M = TypeVar("_M")
_FIELDS: dict[type, tuple[str, ...]] = {}
_json_encode = json.JSONEncoder(separators=(",", ":")).encode
_json_decode = json.JSONDecoder().raw_decode  # json.loads, less its per-call checks (3x faster)


class ProtocolError(Exception):
    """Raised when a peer sends a frame sequence this module cannot decode."""


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    op: ClassVar[str] = ""


@dataclass_transform(frozen_default=True)
def op(name: str) -> Callable[[type[_M]], type[_M]]:
    """Class decorator: a frozen slotted message dataclass registered under ``name``."""

    def wrap(cls: type[_M]) -> type[_M]:
        if name in _REGISTRY:
            raise RuntimeError(f"duplicate op {name!r}")
        cls.op = name  # type: ignore[attr-defined]
        made = dataclasses.dataclass(frozen=True, slots=True)(cls)
        _REGISTRY[name] = made  # type: ignore[assignment]
        return made

    return wrap


# --- client <-> control plane ------------------------------------------------------------


@op("hello")
class Hello(Message):
    """A client's first request. ``owner`` says who it is (``models.OwnerModel`` less
    ``notebook``): its kernel id (or None), pid, host and a label; the pools and calls it
    creates are recorded as its own, and its process is watched: when it is gone, its maps
    are cancelled."""

    protocol_version: int
    python: str
    cloudpickle: str
    rid: int = 0
    owner: dict[str, Any] | None = None


@op("ping")
class Ping(Message):
    """A caller with requests or calls outstanding asks, now and then, whether the control
    plane is still there (answered by an empty ``reply``); the control plane, in turn, counts
    a caller silent for too long as gone."""

    rid: int


@op("register-function")
class RegisterFunction(Message):
    """Payload: [function pickle]. Creates or finds the pool for this function + options
    (``nbscale_server.options.FunctionOptions`` in its versioned wire form). ``secrets``:
    the function's ``secrets=``, each ``{"env": {...}}`` or ``{"name", "required_keys"}``
    (a stored secret the control plane reads), later ones overriding earlier ones."""

    rid: int
    function_id: str
    name: str
    options: dict[str, Any]
    sys_path: list[str]
    secrets: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@op("submit-inputs")
class SubmitInputs(Message):
    """Payload: [blob, *buffers]; items are ``SUBMIT_*`` rows.

    The first submission of a call creates it (in ``pool_id``, of ``kind``: "map", "remote"
    or "spawn"); ``total`` is set once the caller has no more inputs to send."""

    rid: int
    call_id: str
    pool_id: str
    kind: str
    items: list[list[int]]
    total: int | None = None
    progress: bool = False  # the caller wants ``progress`` messages for a live view
    # [call id, index] of the input whose code makes this call, when a worker makes it:
    # the call is its child (the call graph; cancelling the parent cancels it)
    parent: list[Any] | None = None


@op("cancel-call")
class CancelCall(Message):
    rid: int
    call_id: str


@op("get-outputs")
class GetOutputs(Message):
    """Fetch stored outputs of a spawned call: indices in [start, end), waiting up to timeout."""

    rid: int
    call_id: str
    start: int
    end: int | None
    timeout: float | None


@op("spawn-calls")
class SpawnCalls(Message):
    """Many ``.spawn()``s of one pool at once (those a client made in one loop turn), each a
    call of one input, opened, submitted and closed by its row. Payload: [blob, *buffers];
    items are ``SPAWN_*`` rows. Answered once the store has kept them all:
    ``{"refused": [[row, kind, message, details], ...]}`` for the rows refused."""

    rid: int
    pool_id: str
    items: list[list[Any]]
    parent: list[Any] | None = None  # as ``SubmitInputs.parent``, for every row


@op("get-first-outputs")
class GetFirstOutputs(Message):
    """The output of input 0 of each of many spawned calls, as they are now (no wait).
    Answered with ``{"calls": [...]}``, a row per call in order: ``[kind, message]`` where
    it is refused, None where its input is not settled yet, else ``[n, function, timeout,
    cancelled]`` where ``n`` (0 or 1) outputs rows of it come in ``items`` (their bytes in
    the payload, as ``outputs``')."""

    rid: int
    call_ids: list[str]


@op("update-autoscaler")
class UpdateAutoscaler(Message):
    rid: int
    pool_id: str
    changes: dict[str, Any]


@op("get-stats")
class GetStats(Message):
    rid: int
    pool_id: str | None


@op("stop-pool")
class StopPool(Message):
    """Cancel a pool's calls and stop its workers (it scales up again on new inputs)."""

    rid: int
    pool_id: str


@op("get-call")
class GetCall(Message):
    """A call's progress and per-input status, ``limit`` inputs from ``start``."""

    rid: int
    call_id: str
    start: int = 0
    limit: int = 1000


@op("get-logs")
class GetLogs(Message):
    """The last ``tail`` lines a worker wrote."""

    rid: int
    worker_id: str
    tail: int = 200


@op("object-lookup")
class ObjectLookup(Message):
    """A Dict or Queue (``kind``: "dict" or "queue") by name, created if missing when asked;
    ``name`` None makes an ephemeral one, deleted when its creator is gone. Answer:
    ``{"id"}``."""

    rid: int
    kind: str
    name: str | None
    create_if_missing: bool = False


@op("object-delete")
class ObjectDelete(Message):
    """Delete a Dict or Queue by ``name``, or by ``object_id`` (an ephemeral one)."""

    rid: int
    kind: str
    name: str | None
    object_id: str | None = None


@op("dict-request")
class DictRequest(Message):
    """One action on a Dict: get, contains, put, update, pop, len, keys, values, items,
    clear, info. Payload: the pickled keys (and values, key then value) it needs; the
    answer's payload, those it returns. The control plane compares keys by their bytes."""

    rid: int
    object_id: str
    action: str
    args: dict[str, Any]


@op("queue-request")
class QueueRequest(Message):
    """One action on a Queue: put (payload: the pickled values; answer ``{"full"}``), get
    (``n``, ``timeout``: None waits until an item comes, 0 not at all; answer ``{"count"}``
    and the values), cancel-get (``rid`` of the get), len, iterate (items after ``after``),
    clear; ``partition`` in ``args`` ("" or absent: the default one)."""

    rid: int
    object_id: str
    action: str
    args: dict[str, Any]


@op("deploy-app")
class DeployApp(Message):
    """Register an app's functions and classes under ``app``, replacing its earlier
    deployment: each of ``functions`` is ``{"name", "kind", "function_id", "options",
    "sys_path"}``, its pickle the payload frame of the same rank."""

    rid: int
    app: str
    functions: list[dict[str, Any]]


@op("lookup-deployed")
class LookupDeployed(Message):
    """A deployed function or class: answer as a ``deploy-app`` entry, its pickle the
    payload."""

    rid: int
    app: str
    name: str


@op("list-apps")
class ListApps(Message):
    rid: int


@op("stop-app")
class StopApp(Message):
    """Remove a deployed app and stop the pools of its functions."""

    rid: int
    app: str


@op("reply")
class Reply(Message):
    """Answer to a request: ``error`` is None on success, else [kind, message, details]."""

    rid: int
    value: Any
    error: list[Any] | None = None


@op("outputs")
class Outputs(Message):
    """Payload: [blob, *buffers]. Items are ``OUT_*`` rows (see ``output_row``).
    From a worker, ``want`` asks for that many more inputs (saving a ``get-inputs``)."""

    items: list[list[Any]]
    want: int = 0


@op("progress")
class Progress(Message):
    """Where a call's inputs are, for live views: ``running`` rows (``PROGRESS_*``) say which
    inputs were handed to which worker; ``retrying`` rows (``RETRY_*``) those that failed an
    attempt and are queued again; ``streaming`` rows (``STREAM_*``) those a worker runs now,
    since when, and what they printed lately."""

    call_id: str
    running: list[list[Any]]
    retrying: list[list[Any]]
    streaming: list[list[Any]] = dataclasses.field(default_factory=list)


@op("detach")
class Detach(Message):
    """To a call's caller: the call was detached (from the REST API). Its outputs are kept
    on the control plane from now on; the caller stops waiting and says, with
    ``detach-call``, which results it already has."""

    call_id: str


@op("detach-call")
class DetachCall(Message):
    """A detached call's caller, once: ``delivered`` ([start, end) ranges of indices) are
    the inputs whose results it returned to its user; ``items`` (``OUT_*`` rows, payload
    [blob, *buffers]) are results it received but did not return, to keep with the rest."""

    rid: int
    call_id: str
    delivered: list[list[int]]
    items: list[list[Any]]


# --- worker <-> control plane -------------------------------------------------------------


@op("register")
class Register(Message):
    worker_id: str
    pool_id: str
    protocol_version: int
    python: str
    cloudpickle: str
    pid: int
    gpus: list[dict[str, Any]]


@op("function-def")
class FunctionDef(Message):
    """Payload: [function pickle]. Sent once per worker before its first inputs."""

    function_id: str
    sys_path: list[str]
    timeout: float
    max_inputs: int
    is_async: bool


@op("get-inputs")
class GetInputs(Message):
    worker_id: str
    want: int


@op("run-inputs")
class RunInputs(Message):
    """Payload: [blob, *buffers]; items are ``RUN_*`` rows. ``confirm``: before running
    them, say ``started`` and wait for ``proceed`` (a suspect input, sent alone to a worker
    without a register, so that its death blames exactly that input)."""

    items: list[list[Any]]
    confirm: bool = False


@op("started")
class Started(Message):
    """The worker is about to run this input (one it was asked to ``confirm``)."""

    worker_id: str
    call_id: str
    index: int
    attempt: int


@op("proceed")
class Proceed(Message):
    """The control plane has noted a ``started``: the worker may run the input."""


@op("heartbeat")
class Heartbeat(Message):
    worker_id: str
    running: list[list[Any]]  # [call_id, index, attempt] of inputs running now
    stats: dict[str, Any]


@op("streaming")
class Streaming(Message):
    """From a worker's pulse, now and then (never per input): ``rows`` (``STREAM_*``) are
    inputs it runs now that it had not reported yet, or that printed since."""

    worker_id: str
    rows: list[list[Any]]


@op("pong")
class Pong(Message):
    """The control plane's answer to a heartbeat (to the worker's pulse connection): a worker
    that hears nothing for ``heartbeat_timeout`` seconds exits, its control plane gone."""


@op("cancel-inputs")
class CancelInputs(Message):
    call_id: str


@op("lend-slot")
class LendSlot(Message):
    """The worker's input waits on calls of its own (a nested ``.remote``, ``.map``, ...):
    it lends its slot. The control plane counts it out of its pool's and the total cap
    (another worker may start in its place), sends it nothing more, and takes back the
    inputs it holds but does not run (``running``: [call_id, index, attempt] rows), which
    ``slot-lent`` lists."""

    worker_id: str
    running: list[list[Any]]


@op("slot-lent")
class SlotLent(Message):
    """The answer to ``lend-slot``, after every ``run-inputs`` sent before it: the
    [call_id, index, count] of the inputs taken back (runs of ``count``), which the worker
    drops."""

    taken: list[list[Any]]


@op("rejoin")
class Rejoin(Message):
    """The worker's nested calls are done: it counts again, and may be sent inputs."""

    worker_id: str


@op("shutdown")
class Shutdown(Message):
    reason: str


@op("goodbye")
class Goodbye(Message):
    """The worker is exiting on purpose; what it did not report is not its inputs' fault.

    Payload: [exception record] when ``reason`` is "init-failed" (the function could not be
    loaded) or "enter-failed" (a class's ``@enter`` raised, or outlived its startup
    timeout)."""

    worker_id: str
    reason: str


def encode(msg: Message, payload: Sequence[Any] = ()) -> list[Any]:
    """Frames for ``msg``: the JSON header first, then the payload frames untouched."""
    names = _FIELDS.get(type(msg))
    if names is None:
        names = _FIELDS[type(msg)] = tuple(f.name for f in dataclasses.fields(msg))  # type: ignore[arg-type]
    header = _json_encode([msg.op, *[getattr(msg, n) for n in names]]).encode()
    return [header, *payload]


def decode(frames: Sequence[Any]) -> tuple[Message, list[Any]]:
    """Split ``frames`` into the message and its payload frames (left as received)."""
    if not frames:
        raise ProtocolError("empty message")
    raw = frames[0]
    header = raw.bytes if hasattr(raw, "bytes") else bytes(raw)
    try:
        text = header.decode()
        value, end = _json_decode(text)
        if end != len(text):
            raise ValueError("trailing data after the header")
        op_name, *fields = value
        cls = _REGISTRY[op_name]
        msg = cls(*fields)
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"undecodable header {header[:80]!r}: {exc}") from None
    return msg, list(frames[1:])


def ops() -> dict[str, type[Message]]:
    """Every registered op, for tests and documentation."""
    return dict(_REGISTRY)
