/**
 * The nbscale panel in JupyterLab's left sidebar: what runs the workers, then the pools
 * (with their containers and chart) and calls of each notebook or script, the current
 * notebook's first (or only its own), and the last lifecycle events; re-rendered on each
 * change of the model or of the current notebook, and every second while shown (uptimes
 * tick, the chart moves on, stopped pools fold away). Buttons run the plugin's commands,
 * so the panel and the command palette act alike.
 */

import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { ReactWidget, refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { groupByOwner } from './arrange';
import { CommandIDs } from './commands';
import { ConnectionStatus, isFailure } from './connection';
import { CurrentKernel } from './current';
import {
  describeEvent,
  formatCount,
  formatLauncher,
  formatSpares
} from './format';
import { SidebarModel } from './model';
import { OwnerFilter, OwnerSection } from './owners';

export { CommandIDs };

/** How often a shown panel redraws with nothing new from the server (ms). */
const CLOCK_INTERVAL = 1000;

/** The sidebar widget. */
export class NbscalePanel extends ReactWidget {
  constructor(
    model: SidebarModel,
    commands: CommandRegistry,
    current: CurrentKernel = new CurrentKernel(null)
  ) {
    super();
    this._model = model;
    this._commands = commands;
    this._current = current;
    this.id = 'nbscale-sidebar';
    this.addClass('nbscale-Sidebar');
    model.changed.connect(this._onChanged, this);
    current.changed.connect(this._onChanged, this);
    this._clock = window.setInterval(() => this._onChanged(), CLOCK_INTERVAL);
  }

  get model(): SidebarModel {
    return this._model;
  }

  dispose(): void {
    window.clearInterval(this._clock);
    this._model.changed.disconnect(this._onChanged, this);
    this._current.changed.disconnect(this._onChanged, this);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.update();
  }

  protected render(): JSX.Element {
    return (
      <Sidebar
        model={this._model}
        commands={this._commands}
        current={this._current}
        now={Date.now()}
      />
    );
  }

  private _onChanged(): void {
    // A hidden panel renders when it is shown again.
    if (this.isVisible) {
      this.update();
    }
  }

  private _model: SidebarModel;
  private _commands: CommandRegistry;
  private _current: CurrentKernel;
  private _clock: number;
}

interface ISidebarProps {
  model: SidebarModel;
  commands: CommandRegistry;
  current: CurrentKernel;
  /** The time of this rendering (ms). */
  now: number;
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
  const { model, commands, current, now } = props;
  const [onlyCurrent, setOnlyCurrent] = React.useState(false);
  const state = model.state;
  const failed = isFailure(model.status);
  const server = model.serverStatus;
  const groups = groupByOwner(state.pools, state.calls, current.kernelId);
  const shown = onlyCurrent ? groups.filter(group => group.current) : groups;
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
      {server !== null && !failed && (
        <div
          className="nbscale-Launcher"
          data-launcher={server.launcher}
          title={`nbscale ${server.version}`}
        >
          Workers run as <b>{formatLauncher(server)}</b>:{' '}
          {server.launcher_reason}
          {state.spares.length > 0 && (
            <div
              className="nbscale-Spares"
              data-spares={state.spares.length}
              title={state.spares.join('\n')}
            >
              {formatSpares(state.spares.length)}
            </div>
          )}
        </div>
      )}
      {!failed && model.apps.length > 0 && (
        <details className="nbscale-Apps">
          <summary>Deployed apps ({model.apps.length})</summary>
          <ul>
            {model.apps.map(app => (
              <li
                key={app.name}
                data-app={app.name}
                title={`deployed ${new Date(app.deployed * 1000).toLocaleString()}`}
              >
                <b>{app.name}</b>:{' '}
                {[...app.functions, ...app.classes].join(', ')}
              </li>
            ))}
          </ul>
        </details>
      )}
      {failed ? (
        <div className="nbscale-Message" role="alert">
          {model.message}
        </div>
      ) : (
        <>
          <OwnerFilter
            onlyCurrent={onlyCurrent}
            currentName={current.kernelId === null ? null : current.name}
            onChange={setOnlyCurrent}
          />
          {groups.length === 0 ? (
            <p className="nbscale-Empty">
              {model.status === 'connecting'
                ? 'Connecting…'
                : 'No pools yet: call a function of an nbscale.App (f.remote, f.map) to start one.'}
            </p>
          ) : shown.length === 0 ? (
            <p className="nbscale-Empty">
              No pools nor calls of {current.name ?? 'this notebook'} yet.
            </p>
          ) : (
            shown.map(group => (
              <OwnerSection
                key={group.key}
                group={group}
                model={model}
                commands={commands}
                now={now}
              />
            ))
          )}
          <EventList model={model} />
        </>
      )}
    </div>
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
