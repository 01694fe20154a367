import { IChangesMessage } from '../models';
import { ClusterState } from '../state';
import { call, pool } from './fixtures';

function changes(overrides: Partial<IChangesMessage> = {}): IChangesMessage {
  return {
    type: 'changes',
    pools: [],
    calls: [],
    calls_removed: [],
    events: [],
    events_dropped: 0,
    spares: [],
    ...overrides
  };
}

describe('ClusterState', () => {
  it('knows the warm spares from the snapshot, then from each change', () => {
    const state = new ClusterState();
    expect(state.spares).toEqual([]);
    state.applySnapshot(
      {
        type: 'snapshot',
        pools: [],
        calls: [],
        calls_more: false,
        spares: ['nbscale-wk-1']
      },
      1000
    );
    expect(state.spares).toEqual(['nbscale-wk-1']);
    state.applyChanges(changes({ spares: [] }), 2000); // taken by a worker
    expect(state.spares).toEqual([]);
    state.applyChanges(changes({ spares: ['nbscale-wk-2'] }), 3000);
    expect(state.spares).toEqual(['nbscale-wk-2']);
  });

  it('starts empty and takes a snapshot whole', () => {
    const state = new ClusterState();
    expect(state.pools).toEqual([]);
    expect(state.updated).toBeNull();
    state.applySnapshot(
      {
        type: 'snapshot',
        pools: [pool()],
        calls: [call()],
        calls_more: false,
        spares: []
      },
      1000
    );
    expect(state.pools.map(p => p.id)).toEqual(['pl-000000000001']);
    expect(state.calls.map(e => e.call.id)).toEqual(['fc-000000000001']);
    expect(state.updated).toBe(1000);
  });

  it('replaces the pools and calls that changed and keeps the others', () => {
    const state = new ClusterState();
    const other = pool({ id: 'pl-2', function: 'other' });
    state.applySnapshot(
      {
        type: 'snapshot',
        pools: [pool(), other],
        calls: [call()],
        calls_more: false,
        spares: []
      },
      0
    );
    state.applyChanges(
      changes({
        pools: [pool({ backlog: 7, num_total_runners: 2 })],
        calls: [call({ done: 40 })]
      }),
      500
    );
    expect(state.pool('pl-000000000001')?.backlog).toBe(7);
    expect(state.pool('pl-2')?.function).toBe('other');
    expect(state.call('fc-000000000001')?.call.done).toBe(40);
  });

  it('keeps a call the server no longer lists, finished, every input reported', () => {
    const state = new ClusterState();
    state.applySnapshot(
      {
        type: 'snapshot',
        pools: [pool()],
        calls: [call({ done: 90, failed: 2 })],
        calls_more: false,
        spares: []
      },
      0
    );
    state.applyChanges(changes({ calls_removed: ['fc-000000000001'] }), 10);
    const entry = state.call('fc-000000000001');
    expect(entry?.gone).toBe(true);
    expect(entry?.call.finished).toBe(true);
    expect(entry?.call.done).toBe(98);
    expect(entry?.call.failed).toBe(2);
  });

  it('takes the final model sent with the removal as it is', () => {
    const state = new ClusterState();
    state.setCalls([call({ done: 50 })], 0);
    state.applyChanges(
      changes({
        calls: [call({ done: 95, failed: 5, finished: true })],
        calls_removed: ['fc-000000000001']
      }),
      10
    );
    expect(state.call('fc-000000000001')?.call).toMatchObject({
      done: 95,
      failed: 5,
      finished: true
    });
  });

  it('keeps the counts of a cancelled call', () => {
    const state = new ClusterState();
    state.setCalls([call({ done: 10, cancelled: true })], 0);
    state.setCalls([], 10);
    expect(state.call('fc-000000000001')?.call.done).toBe(10);
  });

  it('treats calls missing from a full list as gone', () => {
    const state = new ClusterState();
    state.setCalls([call(), call({ id: 'fc-2' })], 0);
    state.setCalls([call({ id: 'fc-2' })], 10);
    expect(state.call('fc-000000000001')?.gone).toBe(true);
    expect(state.call('fc-2')?.gone).toBe(false);
  });

  it('lists calls newest first and keeps only a few gone ones', () => {
    const state = new ClusterState({ keepGoneCalls: 2 });
    for (let i = 0; i < 5; i++) {
      state.putCall(call({ id: `fc-${i}` }), i * 10);
    }
    expect(state.calls.map(e => e.call.id)).toEqual([
      'fc-4',
      'fc-3',
      'fc-2',
      'fc-1',
      'fc-0'
    ]);
    state.setCalls([], 100);
    expect(state.calls.map(e => e.call.id)).toEqual(['fc-4', 'fc-3']);
  });

  it('drops a pool that a full list no longer has, with its history', () => {
    const state = new ClusterState();
    state.setPools([pool(), pool({ id: 'pl-2' })], 0);
    state.setPools([pool({ id: 'pl-2' })], 2000);
    expect(state.pools.map(p => p.id)).toEqual(['pl-2']);
    expect(state.history('pl-000000000001')).toEqual([]);
  });

  it('records events, newest first, and counts the dropped ones', () => {
    const state = new ClusterState({ keepEvents: 2 });
    state.applyChanges(
      changes({
        events: [
          { type: 'container-started', pool_id: 'pl-1', container_id: 'wk-1' },
          { type: 'container-started', pool_id: 'pl-1', container_id: 'wk-2' },
          { type: 'container-stopped', pool_id: 'pl-1', container_id: 'wk-1' }
        ],
        events_dropped: 5
      }),
      0
    );
    expect(state.events.map(e => e.event.container_id)).toEqual([
      'wk-1',
      'wk-2'
    ]);
    expect(state.events[0].event.type).toBe('container-stopped');
    expect(state.eventsDropped).toBe(5);
  });

  it('remembers when each pool came, for uptimes that tick in between', () => {
    const state = new ClusterState();
    state.applySnapshot(
      {
        type: 'snapshot',
        pools: [pool(), pool({ id: 'pl-2' })],
        calls: [],
        calls_more: false,
        spares: []
      },
      1000
    );
    // Only the pool that changed comes again: the other's uptimes date from 1000.
    state.applyChanges(changes({ pools: [pool({ backlog: 3 })] }), 5000);
    expect(state.received('pl-000000000001')).toBe(5000);
    expect(state.received('pl-2')).toBe(1000);
  });

  it('knows since when a pool is stopped: its stop event, or first seen', () => {
    const state = new ClusterState();
    state.setPools([pool()], 1000);
    expect(state.stoppedSince('pl-000000000001')).toBeUndefined();
    const events = [{ time: 2, message: 'stopped: its calls cancelled' }];
    state.putPool(pool({ stopped: true, events }), 9000);
    expect(state.stoppedSince('pl-000000000001')).toBe(2000);
    state.putPool(pool({ stopped: true, events: [] }), 12_000);
    expect(state.stoppedSince('pl-000000000001')).toBe(2000);
    // called again: running; stopped again later, with no event: when seen
    state.putPool(pool(), 13_000);
    expect(state.stoppedSince('pl-000000000001')).toBeUndefined();
    state.putPool(pool({ stopped: true }), 14_000);
    expect(state.stoppedSince('pl-000000000001')).toBe(14_000);
  });

  describe('history', () => {
    it('samples size and backlog, about a second apart, the last point live', () => {
      const state = new ClusterState();
      state.setPools([pool({ num_total_runners: 1, backlog: 10 })], 0);
      state.putPool(pool({ num_total_runners: 2, backlog: 8 }), 250);
      state.putPool(pool({ num_total_runners: 3, backlog: 5 }), 500);
      expect(state.history('pl-000000000001')).toEqual([
        { t: 0, size: 1, pending: 10 },
        { t: 500, size: 3, pending: 5 }
      ]);
      state.putPool(pool({ num_total_runners: 3, backlog: 2 }), 1000);
      state.sample(1250);
      // At 1000 the live point (500) is kept and a new live point starts.
      expect(state.history('pl-000000000001').map(s => s.t)).toEqual([
        0, 500, 1250
      ]);
    });

    it('forgets points older than the window', () => {
      const state = new ClusterState({ historyWindow: 10_000 });
      state.setPools([pool()], 0);
      for (let t = 2000; t <= 30_000; t += 2000) {
        state.sample(t);
      }
      const times = state.history('pl-000000000001').map(s => s.t);
      expect(times[0]).toBeGreaterThanOrEqual(20_000);
      expect(times[times.length - 1]).toBe(30_000);
    });
  });
});
