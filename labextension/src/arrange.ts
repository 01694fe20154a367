/**
 * What the panel shows, and in what order: pools and calls grouped by who created them (a
 * notebook's kernel, or a script), the current notebook's first; within a group the pools
 * with work first (inputs pending or running), then the idle ones, then the stopped ones;
 * a pool stopped for more than a minute is folded away behind a "show N stopped" toggle.
 * Pure, tested with jest.
 */

import { IOwner, IPool } from './models';
import { ICallEntry } from './state';

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

/** The pools and calls of one owner. */
export interface IOwnerGroup {
  /** What makes an owner the same one: its kernel (a restart keeps it), else its process. */
  key: string;
  owner: IOwner;
  pools: IPool[];
  calls: ICallEntry[];
  /** Its kernel is the one of the document the user works in. */
  current: boolean;
}

/**
 * The server's `owner_key`: "app:<name>" for a deployed app's pools, else
 * "kernel:<id>", else "process:<host>:<pid>".
 */
export function ownerKey(owner: IOwner): string {
  if (owner.app) {
    return `app:${owner.app}`;
  }
  return owner.kernel_id
    ? `kernel:${owner.kernel_id}`
    : `process:${owner.host}:${owner.pid}`;
}

/**
 * Group pools and calls by owner: the group of `currentKernel` first, then the groups
 * with work, then those with idle pools, then the others (stopped pools only, or calls
 * only), each kind in the order first seen.
 */
export function groupByOwner(
  pools: IPool[],
  calls: ICallEntry[],
  currentKernel: string | null
): IOwnerGroup[] {
  const groups = new Map<string, IOwnerGroup>();
  const groupOf = (owner: IOwner) => {
    const key = ownerKey(owner);
    let group = groups.get(key);
    if (group === undefined) {
      const current =
        currentKernel !== null && owner.kernel_id === currentKernel;
      group = { key, owner, pools: [], calls: [], current };
      groups.set(key, group);
    }
    return group;
  };
  for (const pool of pools) {
    groupOf(pool.owner).pools.push(pool);
  }
  for (const entry of calls) {
    groupOf(entry.call.owner).calls.push(entry);
  }
  const rank = (group: IOwnerGroup) =>
    group.current
      ? 0
      : Math.min(...group.pools.map(pool => RANK[poolActivity(pool)] + 1), 3);
  return Array.from(groups.values())
    .map((group, order) => ({ group, order }))
    .sort((a, b) => rank(a.group) - rank(b.group) || a.order - b.order)
    .map(entry => entry.group);
}

/** A call and the calls its inputs made (code on a worker calling functions). */
export interface ICallNode {
  entry: ICallEntry;
  children: ICallNode[];
}

/**
 * The call graph as the panel nests it: each call under the call whose input made it,
 * where that call is listed too; the others are roots. Both keep the order given (newest
 * first). A call whose parent is not listed (finished long ago, or another owner's) stays
 * a root: its row names its parent instead.
 */
export function callTree(calls: ICallEntry[]): ICallNode[] {
  const nodes = new Map<string, ICallNode>(
    calls.map(entry => [entry.call.id, { entry, children: [] }])
  );
  const roots: ICallNode[] = [];
  for (const node of nodes.values()) {
    const parentId = node.entry.call.parent?.call_id;
    const parent = parentId === undefined ? undefined : nodes.get(parentId);
    // a parent is always older than its child, so no cycle can form but a self-reference
    if (parent !== undefined && parent !== node) {
      parent.children.push(node);
    } else {
      roots.push(node);
    }
  }
  return roots;
}
