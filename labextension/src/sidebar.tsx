/**
 * The nbscale panel in JupyterLab's left sidebar: pools (with their containers and chart),
 * recent calls, and the last lifecycle events, re-rendered on each change of the model.
 * Buttons run the plugin's commands, so the panel and the command palette act alike.
 */

import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { ReactWidget, refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { chartGeometry, chartWindow } from './chart';
import { ConnectionStatus, isFailure } from './connection';
import {
  callProgress,
  describeEvent,
  formatBounds,
  formatContainers,
  formatCount,
  formatDuration,
  formatGpu,
  formatGpuCount,
  formatRequest,
  formatSettings,
  formatWorkerInputs,
  gpuUse,
  isCancellable,
  shortId
} from './format';
import { IAutoscalerChanges, IContainer, IPool } from './models';
import { SidebarModel } from './model';
import { ICallEntry } from './state';
import {
  AutoscalerForm,
  formFromSettings,
  SettingName,
  validateAutoscaler
} from './validation';

/** The plugin's command ids. */
export namespace CommandIDs {
  export const open = 'nbscale:open';
  export const refresh = 'nbscale:refresh';
  export const updateAutoscaler = 'nbscale:update-autoscaler';
  export const stopPool = 'nbscale:stop-pool';
  export const cancelCall = 'nbscale:cancel-call';
}

/** The sidebar widget. */
export class NbscalePanel extends ReactWidget {
  constructor(model: SidebarModel, commands: CommandRegistry) {
    super();
    this._model = model;
    this._commands = commands;
    this.id = 'nbscale-sidebar';
    this.addClass('nbscale-Sidebar');
    model.changed.connect(this._onChanged, this);
  }

  get model(): SidebarModel {
    return this._model;
  }

  dispose(): void {
    this._model.changed.disconnect(this._onChanged, this);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.update();
  }

  protected render(): JSX.Element {
    return <Sidebar model={this._model} commands={this._commands} />;
  }

  private _onChanged(): void {
    // A hidden panel renders when it is shown again.
    if (this.isVisible) {
      this.update();
    }
  }

  private _model: SidebarModel;
  private _commands: CommandRegistry;
}

interface ISidebarProps {
  model: SidebarModel;
  commands: CommandRegistry;
}

const STATUS_LABEL: Record<ConnectionStatus, string> = {
  connecting: 'connecting',
  live: 'live',
  polling: 'polling',
  missing: 'unavailable',
  stopped: 'stopped',
  unreachable: 'unreachable'
};

function Sidebar(props: ISidebarProps): JSX.Element {
  const { model, commands } = props;
  const state = model.state;
  const failed = isFailure(model.status);
  return (
    <div className="nbscale-Sidebar-content">
      <header className="nbscale-Sidebar-header">
        <h2>nbscale</h2>
        <span
          className={`nbscale-Status nbscale-Status-${model.status}`}
          data-status={model.status}
          title={
            model.status === 'live'
              ? 'Changes are pushed over a WebSocket'
              : model.status === 'polling'
                ? 'The WebSocket is down: reading the REST API'
                : ''
          }
        >
          {STATUS_LABEL[model.status]}
        </span>
        <button
          className="nbscale-IconButton"
          title="Refresh"
          onClick={() => void commands.execute(CommandIDs.refresh)}
        >
          <refreshIcon.react tag="span" />
        </button>
      </header>
      {failed ? (
        <div className="nbscale-Message" role="alert">
          {model.message}
        </div>
      ) : (
        <>
          <section className="nbscale-Section">
            <h3>Pools</h3>
            {state.pools.length === 0 ? (
              <p className="nbscale-Empty">
                {model.status === 'connecting'
                  ? 'Connecting…'
                  : 'No pools yet: call a function of an nbscale.App (f.remote, f.map) to start one.'}
              </p>
            ) : (
              state.pools.map(pool => (
                <PoolCard
                  key={pool.id}
                  pool={pool}
                  model={model}
                  commands={commands}
                />
              ))
            )}
          </section>
          <section className="nbscale-Section">
            <h3>Calls</h3>
            {state.calls.length === 0 ? (
              <p className="nbscale-Empty">No calls.</p>
            ) : (
              <ul className="nbscale-Calls">
                {state.calls.map(entry => (
                  <CallRow
                    key={entry.call.id}
                    entry={entry}
                    commands={commands}
                  />
                ))}
              </ul>
            )}
          </section>
          <EventList model={model} />
        </>
      )}
    </div>
  );
}

interface IPoolProps {
  pool: IPool;
  model: SidebarModel;
  commands: CommandRegistry;
}

function Stat(props: {
  name: string;
  value: number;
  label: string;
}): JSX.Element {
  return (
    <span
      className="nbscale-Stat"
      data-stat={props.name}
      data-value={props.value}
    >
      <b>{formatCount(props.value)}</b> {props.label}
    </span>
  );
}

function PoolCard(props: IPoolProps): JSX.Element {
  const { pool, model, commands } = props;
  const [editing, setEditing] = React.useState(false);
  return (
    <div
      className={`nbscale-Pool${pool.stopped ? ' nbscale-mod-stopped' : ''}`}
      data-pool-id={pool.id}
    >
      <div className="nbscale-Pool-title">
        <span className="nbscale-Pool-function" title={pool.function_id}>
          {pool.function}
        </span>
        <span className="nbscale-Id">{shortId(pool.id, 11)}</span>
      </div>
      <div className="nbscale-Pool-status" title="What the autoscaler is doing">
        {pool.status}
      </div>
      <div className="nbscale-Pool-line">
        <span
          className="nbscale-Pool-size"
          data-stat="num_total_runners"
          data-value={pool.num_total_runners}
        >
          {formatBounds(pool)}
        </span>
        <span className="nbscale-Pool-gpus">{formatGpuCount(pool.gpus)}</span>
      </div>
      {(pool.image !== null || pool.gpu !== null) && (
        <div className="nbscale-Pool-line nbscale-Pool-request">
          {formatRequest(pool.image, pool.gpu)}
        </div>
      )}
      <div className="nbscale-Pool-line nbscale-Pool-containers">
        {formatContainers(pool.containers)}
      </div>
      <div className="nbscale-Pool-line nbscale-Pool-inputs">
        <Stat name="backlog" value={pool.backlog} label="pending" />
        <Stat
          name="num_running_inputs"
          value={pool.num_running_inputs}
          label="running"
        />
        <Stat name="done" value={pool.done} label="done" />
        <Stat name="failed" value={pool.failed} label="failed" />
      </div>
      <PoolChart model={model} poolId={pool.id} />
      <div className="nbscale-Pool-line nbscale-Pool-settings">
        <span data-settings={JSON.stringify(pool.settings)}>
          {formatSettings(pool.settings)}
        </span>
      </div>
      {editing ? (
        <SettingsForm
          pool={pool}
          commands={commands}
          onClose={() => setEditing(false)}
        />
      ) : (
        <div className="nbscale-Actions">
          <button
            className="jp-Button jp-mod-styled jp-mod-reject nbscale-Edit"
            onClick={() => setEditing(true)}
          >
            Scale…
          </button>
          <button
            className="jp-Button jp-mod-styled jp-mod-warn nbscale-Stop"
            disabled={pool.stopped && pool.num_total_runners === 0}
            onClick={() =>
              void commands.execute(CommandIDs.stopPool, { id: pool.id })
            }
          >
            Stop
          </button>
        </div>
      )}
      <ContainerTable pool={pool} model={model} />
    </div>
  );
}

const CHART_WIDTH = 240;
const CHART_HEIGHT = 48;

function PoolChart(props: {
  model: SidebarModel;
  poolId: string;
}): JSX.Element {
  const state = props.model.state;
  const now = state.updated ?? Date.now();
  const samples = state.history(props.poolId);
  const geometry = chartGeometry(
    samples,
    now,
    chartWindow(samples, now, state.historyWindow),
    CHART_WIDTH,
    CHART_HEIGHT
  );
  const minutes = Math.round(geometry.span / 60);
  return (
    <figure className="nbscale-Chart">
      <svg
        viewBox={`0 0 ${CHART_WIDTH} ${CHART_HEIGHT}`}
        preserveAspectRatio="none"
        role="img"
        aria-label={`pool size and pending inputs over the last ${minutes} minutes`}
      >
        <polyline className="nbscale-Chart-pending" points={geometry.pending} />
        <polyline className="nbscale-Chart-size" points={geometry.size} />
      </svg>
      <figcaption>
        <span className="nbscale-Legend nbscale-Legend-size">containers</span>
        <span className="nbscale-Legend nbscale-Legend-pending">pending</span>
        <span className="nbscale-Chart-scale">
          max {formatCount(geometry.top)} · last {minutes} min
        </span>
      </figcaption>
    </figure>
  );
}

const FIELDS: { name: SettingName; label: string; hint: string }[] = [
  { name: 'min_containers', label: 'Min', hint: 'kept running without work' },
  { name: 'max_containers', label: 'Max', hint: 'at most this many' },
  {
    name: 'buffer_containers',
    label: 'Buffer',
    hint: 'extra idle ones while busy'
  },
  {
    name: 'scaledown_window',
    label: 'Scaledown (s)',
    hint: 'idle seconds before stopping'
  }
];

function SettingsForm(props: {
  pool: IPool;
  commands: CommandRegistry;
  onClose: () => void;
}): JSX.Element {
  const { pool, commands, onClose } = props;
  const [form, setForm] = React.useState<AutoscalerForm>(() =>
    formFromSettings(pool.settings)
  );
  const [serverError, setServerError] = React.useState<string | null>(null);
  const [saving, setSaving] = React.useState(false);
  const { changes, errors } = validateAutoscaler(form, pool.settings);
  const invalid = Object.keys(errors).length > 0;
  const unchanged = Object.keys(changes).length === 0;

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    if (invalid || unchanged) {
      return;
    }
    setSaving(true);
    setServerError(null);
    try {
      await commands.execute(CommandIDs.updateAutoscaler, {
        id: pool.id,
        changes: changes as IAutoscalerChanges & Record<string, number>
      });
      onClose();
    } catch (error) {
      setServerError(error instanceof Error ? error.message : String(error));
      setSaving(false);
    }
  };

  return (
    <form className="nbscale-Form" onSubmit={event => void submit(event)}>
      {FIELDS.map(field => (
        <label key={field.name} className="nbscale-Form-field">
          <span className="nbscale-Form-label" title={field.hint}>
            {field.label}
          </span>
          <input
            className={`jp-mod-styled${errors[field.name] ? ' nbscale-mod-invalid' : ''}`}
            name={field.name}
            inputMode={
              field.name === 'scaledown_window' ? 'decimal' : 'numeric'
            }
            value={form[field.name]}
            placeholder={field.name === 'max_containers' ? 'no max' : ''}
            aria-invalid={errors[field.name] !== undefined}
            onChange={event =>
              setForm({ ...form, [field.name]: event.target.value })
            }
          />
          {errors[field.name] && (
            <span className="nbscale-Form-error">{errors[field.name]}</span>
          )}
        </label>
      ))}
      {serverError && (
        <div className="nbscale-Form-error nbscale-Form-serverError">
          {serverError}
        </div>
      )}
      <div className="nbscale-Actions">
        <button
          type="button"
          className="jp-Button jp-mod-styled jp-mod-reject"
          onClick={onClose}
        >
          Cancel
        </button>
        <button
          type="submit"
          className="jp-Button jp-mod-styled jp-mod-accept nbscale-Save"
          disabled={invalid || unchanged || saving}
        >
          Apply
        </button>
      </div>
    </form>
  );
}

