/** Models as the server sends them, with only what a test changes spelled out. */

import { ICall, IContainer, ILogLine, ILogs, IOwner, IPool } from '../models';

export function owner(overrides: Partial<IOwner> = {}): IOwner {
  return {
    kernel_id: '1b61edf8-0000-4000-8000-000000000001',
    notebook: 'sweep.ipynb',
    name: 'sweep.ipynb',
    pid: 4242,
    host: 'box',
    app: null,
    ...overrides
  };
}

export function pool(overrides: Partial<IPool> = {}): IPool {
  return {
    id: 'pl-000000000001',
    function: 'evaluate_model',
    function_id: 'f00d',
    settings: {
      min_containers: 0,
      max_containers: 8,
      buffer_containers: 1,
      scaledown_window: 60
    },
    status: 'idle',
    backlog: 0,
    num_running_inputs: 0,
    num_total_runners: 0,
    input_headroom: 0,
    containers: {
      waiting: 0,
      starting: 0,
      idle: 0,
      busy: 0,
      unresponsive: 0,
      draining: 0
    },
    done: 0,
    failed: 0,
    workers: [],
    gpus: [],
    image: null,
    gpu: null,
    stopped: false,
    cap_holders: [],
    events: [],
    owner: owner(),
    ...overrides
  };
}

export function container(overrides: Partial<IContainer> = {}): IContainer {
  return {
    id: 'wk-00000001',
    name: null,
    image: null,
    state: 'busy',
    waiting_reason: null,
    pid: 4242,
    uptime: 12.5,
    running_inputs: 1,
    inputs: [{ call_id: 'fc-000000000001', index: 3 }],
    waiting_on_calls: false,
    gpus: [],
    stats: {},
    ...overrides
  };
}

export function call(overrides: Partial<ICall> = {}): ICall {
  return {
    id: 'fc-000000000001',
    pool_id: 'pl-000000000001',
    function: 'evaluate_model',
    kind: 'map',
    seq: 1_700_000_000_000_000,
    created: 1_700_000_000,
    total: 100,
    submitted: 100,
    done: 0,
    failed: 0,
    cancelled: false,
    finished: false,
    detached: false,
    owner: owner(),
    parent: null,
    children: [],
    ...overrides
  };
}

export function logLine(text: string, index: number | null = 0): ILogLine {
  return {
    time: index === null ? null : 1_700_000_000 + (index ?? 0),
    call_id: index === null ? null : 'fc-0123456789ab00000001',
    index,
    text
  };
}

export function logs(overrides: Partial<ILogs> = {}): ILogs {
  return {
    container_id: 'wk-00000001',
    pool_id: 'pl-000000000001',
    tail: 200,
    logs: '',
    lines: [],
    cursor: 0,
    skipped: false,
    ...overrides
  };
}
