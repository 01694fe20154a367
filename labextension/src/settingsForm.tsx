/**
 * The autoscaler form of a pool card (Scale…): min / max / buffer containers and the
 * scaledown window, checked as the user types with the server's rules, applied by the
 * plugin's command.
 */

import { CommandRegistry } from '@lumino/commands';
import * as React from 'react';

import { CommandIDs } from './commands';
import { IAutoscalerChanges, IPool } from './models';
import {
  AutoscalerForm,
  formFromSettings,
  SettingName,
  validateAutoscaler
} from './validation';

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

export function SettingsForm(props: {
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
