/**
 * The kernel of the document the user works in: the main area's current notebook (or
 * console), followed as the user switches documents and as the document's kernel changes,
 * for the panel's "this notebook" filter. A sidebar never becomes the current widget, so
 * the notebook stays current while the user clicks in the panel.
 */

import { ILabShell } from '@jupyterlab/application';
import { ISessionContext } from '@jupyterlab/apputils';
import { ISignal, Signal } from '@lumino/signaling';
import type { Widget } from '@lumino/widgets';

/** A notebook or console panel: a widget with a session context. */
interface IKernelDocument extends Widget {
  sessionContext: ISessionContext;
}

function isKernelDocument(widget: Widget | null): widget is IKernelDocument {
  return (
    widget !== null &&
    'sessionContext' in widget &&
    typeof (widget as Partial<IKernelDocument>).sessionContext === 'object'
  );
}

export class CurrentKernel {
  constructor(shell: ILabShell | null) {
    if (shell !== null) {
      shell.currentChanged.connect((_, change) =>
        this._follow(change.newValue)
      );
      this._follow(shell.currentWidget);
    }
  }

  /** The current document's kernel id; null without one (or without a kernel). */
  get kernelId(): string | null {
    return this._document?.sessionContext.session?.kernel?.id ?? null;
  }

  /** The current document's name ("sweep.ipynb"), when it has a kernel. */
  get name(): string | null {
    return this._document?.sessionContext.name || null;
  }

  /** Emitted when the current document or its kernel changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  private _follow(widget: Widget | null): void {
    const next = isKernelDocument(widget) ? widget : null;
    if (next === this._document) {
      return;
    }
    this._document?.sessionContext.kernelChanged.disconnect(this._emit, this);
    this._document = next;
    next?.sessionContext.kernelChanged.connect(this._emit, this);
    this._emit();
  }

  private _emit(): void {
    this._changed.emit();
  }

  private _document: IKernelDocument | null = null;
  private _changed = new Signal<this, void>(this);
}
