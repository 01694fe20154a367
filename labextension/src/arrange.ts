/**
 * Which pools the panel shows, and in what order: the pools with work first (inputs
 * pending or running), then the idle ones, then the stopped ones; a pool stopped for more
 * than a minute is folded away behind a "show N stopped" toggle. Pure, tested with jest.
 */

import { IPool } from './models';

export type PoolActivity = 'active' | 'idle' | 'stopped';

const RANK: Record<PoolActivity, number> = { active: 0, idle: 1, stopped: 2 };

/** How long a stopped pool stays on show before it is folded away (ms). */
export const FOLD_STOPPED_AFTER = 60 * 1000;

/** Whether a pool has work now, waits for some, or was stopped. */
export function poolActivity(pool: IPool): PoolActivity {
  if (pool.stopped) {
    return 'stopped';
  }
  return pool.backlog > 0 || pool.num_running_inputs > 0 ? 'active' : 'idle';
}

export interface IPoolListing {
  /** The pools on show, active first, then idle, then stopped. */
  shown: IPool[];
  /** The pools stopped for longer than the fold delay, latest stopped first. */
  folded: IPool[];
}

/**
 * Arrange `pools` (in the order the server first reported them, which is kept within
 * each kind, so that cards do not jump as counts move) for the panel at time `now`.
 * `stoppedSince` says since when a stopped pool has been (ms).
 */
export function arrangePools(
  pools: IPool[],
  stoppedSince: (poolId: string) => number | undefined,
  now: number,
  foldAfter = FOLD_STOPPED_AFTER
): IPoolListing {
  const since = (pool: IPool) => stoppedSince(pool.id) ?? now;
  const ranked = pools
    .map((pool, order) => ({ pool, order, rank: RANK[poolActivity(pool)] }))
    .sort((a, b) =>
      a.rank !== b.rank
        ? a.rank - b.rank
        : a.rank === RANK.stopped
          ? since(b.pool) - since(a.pool) || a.order - b.order
          : a.order - b.order
    )
    .map(entry => entry.pool);
  const isFolded = (pool: IPool) =>
    pool.stopped && now - since(pool) >= foldAfter;
  return {
    shown: ranked.filter(pool => !isFolded(pool)),
    folded: ranked.filter(isFolded)
  };
}
