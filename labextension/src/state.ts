/**
 * What the sidebar knows of the server: pools, calls, each pool's recent history and the
 * lifecycle events it was told about. Pure: it imports no JupyterLab package and takes the
 * time as an argument, so the jest tests drive it with plain objects and a fake clock.
 */

import {
  ICall,
  IChangeEvent,
  IChangesMessage,
  IPool,
  ISnapshotMessage
} from './models';

/** One point of a pool's chart: its size and backlog at time `t` (ms). */
export interface ISample {
  t: number;
  size: number;
  pending: number;
}

/** A call as the sidebar shows it: the server's model, and whether the server still lists it. */
export interface ICallEntry {
  call: ICall;
  /** The server stopped listing it (a map or remote call that finished or was cancelled). */
  gone: boolean;
  /** When the sidebar first saw it (ms), to list the newest first. */
  seen: number;
}

/** A lifecycle event, with when the sidebar received it (ms). */
export interface IEventEntry {
  t: number;
  event: IChangeEvent;
}

export interface IStateOptions {
  /** How much history each pool's chart keeps, in ms. */
  historyWindow?: number;
  /** How many calls no longer listed by the server stay on show. */
  keepGoneCalls?: number;
  /** How many lifecycle events are kept. */
  keepEvents?: number;
}

export class ClusterState {
  constructor(options: IStateOptions = {}) {
    this.historyWindow = options.historyWindow ?? 5 * 60 * 1000;
    this.keepGoneCalls = options.keepGoneCalls ?? 10;
    this.keepEvents = options.keepEvents ?? 50;
  }

  readonly historyWindow: number;
  readonly keepGoneCalls: number;
  readonly keepEvents: number;

  /** Pools by id, in the order the server first reported them. */
  get pools(): IPool[] {
    return Array.from(this._pools.values());
  }

  pool(id: string): IPool | undefined {
    return this._pools.get(id);
  }

  /** Calls, newest first: the listed ones, then up to `keepGoneCalls` finished ones. */
  get calls(): ICallEntry[] {
    return Array.from(this._calls.values()).sort((a, b) => b.seen - a.seen);
  }

  call(id: string): ICallEntry | undefined {
    return this._calls.get(id);
  }

  /**
   * When the pool's model last came from the server (ms): its containers' uptimes were
   * true then. The server sends a pool again when it changes, not as its uptimes grow.
   */
  received(poolId: string): number | undefined {
    return this._received.get(poolId);
  }

  /**
   * Since when a stopped pool has been stopped (ms): the time of its last event (its
   * stop is one), else when the sidebar first saw it stopped; undefined while it runs.
   */
  stoppedSince(poolId: string): number | undefined {
    return this._stoppedSince.get(poolId);
  }

  /** The samples of a pool's chart, oldest first. */
  history(poolId: string): ISample[] {
    return this._history.get(poolId) ?? [];
  }

  /** The lifecycle events received, newest first. */
  get events(): IEventEntry[] {
    return this._events.slice().reverse();
  }

  /** Lifecycle events the server left out of bursts, in all. */
  get eventsDropped(): number {
    return this._eventsDropped;
  }

  /**
   * The idle warm spare containers' names (Docker's `docker_spares`): started, in no
   * pool, each to serve a new pool's first worker at once. Sent over the WebSocket only.
   */
  get spares(): string[] {
    return this._spares;
  }

  /** When the state last changed from the server (ms), or null before the first data. */
  get updated(): number | null {
    return this._updated;
  }

  /** Take everything from the WebSocket's first message. */
  applySnapshot(message: ISnapshotMessage, now: number): void {
    this.setPools(message.pools, now);
    this.setCalls(message.calls, now);
    this._spares = message.spares ?? [];
  }

  /** Take the pools and calls that moved, the calls no longer listed and the events. */
  applyChanges(message: IChangesMessage, now: number): void {
    for (const pool of message.pools) {
      this._putPool(pool, now);
    }
    for (const call of message.calls) {
      this._putCall(call, now);
    }
    for (const id of message.calls_removed) {
      this._markGone(id);
    }
    for (const event of message.events) {
      this._events.push({ t: now, event });
    }
    this._spares = message.spares ?? this._spares;
    this._eventsDropped += message.events_dropped;
    this._events.splice(0, Math.max(0, this._events.length - this.keepEvents));
    this._pruneGone();
    this._updated = now;
    this.sample(now);
  }

