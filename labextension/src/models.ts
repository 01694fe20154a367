/**
 * GENERATED from server_ext/nbscale_server/models.py by scripts/gen-contracts: do not
 * edit; edit models.py and run scripts/gen-contracts.
 *
 * The JSON models of the control plane's API, in one place.
 *
 * The REST API under `/nbscale/api/` and the `events` WebSocket send exactly these shapes,
 * and the control plane's public methods return them. A field added here is a field every
 * client can rely on. The sidebar's TypeScript types (`labextension/src/models.ts`, `I*`
 * interfaces) are generated from this module (`schema.py`, then `scripts/gen-contracts`):
 * docstrings and field comments become their documentation.
 *
 * Routes (all authenticated with the Jupyter server's token or login):
 *
 * - `GET status` -> `StatusModel`
 * - `GET pools` -> `list[PoolModel]`
 * - `GET pools/{id}` -> `PoolModel`
 * - `PATCH pools/{id}` with `AutoscalerChanges` -> `PoolModel`
 * - `DELETE pools/{id}` -> `PoolModel` (the pool stopped: calls cancelled, workers stopping)
 * - `GET calls?limit=500&before=` -> `list[CallModel]`, newest first (`before`: a `seq`)
 * - `GET calls/{id}?start=0&limit=1000` -> `CallDetailModel`
 * - `DELETE calls/{id}` -> `CallModel` (cancelled)
 * - `POST calls/{id}/detach` -> `CallModel` (a map detached from its caller: the caller
 *   stops waiting, the call runs on and keeps its results for `FunctionCall.from_id`)
 * - `GET containers/{id}/logs?tail=200&after=CURSOR` -> `LogsModel`
 * - `WS events` -> a `SnapshotMessage`, then `ChangesMessage`s
 * - errors -> `ErrorModel` with 400 (bad input), 404 (unknown id) or 429 (over a limit)
 */

/**
 * Any JSON model of the nbscale API.
 */
export type ApiModel =
  | ContainerState
  | CallKind
  | InputStatus
  | EventType
  | EventsMessage
  | IStatus
  | IApp
  | IOwner
  | IAutoscalerSettings
  | IAutoscalerChanges
  | IContainersByState
  | IInputRef
  | IGpu
  | IGpuSample
  | IContainerStats
  | IContainer
  | ICapHolder
  | IPoolEvent
  | IPool
  | ICall
  | IInput
  | ICallDetail
  | ILogLine
  | ILogs
  | IChangeEvent
  | ISnapshotMessage
  | IChangesMessage
  | IMapCounts
  | IMapAttempt
  | IMapRow
  | IMapFailure
  | IMapState
  | IError;
export type ContainerState =
  'waiting' | 'starting' | 'idle' | 'busy' | 'unresponsive' | 'draining';
export type CallKind = 'map' | 'remote' | 'spawn';
export type InputStatus =
  'pending' | 'running' | 'finished' | 'done' | 'failed' | 'cancelled';
export type EventType =
  | 'pool-added'
  | 'pool-updated'
  | 'pool-stopped'
  | 'container-starting'
  | 'container-waiting'
  | 'container-started'
  | 'container-stopping'
  | 'container-stopped'
  | 'call-cancelled'
  | 'call-detached'
  | 'app-deployed'
  | 'app-stopped';
export type EventsMessage = ISnapshotMessage | IChangesMessage;

/**
 * The first message on the `events` WebSocket: every pool and the newest calls, once
 * (`calls_more`: older calls exist; `GET calls?before=<the oldest seq>` pages on).
 */
export interface ISnapshotMessage {
  type: 'snapshot';
  pools: IPool[];
  calls: ICall[];
  calls_more: boolean;
  /**
   * idle warm spare containers, in no pool yet (Docker: docker_spares)
   */
  spares: string[];
}
/**
 * One function's autoscaled pool. Counts use Modal's names, as in
 * `Function.get_current_stats()`: `backlog` is the inputs pending (waiting for a
 * worker), `num_running_inputs` those on workers now.
 */
