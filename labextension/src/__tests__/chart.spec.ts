import { chartGeometry, chartWindow } from '../chart';
import { describeStatus, isFailure, statusOfFailure } from '../connection';

describe('chartGeometry', () => {
  it('maps time to x and each series to a y scale of its own', () => {
    const g = chartGeometry(
      [
        { t: 0, size: 0, pending: 10 },
        { t: 5000, size: 5, pending: 0 }
      ],
      10_000,
      10_000,
      100,
      20,
      0
    );
    expect(g.topSize).toBe(5);
    expect(g.topPending).toBe(10);
    // The last value is held to now, at the right edge.
    expect(g.size).toBe('0,20 50,0 100,0');
    expect(g.pending).toBe('0,0 50,20 100,20');
    expect(g.span).toBe(10);
  });

  it('keeps a few containers visible beside thousands of pending inputs', () => {
    // One scale put 3 containers at 0.1% of the height: a line on the axis.
    const g = chartGeometry(
      [
        { t: 0, size: 1, pending: 40_000 },
        { t: 5000, size: 3, pending: 20_000 }
      ],
      10_000,
      10_000,
      100,
      20,
      0
    );
    expect(g.size).toBe('0,13.3 50,0 100,0');
    expect(g.pending).toBe('0,0 50,10 100,10');
  });

  it('draws lines along the edges inside the box', () => {
    const g = chartGeometry(
      [{ t: 0, size: 2, pending: 0 }],
      10_000,
      10_000,
      100,
      20
    );
    expect(g.size).toBe('0,1.5 100,1.5');
    expect(g.pending).toBe('0,18.5 100,18.5');
  });

  it('carries the value from before the window to its left edge', () => {
    const g = chartGeometry(
      [
        { t: 0, size: 2, pending: 0 },
        { t: 15_000, size: 4, pending: 0 }
      ],
      20_000,
      10_000,
      100,
      20,
      0
    );
    expect(g.size).toBe('0,10 50,0 100,0');
  });

  it('draws nothing without samples and never divides by zero', () => {
    const g = chartGeometry([], 1000, 1000, 100, 20);
    expect(g.size).toBe('');
    expect(g.topSize).toBe(1);
    expect(g.topPending).toBe(1);
  });
});

describe('chartWindow', () => {
  it('spans from the first sample to now, within bounds', () => {
    const at = (t: number) => ({ t, size: 0, pending: 0 });
    expect(chartWindow([], 5000, 300_000)).toBe(60_000);
    expect(chartWindow([at(0)], 10_000, 300_000)).toBe(60_000);
    expect(chartWindow([at(0)], 120_000, 300_000)).toBe(120_000);
    expect(chartWindow([at(0)], 900_000, 300_000)).toBe(300_000);
  });
});

describe('connection status', () => {
  it('tells a missing extension from an unreachable server', () => {
    expect(statusOfFailure(404)).toBe('missing');
    expect(statusOfFailure(503)).toBe('stopped');
    expect(statusOfFailure(null)).toBe('unreachable');
    expect(statusOfFailure(500)).toBe('unreachable');
  });

  it('says what is wrong in one sentence, and nothing when connected', () => {
    expect(describeStatus('live')).toBeNull();
    expect(describeStatus('polling')).toBeNull();
    expect(describeStatus('missing', '404 Not Found')).toMatch(
      /^The nbscale server extension is not running in this Jupyter server \(404 Not Found\)\./
    );
    expect(describeStatus('unreachable')).toMatch(/cannot be reached/);
    expect(isFailure('stopped')).toBe(true);
    expect(isFailure('connecting')).toBe(false);
  });
});
