"""The JSON models of the control plane's API, in one place.

The REST API under ``/nbscale/api/`` and the ``events`` WebSocket send exactly these shapes,
and the control plane's public methods return them. A field added here is a field every
client can rely on. The sidebar's TypeScript types (``labextension/src/models.ts``, ``I*``
interfaces) are generated from this module (``schema.py``, then ``scripts/gen-contracts``):
docstrings and field comments become their documentation.

Routes (all authenticated with the Jupyter server's token or login):

- ``GET status`` -> ``StatusModel``
- ``GET pools`` -> ``list[PoolModel]``
- ``GET pools/{id}`` -> ``PoolModel``
- ``PATCH pools/{id}`` with ``AutoscalerChanges`` -> ``PoolModel``
- ``DELETE pools/{id}`` -> ``PoolModel`` (the pool stopped: calls cancelled, workers stopping)
- ``GET calls?limit=500&before=`` -> ``list[CallModel]``, newest first (``before``: a ``seq``)
- ``GET calls/{id}?start=0&limit=1000`` -> ``CallDetailModel``
- ``DELETE calls/{id}`` -> ``CallModel`` (cancelled)
- ``POST calls/{id}/detach`` -> ``CallModel`` (a map detached from its caller: the caller
  stops waiting, the call runs on and keeps its results for ``FunctionCall.from_id``)
- ``GET containers/{id}/logs?tail=200&after=CURSOR`` -> ``LogsModel``
- ``WS events`` -> a ``SnapshotMessage``, then ``ChangesMessage``s
- errors -> ``ErrorModel`` with 400 (bad input), 404 (unknown id) or 429 (over a limit)
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class StatusModel(TypedDict):
    """The control plane itself: nbscale's version, and what runs its workers and why, as
    ``nbscale.status()`` says it (``launcher_reason``: e.g. "Docker engine found, but no
    base image nbscale/base:bookworm: run `nbscale images base`")."""

    version: str
    launcher: Literal["process", "docker", "slurm", "kubernetes"]
    launcher_reason: str


class AppModel(TypedDict):
    """A deployed app (``app.deploy()``, ``nbscale deploy``): the names its functions and
    classes are found by (``Function.from_name(name, function)``)."""

    name: str
    functions: list[str]
    classes: list[str]
    deployed: float  # when, in seconds since the epoch


class OwnerModel(TypedDict):
    """Who created a pool or a call: a kernel (and its notebook, when the Jupyter server
    knows it) or a script; or, for the pools of a deployed app's functions, the app, whose
    callers all share them. Pools are per owner: two notebooks that define the same function
    get pools of their own."""

    kernel_id: str | None  # the Jupyter kernel's id; None outside a kernel
    notebook: str | None  # the notebook's path relative to the server root; None if unknown
    name: str  # a label: the notebook's or script's file name, "kernel 1b61edf8", "pid 42"
    pid: int  # the process id of the client
    host: str  # the host name of the client
    app: str | None  # the deployed app owning the pool (its callers share it); else None


class AutoscalerSettingsModel(TypedDict):
    """A pool's autoscaler settings (Modal's names and meanings)."""

    min_containers: int  # workers kept running even without work
    max_containers: int | None  # at most this many workers; None: the total cap only
    buffer_containers: int  # extra idle workers kept while there is work
    scaledown_window: float  # seconds a worker stays idle before it is stopped


class AutoscalerChanges(TypedDict, total=False):
    """The body of ``PATCH pools/{id}``: the settings to change; others keep their value."""

    min_containers: int
    max_containers: int
    buffer_containers: int
    scaledown_window: float


class ContainersByState(TypedDict):
    waiting: int  # queued by a scheduler (a pending Slurm job): waiting for resources
    starting: int  # launched (running, for a Slurm job), not registered yet
    idle: int
    busy: int  # running at least one input
    # alive, running an input, but silent past the heartbeat timeout (user code holding the
    # GIL): left alone until that input's timeout
    unresponsive: int
    draining: int  # told to stop; finishing its input


class InputRefModel(TypedDict):
    call_id: str
    index: int


ContainerState = Literal["waiting", "starting", "idle", "busy", "unresponsive", "draining"]


class GpuModel(TypedDict, total=False):
    """A GPU of a worker, as NVML's inventory on the worker describes it."""

    index: int
    uuid: str
    name: str
    memory_total: int  # bytes


class GpuSampleModel(TypedDict):
    """One GPU in a worker's last heartbeat sample."""

    uuid: str
    utilization: int  # percent
    memory_used: int  # bytes
    memory_total: int  # bytes


class ContainerStatsModel(TypedDict, total=False):
    """A worker's last heartbeat sample: ``{"gpus": [...]}`` for a worker with GPUs, else
    ``{}``."""

    gpus: list[GpuSampleModel]


class ContainerModel(TypedDict):
    """One worker (a process or a container) of a pool."""

    id: str  # "wk-..."
    # what its launcher's tools call it: the Docker container's name ("nbscale-wk-...");
    # None for a local process (its pid says which)
    name: str | None
    image: str | None  # the image a container runs; None for a local process
    state: ContainerState
    # while waiting: the scheduler's reason ("Resources", "Priority", "QOSMaxJobsPerUserLimit")
    waiting_reason: str | None
    pid: int | None  # the worker's process id where it runs (in its container), once registered
    uptime: float  # seconds since launch
    running_inputs: int
    inputs: list[InputRefModel]  # the first few inputs it holds, the running one first
    # busy, its input blocked on the calls it made (nested calls): it lent its slot to them
    waiting_on_calls: bool
    gpus: list[GpuModel]
    stats: ContainerStatsModel


class CapHolderModel(TypedDict):
    """One pool's workers that count against the total cap (``max_workers_total``)."""

    pool_id: str
    function: str
    waiting: int
    starting: int
    idle: int
    busy: int


class PoolEventModel(TypedDict):
    """Something that happened to a pool: settings changed (and by whom), workers launched,
    stopped or reclaimed for another pool, launches failing, the pool stopped."""

    time: float  # seconds since the epoch
    message: str


class PoolModel(TypedDict):
    """One function's autoscaled pool. Counts use Modal's names, as in
    ``Function.get_current_stats()``: ``backlog`` is the inputs pending (waiting for a
    worker), ``num_running_inputs`` those on workers now."""

    id: str  # "pl-..."
    function: str  # the function's name
    function_id: str  # the hash of its pickled definition
    settings: AutoscalerSettingsModel
    # what the autoscaler is doing and why ("scaling up to 3", "stopped", ...), and how many
    # workers wait for resources, with the scheduler's reasons ("; 1 waiting for resources
    # (reason: Resources)")
    status: str
    backlog: int
    num_running_inputs: int
    num_total_runners: int  # workers waiting, starting or running (not draining ones)
    input_headroom: int  # free input slots on running workers
    containers: ContainersByState
    done: int  # inputs finished successfully, since the pool was created
    failed: int  # inputs finished with an error
    workers: list[ContainerModel]
    gpus: list[GpuModel]  # the GPUs of all its workers
    image: str | None  # the image its containers run; None for local processes/the default
    gpu: str | list[str] | None  # the GPU request, in Modal's syntax ("A100:2", a list)
    stopped: bool  # stopped by ``DELETE pools/{id}``; it starts again when called again
    # while the total cap keeps the pool from the workers it wants: the pools holding it
    # (this one included); empty otherwise
    cap_holders: list[CapHolderModel]
    events: list[PoolEventModel]  # its latest events, oldest first
    owner: OwnerModel  # the kernel or script that created it


CallKind = Literal["map", "remote", "spawn"]


class InputRef(TypedDict):
    """One input of a call: its call's id and its index there."""

    call_id: str
    index: int


class CallModel(TypedDict):
    """One function call: a ``.map()``, ``.remote()`` or ``.spawn()``/``.spawn_map()``.
    Calls whose results stream to a kernel are listed until they finish, and a while after;
    spawned calls stay, with their results, for the store's retention time (on disk with a
    Jupyter server, across its restarts). Listings are newest first and paged: pass the
    last call's ``seq`` as ``before`` for the next page."""

    id: str  # "fc-..."
    pool_id: str
    function: str
    kind: CallKind
    seq: int  # when it was opened, microseconds since the epoch: the paging cursor
    created: float  # when it was opened, seconds since the epoch
    total: int | None  # known once the caller sent its last input
    submitted: int  # inputs received so far
    done: int
    failed: int
    cancelled: bool
    finished: bool
    # detached from its caller (``POST calls/{id}/detach``): it runs on, its results kept
    detached: bool
    owner: OwnerModel  # the kernel or script that made the call
    # the call graph: the input whose code made this call on a worker (None: called from
    # a kernel or script), and the calls this call's inputs made (cancelled with it)
    parent: InputRef | None
    children: list[str]


InputStatus = Literal["pending", "running", "finished", "done", "failed", "cancelled"]


class InputModel(TypedDict):
    """One input of a call. ``finished`` is a streamed (map/remote) input whose result went
    to its caller: the control plane counts those as done or failed without keeping which
    index was which, so that a map stays cheap; spawned inputs say ``done`` or ``failed``."""

    index: int
    status: InputStatus
    attempt: int  # attempts started so far (retries included); 0 if never run or not known
    worker_id: NotRequired[str]  # for inputs on a worker: running, or queued there (pending)


class CallDetailModel(CallModel):
    """``GET calls/{id}``: the call, its counts, and the status of inputs
    ``start`` .. ``start + limit`` (query parameters; inputs not yet submitted are absent)."""

    pending: int
    running: int
    start: int
    inputs: list[InputModel]


class LogLineModel(TypedDict):
    """One line of a worker's output, with when and by which input it was written where the
    worker's Python wrote it (output written below Python, by a C library, has neither)."""

    time: float | None  # seconds since the epoch
    call_id: str | None  # the input's call
    index: int | None  # the input's index in its call
    text: str  # without the newline


class LogsModel(TypedDict):
    """What a worker wrote to stdout and stderr (also for recently gone ones): its last
    ``tail`` lines or, with ``?after=`` a cursor from an earlier answer, the lines written
    since (at most ``tail``, the latest)."""

    container_id: str
    pool_id: str
    tail: int
    logs: str  # the lines as the worker's log holds them
    lines: list[LogLineModel]  # the same lines, read
    # pass as ``?after=`` to get the lines written since; None: this launcher cannot follow
    # a log, so read the last lines again
    cursor: int | None
    skipped: bool  # more lines came since ``after`` than ``tail``: the oldest were left out


EventType = Literal[
    "pool-added",
    "pool-updated",
    "pool-stopped",
    "container-starting",
    "container-waiting",
    "container-started",
    "container-stopping",
    "container-stopped",
    "call-cancelled",
    "call-detached",
    "app-deployed",
    "app-stopped",
]


class ChangeEvent(TypedDict):
    """Something that happened, as the control plane reports it to its subscribers."""

    type: EventType
    pool_id: str  # "" for an app's events
    container_id: NotRequired[str]
    app: NotRequired[str]  # for app-deployed and app-stopped
    call_id: NotRequired[str]
    exit_code: NotRequired[int | None]  # for container-stopped


class SnapshotMessage(TypedDict):
    """The first message on the ``events`` WebSocket: every pool and the newest calls, once
    (``calls_more``: older calls exist; ``GET calls?before=<the oldest seq>`` pages on)."""

    type: Literal["snapshot"]
    pools: list[PoolModel]
    calls: list[CallModel]
    calls_more: bool
    spares: list[str]  # idle warm spare containers, in no pool yet (Docker: docker_spares)


class ChangesMessage(TypedDict):
    """Then, at most a few times a second, what changed since the last message: pools and
    calls whose counts or states moved (whole models), calls no longer listed, and the
    events in between (``events_dropped`` counts those left out of a burst)."""

    type: Literal["changes"]
    pools: list[PoolModel]
    calls: list[CallModel]
    calls_removed: list[str]
    events: list[ChangeEvent]
    events_dropped: int
    spares: list[str]  # the idle warm spare containers now (moved or not)


EventsMessage = SnapshotMessage | ChangesMessage


# --- the notebook display of a map (not a route: the kernel sends it to the browser) ------
# ``application/vnd.nbscale.map+json``, made by ``nbscale/_views/state.py`` and drawn by the
# labextension's renderer (``mapview.ts``); once the map ended it is the summary a saved
# notebook keeps.


class MapCountsModel(TypedDict):
    """Where a map's inputs are; done + failed + cancelled + running + pending is ``total``
    when it is known, else ``submitted``."""

    total: int | None  # from len() of the inputs, total=, or once they ran out
    submitted: int
    done: int
    failed: int
    cancelled: int
    running: int
    pending: int
    retries: int


class MapAttemptModel(TypedDict):
    """One attempt of an input."""

    number: int
    worker: str
    start: float | None  # seconds after the map started, as the worker reported it
    duration: float | None
    outcome: str  # running | ok | error | timeout | lost | cancelled | ...


class MapRowModel(TypedDict):
    """One input in the view's table, with its drill-down."""

    index: int
    status: str  # pending | queued | running | retrying | done | failed | cancelled
    worker: str
    attempt: int
    duration: float | None
    time: str  # the duration in words ("1.2 ms")
    summary: str  # a short repr of its result or exception
    output: str  # the tail of what it printed (streamed while it runs)
    traceback: str  # a failure's, as text
    attempts: list[MapAttemptModel]


class MapFailureModel(TypedDict):
    index: int
    line: str  # the exception's short repr


class MapStateModel(TypedDict):
    """A map's view: its counts, its pool, its rows; ``final`` once it ended."""

    version: int
    function: str
    call_id: str | None  # None until its inputs go out
    # whose control plane runs it: "server" (the Jupyter server's: the view's Cancel and
    # Detach buttons work) or "embedded" (the kernel's own); None before it starts
    control_plane: str | None
    kernel_id: str | None
    # preparing | running, then done | failed | cancelled | interrupted | stopped |
    # detached, or lost (the kernel stopped before the map ended: the browser says so)
    status: str
    final: bool
    outcome: str | None  # how an unfinished map ended, in words
    counts: MapCountsModel
    percent: float | None  # of the inputs over; None while the total is unknown
    rate: float  # inputs finished per second
    elapsed: float  # seconds
    eta: float | None  # seconds left; None without a total, and once it ended
    started: float  # seconds since the epoch
    counts_text: str
    pool_text: str
    throttled: bool
    summary: str | None  # the line that stays, once it ended
    resume: str | None  # a detached map's FunctionCall.from_id(...) line
    rows: list[MapRowModel]
    failures: list[MapFailureModel]  # the first ones, for the summary


class ErrorModel(TypedDict):
    """Any error: ``message`` says what was wrong; ``reason`` is the HTTP reason."""

    message: str
    reason: str | None
