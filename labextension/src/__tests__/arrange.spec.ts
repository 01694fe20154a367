import {
  arrangePools,
  callTree,
  FOLD_STOPPED_AFTER,
  groupByOwner,
  poolActivity
} from '../arrange';
import { describeOwner, formatCapHolders, ownerName } from '../format';
import { ICall } from '../models';
import { ICallEntry } from '../state';
import { call, owner, pool } from './fixtures';

describe('arrangePools', () => {
  const idle = pool({ id: 'pl-idle' });
  const active = pool({ id: 'pl-active', backlog: 40 });
  const running = pool({ id: 'pl-running', num_running_inputs: 2 });
  const stopped = pool({ id: 'pl-stopped', stopped: true });
  const since = (times: Record<string, number>) => (id: string) => times[id];

  it('tells active, idle and stopped pools apart', () => {
    expect(poolActivity(active)).toBe('active');
    expect(poolActivity(running)).toBe('active');
    expect(poolActivity(idle)).toBe('idle');
    expect(poolActivity(pool({ stopped: true, backlog: 3 }))).toBe('stopped');
  });

  it('puts pools with work first, then idle ones, then stopped ones', () => {
    const listing = arrangePools(
      [stopped, idle, active, running],
      since({ 'pl-stopped': 1000 }),
      2000
    );
    expect(listing.shown.map(p => p.id)).toEqual([
      'pl-active',
      'pl-running',
      'pl-idle',
      'pl-stopped'
    ]);
    expect(listing.folded).toEqual([]);
  });

  it('keeps the server order within a kind, so that cards do not jump', () => {
    const a = pool({ id: 'pl-a', backlog: 1 });
    const b = pool({ id: 'pl-b', backlog: 1000 });
    const order = arrangePools([a, b], since({}), 0).shown.map(p => p.id);
    expect(order).toEqual(['pl-a', 'pl-b']);
  });

  it('folds away a pool stopped a minute ago, the latest stopped first', () => {
    const old = pool({ id: 'pl-old', stopped: true });
    const older = pool({ id: 'pl-older', stopped: true });
    const now = 10 * 60 * 1000;
    const times = since({
      'pl-stopped': now - 1000,
      'pl-old': now - FOLD_STOPPED_AFTER,
      'pl-older': now - 5 * FOLD_STOPPED_AFTER
    });
    const listing = arrangePools([older, idle, old, stopped], times, now);
    expect(listing.shown.map(p => p.id)).toEqual(['pl-idle', 'pl-stopped']);
    expect(listing.folded.map(p => p.id)).toEqual(['pl-old', 'pl-older']);
  });
});

describe('groupByOwner', () => {
  const sweep = owner();
  const other = owner({
    kernel_id: '2c72fe09-0000-4000-8000-000000000002',
    notebook: 'other/train.ipynb',
    name: 'train.ipynb',
    pid: 5353
  });
  const script = owner({
    kernel_id: null,
    notebook: null,
    name: 'client.py',
    pid: 77
  });
  const entry = (c: ICall, seen: number): ICallEntry => ({
    call: c,
    gone: false,
    seen
  });

  it('groups pools and calls by kernel, else by process, the current one first', () => {
    const pools = [
      pool({ id: 'pl-a', owner: sweep }),
      pool({ id: 'pl-b', owner: other }),
      pool({ id: 'pl-c', owner: script, backlog: 5 }),
      pool({ id: 'pl-d', owner: other })
    ];
    const calls = [
      entry(call({ id: 'fc-b', owner: other }), 2),
      entry(call({ id: 'fc-a', owner: sweep }), 1)
    ];
    const groups = groupByOwner(pools, calls, other.kernel_id);
    expect(groups.map(g => [g.key, g.current])).toEqual([
      [`kernel:${other.kernel_id}`, true],
      ['process:box:77', false], // it has work
      [`kernel:${sweep.kernel_id}`, false]
    ]);
    expect(groups[0].pools.map(p => p.id)).toEqual(['pl-b', 'pl-d']);
    expect(groups[0].calls.map(e => e.call.id)).toEqual(['fc-b']);
    expect(groups[2].calls.map(e => e.call.id)).toEqual(['fc-a']);
    // no current notebook: no group is current, and the order is by work, then first seen
    const none = groupByOwner(pools, calls, null);
    expect(none.map(g => g.owner.name)).toEqual([
      'client.py',
      'sweep.ipynb',
      'train.ipynb'
    ]);
    expect(none.some(g => g.current)).toBe(false);
    // a group of stopped pools only comes after one with an idle pool
    const stoppedFirst = groupByOwner(
      [
        pool({ owner: sweep, stopped: true }),
        pool({ id: 'pl-b', owner: other })
      ],
      [],
      null
    );
    expect(stoppedFirst.map(g => g.owner.name)).toEqual([
      'train.ipynb',
      'sweep.ipynb'
    ]);
  });

  it('names owners and the pools that hold the total cap', () => {
    expect(ownerName(other)).toBe('other/train.ipynb');
    expect(ownerName(script)).toBe('client.py');
    expect(describeOwner(other)).toBe('kernel 2c72fe09 · pid 5353 on box');
    expect(describeOwner(script)).toBe('pid 77 on box');
    const app = owner({
      kernel_id: null,
      notebook: null,
      name: 'app math',
      app: 'math'
    });
    expect(ownerName(app)).toBe('app math');
    expect(describeOwner(app)).toBe(
      'deployed app: its pools serve every caller'
    );
    // two apps kept by one control plane (one pid, one host) are two owners
    const otherApp = { ...app, name: 'app text', app: 'text' };
    const apps = groupByOwner(
      [pool({ owner: app }), pool({ id: 'pl-b', owner: otherApp })],
      [],
      null
    );
    expect(apps.map(g => g.owner.name)).toEqual(['app math', 'app text']);
    const holders = [
      {
        pool_id: 'pl-b',
        function: 'square',
        waiting: 0,
        starting: 0,
        idle: 1,
        busy: 2
      }
    ];
    expect(
      formatCapHolders(holders, id => (id === 'pl-b' ? other : undefined))
    ).toBe('square (other/train.ipynb): 2 busy, 1 idle');
  });
});

describe('callTree', () => {
  const entry = (id: string, parent: string | null): ICallEntry => ({
    call: call({
      id,
      parent: parent === null ? null : { call_id: parent, index: 0 }
    }),
    gone: false,
    seen: 0
  });
  const shape = (nodes: ReturnType<typeof callTree>): unknown =>
    nodes.map(node => [node.entry.call.id, shape(node.children)]);

  it('nests each call under the listed call whose input made it, in order', () => {
    const tree = callTree([
      entry('fc-grandchild', 'fc-child-1'),
      entry('fc-child-2', 'fc-root'),
      entry('fc-child-1', 'fc-root'),
      entry('fc-root', null),
      entry('fc-other', null)
    ]);
    expect(shape(tree)).toEqual([
      [
        'fc-root',
        [
          ['fc-child-2', []],
          ['fc-child-1', [['fc-grandchild', []]]]
        ]
      ],
      ['fc-other', []]
    ]);
  });

  it('keeps a call whose parent is not listed as a root', () => {
    const tree = callTree([
      entry('fc-orphan', 'fc-gone'),
      entry('fc-self', 'fc-self')
    ]);
    expect(shape(tree)).toEqual([
      ['fc-orphan', []],
      ['fc-self', []]
    ]);
  });
});
