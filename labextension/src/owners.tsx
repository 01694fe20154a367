/**
 * The panel's groups: one per owner (a notebook's kernel, or a script), the current
 * notebook's first, with a filter that shows only the current notebook's. Each group says
 * who it is and lists its pools, then its calls.
 */

import { CommandRegistry } from '@lumino/commands';
import * as React from 'react';

import { callTree, IOwnerGroup } from './arrange';
import { CallList } from './calls';
import { describeOwner, ownerName } from './format';
import { SidebarModel } from './model';
import { PoolList } from './pools';

/** "All" or "This notebook", as two toggle buttons. */
export function OwnerFilter(props: {
  onlyCurrent: boolean;
  currentName: string | null;
  onChange: (onlyCurrent: boolean) => void;
}): JSX.Element {
  const { onlyCurrent, currentName, onChange } = props;
  const option = (value: boolean, label: string, title: string) => (
    <button
      className={`nbscale-Filter-option${value === onlyCurrent ? ' jp-mod-active' : ''}`}
      aria-pressed={value === onlyCurrent}
      data-filter={value ? 'current' : 'all'}
      disabled={value && currentName === null}
      title={title}
      onClick={() => onChange(value)}
    >
      {label}
    </button>
  );
  return (
    <div className="nbscale-Filter" role="group" aria-label="Show pools of">
      {option(false, 'All notebooks', 'The pools and calls of every kernel')}
      {option(
        true,
        'This notebook',
        currentName === null
          ? 'Open a notebook (or console) to see only its pools and calls'
          : `Only the pools and calls of ${currentName}`
      )}
    </div>
  );
}

export function OwnerSection(props: {
  group: IOwnerGroup;
  model: SidebarModel;
  commands: CommandRegistry;
  now: number;
}): JSX.Element {
  const { group, model, commands, now } = props;
  return (
    <section
      className="nbscale-Section nbscale-Owner"
      data-owner={group.key}
      data-current={group.current}
    >
      <h3 className="nbscale-Owner-title" title={describeOwner(group.owner)}>
        <span className="nbscale-Owner-name">{ownerName(group.owner)}</span>
        {group.current && (
          <span className="nbscale-Owner-current">this notebook</span>
        )}
        <span className="nbscale-Owner-detail">
          {describeOwner(group.owner)}
        </span>
      </h3>
      <PoolList
        pools={group.pools}
        model={model}
        commands={commands}
        now={now}
      />
      {group.calls.length > 0 && (
        <CallList nodes={callTree(group.calls)} commands={commands} />
      )}
    </section>
  );
}
