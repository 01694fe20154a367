import { arrangePools, FOLD_STOPPED_AFTER, poolActivity } from '../arrange';
import { pool } from './fixtures';

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
