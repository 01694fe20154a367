/**
 * The geometry of a pool's chart: pool size and pending inputs over the last minutes, as
 * SVG polyline points, each series on a y scale of its own (3 containers beside 40,000
 * pending inputs would otherwise lie flat on the axis). Pure, so the jest tests check the
 * numbers without a DOM.
 */

import { ISample } from './state';

export interface IChartGeometry {
  /** `points` attribute of the pool-size polyline. */
  size: string;
  /** `points` attribute of the pending-inputs polyline. */
  pending: string;
  /** The value at the top of the chart for the pool size... */
  topSize: number;
  /** ... and for the pending inputs. */
  topPending: number;
  /** Seconds the x axis spans. */
  span: number;
}

/**
 * Scale `samples` into a `width` x `height` box: time runs from `now - window` (left) to
 * `now` (right); each series has its own y axis, from 0 (bottom) to its largest value in
 * the window (at least 1; top), `inset` inside the box so that a line along an edge stays
 * visible. The last value is held to `now`, so a series that stopped changing runs to the
 * edge.
 */
export function chartGeometry(
  samples: ISample[],
  now: number,
  window: number,
  width: number,
  height: number,
  inset = 1.5
): IChartGeometry {
  const start = now - window;
  const visible = samples.filter(s => s.t >= start);
  // Carry the value from before the window to its left edge.
  const before = samples.filter(s => s.t < start).pop();
  if (before !== undefined) {
    visible.unshift({ ...before, t: start });
  }
  const last = visible[visible.length - 1];
  if (last !== undefined && last.t < now) {
    visible.push({ ...last, t: now });
  }
  const x = (t: number) => round(((t - start) / window) * width);
  const span = height - 2 * inset;
  const top = (pick: (s: ISample) => number) =>
    Math.max(1, ...visible.map(pick));
  const line = (pick: (s: ISample) => number, max: number) =>
    visible
      .map(s => `${x(s.t)},${round(inset + span - (pick(s) / max) * span)}`)
      .join(' ');
  const topSize = top(s => s.size);
  const topPending = top(s => s.pending);
  return {
    size: line(s => s.size, topSize),
    pending: line(s => s.pending, topPending),
    topSize,
    topPending,
    span: window / 1000
  };
}

/**
 * How much time the chart spans: from the first sample to now, at least `least` and at most
 * `most` ms, so a new pool's chart fills the box rather than a sliver at its right edge.
 */
export function chartWindow(
  samples: ISample[],
  now: number,
  most: number,
  least = 60 * 1000
): number {
  const first = samples[0];
  const age = first === undefined ? 0 : now - first.t;
  return Math.min(most, Math.max(least, age));
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
