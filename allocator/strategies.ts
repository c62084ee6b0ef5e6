/**
 * Strategy-level pieces shared by the centralized `plan` and the decentralized bid/select path:
 * the composite `score` of a host, the deterministic ranking of candidates, and `select`, which
 * turns a set of bids into winners.
 *
 *   binpack  fill the fullest hosts first (best fit)                          — default
 *   spread   fill the emptiest hosts first (least allocated)
 *   auto     Eru AUTO: even out the deploy's replicas over hosts, then binpack
 *   global   Eru GLOBAL: balance load — minimise the host's dominant utilisation
 *   fill     Eru FILL: top each chosen host up to N replicas of the deploy
 *   each     Eru EACH: exactly N new replicas on each chosen host
 */
import { countsFor, feasibility } from './feasibility.ts';
import { composeScore, resourceScore } from './score.ts';
import type { Bid, Host, HostPlacement, PlacementContext, PlacementRequest, Strategy } from './types.ts';
import { compareStrings, tieBreak } from './units.ts';

export const DEFAULT_STRATEGY: Strategy = { kind: 'binpack' };

/**
 * Composite score of placing one more replica on `host` (see score.ts for the formula), or
 * `-Infinity` if the host is not feasible.
 */
export function score(host: Host, request: PlacementRequest, ctx: PlacementContext): number {
  const f = feasibility(host, request, ctx);
  if (!f.ok) return Number.NEGATIVE_INFINITY;
  const base = resourceScore(host.capacity, host.ledger, request, f.allocation, ctx);
  return composeScore(ctx.strategy, request, countsFor(host, request, ctx), base);
}

export interface Ranked {
  hostId: string;
  score: number;
}

/**
 * Total order of candidates: score descending, then `tieBreak(deployId, hostId)` ascending, then
 * hostId ascending. Every agent holding the same bids derives the same order.
 */
export function compareRanked(deployId: string, a: Ranked, b: Ranked): number {
  if (a.score !== b.score) return b.score - a.score;
  const ta = tieBreak(deployId, a.hostId);
  const tb = tieBreak(deployId, b.hostId);
  if (ta !== tb) return ta - tb;
  return compareStrings(a.hostId, b.hostId);
}

export interface Selection {
  /** Ascending hostId. */
  placements: HostPlacement[];
  unplaced: number;
}

/**
 * Winners from bids (order of `bids` is irrelevant). Rejected bids are ignored.
 *   binpack:               best bid first, taking all the replicas it offered, then the next.
 *   spread, auto, global:  round robin over bids in rank order, one replica per host per round.
 *   fill, each:            the first `hostLimit` bids (all if absent) take what they offered.
 * For fill/each, `unplaced` counts `replicas` for every missing host: hostLimit − winners, or,
 * without a limit, every bid rejected for a reason other than labels or an invalid request.
 * Unlike `plan`, bids are not re-scored between replicas: this is the one-round auction.
 */
export function select(
  bids: readonly Bid[],
  request: PlacementRequest,
  replicas: number,
  strategy: Strategy,
): Selection {
  const ok = bids
    .filter((b): b is Extract<Bid, { ok: true }> => b.ok)
    .sort((a, b) => compareRanked(request.deployId, a, b));
  const taken = new Map<string, HostPlacement>();
  const take = (hostId: string, allocations: HostPlacement['allocations']): void => {
    if (allocations.length === 0) return;
    const p = taken.get(hostId) ?? { hostId, count: 0, allocations: [] };
    p.allocations.push(...allocations);
    p.count = p.allocations.length;
    taken.set(hostId, p);
  };
  let unplaced = 0;
  if (strategy.kind === 'fill' || strategy.kind === 'each') {
    const limit = strategy.hostLimit;
    const winners = limit === undefined ? ok : ok.slice(0, limit);
    for (const b of winners) take(b.hostId, b.allocations);
    const missing =
      limit === undefined
        ? bids.filter((b) => !b.ok && b.dimension !== 'label' && b.dimension !== 'request').length
        : Math.max(0, limit - winners.length);
    unplaced = missing * replicas;
  } else if (strategy.kind === 'binpack') {
    let left = replicas;
    for (const b of ok) {
      if (left === 0) break;
      const n = Math.min(left, b.allocations.length);
      take(b.hostId, b.allocations.slice(0, n));
      left -= n;
    }
    unplaced = left;
  } else {
    let left = replicas;
    for (let round = 0; left > 0; round++) {
      let progressed = false;
      for (const b of ok) {
        if (left === 0) break;
        const a = b.allocations[round];
        if (a === undefined) continue;
        take(b.hostId, [a]);
        left--;
        progressed = true;
      }
      if (!progressed) break;
    }
    unplaced = left;
  }
  const placements = [...taken.values()].sort((a, b) => compareStrings(a.hostId, b.hostId));
  return { placements, unplaced };
}
