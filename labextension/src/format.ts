/**
 * How the sidebar words numbers: durations, sizes, counts, progress, containers and GPUs.
 * Pure functions of the models, tested with jest.
 */

import {
  IAutoscalerSettings,
  ICall,
  IChangeEvent,
  IContainer,
  IContainersByState,
  IGpu,
  IInputRef,
  IPool
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

/** A pool's size against its bounds: "3 of max 8 (min 0, buffer 1)". */
export function formatBounds(pool: IPool): string {
  const s = pool.settings;
  const max = s.max_containers === null ? 'no max' : `max ${s.max_containers}`;
  return `${pool.num_total_runners} of ${max} (min ${s.min_containers}, buffer ${s.buffer_containers})`;
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

/** The inputs a worker holds: "input 3 (fc-1a2b)", "input 3 (fc-1a2b) + 4 queued", "–". */
export function formatWorkerInputs(count: number, inputs: IInputRef[]): string {
  if (count === 0 || inputs.length === 0) {
    return count > 0 ? `${count} running` : '–';
  }
  const first = inputs[0];
  const head = `input ${first.index} (${shortId(first.call_id, 7)})`;
  return count > 1 ? `${head} + ${count - 1} queued` : head;
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
      return `call ${shortId(event.call_id ?? '', 11)} cancelled`;
  }
}

/** A short id for narrow columns: "wk-1a2b3c4d5e6f" -> "wk-1a2b3c". */
export function shortId(id: string, length = 9): string {
  return id.length > length ? id.slice(0, length) : id;
}
