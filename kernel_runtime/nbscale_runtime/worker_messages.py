"""The messages between a worker and the control plane: registering, the function, inputs
asked for and sent, outputs, starts, heartbeats, streams, lent slots and goodbyes. Part of the
contract in ``protocol.py``."""

from __future__ import annotations

from typing import Any

from .wire import Message, op


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


@op("outputs")
class Outputs(Message):
    """Payload: [blob, *buffers]. Items are ``OUT_*`` rows (see ``output_row``). A worker's
    are forwarded whole to its caller when they can be (hence here: a worker never loads the
    client's messages). From a worker, ``want`` asks for that many more inputs (saving a
    ``get-inputs``)."""

    items: list[list[Any]]
    want: int = 0


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
