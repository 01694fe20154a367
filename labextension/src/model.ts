/**
 * The sidebar's live model: the `events` WebSocket pushes changes into a `ClusterState`;
 * while the socket is down, a `Poll` reads the REST API instead, backing off while the
 * server does not answer. The poll stands by while the page is hidden.
 */

import { ServerConnection } from '@jupyterlab/services';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  ConnectionStatus,
  describeStatus,
  statusOfFailure
} from './connection';
import { followLogs, ILogView, logsQuery } from './logs';
import {
  EventsMessage,
  IApp,
  IAutoscalerChanges,
  ICall,
  ILogs,
  IPool,
  IStatus
} from './models';
import { eventsUrl, requestAPI } from './request';
import { ClusterState } from './state';

export interface IModelOptions {
  /** Seconds between two reads of the REST API while the WebSocket is down. */
  refreshInterval: number;
  serverSettings?: ServerConnection.ISettings;
}

/** Seconds to wait before trying the WebSocket again after it failed. */
const SOCKET_RETRY = 15;

export class SidebarModel {
  constructor(options: IModelOptions) {
    this._settings = options.serverSettings ?? ServerConnection.makeSettings();
    this._poll = new Poll({
      auto: true,
      factory: () => this._tick(),
      frequency: {
        interval: options.refreshInterval * 1000,
        backoff: true,
        max: 60 * 1000
      },
      name: 'nbscale:sidebar',
      standby: 'when-hidden'
    });
  }

  readonly state = new ClusterState();

  /** Emitted when the state or the connection status changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get status(): ConnectionStatus {
    return this._status;
  }

  /** The one sentence to show for a failed connection; null while connected. */
  get message(): string | null {
    return describeStatus(this._status, this._detail);
  }

  /** The control plane's version and launcher, and why that launcher (`GET status`). */
  get serverStatus(): IStatus | null {
    return this._serverStatus;
  }