export interface IPool {
  /**
   * "pl-..."
   */
  id: string;
  /**
   * the function's name
   */
  function: string;
  /**
   * the hash of its pickled definition
   */
  function_id: string;
  settings: IAutoscalerSettings;
  /**
   * what the autoscaler is doing and why ("scaling up to 3", "stopped", ...), and how many workers wait for resources, with the scheduler's reasons ("; 1 waiting for resources (reason: Resources)")
   */
  status: string;
  backlog: number;
  num_running_inputs: number;
  /**
   * workers waiting, starting or running (not draining ones)
   */
  num_total_runners: number;
  /**
   * free input slots on running workers
   */
  input_headroom: number;
  containers: IContainersByState;
  /**
   * inputs finished successfully, since the pool was created
   */
  done: number;
  /**
   * inputs finished with an error
   */
  failed: number;
  workers: IContainer[];
  /**
   * the GPUs of all its workers
   */
  gpus: IGpu[];
  /**
   * the image its containers run; None for local processes/the default
   */
  image: string | null;
  /**
   * the GPU request, in Modal's syntax ("A100:2", a list)
   */
  gpu: string | string[] | null;
  /**
   * stopped by `DELETE pools/{id}`; it starts again when called again
   */
  stopped: boolean;
  /**
   * while the total cap keeps the pool from the workers it wants: the pools holding it (this one included); empty otherwise
   */
  cap_holders: ICapHolder[];
  /**
   * its latest events, oldest first
   */
  events: IPoolEvent[];
  owner: IOwner;
}
/**
 * A pool's autoscaler settings (Modal's names and meanings).
 */
export interface IAutoscalerSettings {
  /**
   * workers kept running even without work
   */
  min_containers: number;
  /**
   * at most this many workers; None: the total cap only
   */
  max_containers: number | null;
  /**
   * extra idle workers kept while there is work
   */
  buffer_containers: number;
  /**
   * seconds a worker stays idle before it is stopped
   */
  scaledown_window: number;
}
export interface IContainersByState {
  /**
   * queued by a scheduler (a pending Slurm job): waiting for resources
   */
  waiting: number;
  /**
   * launched (running, for a Slurm job), not registered yet
   */
  starting: number;
  idle: number;
  /**
   * running at least one input
   */
  busy: number;
  /**
   * alive, running an input, but silent past the heartbeat timeout (user code holding the GIL): left alone until that input's timeout
   */
  unresponsive: number;
  /**
   * told to stop; finishing its input
   */
  draining: number;
}
/**
 * One worker (a process or a container) of a pool.
 */
export interface IContainer {
  /**
   * "wk-..."
   */
  id: string;
  /**
   * what its launcher's tools call it: the Docker container's name ("nbscale-wk-..."); None for a local process (its pid says which)
   */
  name: string | null;
  /**
   * the image a container runs; None for a local process
   */
  image: string | null;
  state: ContainerState;
  /**
   * while waiting: the scheduler's reason ("Resources", "Priority", "QOSMaxJobsPerUserLimit")
   */
  waiting_reason: string | null;
  /**
   * the worker's process id where it runs (in its container), once registered
   */
  pid: number | null;
  /**
   * seconds since launch
   */
  uptime: number;
  running_inputs: number;
  /**
   * the first few inputs it holds, the running one first
   */
  inputs: IInputRef[];
  /**
   * busy, its input blocked on the calls it made (nested calls): it lent its slot to them
   */
  waiting_on_calls: boolean;
  gpus: IGpu[];
  stats: IContainerStats;
}
/**
 * One input of a call: its call's id and its index there.
 */
export interface IInputRef {
  call_id: string;
  index: number;
}
/**
 * A GPU of a worker, as NVML's inventory on the worker describes it.
 */
export interface IGpu {
  index?: number;
  uuid?: string;
  name?: string;
  /**
   * bytes
   */
  memory_total?: number;
}
/**
 * A worker's last heartbeat sample: `{"gpus": [...]}` for a worker with GPUs, else
 * `{}`.
 */
export interface IContainerStats {
  gpus?: IGpuSample[];
}
/**
 * One GPU in a worker's last heartbeat sample.
 */
export interface IGpuSample {
  uuid: string;
  /**
   * percent
   */
  utilization: number;
  /**
   * bytes
   */
  memory_used: number;
  /**
   * bytes
   */
  memory_total: number;
}
/**
 * One pool's workers that count against the total cap (`max_workers_total`).
 */
export interface ICapHolder {
  pool_id: string;
  function: string;
  waiting: number;
  starting: number;
  idle: number;
  busy: number;
}
/**
 * Something that happened to a pool: settings changed (and by whom), workers launched,
 * stopped or reclaimed for another pool, launches failing, the pool stopped.
 */
export interface IPoolEvent {
  /**
   * seconds since the epoch
   */
  time: number;
  message: string;
}
/**
 * Who created a pool or a call: a kernel (and its notebook, when the Jupyter server
 * knows it) or a script; or, for the pools of a deployed app's functions, the app, whose
 * callers all share them. Pools are per owner: two notebooks that define the same function
 * get pools of their own.
 */
