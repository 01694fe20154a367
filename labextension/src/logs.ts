/**
 * A container's output as the panel follows it while its row is open: the last lines,
 * then every second the lines written since the cursor of the answer before. Pure, tested
 * with jest; the panel does the polling.
 */

import { ILogLine, ILogs } from './models';

/** A line on show; `gap` marks where lines were left out (the panel fell behind). */
export interface ILogEntry extends ILogLine {
  gap?: boolean;
}

export interface ILogView {
  lines: ILogEntry[];
  /** Where to follow from (`?after=`); null when the launcher cannot follow a log. */
  cursor: number | null;
}

/** Lines kept on show per container; older ones scroll away. */
export const KEEP_LOG_LINES = 500;

/** How often an open log asks for what came since (ms). */
export const LOG_POLL_INTERVAL = 1000;

/** The view after `answer`: its lines appended, or the whole view for a first answer. */
export function followLogs(
  view: ILogView | null,
  answer: ILogs,
  keep = KEEP_LOG_LINES
): ILogView {
  if (view === null || view.cursor === null || answer.cursor === null) {
    // A first answer, or a launcher that cannot follow: the answer is all there is.
    return { lines: answer.lines.slice(-keep), cursor: answer.cursor };
  }
  const gap: ILogEntry[] = answer.skipped
    ? [{ time: null, call_id: null, index: null, text: '', gap: true }]
    : [];
  return {
    lines: [...view.lines, ...gap, ...answer.lines].slice(-keep),
    cursor: answer.cursor
  };
}

/** The `?tail=&after=` query of the next request for `view`. */
export function logsQuery(view: ILogView | null, tail: number): string {
  const after = view?.cursor ?? null;
  return after === null ? `tail=${tail}` : `tail=${tail}&after=${after}`;
}
