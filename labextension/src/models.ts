/**
 * The JSON models of the nbscale server API, mirroring
 * `server_ext/nbscale_server/models.py` field for field (snake_case, as sent).
 *
 * Routes, relative to `<base_url>/nbscale/api/`:
 * - `GET status` -> `IStatus`
 * - `GET pools` -> `IPool[]`; `GET|PATCH|DELETE pools/{id}` -> `IPool`
 *   (PATCH body: `IAutoscalerChanges`; DELETE stops the pool)
 * - `GET calls` -> `ICall[]`; `GET calls/{id}` -> `ICallDetail`; `DELETE calls/{id}` -> `ICall`
 * - `GET containers/{id}/logs?tail=200` -> `ILogs`
 * - WebSocket `events` -> an `ISnapshotMessage`, then `IChangesMessage`s
 * - errors -> `IError` with 400, 404 or 429
 */

/**
 * The control plane itself: nbscale's version, and what runs its workers and why
 * (`launcher_reason`, e.g. "Docker engine found, but no base image nbscale/base:bookworm:
 * run `nbscale images base`").
 */
export interface IStatus {
  version: string;
  launcher: 'process' | 'docker';
  launcher_reason: string;
}

/** A pool's autoscaler settings (Modal's names and meanings). */
export interface IAutoscalerSettings {
  /** Workers kept running even without work. */
  min_containers: number;
  /** At most this many workers; null: the server's total cap only. */
  max_containers: number | null;
  /** Extra idle workers kept while there is work. */
  buffer_containers: number;
  /** Seconds a worker stays idle before it is stopped. */
  scaledown_window: number;
}

/** The body of `PATCH pools/{id}`: the settings to change; others keep their value. */
export interface IAutoscalerChanges {
  min_containers?: number;
  max_containers?: number;
  buffer_containers?: number;
  scaledown_window?: number;
}

export interface IContainersByState {
  /** Launched, not registered yet. */
  starting: number;
  idle: number;
  /** Running at least one input. */
  busy: number;
  /** Told to stop; finishing its input. */
  draining: number;
}

export type ContainerState = keyof IContainersByState;

/** A GPU of a worker, as NVML's inventory describes it (memory in bytes). */
export interface IGpu {
  index?: number;
  uuid?: string;
  name?: string;
  memory_total?: number;
}

/** One GPU in a worker's last heartbeat sample (utilisation in percent, memory in bytes). */
export interface IGpuSample {
  uuid: string;
  utilization: number;
  memory_used: number;
  memory_total: number;
}

/** A worker's last heartbeat sample: `{gpus: [...]}` for a worker with GPUs, else `{}`. */
export interface IContainerStats {
  gpus?: IGpuSample[];
}

/** An input of a call, by position. */
export interface IInputRef {
  call_id: string;
  index: number;
}

/** One worker (a process or a container) of a pool. */
export interface IContainer {
  /** "wk-..." */
  id: string;
  state: ContainerState;
  /** The worker's process id where it runs, once registered. */
  pid: number | null;
  /** Seconds since launch. */
  uptime: number;
  running_inputs: number;
  /** The first few inputs it holds, the running one first. */
  inputs: IInputRef[];
  /** Its GPUs, as NVML reports them on the worker. */
  gpus: IGpu[];
  /** The last heartbeat's sample. */
  stats: IContainerStats;
}

/**
 * One function's autoscaled pool. `backlog` is the inputs pending (waiting for a worker),
 * `num_running_inputs` those on workers now, as in `Function.get_current_stats()`.
 */
export interface IPool {
  /** "pl-..." */
  id: string;
  /** The function's name. */
  function: string;
  /** The hash of its pickled definition. */
  function_id: string;
  settings: IAutoscalerSettings;
  /** What the autoscaler is doing and why ("scaling up to 3", "stopped", ...). */
  status: string;
  backlog: number;
  num_running_inputs: number;
  /** Workers starting or running (draining ones excluded). */
  num_total_runners: number;
  /** Free input slots on running workers. */
  input_headroom: number;
  containers: IContainersByState;
  /** Inputs finished successfully since the pool was created. */
  done: number;
  /** Inputs finished with an error. */
  failed: number;
  workers: IContainer[];
  /** The GPUs of all its workers. */
  gpus: IGpu[];
  /** The image its containers run; null for local processes or the default image. */
  image: string | null;
  /** The GPU request, in Modal's syntax ("A100:2", or a list of fallbacks). */
  gpu: string | string[] | null;
  /** Stopped by `DELETE pools/{id}`; it starts again when called again. */
  stopped: boolean;
}

export type CallKind = 'map' | 'remote' | 'spawn';

/** One function call: a `.map()`, `.remote()` or `.spawn()`/`.spawn_map()`. */
export interface ICall {
  /** "fc-..." */
  id: string;
  pool_id: string;
  function: string;
  kind: CallKind;
  /** Known once the caller sent its last input. */
  total: number | null;
  /** Inputs received so far. */
  submitted: number;
  done: number;
  failed: number;
  cancelled: boolean;
  finished: boolean;
}

export type InputStatus =
  'pending' | 'running' | 'finished' | 'done' | 'failed' | 'cancelled';

/** One input of a call. */
export interface IInput {
  index: number;
  status: InputStatus;
  /** Attempts started so far (retries included); 0 while never run. */
  attempt: number;
  /** For running inputs. */
  worker_id?: string;
}

/** `GET calls/{id}`: the call, its counts and the status of inputs `start` .. `start + limit`. */
export interface ICallDetail extends ICall {
  pending: number;
  running: number;
  start: number;
  inputs: IInput[];
}

/** The last lines a worker wrote to stdout and stderr (also for recently gone ones). */
export interface ILogs {
  container_id: string;
  pool_id: string;
  tail: number;
  logs: string;
}

export type EventType =
  | 'pool-added'
  | 'pool-updated'
  | 'pool-stopped'
  | 'container-starting'
  | 'container-started'
  | 'container-stopping'
  | 'container-stopped'
  | 'call-cancelled';

/** Something that happened, as the control plane reports it to its subscribers. */
export interface IChangeEvent {
  type: EventType;
  pool_id: string;
  container_id?: string;
  call_id?: string;
  /** For container-stopped. */
  exit_code?: number | null;
}

/** The first message on the `events` WebSocket: everything, once. */
export interface ISnapshotMessage {
  type: 'snapshot';
  pools: IPool[];
  calls: ICall[];
}

/** Then, at most a few times a second, what changed since the last message. */
export interface IChangesMessage {
  type: 'changes';
  pools: IPool[];
  calls: ICall[];
  calls_removed: string[];
  events: IChangeEvent[];
  events_dropped: number;
}

export type EventsMessage = ISnapshotMessage | IChangesMessage;

/** Any error: `message` says what was wrong; `reason` is the HTTP reason. */
export interface IError {
  message: string;
  reason: string | null;
}
