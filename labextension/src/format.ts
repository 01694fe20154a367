/**
 * How the sidebar words numbers: durations, sizes, counts, progress, containers and GPUs.
 * Pure functions of the models, tested with jest.
 */

import {
  IAutoscalerSettings,
  ICall,
  ICapHolder,
  IChangeEvent,
  IContainer,
  IContainersByState,
  IGpu,
  IInputRef,
  IOwner,
  IPool,
  IStatus
} from './models';

/** Seconds as "45s", "3m 05s", "2h 04m" or "3d 2h". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) {
    return '–';
  }
  const s = Math.floor(seconds);
  if (s < 60) {
    return `${s}s`;
  }
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  }
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** Bytes in binary units: "512 B", "1.5 KiB", "39.6 GiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** A count with thousands separators: "12,345". */
export function formatCount(n: number): string {
  return String(Math.trunc(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** "1 input", "3 inputs". */
export function plural(n: number, word: string): string {
  return `${formatCount(n)} ${word}${n === 1 ? '' : 's'}`;
}

/** A call's progress: how much of the bar to fill, and the words beside it. */
export interface IProgress {
  /** Finished inputs (done or failed) over the total, 0..1; null while the total is unknown. */
  fraction: number | null;
  label: string;
  state: 'running' | 'done' | 'failed' | 'cancelled';
}

export function callProgress(call: ICall): IProgress {
  const finished = call.done + call.failed;
  const of = call.total ?? call.submitted;
  const counts =
    call.total === null
      ? `${formatCount(finished)} of ${formatCount(of)}+`
      : `${formatCount(finished)} / ${formatCount(of)}`;
  const failures =
    call.failed > 0 ? ` · ${formatCount(call.failed)} failed` : '';
  let state: IProgress['state'] = 'running';
  if (call.cancelled) {
    state = 'cancelled';
  } else if (call.finished) {
    state = call.failed > 0 ? 'failed' : 'done';
  }
  const suffix = state === 'cancelled' ? ' · cancelled' : '';
  return {
    fraction: call.total ? Math.min(1, finished / call.total) : null,
    label: counts + failures + suffix,
    state
  };
}

/** Whether a call can still be cancelled. */
export function isCancellable(call: ICall): boolean {
  return !call.cancelled && !call.finished;
}

/** Containers by state, busiest first, leaving out empty states: "2 busy · 1 idle".
 * Those queued by a scheduler (Slurm) are "waiting for resources". */
export function formatContainers(containers: IContainersByState): string {
  const order: (keyof IContainersByState)[] = [
    'busy',
    'unresponsive',
    'idle',
    'starting',
    'waiting',
    'draining'
  ];
  const parts = order
    .filter(state => containers[state] > 0)
    .map(
      state =>
        `${containers[state]} ${state === 'waiting' ? 'waiting for resources' : state}`
    );
  return parts.length > 0 ? parts.join(' · ') : 'no containers';
}

/** A pool's size against its max, and its containers: "3 of max 8: 2 busy · 1 idle",
 * or "1 (no max): 1 idle". */
export function formatBounds(pool: IPool): string {
  const s = pool.settings;
  const size =
    s.max_containers === null
      ? `${pool.num_total_runners} (no max)`
      : `${pool.num_total_runners} of max ${s.max_containers}`;
  return `${size}: ${formatContainers(pool.containers)}`;
}

/** The autoscaler settings in one line. */
export function formatSettings(settings: IAutoscalerSettings): string {
  const max =
    settings.max_containers === null ? '∞' : String(settings.max_containers);
  return (
    `min ${settings.min_containers} · max ${max} · buffer ${settings.buffer_containers}` +
    ` · scaledown ${formatDuration(settings.scaledown_window)}`
  );
}

/** A GPU with what the worker's last heartbeat sampled of it, where it did. */
export interface IGpuUse extends IGpu {
  utilization?: number;
  memory_used?: number;
}

/** A container's GPUs, each joined (by uuid) with its last sample. */
export function gpuUse(container: IContainer): IGpuUse[] {
  const samples = container.stats.gpus ?? [];
  return container.gpus.map(gpu => {
    const sample = samples.find(s => s.uuid === gpu.uuid);
    return sample === undefined
      ? gpu
      : {
          ...gpu,
          utilization: sample.utilization,
          memory_used: sample.memory_used,
          memory_total: sample.memory_total
        };
  });
}

/** One GPU: "0: A100 · 35% · 10.2 GiB / 40.0 GiB", with what NVML reported. */
export function formatGpu(gpu: IGpuUse): string {
  const parts: string[] = [];
  const name = gpu.name ?? gpu.uuid ?? 'GPU';
  parts.push(gpu.index !== undefined ? `${gpu.index}: ${name}` : name);
  if (gpu.utilization !== undefined) {
    parts.push(`${gpu.utilization}%`);
  }
  if (gpu.memory_used !== undefined && gpu.memory_total !== undefined) {
    parts.push(
      `${formatBytes(gpu.memory_used)} / ${formatBytes(gpu.memory_total)}`
    );
  } else if (gpu.memory_total !== undefined) {
    parts.push(formatBytes(gpu.memory_total));
  }
  return parts.join(' · ');
}

/** A pool's GPUs in a few words: "2 × NVIDIA A100", "no GPU". */
export function formatGpuCount(gpus: IGpu[]): string {
  if (gpus.length === 0) {
    return 'no GPU';
  }
  const counts = new Map<string, number>();
  for (const gpu of gpus) {
    const name = gpu.name ?? 'GPU';
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return Array.from(counts, ([name, n]) => `${n} × ${name}`).join(', ');
}

/** What a pool asks for: "image nbscale/ml:3f2a · GPU A100:2", "GPU H100 or A100". */
export function formatRequest(
  image: string | null,
  gpu: string | string[] | null
): string {
  const parts: string[] = [];
  if (image !== null) {
    parts.push(`image ${image}`);
  }
  if (gpu !== null) {
    parts.push(`GPU ${Array.isArray(gpu) ? gpu.join(' or ') : gpu}`);
  }
  return parts.join(' · ');
}

/** The inputs a worker holds, in a narrow column: "#3", "#3 +4" (4 queued behind), "–". */
export function formatWorkerInputs(count: number, inputs: IInputRef[]): string {
  if (count === 0 || inputs.length === 0) {
    return count > 0 ? `${count} running` : '–';
  }
  const head = `#${inputs[0].index}`;
  return count > 1 ? `${head} +${count - 1}` : head;
}

/** The same in words, with the calls: "input 3 of fc-1a2b…000001, 4 more queued". */
export function describeWorkerInputs(
  count: number,
  inputs: IInputRef[]
): string {
  if (count === 0 || inputs.length === 0) {
    return count > 0 ? `${plural(count, 'input')} running` : 'no input';
  }
  const first = inputs[0];
  const head = `input ${first.index} of ${shortId(first.call_id)}`;
  return count > 1 ? `${head}, ${count - 1} more queued` : head;
}

/**
 * A container's uptime now: the server's figure when its pool was last received, plus the
 * time since, so that uptimes tick between updates (the server sends a pool again when
 * something changes, not as its uptimes grow).
 */
export function liveUptime(
  container: IContainer,
  received: number | undefined,
  now: number
): number {
  return received === undefined
    ? container.uptime
    : container.uptime + Math.max(0, now - received) / 1000;
}

/** What a row calls a container: its Docker name, else its worker id. */
export function containerName(container: IContainer): string {
  return container.name ?? container.id;
}

/** A container in full: "container nbscale-wk-1a2b · image nbscale/worker:3f2a · pid 7 in it". */
export function describeContainer(container: IContainer): string {
  const parts: string[] = [];
  if (container.name !== null) {
    parts.push(`container ${container.name}`);
    if (container.image !== null) {
      parts.push(`image ${container.image}`);
    }
    if (container.pid !== null) {
      parts.push(`pid ${container.pid} in it`);
    }
  } else {
    parts.push(`process ${container.id}`);
    if (container.pid !== null) {
      parts.push(`pid ${container.pid}`);
    }
  }
  return parts.join(' · ');
}

/**
 * The pools that fill the total cap, with their owners where `ownerOf` knows them:
 * "square (sweep.ipynb): 2 busy · other: 1 idle, 1 starting".
 */
export function formatCapHolders(
  holders: ICapHolder[],
  ownerOf: (poolId: string) => IOwner | undefined = () => undefined
): string {
  return holders
    .map(holder => {
      const states = (['busy', 'idle', 'starting', 'waiting'] as const)
        .filter(state => holder[state] > 0)
        .map(state => `${holder[state]} ${state}`);
      const owner = ownerOf(holder.pool_id);
      const whose = owner === undefined ? '' : ` (${ownerName(owner)})`;
      return `${holder.function}${whose}: ${states.join(', ') || 'none'}`;
    })
    .join(' · ');
}

/** What to call an owner: its notebook's path, else its own label ("client.py"). */
export function ownerName(owner: IOwner): string {
  return owner.notebook ?? owner.name;
}

/**
 * The rest of who an owner is: "kernel 1b61edf8 · pid 4242 on box"; for a deployed app,
 * that its pools serve every caller.
 */
export function describeOwner(owner: IOwner): string {
  if (owner.app) {
    return 'deployed app: its pools serve every caller';
  }
  const kernel = owner.kernel_id
    ? `kernel ${owner.kernel_id.split('-')[0].slice(0, 8)} · `
    : '';
  return `${kernel}pid ${owner.pid}${owner.host ? ` on ${owner.host}` : ''}`;
}

const LAUNCHERS: Record<IStatus['launcher'], string> = {
  process: 'local processes',
  docker: 'Docker containers',
  slurm: 'Slurm jobs',
  kubernetes: 'Kubernetes Pods'
};

/** What runs the workers, in words: "Docker containers". */
export function formatLauncher(status: IStatus): string {
  return LAUNCHERS[status.launcher] ?? status.launcher;
}

/** The launcher line's note on idle warm spares (Docker's `docker_spares`). */
export function formatSpares(n: number): string {
  const waits = n === 1 ? 'waits' : 'wait';
  return `${plural(n, 'warm spare container')} ${waits} for a new pool's first worker`;
}

/** The line that gets a call's results in another kernel (`FunctionCall.from_id`). */
export function fromIdCode(callId: string): string {
  return `nbscale.FunctionCall.from_id("${callId}")`;
}

/** A log line's time, local: "14:03:07". */
export function formatClock(seconds: number): string {
  const d = new Date(seconds * 1000);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A lifecycle event in words, with short ids: "wk-1a2b3c4d stopped (exit 1)". */
export function describeEvent(event: IChangeEvent): string {
  const pool = shortId(event.pool_id, 11);
  const container = shortId(event.container_id ?? 'a container', 11);
  switch (event.type) {
    case 'pool-added':
      return `pool ${pool} added`;
    case 'pool-updated':
      return `pool ${pool} settings changed`;
    case 'pool-stopped':
      return `pool ${pool} stopped`;
    case 'container-starting':
      return `${container} starting`;
    case 'container-waiting':
      return `${container} waiting for resources`;
    case 'container-started':
      return `${container} started`;
    case 'container-stopping':
      return `${container} stopping`;
    case 'container-stopped': {
      const code = event.exit_code;
      const exit = code === undefined || code === null ? '' : ` (exit ${code})`;
      return `${container} stopped${exit}`;
    }
    case 'call-cancelled':
      return `call ${shortId(event.call_id ?? '')} cancelled`;
    case 'call-detached':
      return `call ${shortId(event.call_id ?? '')} detached from its notebook`;
    case 'app-deployed':
      return `app ${event.app ?? ''} deployed`;
    case 'app-stopped':
      return `app ${event.app ?? ''} stopped`;
  }
}

/**
 * A short id for narrow columns: "wk-1a2b3c4d5e6f" -> "wk-1a2b3c". A call id is "fc-",
 * 12 hex digits of the process that made it, then an 8-digit counter: its short form keeps
 * what tells calls apart, the process's first digits and the counter ("fc-1b61…0003").
 */
export function shortId(id: string, length = 9): string {
  const call = /^fc-([0-9a-f]{12})([0-9a-f]{8})$/.exec(id);
  if (call !== null) {
    const counter = call[2].replace(/^0+(?=[0-9a-f]{4})/, '');
    return `fc-${call[1].slice(0, 4)}…${counter}`;
  }
  return id.length > length ? id.slice(0, length) : id;
}
