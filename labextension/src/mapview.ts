/**
 * The notebook display of a map (`application/vnd.nbscale.map+json`): the bar, the counts,
 * the pool, the per-input table with its drill-down, and Cancel and Detach buttons.
 *
 * The kernel updates the display a few times a second while its cell runs; the buttons go
 * to the Jupyter server's control plane through its REST API, never to the kernel, which
 * cannot answer while the cell blocks. A display that stops being updated before its map
 * ended is checked: when its kernel is gone or idle (restarted, shut down, a reopened
 * notebook), its output becomes the final "cut short" summary, which the notebook then
 * saves.
 */

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { ServerConnection } from '@jupyterlab/services';
import { PartialJSONObject } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import {
  controls,
  cutShort,
  durationLabel,
  MAP_MIME,
  percentLabel,
  readState,
  segments,
  startLabel,
  summaryHtml
} from './mapstate';
import { ICall, IMapRow, IMapState } from './models';
import { requestAPI } from './request';

/** Milliseconds without an update after which a running map's kernel is checked. */
const STALE_MS = 4000;

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export class MapView extends Widget implements IRenderMime.IRenderer {
  constructor(serverSettings: ServerConnection.ISettings) {
    super();
    this._settings = serverSettings;
    this.addClass('nbscale-MapView');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const state = readState(model.data[MAP_MIME]);
    this._model = model;
    this._state = state;
    this._idleChecks = 0;
    if (state === null) {
      this.node.textContent = 'nbscale: a map view this version cannot draw.';
      return;
    }
    if (state.final) {
      this._message = '';
      this._acting = false;
    }
    this._draw(state);
    this._arm();
  }

  protected onBeforeDetach(): void {
    this._disarm();
  }

  dispose(): void {
    this._disarm();
    super.dispose();
  }

  // --- drawing ------------------------------------------------------------------------

  private _draw(state: IMapState): void {
    const node = this.node;
    node.textContent = '';
    node.dataset.status = state.status;
    node.dataset.final = String(state.final);
    const title = element('div', 'nbscale-MapView-title');
    title.append(element('b', '', state.function), `.map · ${state.status}`);
    if (state.call_id !== null) {
      title.append(' · ', element('code', 'nbscale-MapView-id', state.call_id));
    }
    node.append(title);
    node.append(this._bar(state));
    if (state.final) {
      node.append(
        element('div', 'nbscale-MapView-summary', state.summary ?? '')
      );
      if (state.resume !== null) {
        const resume = element('div', 'nbscale-MapView-resume', 'the rest: ');
        resume.append(element('code', '', state.resume));
        node.append(resume);
      }
    } else {
      const counts = element(
        'div',
        'nbscale-MapView-counts',
        state.counts_text
      );
      counts.dataset.done = String(state.counts.done);
      counts.dataset.total = String(state.counts.total ?? '');
      node.append(
        counts,
        element('div', 'nbscale-MapView-pool', state.pool_text)
      );
      node.append(this._buttons(state));
    }
    if (this._message !== '') {
      node.append(element('div', 'nbscale-MapView-message', this._message));
    }
    node.append(this._table(state.rows));
    const selected = state.rows.find(row => row.index === this._selected);
    if (selected !== undefined) {
      node.append(this._details(selected));
    } else if (this._selected !== null) {
      node.append(
        element(
          'div',
          'nbscale-MapView-details',
          `Input ${this._selected} is no longer among the rows this view keeps.`
        )
      );
    }
  }

  private _bar(state: IMapState): HTMLElement {
    const bar = element('div', 'nbscale-MapView-bar');
    const track = element('div', 'nbscale-MapView-track');
    for (const segment of segments(state)) {
      const cell = element('span', 'nbscale-MapView-segment');
      cell.dataset.name = segment.name;
      cell.style.width = `${segment.percent}%`;
      cell.title = `${segment.count.toLocaleString('en-US')} ${segment.name}`;
      track.append(cell);
    }
    const percent = element(
      'span',
      'nbscale-MapView-percent',
      percentLabel(state)
    );
    percent.dataset.percent =
      state.percent === null ? '' : String(state.percent);
    bar.append(track, percent);
    return bar;
  }

  private _buttons(state: IMapState): HTMLElement {
    const box = element('div', 'nbscale-MapView-buttons');
    const { enabled, reason } = controls(state);
    const make = (label: string, cls: string, tip: string, act: () => void) => {
      const button = element(
        'button',
        `jp-mod-styled nbscale-MapView-${cls}`,
        label
      );
      button.disabled = !enabled || this._acting;
      button.title = enabled ? tip : reason;
      button.addEventListener('click', act);
      return button;
    };
    box.append(
      make(
        'Cancel',
        'cancel',
        'Cancel its pending and running inputs',
        () => void this._act(state, 'DELETE', '', 'cancelling…')
      ),
      make(
        'Detach',
        'detach',
        'Stop waiting in the notebook; the map runs on and FunctionCall.from_id gives the rest',
        () => void this._act(state, 'POST', '/detach', 'detaching…')
      )
    );
    return box;
  }

  private _table(rows: IMapRow[]): HTMLElement {
    const table = element('table', 'nbscale-MapView-rows');
    if (rows.length === 0) {
      return table;
    }
    const head = element('tr', '');
    for (const name of [
      'input',
      'status',
      'worker',
      'attempt',
      'time',
      'result'
    ]) {
      head.append(element('th', '', name));
    }
    table.append(head);
    for (const row of rows) {
      const tr = element('tr', 'nbscale-MapView-row');
      tr.dataset.index = String(row.index);
      tr.dataset.status = row.status;
      tr.title =
        'Show its attempts, its output and, for a failure, its traceback';
      if (row.index === this._selected) {
        tr.classList.add('jp-mod-selected');
      }
      const cells = [
        String(row.index),
        row.status,
        row.worker,
        row.attempt > 0 ? String(row.attempt) : '',
        row.time,
        row.summary
      ];
      for (const cell of cells) {
        tr.append(element('td', '', cell));
      }
      tr.addEventListener('click', () => {
        this._selected = this._selected === row.index ? null : row.index;
        if (this._state !== null) {
          this._draw(this._state);
        }
      });
      table.append(tr);
    }
    return table;
  }

  private _details(row: IMapRow): HTMLElement {
    const box = element('div', 'nbscale-MapView-details');
    box.dataset.index = String(row.index);
    box.append(
      element(
        'div',
        'nbscale-MapView-details-title',
        `input ${row.index} · ${row.status}` +
          (row.attempt > 0 ? ` · attempt ${row.attempt}` : '')
      )
    );
    const attempts = element('table', 'nbscale-MapView-attempts');
    const head = element('tr', '');
    for (const name of ['attempt', 'worker', 'start', 'duration', 'outcome']) {
      head.append(element('th', '', name));
    }
    attempts.append(head);
    for (const attempt of row.attempts) {
      const tr = element('tr', '');
      for (const cell of [
        String(attempt.number),
        attempt.worker,
        startLabel(attempt.start),
        durationLabel(attempt.duration),
        attempt.outcome
      ]) {
        tr.append(element('td', '', cell));
      }
      attempts.append(tr);
    }
    box.append(attempts);
    const running = ['running', 'queued', 'pending', 'retrying'].includes(
      row.status
    );
    const printed =
      row.output !== ''
        ? row.output
        : running
          ? '(nothing printed yet)'
          : '(it printed nothing)';
    box.append(element('div', '', 'output'));
    box.append(element('pre', 'nbscale-MapView-output', printed));
    if (row.traceback !== '') {
      box.append(element('div', '', 'traceback'));
      box.append(element('pre', 'nbscale-MapView-traceback', row.traceback));
    }
    return box;
  }

  // --- acting through the control plane ------------------------------------------------

  private async _act(
    state: IMapState,
    method: string,
    suffix: string,
    doing: string
  ): Promise<void> {
    this._message = doing;
    this._acting = true;
    this._draw(state);
    try {
      await requestAPI<ICall>(
        `calls/${state.call_id}${suffix}`,
        { method },
        this._settings
      );
    } catch (error) {
      this._message = `nbscale: ${(error as Error).message}`;
      this._acting = false; // it can be tried again
    }
    if (this._state !== null) {
      this._draw(this._state);
    }
  }

  // --- a map whose kernel stopped ----------------------------------------------------

  private _arm(): void {
    this._disarm();
    if (this._state !== null && !this._state.final) {
      this._timer = window.setTimeout(() => void this._checkStale(), STALE_MS);
    }
  }

  private _disarm(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private async _checkStale(): Promise<void> {
    const state = this._state;
    const model = this._model;
    if (state === null || model === null || state.final) {
      return;
    }
    const busy = await this._kernelBusy(state.kernel_id);
    if (this._state !== state) {
      return; // an update came meanwhile
    }
    this._idleChecks = busy ? 0 : this._idleChecks + 1;
    if (this._idleChecks < 2) {
      this._arm(); // still running, or not yet sure: look again later
      return;
    }
    let call: ICall | null = null;
    if (state.control_plane === 'server' && state.call_id !== null) {
      try {
        call = await requestAPI<ICall>(
          `calls/${state.call_id}`,
          {},
          this._settings
        );
      } catch {
        call = null; // the control plane no longer knows it
      }
    }
    if (this._state !== state) {
      return;
    }
    const final = cutShort(state, call);
    model.setData({
      data: {
        [MAP_MIME]: final as unknown as PartialJSONObject,
        'text/html': summaryHtml(final),
        'text/plain': final.summary ?? ''
      }
    });
  }

  /** Whether the kernel that made this display is running a cell now. */
  private async _kernelBusy(kernelId: string | null): Promise<boolean> {
    if (kernelId === null) {
      return false;
    }
    const url = URLExt.join(this._settings.baseUrl, 'api/kernels', kernelId);
    try {
      const response = await ServerConnection.makeRequest(
        url,
        {},
        this._settings
      );
      if (!response.ok) {
        return false; // no such kernel any more
      }
      const kernel = (await response.json()) as { execution_state?: string };
      return kernel.execution_state === 'busy';
    } catch {
      return true; // the server does not answer: nothing to conclude yet
    }
  }

  private _settings: ServerConnection.ISettings;
  private _model: IRenderMime.IMimeModel | null = null;
  private _state: IMapState | null = null;
  private _selected: number | null = null;
  private _message = '';
  private _acting = false;
  private _timer: number | null = null;
  private _idleChecks = 0;
}

/** The renderer factory; `safe`: it draws the state as text, never as HTML. */
export function mapRendererFactory(
  serverSettings: ServerConnection.ISettings
): IRenderMime.IRendererFactory {
  return {
    safe: true,
    mimeTypes: [MAP_MIME],
    defaultRank: 0,
    createRenderer: () => new MapView(serverSettings)
  };
}

/**
 * Registers the renderer with JupyterLab's rendermime registry, ahead of `text/html`, so
 * that a map's display is drawn by it wherever the extension is installed; elsewhere the
 * display's `text/html` shows.
 */
export const mapViewPlugin: JupyterFrontEndPlugin<void> = {
  id: 'nbscale:map-view',
  description:
    'Draws the live view of an nbscale map under its cell, with Cancel and Detach buttons.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  activate: (app: JupyterFrontEnd, rendermime: IRenderMimeRegistry) => {
    rendermime.addFactory(
      mapRendererFactory(app.serviceManager.serverSettings),
      0
    );
  }
};
