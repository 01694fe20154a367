import {
  callProgress,
  containerName,
  describeContainer,
  describeEvent,
  describeWorkerInputs,
  formatBounds,
  formatBytes,
  formatCapHolders,
  formatClock,
  formatContainers,
  formatCount,
  formatDuration,
  formatGpu,
  formatGpuCount,
  formatLauncher,
  formatSpares,
  formatRequest,
  formatSettings,
  formatWorkerInputs,
  fromIdCode,
  gpuUse,
  isCancellable,
  liveUptime,
  plural,
  shortId
} from '../format';
import { call, container, pool } from './fixtures';

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [45.9, '45s'],
    [65, '1m 05s'],
    [3599, '59m 59s'],
    [3600 * 2 + 4 * 60, '2h 04m'],
    [86400 * 3 + 7200, '3d 2h'],
    [-1, '–'],
    [NaN, '–']
  ])('%s s is %s', (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
  });
});

describe('formatBytes and counts', () => {
  it('uses binary units', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(40 * 1024 ** 3)).toBe('40.0 GiB');
  });

  it('separates thousands', () => {
    expect(formatCount(0)).toBe('0');
    expect(formatCount(999)).toBe('999');
    expect(formatCount(1234567)).toBe('1,234,567');
  });

  it('says one and many', () => {
    expect(plural(1, 'input')).toBe('1 input');
    expect(plural(2000, 'input')).toBe('2,000 inputs');
  });
});

describe('callProgress', () => {
  it('fills the bar with finished inputs over the total', () => {
    const p = callProgress(call({ total: 200, done: 40, failed: 10 }));
    expect(p.fraction).toBeCloseTo(0.25);
    expect(p.label).toBe('50 / 200 · 10 failed');
    expect(p.state).toBe('running');
  });

  it('has no fraction while the total is unknown', () => {
    const p = callProgress(call({ total: null, submitted: 30, done: 5 }));
    expect(p.fraction).toBeNull();
    expect(p.label).toBe('5 of 30+');
  });

  it('tells done, failed and cancelled calls apart', () => {
    expect(callProgress(call({ done: 100, finished: true })).state).toBe(
      'done'
    );
    expect(
      callProgress(call({ done: 99, failed: 1, finished: true })).state
    ).toBe('failed');
    const cancelled = callProgress(
      call({ done: 3, cancelled: true, finished: true })
    );
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.label).toBe('3 / 100 · cancelled');
  });

  it('offers cancel only for calls still running', () => {
    expect(isCancellable(call())).toBe(true);
    expect(isCancellable(call({ finished: true }))).toBe(false);
    expect(isCancellable(call({ cancelled: true }))).toBe(false);
  });
});

describe('pools', () => {
  it('lists containers by state, busiest first, without empty states', () => {
    expect(
      formatContainers({
        waiting: 0,
        starting: 1,
        idle: 2,
        busy: 3,
        unresponsive: 1,
        draining: 0
      })
    ).toBe('3 busy · 1 unresponsive · 2 idle · 1 starting');
    expect(
      formatContainers({
        waiting: 2,
        starting: 0,
        idle: 0,
        busy: 1,
        unresponsive: 0,
        draining: 0
      })
    ).toBe('1 busy · 2 waiting for resources');
    expect(
      formatContainers({
        waiting: 0,
        starting: 0,
        idle: 0,
        busy: 0,
        unresponsive: 0,
        draining: 0
      })
    ).toBe('no containers');
  });

  it('puts the size against the bounds', () => {
    const containers = {
      waiting: 0,
      starting: 1,
      idle: 0,
      busy: 2,
      unresponsive: 0,
      draining: 1
    };
    expect(formatBounds(pool({ num_total_runners: 3, containers }))).toBe(
      '3 of max 8: 2 busy · 1 starting · 1 draining'
    );
    const uncapped = pool();
    uncapped.settings.max_containers = null;
    expect(formatBounds(uncapped)).toBe('0 (no max): no containers');
  });

  it('words the settings', () => {
    expect(
      formatSettings({
        min_containers: 1,
        max_containers: null,
        buffer_containers: 0,
        scaledown_window: 90
      })
    ).toBe('min 1 · max ∞ · buffer 0 · scaledown 1m 30s');
  });
});

