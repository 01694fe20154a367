/**
 * A call in the panel: its function and kind, a progress bar with failures, its counts,
 * a button that copies the `FunctionCall.from_id(...)` line that gets its results from
 * another kernel, and Cancel (which asks first). The call graph is drawn as nesting: the
 * calls a call's inputs made (code on a worker calling functions) are listed, indented,
 * under it, and a row says which input made it and how many calls its own inputs made.
 */

import { Clipboard } from '@jupyterlab/apputils';
import { CommandRegistry } from '@lumino/commands';
import { copyIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { ICallNode } from './arrange';
import { CommandIDs } from './commands';
import {
  callProgress,
  formatCount,
  fromIdCode,
  isCancellable,
  shortId
} from './format';
import { ICall } from './models';

/** How long the copy button says "copied" (ms). */
const COPIED_FOR = 2000;
/** Nested calls listed under a call; the others are counted (a scatter makes hundreds). */
const CHILDREN_SHOWN = 5;

/** Calls, each with the calls its inputs made nested under it. */
export function CallList(props: {
  nodes: ICallNode[];
  commands: CommandRegistry;
  /** Under a parent call: at most `CHILDREN_SHOWN`, the rest counted. */
  nested?: boolean;
}): JSX.Element {
  const { nodes, commands, nested = false } = props;
  const shown = nested ? nodes.slice(0, CHILDREN_SHOWN) : nodes;
  const more = nodes.length - shown.length;
  return (
    <ul
      className={`nbscale-Calls${nested ? ' nbscale-Calls-nested' : ''}`}
      aria-label={nested ? 'nested calls' : 'calls'}
    >
      {shown.map(node => (
        <CallRow
          key={node.entry.call.id}
          node={node}
          commands={commands}
          nested={nested}
        />
      ))}
      {more > 0 && (
        <li className="nbscale-Calls-more">
          and {formatCount(more)} more nested calls
        </li>
      )}
    </ul>
  );
}

function CallRow(props: {
  node: ICallNode;
  commands: CommandRegistry;
  nested: boolean;
}): JSX.Element {
  const { node, commands, nested } = props;
  const call = node.entry.call;
  const progress = callProgress(call);
  const total = call.total ?? 0;
  const percent = (n: number) => `${((n / total) * 100).toFixed(1)}%`;
  return (
    <li
      className={`nbscale-Call nbscale-Call-${progress.state}`}
      data-call-id={call.id}
      data-state={progress.state}
      data-parent-call-id={call.parent?.call_id}
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
      <CallGraphLine call={call} nested={nested} />
      {node.children.length > 0 && (
        <CallList nodes={node.children} commands={commands} nested />
      )}
    </li>
  );
}

/**
 * Where a call sits in the call graph: the input that made it (named with its call where
 * that call is not the one it is nested under), and how many calls its inputs made.
 */
function CallGraphLine(props: {
  call: ICall;
  nested: boolean;
}): JSX.Element | null {
  const { call, nested } = props;
  const parent = call.parent;
  const children = call.children.length;
  if (parent === null && children === 0) {
    return null;
  }
  return (
    <div className="nbscale-Call-graph">
      {parent !== null && (
        <span
          className="nbscale-Call-parent"
          data-parent-call-id={parent.call_id}
          data-parent-index={parent.index}
          title={`Called by input ${parent.index} of ${parent.call_id}`}
        >
          from {nested ? '' : `${shortId(parent.call_id)} `}input {parent.index}
        </span>
      )}
      {children > 0 && (
        <span className="nbscale-Call-children" data-children={children}>
          {formatCount(children)} nested call{children === 1 ? '' : 's'}
        </span>
      )}
    </div>
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