export interface IOwner {
  /**
   * the Jupyter kernel's id; None outside a kernel
   */
  kernel_id: string | null;
  /**
   * the notebook's path relative to the server root; None if unknown
   */
  notebook: string | null;
  /**
   * a label: the notebook's or script's file name, "kernel 1b61edf8", "pid 42"
   */
  name: string;
  /**
   * the process id of the client
   */
  pid: number;
  /**
   * the host name of the client
   */
  host: string;
  /**
   * the deployed app owning the pool (its callers share it); else None
   */
  app: string | null;
}
/**
 * One function call: a `.map()`, `.remote()` or `.spawn()`/`.spawn_map()`.
 * Calls whose results stream to a kernel are listed until they finish, and a while after;
 * spawned calls stay, with their results, for the store's retention time (on disk with a
 * Jupyter server, across its restarts). Listings are newest first and paged: pass the
 * last call's `seq` as `before` for the next page.
 */
export interface ICall {
  /**
   * "fc-..."
   */
  id: string;
  pool_id: string;
  function: string;
  kind: CallKind;
  /**
   * when it was opened, microseconds since the epoch: the paging cursor
   */
  seq: number;
  /**
   * when it was opened, seconds since the epoch
   */
  created: number;
  /**
   * known once the caller sent its last input
   */
  total: number | null;
  /**
   * inputs received so far
   */
  submitted: number;
  done: number;
  failed: number;
  cancelled: boolean;
  finished: boolean;
  /**
   * detached from its caller (`POST calls/{id}/detach`): it runs on, its results kept
   */
  detached: boolean;
  owner: IOwner;
  /**
   * the call graph: the input whose code made this call on a worker (None: called from a kernel or script), and the calls this call's inputs made (cancelled with it)
   */
  parent: IInputRef | null;
  children: string[];
}
/**
 * Then, at most a few times a second, what changed since the last message: pools and
 * calls whose counts or states moved (whole models), calls no longer listed, and the
 * events in between (`events_dropped` counts those left out of a burst).
 */
export interface IChangesMessage {
  type: 'changes';
  pools: IPool[];
  calls: ICall[];
  calls_removed: string[];
  events: IChangeEvent[];
  events_dropped: number;
  /**
   * the idle warm spare containers now (moved or not)
   */
  spares: string[];
}
/**
 * Something that happened, as the control plane reports it to its subscribers.
 */
export interface IChangeEvent {
  type: EventType;
  /**
   * "" for an app's events
   */
  pool_id: string;
  container_id?: string;
  /**
   * for app-deployed and app-stopped
   */
  app?: string;
  call_id?: string;
  /**
   * for container-stopped
   */
  exit_code?: number | null;
}
/**
 * The control plane itself: nbscale's version, and what runs its workers and why, as
 * `nbscale.status()` says it (`launcher_reason`: e.g. "Docker engine found, but no
 * base image nbscale/base:bookworm: run `nbscale images base`").
 */
export interface IStatus {
  version: string;
  launcher: 'process' | 'docker' | 'slurm' | 'kubernetes';
  launcher_reason: string;
}
/**
 * A deployed app (`app.deploy()`, `nbscale deploy`): the names its functions and
 * classes are found by (`Function.from_name(name, function)`).
 */
export interface IApp {
  name: string;
  functions: string[];
  classes: string[];
  /**
   * when, in seconds since the epoch
   */
  deployed: number;
}
/**
 * The body of `PATCH pools/{id}`: the settings to change; others keep their value.
 */
export interface IAutoscalerChanges {
  min_containers?: number;
  max_containers?: number;
  buffer_containers?: number;
  scaledown_window?: number;
}
/**
 * One input of a call. `finished` is a streamed (map/remote) input whose result went
 * to its caller: the control plane counts those as done or failed without keeping which
 * index was which, so that a map stays cheap; spawned inputs say `done` or `failed`.
 */
export interface IInput {
  index: number;
  status: InputStatus;
  /**
   * attempts started so far (retries included); 0 if never run or not known
   */
  attempt: number;
  /**
   * for inputs on a worker: running, or queued there (pending)
   */
  worker_id?: string;
}
/**
 * `GET calls/{id}`: the call, its counts, and the status of inputs
 * `start` .. `start + limit` (query parameters; inputs not yet submitted are absent).
 */