  /** Replace the pools with a full list (a snapshot, or `GET pools` while polling). */
  setPools(pools: IPool[], now: number): void {
    const ids = new Set(pools.map(p => p.id));
    for (const id of this._pools.keys()) {
      if (!ids.has(id)) {
        this._pools.delete(id);
        this._history.delete(id);
        this._received.delete(id);
        this._stoppedSince.delete(id);
      }
    }
    for (const pool of pools) {
      this._putPool(pool, now);
    }
    this._updated = now;
    this.sample(now);
  }

  /** Replace the listed calls with a full list; calls missing from it are gone. */
  setCalls(calls: ICall[], now: number): void {
    const ids = new Set(calls.map(c => c.id));
    for (const [id, entry] of this._calls) {
      if (!ids.has(id) && !entry.gone) {
        this._markGone(id);
      }
    }
    for (const call of calls) {
      this._putCall(call, now);
    }
    this._pruneGone();
    this._updated = now;
  }

  /** Update one pool from a reply (`PATCH` or `DELETE pools/{id}`). */
  putPool(pool: IPool, now: number): void {
    this._putPool(pool, now);
    this._updated = now;
    this.sample(now);
  }

  /** Update one call from a reply (`DELETE calls/{id}`). */
  putCall(call: ICall, now: number): void {
    this._putCall(call, now);
    this._updated = now;
  }

  /**
   * Add a point to each pool's chart. Called on every update and on a timer, so that the
   * chart moves on when nothing changes. Points keep about a second apart; points older
   * than the window fall off.
   */
  sample(now: number): void {
    for (const pool of this._pools.values()) {
      const samples = this._history.get(pool.id) ?? [];
      const point = {
        t: now,
        size: pool.num_total_runners,
        pending: pool.backlog
      };
      // The last point is live: it moves with each update until it is a second past the
      // point before it, and then a new live point starts.
      const previous = samples[samples.length - 2];
      if (previous !== undefined && now - previous.t < 1000) {
        samples[samples.length - 1] = point;
      } else {
        samples.push(point);
      }
      const cutoff = now - this.historyWindow;
      while (samples.length > 2 && samples[0].t < cutoff) {
        samples.shift();
      }
      this._history.set(pool.id, samples);
    }
  }

  private _putPool(pool: IPool, now: number): void {
    this._pools.set(pool.id, pool);
    this._received.set(pool.id, now);
    if (!pool.stopped) {
      this._stoppedSince.delete(pool.id);
    } else if (!this._stoppedSince.has(pool.id)) {
      const last = pool.events[pool.events.length - 1];
      const since = last === undefined ? now : Math.min(now, last.time * 1000);
      this._stoppedSince.set(pool.id, since);
    }
  }

  private _putCall(call: ICall, now: number): void {
    const entry = this._calls.get(call.id);
    // Calls first seen in the same message (a snapshot lists them oldest first) get
    // increasing fractions of a millisecond, so that the newest still sorts first.
    this._calls.set(call.id, {
      call,
      gone: false,
      seen: entry?.seen ?? now + this._tiebreak++ / 1000
    });
  }

  /**
   * The server lists a streamed call until it finishes or is cancelled, then drops it, and
   * the last model it sent may be a moment old. Keep the call on show, finished. One that
   * was not cancelled had every input reported: with its total known, its inputs that are
   * not counted failed are done (a failure in its last moment would be counted as done).
   */
  private _markGone(id: string): void {
    const entry = this._calls.get(id);
    if (entry === undefined) {
      return;
    }
    const call = { ...entry.call, finished: true };
    if (!call.cancelled && call.total !== null) {
      call.done = Math.max(call.done, call.total - call.failed);
    }
    this._calls.set(id, { ...entry, gone: true, call });
  }

  private _pruneGone(): void {
    const gone = this.calls.filter(e => e.gone);
    for (const entry of gone.slice(this.keepGoneCalls)) {
      this._calls.delete(entry.call.id);
    }
  }

  private _pools = new Map<string, IPool>();
  private _calls = new Map<string, ICallEntry>();
  private _history = new Map<string, ISample[]>();
  private _received = new Map<string, number>();
  private _stoppedSince = new Map<string, number>();
  private _spares: string[] = [];
  private _events: IEventEntry[] = [];
  private _eventsDropped = 0;
  private _updated: number | null = null;
  private _tiebreak = 0;
}
