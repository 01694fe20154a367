/**
 * The state of a map's notebook display (`application/vnd.nbscale.map+json`), as the
 * kernel sends it (`IMapState`, generated from the server's models), and what the renderer
 * decides from it: the bar's segments, whether its buttons may act, and the final state of
 * a map whose kernel stopped before the map ended. Pure functions, tested with jest.
 */

import { ICall, IMapState } from './models';

export const MAP_MIME = 'application/vnd.nbscale.map+json';

/** The state in a MIME bundle, or null when it is not one this renderer can draw. */
export function readState(value: unknown): IMapState | null {
  if (typeof value !== 'object' || value === null) {
    return null;
  }
  const state = value as Partial<IMapState>;
  if (
    state.version !== 1 ||
    typeof state.function !== 'string' ||
    typeof state.counts !== 'object' ||
    !Array.isArray(state.rows)
  ) {
    return null;
  }
  return state as IMapState;
}

export interface ISegment {
  name: 'done' | 'failed' | 'cancelled' | 'running';
  /** Of the bar's width, 0 to 100. */
  percent: number;
  count: number;
}

/** The bar's segments, one per state with inputs; none while the total is unknown. */
export function segments(state: IMapState): ISegment[] {
  const total = state.counts.total;
  if (total === null || total <= 0 || state.percent === null) {
    return [];
  }
  const names: ISegment['name'][] = ['done', 'failed', 'cancelled', 'running'];
  return names
    .map(name => ({
      name,
      count: state.counts[name],
      percent: (100 * state.counts[name]) / total
    }))
    .filter(segment => segment.count > 0);
}

/** "12%", or "" while the total is unknown (no percentage that could only guess). */
export function percentLabel(state: IMapState): string {
  return state.percent === null ? '' : `${Math.floor(state.percent)}%`;
}

export interface IControls {
  enabled: boolean;
  /** Why the buttons are disabled, for their tooltip; '' when they are enabled. */
  reason: string;
}

/**
 * Whether Cancel and Detach may act: they go to the Jupyter server's control plane, so the
 * map must run there, and be running.
 */
export function controls(state: IMapState): IControls {
  if (state.final) {
    return { enabled: false, reason: 'This map has ended.' };
  }
  if (state.call_id === null) {
    return { enabled: false, reason: 'This map has not sent its inputs yet.' };
  }
  if (state.control_plane !== 'server') {
    return {
      enabled: false,
      reason:
        "This kernel runs its own control plane (the Jupyter server's nbscale extension " +
        'is not in use): interrupt the kernel to stop the map.'
    };
  }
  return { enabled: true, reason: '' };
}

/**
 * The final state of a map whose kernel stopped (restarted, shut down, or gone with a
 * closed notebook) before the map ended: its last counts, or the control plane's when it
 * still knows the call, and a summary that says so.
 */
export function cutShort(state: IMapState, call: ICall | null): IMapState {
  const counts = { ...state.counts };
  if (call !== null) {
    counts.done = call.done;
    counts.failed = call.failed;
  }
  const total = counts.total ?? counts.submitted;
  counts.cancelled = Math.max(0, total - counts.done - counts.failed);
  counts.running = 0;
  counts.pending = 0;
  const outcome = 'cut short: the kernel stopped before the map ended';
  let summary = `${state.function}: ${total.toLocaleString('en-US')} inputs · ${counts.done.toLocaleString('en-US')} done`;
  if (counts.failed > 0) {
    summary += ` · ${counts.failed.toLocaleString('en-US')} failed`;
  }
  summary += ` · ${outcome}`;
  const rows = state.rows.map(row =>
    ['running', 'queued', 'retrying', 'pending'].includes(row.status)
      ? { ...row, status: 'cancelled' }
      : row
  );
  return {
    ...state,
    status: 'lost',
    final: true,
    outcome,
    counts,
    // of the inputs that ran: the rest never will
    percent:
      total > 0 ? (100 * (counts.done + counts.failed)) / total : state.percent,
    eta: null,
    summary,
    rows
  };
}

/** The text/html that stays with a cut-short map in the saved notebook. */
export function summaryHtml(state: IMapState): string {
  const escape = (text: string): string =>
    text
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/'/g, '&#x27;')
      .replace(/"/g, '&quot;');
  return (
    "<div class='nbscale-map' style='font-family:monospace;font-size:12px' " +
    `data-status='${escape(state.status)}'><div><span style='color:#c62828'>✘</span> ` +
    `${escape(state.summary ?? state.function)}</div></div>`
  );
}

/** Seconds after the map's start, in words: "+1.25 s". */
export function startLabel(seconds: number | null): string {
  return seconds === null ? '–' : `+${seconds.toFixed(2)} s`;
}

/** A duration with the precision that fits: "85 µs", "4.2 ms", "120 ms", "1.5 s", "12 s". */
export function durationLabel(seconds: number | null): string {
  if (seconds === null) {
    return '–';
  }
  if (seconds < 0.001) {
    return `${Math.round(seconds * 1e6)} µs`;
  }
  if (seconds < 0.01) {
    return `${(seconds * 1e3).toFixed(1)} ms`;
  }
  if (seconds < 1) {
    return `${Math.round(seconds * 1e3)} ms`;
  }
  return seconds < 10 ? `${seconds.toFixed(1)} s` : `${Math.round(seconds)} s`;
}