describe('GPUs', () => {
  it('shows what NVML reported', () => {
    expect(
      formatGpu({
        index: 0,
        name: 'NVIDIA A100',
        utilization: 35,
        memory_used: 10 * 1024 ** 3,
        memory_total: 40 * 1024 ** 3
      })
    ).toBe('0: NVIDIA A100 · 35% · 10.0 GiB / 40.0 GiB');
    expect(formatGpu({ uuid: 'GPU-1', memory_total: 1024 ** 3 })).toBe(
      'GPU-1 · 1.0 GiB'
    );
  });

  it('joins each GPU of a container with its last sample', () => {
    const gib = 1024 ** 3;
    const worker = container({
      gpus: [
        { index: 0, uuid: 'GPU-a', name: 'A100', memory_total: 40 * gib },
        { index: 1, uuid: 'GPU-b', name: 'A100', memory_total: 40 * gib }
      ],
      stats: {
        gpus: [
          {
            uuid: 'GPU-b',
            utilization: 80,
            memory_used: 20 * gib,
            memory_total: 40 * gib
          }
        ]
      }
    });
    expect(gpuUse(worker).map(formatGpu)).toEqual([
      '0: A100 · 40.0 GiB',
      '1: A100 · 80% · 20.0 GiB / 40.0 GiB'
    ]);
    expect(gpuUse(container())).toEqual([]);
  });

  it('counts a pool GPUs by model', () => {
    expect(formatGpuCount([])).toBe('no GPU');
    expect(
      formatGpuCount([{ name: 'A100' }, { name: 'A100' }, { name: 'T4' }])
    ).toBe('2 × A100, 1 × T4');
  });
});

describe('describeEvent', () => {
  it('words each kind of event, with short ids', () => {
    expect(
      describeEvent({
        type: 'container-stopped',
        pool_id: 'pl-1',
        container_id: 'wk-1a2b3c4d5e6f',
        exit_code: 137
      })
    ).toBe('wk-1a2b3c4d stopped (exit 137)');
    expect(
      describeEvent({
        type: 'container-stopped',
        pool_id: 'pl-1',
        container_id: 'wk-1',
        exit_code: null
      })
    ).toBe('wk-1 stopped');
    expect(
      describeEvent({
        type: 'container-waiting',
        pool_id: 'pl-1',
        container_id: 'wk-2'
      })
    ).toBe('wk-2 waiting for resources');
    expect(
      describeEvent({ type: 'pool-stopped', pool_id: 'pl-0123456789ab' })
    ).toBe('pool pl-01234567 stopped');
    expect(
      describeEvent({ type: 'app-deployed', pool_id: '', app: 'etl' })
    ).toBe('app etl deployed');
    expect(
      describeEvent({
        type: 'call-cancelled',
        pool_id: 'pl-1',
        call_id: 'fc-9'
      })
    ).toBe('call fc-9 cancelled');
  });

  it('shortens ids', () => {
    expect(shortId('wk-1a2b3c4d5e6f')).toBe('wk-1a2b3c');
    expect(shortId('wk-1')).toBe('wk-1');
  });

  it('keeps the counter of a call id: two calls of one kernel never look alike', () => {
    const first = shortId('fc-1b61edf8a9c000000000', 11);
    const second = shortId('fc-1b61edf8a9c000000001', 11);
    expect(first).toBe('fc-1b61…0000');
    expect(second).toBe('fc-1b61…0001');
    expect(shortId('fc-1b61edf8a9c0000123ab')).toBe('fc-1b61…123ab');
    expect(
      describeWorkerInputs(1, [
        { call_id: 'fc-1b61edf8a9c00000002a', index: 3 }
      ])
    ).toBe('input 3 of fc-1b61…002a');
  });
});