  /** The deployed apps (`GET apps`), read with each snapshot or read of the pools. */
  get apps(): IApp[] {
    return this._apps;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** Read the pools and calls over REST now (a failure shows as the status). */
  async refresh(): Promise<void> {
    try {
      await this._read();
    } catch {
      // _read() set the status, which the panel shows.
    }
  }

  /** Change the seconds between two reads while polling. */
  setRefreshInterval(seconds: number): void {
    this._poll.frequency = {
      ...this._poll.frequency,
      interval: seconds * 1000
    };
  }

  /** `PATCH pools/{id}`: change a pool's autoscaler settings. */
  async updateAutoscaler(
    poolId: string,
    changes: IAutoscalerChanges
  ): Promise<IPool> {
    const pool = await requestAPI<IPool>(
      `pools/${encodeURIComponent(poolId)}`,
      { method: 'PATCH', body: JSON.stringify(changes) },
      this._settings
    );
    this.state.putPool(pool, Date.now());
    this._changed.emit();
    return pool;
  }

  /** `DELETE pools/{id}`: cancel the pool's calls and stop its containers. */
  async stopPool(poolId: string): Promise<IPool> {
    const pool = await requestAPI<IPool>(
      `pools/${encodeURIComponent(poolId)}`,
      { method: 'DELETE' },
      this._settings
    );
    this.state.putPool(pool, Date.now());
    this._changed.emit();
    return pool;
  }

  /** `DELETE calls/{id}`: cancel a call's pending and running inputs. */
  async cancelCall(callId: string): Promise<ICall> {
    const call = await requestAPI<ICall>(
      `calls/${encodeURIComponent(callId)}`,
      { method: 'DELETE' },
      this._settings
    );
    this.state.putCall(call, Date.now());
    this._changed.emit();
    return call;
  }

  /**
   * `GET containers/{id}/logs`: a container's last `tail` lines for a first `view` (null),
   * then the lines written since, appended to it.
   */
  async followLogs(
    containerId: string,
    view: ILogView | null,
    tail = 200
  ): Promise<ILogView> {
    const answer = await requestAPI<ILogs>(
      `containers/${encodeURIComponent(containerId)}/logs?${logsQuery(view, tail)}`,
      {},
      this._settings
    );
    return followLogs(view, answer);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    this._closeSocket();
    Signal.clearData(this);
  }

  /**
   * One tick of the poll. While the socket is open it only moves the charts on; otherwise
   * it reads pools and calls over REST and, when that works, tries the socket again.
   * A failure rejects, so that the poll backs off.
   */
  private async _tick(): Promise<void> {
    if (this._socket?.readyState === WebSocket.OPEN) {
      this.state.sample(Date.now());
      this._changed.emit();
      return;
    }
    await this._read();
    this._openSocket();
  }

  /** `GET pools` and `GET calls` into the state; on failure, set the status and throw. */
  private async _read(): Promise<void> {
    let pools: IPool[];
    let calls: ICall[];
    try {
      [pools, calls] = await Promise.all([
        requestAPI<IPool[]>('pools', {}, this._settings),
        requestAPI<ICall[]>('calls', {}, this._settings)
      ]);
    } catch (error) {
      this._fail(error);
      throw error;
    }
    const now = Date.now();
    this.state.setPools(pools, now);
    this.state.setCalls(calls, now);
    if (this._status !== 'live') {
      this._setStatus('polling');
    }
    this._loadServerStatus();
    this._loadApps();
    this._changed.emit();
  }

  /** `GET apps`, again when an app is deployed or stopped (`app-*` events). */
  private _loadApps(): void {
    if (this._appsLoading) {
      return;
    }
    this._appsLoading = true;
    requestAPI<IApp[]>('apps', {}, this._settings)
      .then(apps => {
        this._apps = apps;
        this._changed.emit();
      })
      .catch(() => {
        // The next read or snapshot asks again.
      })
      .finally(() => {
        this._appsLoading = false;
      });
  }

  /** `GET status`, once per connection: the launcher is decided when the server starts. */
  private _loadServerStatus(): void {
    if (this._serverStatus !== null || this._serverStatusLoading) {
      return;
    }
    this._serverStatusLoading = true;
    requestAPI<IStatus>('status', {}, this._settings)
      .then(status => {
        this._serverStatus = status;
        this._changed.emit();
      })
      .catch(() => {
        // The next read or snapshot asks again; the pools say what matters meanwhile.
      })
      .finally(() => {
        this._serverStatusLoading = false;
      });
  }

  private _fail(error: unknown): void {
    const status =
      error instanceof ServerConnection.ResponseError
        ? error.response.status
        : null;
    const next = statusOfFailure(status);
    const detail =
      error instanceof ServerConnection.ResponseError
        ? `${error.response.status} ${error.response.statusText}`.trim()
        : '';
    // Say it once: the panel shows one sentence, the console one line per change.
    if (next !== this._status) {
      console.warn(`nbscale: ${describeStatus(next, detail)}`);
    }
    this._detail = detail;
    this._serverStatus = null; // a restarted server may have decided otherwise
    this._setStatus(next);
  }

  private _setStatus(status: ConnectionStatus): void {
    if (status !== this._status) {
      this._status = status;
      this._changed.emit();
    }
  }

  private _openSocket(): void {
    const now = Date.now();
    if (this._socket !== null || now < this._socketRetryAt) {
      return;
    }
    let socket: WebSocket;
    try {
      socket = new this._settings.WebSocket(eventsUrl(this._settings));
    } catch {
      this._socketRetryAt = now + SOCKET_RETRY * 1000;
      return;
    }
    this._socket = socket;
    socket.onmessage = (event: MessageEvent) => this._onMessage(event);
    socket.onclose = () => {
      if (this._socket !== socket) {
        return;
      }
      this._socket = null;
      if (this._status === 'live') {
        // It was working: read over REST at once and try the socket again on the next tick.
        this._setStatus('polling');
        void this._poll.refresh();
      } else {
        this._socketRetryAt = Date.now() + SOCKET_RETRY * 1000;
      }
    };
  }

  private _closeSocket(): void {
    const socket = this._socket;
    this._socket = null;
    if (socket !== null) {
      socket.onmessage = null;
      socket.onclose = null;
      socket.close();
    }
  }

  private _onMessage(event: MessageEvent): void {
    let message: EventsMessage;
    try {
      message = JSON.parse(String(event.data)) as EventsMessage;
    } catch (error) {
      console.warn('nbscale: an events message is not JSON', error);
      return;
    }
    const now = Date.now();
    if (message.type === 'snapshot') {
      this.state.applySnapshot(message, now);
      this._loadServerStatus();
      this._loadApps();
    } else if (message.type === 'changes') {
      this.state.applyChanges(message, now);
      const appsMoved = new Set(['pool-added', 'app-deployed', 'app-stopped']);
      if (message.events.some(e => appsMoved.has(e.type))) {
        this._loadApps(); // deployed, stopped, or a deployed function called the first time
      }
    } else {
      return;
    }
    this._setStatus('live');
    this._changed.emit();
  }

  private _settings: ServerConnection.ISettings;
  private _poll: Poll;
  private _socket: WebSocket | null = null;
  private _socketRetryAt = 0;
  private _status: ConnectionStatus = 'connecting';
  private _serverStatus: IStatus | null = null;
  private _serverStatusLoading = false;
  private _apps: IApp[] = [];
  private _appsLoading = false;
  private _detail = '';
  private _changed = new Signal<this, void>(this);
}
