/**
 * A pool's containers: one row each (name, state, uptime that ticks, the input it runs),
 * laid out on one line where the panel is wide and on two where it is narrow, never
 * wrapping a cell; a click opens the container's details and follows its output.
 */

import { ServerConnection } from '@jupyterlab/services';
import * as React from 'react';

import {
  containerName,
  describeContainer,
  describeWorkerInputs,
  formatClock,
  formatDuration,
  formatGpu,
  formatWorkerInputs,
  gpuUse,
  liveUptime,
  shortId
} from './format';
import { ILogView, LOG_POLL_INTERVAL } from './logs';
import { IContainer, IPool } from './models';
import { SidebarModel } from './model';

export function ContainerList(props: {
  pool: IPool;
  model: SidebarModel;
  now: number;
}): JSX.Element | null {
  const { pool, model, now } = props;
  const [open, setOpen] = React.useState<string | null>(null);
  if (pool.workers.length === 0) {
    return null;
  }
  const received = model.state.received(pool.id);
  return (
    <div
      className="nbscale-Containers"
      role="table"
      aria-label={`containers of ${pool.function}`}
    >
      {pool.workers.map(worker => (
        <ContainerRow
          key={worker.id}
          worker={worker}
          model={model}
          uptime={liveUptime(worker, received, now)}
          open={open === worker.id}
          onToggle={() => setOpen(open === worker.id ? null : worker.id)}
        />
      ))}
    </div>
  );
}

function ContainerRow(props: {
  worker: IContainer;
  model: SidebarModel;
  uptime: number;
  open: boolean;
  onToggle: () => void;
}): JSX.Element {
  const { worker, model, uptime, open, onToggle } = props;
  return (
    <>
      <div
        role="row"
        tabIndex={0}
        aria-expanded={open}
        className={`nbscale-Container${open ? ' jp-mod-selected' : ''}`}
        data-container-id={worker.id}
        data-state={worker.state}
        title="Show its details and follow its output"
        onClick={onToggle}
        onKeyDown={event => {
          if (event.key === 'Enter' || event.key === ' ') {
            event.preventDefault();
            onToggle();
          }
        }}
      >
        <span
          role="cell"
          className="nbscale-Container-name"
          title={describeContainer(worker)}
        >
          {containerName(worker)}
          {worker.name === null && worker.pid !== null && (
            <span className="nbscale-Pid"> pid {worker.pid}</span>
          )}
        </span>
        <span role="cell" className="nbscale-Container-state">
          <span
            className={`nbscale-State nbscale-State-${worker.state}`}
            data-waiting-on-calls={worker.waiting_on_calls}
            title={
              worker.waiting_reason
                ? `queued for resources; the scheduler's reason: ${worker.waiting_reason}`
                : worker.waiting_on_calls
                  ? 'busy: its input waits on the functions it called, and lent its slot to them meanwhile'
                  : undefined
            }
          >
            {worker.waiting_on_calls ? 'calling' : worker.state}
            {worker.waiting_reason ? ` (${worker.waiting_reason})` : ''}
          </span>
        </span>
        <span
          role="cell"
          className="nbscale-Container-uptime"
          title="uptime"
          data-uptime={Math.floor(uptime)}
        >
          {formatDuration(uptime)}
        </span>
        <span
          role="cell"
          className="nbscale-Container-inputs"
          title={describeWorkerInputs(worker.running_inputs, worker.inputs)}
        >
          {formatWorkerInputs(worker.running_inputs, worker.inputs)}
        </span>
      </div>
      {gpuUse(worker).map((gpu, i) => (
        <div key={gpu.uuid ?? i} className="nbscale-Gpu">
          {formatGpu(gpu)}
        </div>
      ))}
      {open && <ContainerLogs model={model} worker={worker} />}
    </>
  );
}

/** The container in full, and its output, followed while the row is open. */
function ContainerLogs(props: {
  model: SidebarModel;
  worker: IContainer;
}): JSX.Element {
  const { model, worker } = props;
  const view = useFollowedLogs(model, worker.id);
  const box = React.useRef<HTMLDivElement>(null);
  const atEnd = React.useRef(true);
  React.useLayoutEffect(() => {
    // Stay at the newest line, unless the reader scrolled up to read.
    if (box.current !== null && atEnd.current) {
      box.current.scrollTop = box.current.scrollHeight;
    }
  }, [view.lines]);
  return (
    <div className="nbscale-Logs">
      <div className="nbscale-Logs-about">{describeContainer(worker)}</div>
      {view.error !== null && (
        <span className="nbscale-Form-error">{view.error}</span>
      )}
      <div
        className="nbscale-Logs-lines"
        role="log"
        ref={box}
        onScroll={event => {
          const el = event.currentTarget;
          atEnd.current = el.scrollHeight - el.scrollTop - el.clientHeight < 4;
        }}
      >
        {view.lines === null ? (
          <span className="nbscale-Empty">Loading…</span>
        ) : view.lines.length === 0 ? (
          <span className="nbscale-Empty">(no output yet)</span>
        ) : (
          view.lines.map((line, i) =>
            line.gap ? (
              <div key={i} className="nbscale-Log-gap">
                … lines left out …
              </div>
            ) : (
              <div key={i} className="nbscale-Log">
                <time>{line.time === null ? '' : formatClock(line.time)}</time>
                <span
                  className="nbscale-Log-input"
                  data-index={line.index ?? ''}
                  title={
                    line.call_id === null
                      ? 'outside any input'
                      : `input ${line.index} of ${shortId(line.call_id)}`
                  }
                >
                  {line.index === null ? '' : `#${line.index}`}
                </span>
                <span className="nbscale-Log-text">{line.text}</span>
              </div>
            )
          )
        )}
      </div>
    </div>
  );
}

/** Poll a container's output every second while mounted: its lines, or the last error. */
function useFollowedLogs(
  model: SidebarModel,
  containerId: string
): { lines: ILogView['lines'] | null; error: string | null } {
  const [lines, setLines] = React.useState<ILogView['lines'] | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  React.useEffect(() => {
    let view: ILogView | null = null;
    let stopped = false;
    let timer = 0;
    const poll = async () => {
      try {
        view = await model.followLogs(containerId, view);
        if (!stopped) {
          setLines(view.lines);
          setError(null);
        }
      } catch (reason) {
        if (!stopped) {
          setError(reason instanceof Error ? reason.message : String(reason));
        }
        // The server forgot the container (gone a while ago): nothing more will come.
        stopped ||=
          reason instanceof ServerConnection.ResponseError &&
          reason.response.status === 404;
      }
      if (!stopped) {
        timer = window.setTimeout(() => void poll(), LOG_POLL_INTERVAL);
      }
    };
    void poll();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [model, containerId]);
  return { lines, error };
}
