/**
 * The pools of the panel: active ones first, stopped ones folded away after a minute, and
 * one card per pool (what the autoscaler does and who holds the total cap, its counts, a
 * chart, its settings and actions, its event log and its containers).
 */

import { CommandRegistry } from '@lumino/commands';
import * as React from 'react';

import { arrangePools, poolActivity } from './arrange';
import { chartGeometry, chartWindow } from './chart';
import { CommandIDs } from './commands';
import { ContainerList } from './containers';
import {
  describeOwner,
  formatBounds,
  formatCapHolders,
  formatClock,
  formatCount,
  formatGpuCount,
  formatRequest,
  formatSettings,
  ownerName,
  shortId
} from './format';
import { IPool } from './models';
import { SidebarModel } from './model';
import { SettingsForm } from './settingsForm';

interface IPoolsProps {
  pools: IPool[];
  model: SidebarModel;
  commands: CommandRegistry;
  now: number;
}

/** Pools in the panel's order, those stopped a while ago behind a toggle. */
export function PoolList(props: IPoolsProps): JSX.Element {
  const { pools, model, now } = props;
  const [showStopped, setShowStopped] = React.useState(false);
  const listing = arrangePools(pools, id => model.state.stoppedSince(id), now);
  const card = (pool: IPool) => (
    <PoolCard key={pool.id} {...props} pool={pool} />
  );
  return (
    <>
      {listing.shown.map(card)}
      {listing.folded.length > 0 && (
        <button
          className="nbscale-Link nbscale-ShowStopped"
          aria-expanded={showStopped}
          onClick={() => setShowStopped(!showStopped)}
        >
          {showStopped ? 'hide' : 'show'} {listing.folded.length} stopped
        </button>
      )}
      {showStopped && listing.folded.map(card)}
    </>
  );
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

function PoolCard(props: Omit<IPoolsProps, 'pools'> & { pool: IPool }) {
  const { pool, model, commands, now } = props;
  const [editing, setEditing] = React.useState(false);
  const [showEvents, setShowEvents] = React.useState(false);
  const activity = poolActivity(pool);
  return (
    <div
      className={`nbscale-Pool nbscale-mod-${activity}`}
      data-pool-id={pool.id}
      data-activity={activity}
      data-owner={ownerName(pool.owner)}
    >
      <div className="nbscale-Pool-title">
        <span
          className="nbscale-Pool-function"
          title={`${pool.function} (${pool.function_id}), owned by ${ownerName(pool.owner)}: ${describeOwner(pool.owner)}`}
        >
          {pool.function}
        </span>
        <span className="nbscale-Id" title={pool.id}>
          {shortId(pool.id, 11)}
        </span>
      </div>
      <div className="nbscale-Pool-status" title="What the autoscaler is doing">
        {pool.status}
      </div>
      {pool.cap_holders.length > 0 && (
        <div
          className="nbscale-Pool-capHolders"
          title="The pools whose containers fill the total cap (max_workers_total)"
        >
          cap held by{' '}
          {formatCapHolders(
            pool.cap_holders,
            id => model.state.pool(id)?.owner
          )}
        </div>
      )}
      <div className="nbscale-Pool-inputs">
        <Stat name="backlog" value={pool.backlog} label="pending" />
        <Stat
          name="num_running_inputs"
          value={pool.num_running_inputs}
          label="running"
        />
        <Stat name="done" value={pool.done} label="done" />
        <Stat name="failed" value={pool.failed} label="failed" />
      </div>
      <PoolChart model={model} poolId={pool.id} now={now} />
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
        <div
          className="nbscale-Pool-line nbscale-Pool-request"
          title={formatRequest(pool.image, pool.gpu)}
        >
          {formatRequest(pool.image, pool.gpu)}
        </div>
      )}
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
          {pool.events.length > 0 && (
            <button
              className="nbscale-Link nbscale-ShowEvents"
              aria-expanded={showEvents}
              onClick={() => setShowEvents(!showEvents)}
            >
              {showEvents ? 'hide' : 'show'} events
            </button>
          )}
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
      {showEvents && <PoolEvents pool={pool} />}
      <ContainerList pool={pool} model={model} now={now} />
    </div>
  );
}

/** The pool's event log, newest first: settings changed and by whom, launches, stops. */
function PoolEvents(props: { pool: IPool }): JSX.Element {
  const events = props.pool.events.slice().reverse();
  return (
    <ul className="nbscale-Events nbscale-PoolEvents">
      {events.map((event, i) => (
        <li key={`${event.time}-${i}`}>
          <time>{formatClock(event.time)}</time> {event.message}
        </li>
      ))}
    </ul>
  );
}

const CHART_WIDTH = 240;
const CHART_HEIGHT = 48;

function PoolChart(props: {
  model: SidebarModel;
  poolId: string;
  now: number;
}): JSX.Element {
  const { model, poolId, now } = props;
  const state = model.state;
  const samples = state.history(poolId);
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
        <span
          className="nbscale-Legend nbscale-Legend-size"
          data-top={geometry.topSize}
          title="containers: the left scale, up to this many"
        >
          containers 0–{formatCount(geometry.topSize)}
        </span>
        <span
          className="nbscale-Legend nbscale-Legend-pending"
          data-top={geometry.topPending}
          title="pending inputs: a scale of their own, up to this many"
        >
          pending 0–{formatCount(geometry.topPending)}
        </span>
        <span className="nbscale-Chart-scale">last {minutes} min</span>
      </figcaption>
    </figure>
  );
}