export interface ICallDetail {
  /**
   * "fc-..."
   */
  id: string;
  pool_id: string;
  function: string;
  kind: CallKind;
  /**
   * when it was opened, microseconds since the epoch: the paging cursor
   */
  seq: number;
  /**
   * when it was opened, seconds since the epoch
   */
  created: number;
  /**
   * known once the caller sent its last input
   */
  total: number | null;
  /**
   * inputs received so far
   */
  submitted: number;
  done: number;
  failed: number;
  cancelled: boolean;
  finished: boolean;
  /**
   * detached from its caller (`POST calls/{id}/detach`): it runs on, its results kept
   */
  detached: boolean;
  owner: IOwner;
  /**
   * the call graph: the input whose code made this call on a worker (None: called from a kernel or script), and the calls this call's inputs made (cancelled with it)
   */
  parent: IInputRef | null;
  children: string[];
  pending: number;
  running: number;
  start: number;
  inputs: IInput[];
}
/**
 * One line of a worker's output, with when and by which input it was written where the
 * worker's Python wrote it (output written below Python, by a C library, has neither).
 */
export interface ILogLine {
  /**
   * seconds since the epoch
   */
  time: number | null;
  /**
   * the input's call
   */
  call_id: string | null;
  /**
   * the input's index in its call
   */
  index: number | null;
  /**
   * without the newline
   */
  text: string;
}
/**
 * What a worker wrote to stdout and stderr (also for recently gone ones): its last
 * `tail` lines or, with `?after=` a cursor from an earlier answer, the lines written
 * since (at most `tail`, the latest).
 */
export interface ILogs {
  container_id: string;
  pool_id: string;
  tail: number;
  /**
   * the lines as the worker's log holds them
   */
  logs: string;
  /**
   * the same lines, read
   */
  lines: ILogLine[];
  /**
   * pass as `?after=` to get the lines written since; None: this launcher cannot follow a log, so read the last lines again
   */
  cursor: number | null;
  /**
   * more lines came since `after` than `tail`: the oldest were left out
   */
  skipped: boolean;
}
/**
 * Where a map's inputs are; done + failed + cancelled + running + pending is `total`
 * when it is known, else `submitted`.
 */
export interface IMapCounts {
  /**
   * from len() of the inputs, total=, or once they ran out
   */
  total: number | null;
  submitted: number;
  done: number;
  failed: number;
  cancelled: number;
  running: number;
  pending: number;
  retries: number;
}
/**
 * One attempt of an input.
 */
export interface IMapAttempt {
  number: number;
  worker: string;
  /**
   * seconds after the map started, as the worker reported it
   */
  start: number | null;
  duration: number | null;
  /**
   * running | ok | error | timeout | lost | cancelled | ...
   */
  outcome: string;
}
/**
 * One input in the view's table, with its drill-down.
 */
export interface IMapRow {
  index: number;
  /**
   * pending | queued | running | retrying | done | failed | cancelled
   */
  status: string;
  worker: string;
  attempt: number;
  duration: number | null;
  /**
   * the duration in words ("1.2 ms")
   */
  time: string;
  /**
   * a short repr of its result or exception
   */
  summary: string;
  /**
   * the tail of what it printed (streamed while it runs)
   */
  output: string;
  /**
   * a failure's, as text
   */
  traceback: string;
  attempts: IMapAttempt[];
}
export interface IMapFailure {
  index: number;
  /**
   * the exception's short repr
   */
  line: string;
}
/**
 * A map's view: its counts, its pool, its rows; `final` once it ended.
 */
export interface IMapState {
  version: number;
  function: string;
  /**
   * None until its inputs go out
   */
  call_id: string | null;
  /**
   * whose control plane runs it: "server" (the Jupyter server's: the view's Cancel and Detach buttons work) or "embedded" (the kernel's own); None before it starts
   */
  control_plane: string | null;
  kernel_id: string | null;
  /**
   * preparing | running, then done | failed | cancelled | interrupted | stopped | detached, or lost (the kernel stopped before the map ended: the browser says so)
   */
  status: string;
  final: boolean;
  /**
   * how an unfinished map ended, in words
   */
  outcome: string | null;
  counts: IMapCounts;
  /**
   * of the inputs over; None while the total is unknown
   */
  percent: number | null;
  /**
   * inputs finished per second
   */
  rate: number;
  /**
   * seconds
   */
  elapsed: number;
  /**
   * seconds left; None without a total, and once it ended
   */
  eta: number | null;
  /**
   * seconds since the epoch
   */
  started: number;
  counts_text: string;
  pool_text: string;
  throttled: boolean;
  /**
   * the line that stays, once it ended
   */
  summary: string | null;
  /**
   * a detached map's FunctionCall.from_id(...) line
   */
  resume: string | null;
  rows: IMapRow[];
  /**
   * the first ones, for the summary
   */
  failures: IMapFailure[];
}
/**
 * Any error: `message` says what was wrong; `reason` is the HTTP reason.
 */
export interface IError {
  message: string;
  reason: string | null;
}
