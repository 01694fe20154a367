/**
 * A call in the panel: its function and kind, a progress bar with failures, its counts,
 * a button that copies the `FunctionCall.from_id(...)` line that gets its results from
 * another kernel, and Cancel (which asks first).
 */

import { Clipboard } from '@jupyterlab/apputils';
import { CommandRegistry } from '@lumino/commands';
import { copyIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { CommandIDs } from './commands';
import { callProgress, fromIdCode, isCancellable, shortId } from './format';
import { ICallEntry } from './state';

/** How long the copy button says "copied" (ms). */
const COPIED_FOR = 2000;

export function CallRow(props: {
  entry: ICallEntry;
  commands: CommandRegistry;
}): JSX.Element {
  const { entry, commands } = props;
  const call = entry.call;
  const progress = callProgress(call);
  const total = call.total ?? 0;
  const percent = (n: number) => `${((n / total) * 100).toFixed(1)}%`;
  return (
    <li
      className={`nbscale-Call nbscale-Call-${progress.state}`}
      data-call-id={call.id}
      data-state={progress.state}
    >
      <div className="nbscale-Call-title">
        <span className="nbscale-Call-function" title={call.function}>
          {call.function}
        </span>
        <span className="nbscale-Call-kind">.{call.kind}</span>
        <span className="nbscale-Id" title={call.id}>
          {shortId(call.id)}
        </span>
      </div>
      <div
        className={`nbscale-Progress${progress.fraction === null ? ' nbscale-mod-unknown' : ''}`}
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={call.total ?? undefined}
        aria-valuenow={call.done + call.failed}
      >
        <div
          className="nbscale-Progress-done"
          style={{ width: total > 0 ? percent(call.done) : '100%' }}
        />
        {total > 0 && call.failed > 0 && (
          <div
            className="nbscale-Progress-failed"
            style={{ width: percent(call.failed) }}
          />
        )}
      </div>
      <div className="nbscale-Call-line">
        <span
          className="nbscale-Call-label"
          data-done={call.done}
          data-failed={call.failed}
          data-total={call.total ?? ''}
        >
          {progress.label}
        </span>
        <CopyFromId callId={call.id} />
        {isCancellable(call) && (
          <button
            className="jp-Button jp-mod-styled jp-mod-warn nbscale-Cancel"
            onClick={() =>
              void commands.execute(CommandIDs.cancelCall, { id: call.id })
            }
          >
            Cancel
          </button>
        )}
      </div>
    </li>
  );
}

function CopyFromId(props: { callId: string }): JSX.Element {
  const code = fromIdCode(props.callId);
  const [copied, setCopied] = React.useState(false);
  React.useEffect(() => {
    if (!copied) {
      return;
    }
    const timer = window.setTimeout(() => setCopied(false), COPIED_FOR);
    return () => window.clearTimeout(timer);
  }, [copied]);
  return (
    <button
      className="nbscale-IconButton nbscale-CopyId"
      title={`Copy ${code}: it gets this call's results in another kernel`}
      aria-label="Copy FunctionCall.from_id(...)"
      onClick={() => {
        Clipboard.copyToSystem(code);
        setCopied(true);
      }}
    >
      {copied ? (
        <span className="nbscale-Copied">copied</span>
      ) : (
        <copyIcon.react tag="span" />
      )}
    </button>
  );
}