function ContainerTable(props: {
  pool: IPool;
  model: SidebarModel;
}): JSX.Element | null {
  const { pool, model } = props;
  const [open, setOpen] = React.useState<string | null>(null);
  if (pool.workers.length === 0) {
    return null;
  }
  return (
    <table className="nbscale-Containers">
      <thead>
        <tr>
          <th>container</th>
          <th>state</th>
          <th>uptime</th>
          <th>inputs</th>
        </tr>
      </thead>
      <tbody>
        {pool.workers.map(worker => (
          <ContainerRows
            key={worker.id}
            worker={worker}
            model={model}
            open={open === worker.id}
            onToggle={() => setOpen(open === worker.id ? null : worker.id)}
          />
        ))}
      </tbody>
    </table>
  );
}

function ContainerRows(props: {
  worker: IContainer;
  model: SidebarModel;
  open: boolean;
  onToggle: () => void;
}): JSX.Element {
  const { worker, model, open, onToggle } = props;
  return (
    <>
      <tr
        className={`nbscale-Container${open ? ' jp-mod-selected' : ''}`}
        data-container-id={worker.id}
        data-state={worker.state}
        title="Show its recent output"
        onClick={onToggle}
      >
        <td className="nbscale-Id">
          {shortId(worker.id, 11)}
          {worker.pid !== null && (
            <span className="nbscale-Pid"> pid {worker.pid}</span>
          )}
        </td>
        <td>
          <span
            className={`nbscale-State nbscale-State-${worker.state}`}
            title={
              worker.waiting_reason
                ? `queued for resources; the scheduler's reason: ${worker.waiting_reason}`
                : undefined
            }
          >
            {worker.state}
            {worker.waiting_reason ? ` (${worker.waiting_reason})` : ''}
          </span>
        </td>
        <td>{formatDuration(worker.uptime)}</td>
        <td>{formatWorkerInputs(worker.running_inputs, worker.inputs)}</td>
      </tr>
      {gpuUse(worker).map((gpu, i) => (
        <tr key={gpu.uuid ?? i} className="nbscale-Gpu">
          <td colSpan={4}>{formatGpu(gpu)}</td>
        </tr>
      ))}
      {open && (
        <tr className="nbscale-Logs-row">
          <td colSpan={4}>
            <ContainerLogs model={model} containerId={worker.id} />
          </td>
        </tr>
      )}
    </>
  );
}

