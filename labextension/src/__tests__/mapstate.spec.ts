/** The map view's decisions: its bar, its buttons, and a map whose kernel stopped. */

import {
  controls,
  cutShort,
  durationLabel,
  percentLabel,
  readState,
  segments,
  summaryHtml
} from '../mapstate';
import { IMapState } from '../models';
import { call } from './fixtures';

function state(overrides: Partial<IMapState> = {}): IMapState {
  return {
    version: 1,
    function: 'square',
    call_id: 'fc-1b61edf8a9c000000003',
    control_plane: 'server',
    kernel_id: '1b61edf8-0000-4000-8000-000000000001',
    status: 'running',
    final: false,
    outcome: null,
    counts: {
      total: 2000,
      submitted: 512,
      done: 255,
      failed: 5,
      cancelled: 0,
      running: 4,
      pending: 1736,
      retries: 0
    },
    percent: 13,
    rate: 120,
    elapsed: 2.1,
    eta: 14,
    started: 1700000000,
    counts_text: '255/2,000 done · 5 failed · 4 running · 1,736 pending',
    pool_text: 'pool: 4 containers (0 starting, 4 busy, 0 idle)',
    throttled: false,
    summary: null,
    resume: null,
    rows: [
      {
        index: 260,
        status: 'running',
        worker: 'wk-1',
        attempt: 1,
        duration: null,
        time: '',
        summary: '',
        output: 'step 1\n',
        traceback: '',
        attempts: [
          {
            number: 1,
            worker: 'wk-1',
            start: 2,
            duration: null,
            outcome: 'running'
          }
        ]
      }
    ],
    failures: [],
    ...overrides
  };
}

describe('readState', () => {
  it('takes the states this renderer draws, and nothing else', () => {
    expect(readState(state())).not.toBeNull();
    expect(readState({ ...state(), version: 2 })).toBeNull();
    expect(readState('square')).toBeNull();
    expect(readState(null)).toBeNull();
  });
});

describe('segments', () => {
  it('are the share of each state in the total', () => {
    expect(segments(state())).toEqual([
      { name: 'done', count: 255, percent: 12.75 },
      { name: 'failed', count: 5, percent: 0.25 },
      { name: 'running', count: 4, percent: 0.2 }
    ]);
    expect(percentLabel(state())).toBe('13%');
  });

  it('are none, and no percentage, while the total is unknown', () => {
    const unknown = state({
      percent: null,
      counts: { ...state().counts, total: null }
    });
    expect(segments(unknown)).toEqual([]);
    expect(percentLabel(unknown)).toBe('');
  });
});

describe('controls', () => {
  it('act on a running map of the server control plane', () => {
    expect(controls(state())).toEqual({ enabled: true, reason: '' });
  });

  it('say why they cannot act', () => {
    expect(controls(state({ final: true })).reason).toBe('This map has ended.');
    expect(controls(state({ call_id: null })).enabled).toBe(false);
    expect(controls(state({ control_plane: 'embedded' })).reason).toMatch(
      /runs its own control plane/
    );
  });
});

describe('cutShort', () => {
  it('ends a map whose kernel stopped, with the counts the control plane last had', () => {
    const final = cutShort(state(), call({ done: 300, failed: 6 }));
    expect(final.final).toBe(true);
    expect(final.status).toBe('lost');
    expect(final.eta).toBeNull();
    expect(final.percent).toBeCloseTo(15.3); // the inputs that ran, not the cancelled
    expect(percentLabel(final)).toBe('15%');
    expect(final.counts).toMatchObject({
      done: 300,
      failed: 6,
      cancelled: 1694,
      running: 0,
      pending: 0
    });
    expect(final.summary).toBe(
      'square: 2,000 inputs · 300 done · 6 failed · cut short: the kernel stopped before the map ended'
    );
    expect(final.rows[0].status).toBe('cancelled');
    expect(summaryHtml(final)).toContain('cut short: the kernel stopped');
  });

  it('keeps its own last counts when the control plane no longer knows the call', () => {
    const final = cutShort(state(), null);
    expect(final.counts.done).toBe(255);
    expect(final.counts.cancelled).toBe(1740);
  });
});

describe('durationLabel', () => {
  it.each([
    [0.000085, '85 µs'],
    [0.0042, '4.2 ms'],
    [0.12, '120 ms'],
    [1.5, '1.5 s'],
    [12.4, '12 s'],
    [null, '–']
  ])('%p -> %s', (seconds, label) => {
    expect(durationLabel(seconds)).toBe(label);
  });
});