describe('formatRequest', () => {
  it('names the image and the GPU request, fallbacks joined', () => {
    expect(formatRequest('nbscale/ml:3f2a', 'A100:2')).toBe(
      'image nbscale/ml:3f2a · GPU A100:2'
    );
    expect(formatRequest(null, ['H100', 'A100'])).toBe('GPU H100 or A100');
    expect(formatRequest(null, null)).toBe('');
  });
});

describe('formatWorkerInputs', () => {
  it('shows the running input and how many wait behind it, in a narrow column', () => {
    const inputs = [
      { call_id: 'fc-0123456789ab00000001', index: 3 },
      { call_id: 'fc-0123456789ab00000001', index: 4 }
    ];
    expect(formatWorkerInputs(0, [])).toBe('–');
    expect(formatWorkerInputs(2, [])).toBe('2 running');
    expect(formatWorkerInputs(1, inputs.slice(0, 1))).toBe('#3');
    expect(formatWorkerInputs(5, inputs)).toBe('#3 +4');
    expect(describeWorkerInputs(5, inputs)).toBe(
      'input 3 of fc-0123…0001, 4 more queued'
    );
    expect(describeWorkerInputs(0, [])).toBe('no input');
  });
});

describe('containers', () => {
  it('names a Docker container and its image, a process by id and pid', () => {
    const docker = container({
      id: 'wk-7a4dbd73bd8e',
      name: 'nbscale-wk-7a4dbd73bd8e',
      image: 'nbscale/worker:d6d9',
      pid: 7
    });
    expect(containerName(docker)).toBe('nbscale-wk-7a4dbd73bd8e');
    expect(describeContainer(docker)).toBe(
      'container nbscale-wk-7a4dbd73bd8e · image nbscale/worker:d6d9 · pid 7 in it'
    );
    const process = container({ id: 'wk-1', pid: 4242 });
    expect(containerName(process)).toBe('wk-1');
    expect(describeContainer(process)).toBe('process wk-1 · pid 4242');
  });

  it('ticks uptimes from when the pool was received', () => {
    const worker = container({ uptime: 12.5 });
    expect(liveUptime(worker, 1000, 4000)).toBe(15.5);
    expect(liveUptime(worker, 5000, 4000)).toBe(12.5);
    expect(liveUptime(worker, undefined, 4000)).toBe(12.5);
  });
});

describe('the control plane and its calls', () => {
  it('says who holds the total cap', () => {
    expect(
      formatCapHolders([
        {
          pool_id: 'pl-1',
          function: 'square',
          waiting: 0,
          starting: 0,
          idle: 0,
          busy: 2
        },
        {
          pool_id: 'pl-2',
          function: 'other',
          waiting: 3,
          starting: 1,
          idle: 1,
          busy: 0
        }
      ])
    ).toBe('square: 2 busy · other: 1 idle, 1 starting, 3 waiting');
  });

  it('names the launcher', () => {
    const status = { version: '0.1.0', launcher_reason: 'because' };
    expect(formatLauncher({ ...status, launcher: 'slurm' })).toBe('Slurm jobs');
    expect(formatLauncher({ ...status, launcher: 'docker' })).toBe(
      'Docker containers'
    );
    expect(formatLauncher({ ...status, launcher: 'process' })).toBe(
      'local processes'
    );
  });

  it('counts the warm spares', () => {
    expect(formatSpares(1)).toBe(
      "1 warm spare container waits for a new pool's first worker"
    );
    expect(formatSpares(2)).toBe(
      "2 warm spare containers wait for a new pool's first worker"
    );
  });

  it('writes the line that gets a call from another kernel', () => {
    expect(fromIdCode('fc-1b61edf8a9c000000003')).toBe(
      'nbscale.FunctionCall.from_id("fc-1b61edf8a9c000000003")'
    );
  });

  it('shows a log time on the local clock', () => {
    const at = new Date(2025, 0, 2, 3, 4, 5).getTime() / 1000;
    expect(formatClock(at)).toBe('03:04:05');
  });
});
