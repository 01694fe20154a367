/**
 * The autoscaler form: what the user typed, checked with the server's rules
 * (`AutoscalerSettings` in `server_ext/nbscale_server/autoscaler.py`) before anything is
 * sent, so a mistake is explained beside its field rather than by a 400.
 */

import { IAutoscalerChanges, IAutoscalerSettings } from './models';

export type SettingName = keyof IAutoscalerSettings;

/** The form's fields as typed (strings); an empty max means "no change". */
export type AutoscalerForm = Record<SettingName, string>;

export interface IValidation {
  /** The settings that differ from the current ones; empty when nothing changed. */
  changes: IAutoscalerChanges;
  /** A message per field that is wrong; empty when the form can be sent. */
  errors: Partial<Record<SettingName, string>>;
}

/** The form filled with a pool's current settings. */
export function formFromSettings(
  settings: IAutoscalerSettings
): AutoscalerForm {
  return {
    min_containers: String(settings.min_containers),
    max_containers:
      settings.max_containers === null ? '' : String(settings.max_containers),
    buffer_containers: String(settings.buffer_containers),
    scaledown_window: String(settings.scaledown_window)
  };
}

/** The largest count of containers the server takes (`MAX_CONTAINERS` in autoscaler.py;
 * tests/test_schema.py checks that the two agree). */
export const MAX_CONTAINERS = 100000;

/** A whole number up to MAX_CONTAINERS, else null. */
function parseCount(text: string): number | null {
  const trimmed = text.trim();
  const value = /^\d+$/.test(trimmed) ? Number(trimmed) : null;
  return value !== null && value <= MAX_CONTAINERS ? value : null;
}

/** Check the form against the server's rules and work out what changed. */
export function validateAutoscaler(
  form: AutoscalerForm,
  current: IAutoscalerSettings
): IValidation {
  const errors: IValidation['errors'] = {};
  const changes: IAutoscalerChanges = {};

  const min = parseCount(form.min_containers);
  if (min === null) {
    errors.min_containers = `a whole number, 0 to ${MAX_CONTAINERS}`;
  }
  const buffer = parseCount(form.buffer_containers);
  if (buffer === null) {
    errors.buffer_containers = `a whole number, 0 to ${MAX_CONTAINERS}`;
  }
  let max: number | null = current.max_containers;
  if (form.max_containers.trim() !== '') {
    max = parseCount(form.max_containers);
    if (max === null || max < 1) {
      errors.max_containers = `a whole number, 1 to ${MAX_CONTAINERS}`;
    }
  } else if (current.max_containers !== null) {
    errors.max_containers = `a whole number, 1 to ${MAX_CONTAINERS}`;
  }
  const windowText = form.scaledown_window.trim();
  const window = windowText === '' ? NaN : Number(windowText);
  if (!Number.isFinite(window) || window <= 0) {
    errors.scaledown_window = 'seconds, more than 0';
  }
  if (
    min !== null &&
    max !== null &&
    errors.max_containers === undefined &&
    min > max
  ) {
    errors.min_containers = `at most max (${max})`;
  }
  if (Object.keys(errors).length > 0) {
    return { changes, errors };
  }

  if (min !== null && min !== current.min_containers) {
    changes.min_containers = min;
  }
  if (max !== null && max !== current.max_containers) {
    changes.max_containers = max;
  }
  if (buffer !== null && buffer !== current.buffer_containers) {
    changes.buffer_containers = buffer;
  }
  if (window !== current.scaledown_window) {
    changes.scaledown_window = window;
  }
  return { changes, errors };
}
