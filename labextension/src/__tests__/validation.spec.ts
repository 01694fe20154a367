import { IAutoscalerSettings } from '../models';
import {
  AutoscalerForm,
  formFromSettings,
  MAX_CONTAINERS,
  validateAutoscaler
} from '../validation';

const current: IAutoscalerSettings = {
  min_containers: 0,
  max_containers: 8,
  buffer_containers: 1,
  scaledown_window: 60
};

function form(overrides: Partial<AutoscalerForm> = {}): AutoscalerForm {
  return { ...formFromSettings(current), ...overrides };
}

describe('validateAutoscaler', () => {
  it('fills the form from the settings, an unset max left empty', () => {
    expect(formFromSettings(current)).toEqual({
      min_containers: '0',
      max_containers: '8',
      buffer_containers: '1',
      scaledown_window: '60'
    });
    expect(
      formFromSettings({ ...current, max_containers: null }).max_containers
    ).toBe('');
  });

  it('sends nothing when nothing changed', () => {
    expect(validateAutoscaler(form(), current)).toEqual({
      changes: {},
      errors: {}
    });
  });

  it('sends only the settings that changed, as numbers', () => {
    const result = validateAutoscaler(
      form({ max_containers: ' 2 ', scaledown_window: '12.5' }),
      current
    );
    expect(result.errors).toEqual({});
    expect(result.changes).toEqual({
      max_containers: 2,
      scaledown_window: 12.5
    });
  });

  it('refuses what the server refuses, field by field', () => {
    const result = validateAutoscaler(
      {
        min_containers: '-1',
        max_containers: '0',
        buffer_containers: '1.5',
        scaledown_window: '0'
      },
      current
    );
    expect(Object.keys(result.errors).sort()).toEqual([
      'buffer_containers',
      'max_containers',
      'min_containers',
      'scaledown_window'
    ]);
    expect(result.changes).toEqual({});
  });

  it('refuses counts past the largest the server takes', () => {
    const result = validateAutoscaler(
      form({
        min_containers: String(MAX_CONTAINERS + 1),
        max_containers: '1e30',
        buffer_containers: '1000000000000000000000'
      }),
      current
    );
    expect(result.errors).toEqual({
      min_containers: `a whole number, 0 to ${MAX_CONTAINERS}`,
      max_containers: `a whole number, 1 to ${MAX_CONTAINERS}`,
      buffer_containers: `a whole number, 0 to ${MAX_CONTAINERS}`
    });
    const largest = form({ max_containers: String(MAX_CONTAINERS) });
    expect(validateAutoscaler(largest, current).errors).toEqual({});
  });

  it('refuses a min above the max', () => {
    const result = validateAutoscaler(
      form({ min_containers: '5', max_containers: '3' }),
      current
    );
    expect(result.errors).toEqual({ min_containers: 'at most max (3)' });
  });

  it('compares the min with the current max when the max is left as it is', () => {
    const result = validateAutoscaler(form({ min_containers: '9' }), current);
    expect(result.errors.min_containers).toBe('at most max (8)');
  });

  it('cannot clear a max once set, but leaves an unset one unset', () => {
    expect(
      validateAutoscaler(form({ max_containers: '' }), current).errors
        .max_containers
    ).toBeDefined();
    const uncapped = { ...current, max_containers: null };
    const result = validateAutoscaler(
      { ...formFromSettings(uncapped), min_containers: '4' },
      uncapped
    );
    expect(result).toEqual({ changes: { min_containers: 4 }, errors: {} });
  });

  it('refuses text and empty fields', () => {
    const result = validateAutoscaler(
      form({ min_containers: 'two', scaledown_window: ' ' }),
      current
    );
    expect(result.errors.min_containers).toBeDefined();
    expect(result.errors.scaledown_window).toBeDefined();
  });
});