function ContainerLogs(props: {
  model: SidebarModel;
  containerId: string;
}): JSX.Element {
  const { model, containerId } = props;
  const [text, setText] = React.useState<string | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const load = React.useCallback(() => {
    model
      .logs(containerId, 50)
      .then(logs => {
        setText(logs.logs);
        setError(null);
      })
      .catch((reason: unknown) =>
        setError(reason instanceof Error ? reason.message : String(reason))
      );
  }, [model, containerId]);
  React.useEffect(load, [load]);
  return (
    <div className="nbscale-Logs">
      <button className="nbscale-Link" onClick={load}>
        reload
      </button>
      {error !== null ? (
        <span className="nbscale-Form-error">{error}</span>
      ) : (
        <pre>{text === null ? 'Loading…' : text || '(no output yet)'}</pre>
      )}
    </div>
  );
}

function CallRow(props: {
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
        <span className="nbscale-Call-function">{call.function}</span>
        <span className="nbscale-Call-kind">.{call.kind}</span>
        <span className="nbscale-Id">{shortId(call.id, 11)}</span>
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

function EventList(props: { model: SidebarModel }): JSX.Element | null {
  const state = props.model.state;
  const events = state.events.slice(0, 8);
  if (events.length === 0) {
    return null;
  }
  return (
    <section className="nbscale-Section">
      <h3>Recent events</h3>
      <ul className="nbscale-Events">
        {events.map((entry, i) => (
          <li key={`${entry.t}-${i}`}>
            <time>{new Date(entry.t).toLocaleTimeString()}</time>{' '}
            {describeEvent(entry.event)}
          </li>
        ))}
        {state.eventsDropped > 0 && (
          <li className="nbscale-Empty">
            {formatCount(state.eventsDropped)} more left out of bursts
          </li>
        )}
      </ul>
    </section>
  );
}
