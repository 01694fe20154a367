"""The messages between a client (a kernel, a script, a worker's nested calls) and the control
plane: registering functions, submitting inputs, outputs and progress back, spawned calls,
objects and apps. Part of the contract in ``protocol.py``."""

from __future__ import annotations

import dataclasses
from typing import Any

from .wire import Message, op


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
    (a stored secret the control plane reads), later ones overriding earlier ones. ``app``:
    the deployed app a function looked up by name belongs to (its pool is the app's, shared
    by every caller); empty for a caller's own functions."""

    rid: int
    function_id: str
    name: str
    options: dict[str, Any]
    sys_path: list[str]
    secrets: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    app: str = ""


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
