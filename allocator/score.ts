/**
 * Scoring. A score is an integer; higher is better. It is composed lexicographically so that a
 * single number can travel in a bid and be compared by anyone:
 *
 *   score = base − bucketKey × 2^33 + hostKey × 2^20
 *
 *   base      ∈ [0, 1e6]  resource score of the strategy (see `resourceScore`), or for fill/each
 *                         the host's remaining capacity in replicas (Eru ranks by capacity)
 *   hostKey   ∈ [−4095, 4095]  −(replicas of the deploy on the host) for auto / antiAffinity,
 *                         +(replicas on the host) for fill (top up the fullest first), else 0
 *   bucketKey ∈ [0, 2^19−1]  replicas of the deploy in this host's spread bucket (zone) when the
 *                         request spreads; hosts without the label rank after every labelled one
 *
 * base < 2^20 and |hostKey × 2^20| < 2^32, so each key strictly dominates the terms below it;
 * the total stays below 2^53, so the sum is exact.
 */
import { boundMilli, schedulableSharedMilli } from './cpu.ts';
import type { DeployCounts } from './feasibility.ts';
import { countFits, MAX_FITS } from './fit.ts';
import { reserve } from './ledger.ts';
import type {
  Allocation,
  HostCapacity,
  HostLedger,
  PlacementContext,
  PlacementRequest,
  ResourceRequest,
  Strategy,
  TypicalShape,
} from './types.ts';
import { SHARE_BASE } from './types.ts';
import { ratiosOf, scalePermille } from './units.ts';

export const SCORE_SCALE = 1_000_000;
export const HOST_UNIT = 2 ** 20;
export const BUCKET_UNIT = 2 ** 33;
export const MAX_HOST_KEY = 4095;
export const MAX_BUCKET_KEY = 2 ** 19 - 1;
export const DEFAULT_FRAGMENTATION_WEIGHT = 0.5;

/** Used / schedulable per dimension after oversell; null where the host has none of it. */
export interface Utilization {
  cpu: number | null;
  memory: number | null;
  disk: number | null;
  gpu: number | null;
}

export function utilization(capacity: HostCapacity, ledger: HostLedger): Utilization {
  const ratios = ratiosOf(capacity);
  const frac = (used: number, total: number): number | null => (total > 0 ? Math.min(1, used / total) : null);
  const bound = boundMilli(ledger);
  const cpuTotal = bound + Math.max(0, schedulableSharedMilli(capacity, bound));
  let gpuUsed = 0;
  for (let i = 0; i < capacity.gpus.length; i++) gpuUsed += ledger.gpus[i]?.milli ?? 0;
  return {
    cpu: frac(bound + ledger.cpu.sharedMilli, cpuTotal),
    memory: frac(ledger.memoryBytes, scalePermille(capacity.memoryBytes, ratios.memory)),
    disk: frac(ledger.diskBytes, scalePermille(capacity.diskBytes, ratios.disk)),
    gpu: frac(gpuUsed, capacity.gpus.length * SHARE_BASE),
  };
}

function present(u: Utilization): number[] {
  return [u.cpu, u.memory, u.disk, u.gpu].filter((x): x is number => x !== null);
}

/**
 * Strategy term S ∈ [0, 1] from the utilisation after placing the replica:
 * binpack and auto: mean(u); spread: 1 − mean(u); global: 1 − max(u) (level the dominant
 * dimension, Eru's "main usage"). fill/each do not use it.
 */
export function strategyTerm(strategy: Strategy, after: Utilization): number {
  const u = present(after);
  if (u.length === 0) return 0;
  const mean = u.reduce((a, b) => a + b, 0) / u.length;
  switch (strategy.kind) {
    case 'spread':
      return 1 - mean;
    case 'global':
      return 1 - Math.max(...u);
    default:
      return mean;
  }
}

/** Dimensions a request consumes, for comparing it against a typical shape. */
function amounts(r: ResourceRequest): number[] {
  let volumes = 0;
  for (const v of r.volumes ?? []) volumes += v.bytes;
  return [r.cpu.milli, r.memoryBytes, r.diskBytes ?? 0, r.gpu?.milli ?? 0, volumes];
}

/** How many copies of `shape` the request is "worth": its dominant ratio to the shape. */
export function worthInShapes(request: ResourceRequest, shape: ResourceRequest): number {
  const r = amounts(request);
  const s = amounts(shape);
  let worth = 0;
  for (let i = 0; i < s.length; i++) {
    const sd = s[i]!;
    if (sd > 0) worth = Math.max(worth, r[i]! / sd);
  }
  return worth;
}

/**
 * Fragmentation term F ∈ [0, 1]: how efficiently the placement spends the host's room for the
 * typical shapes. For each shape s: loss = fits_s(before) − fits_s(after) (typical requests that
 * no longer fit), worth = the request's dominant ratio to s; eff_s = 1 if loss = 0, else
 * min(1, worth / loss). F = Σ w_s · eff_s / Σ w_s, with eff_s rounded to 1e-6 and integer weights
 * so the sum is exact and independent of the order of the shapes.
 */
export function fragmentationTerm(
  capacity: HostCapacity,
  before: HostLedger,
  after: HostLedger,
  request: ResourceRequest,
  typical: readonly TypicalShape[],
): number {
  let num = 0;
  let den = 0;
  for (const t of typical) {
    if (amounts(t.resources).every((x) => x === 0)) continue;
    const loss = Math.max(
      0,
      countFits(capacity, before, t.resources) - countFits(capacity, after, t.resources),
    );
    const eff =
      loss === 0
        ? SCORE_SCALE
        : Math.round(Math.min(1, worthInShapes(request, t.resources) / loss) * SCORE_SCALE);
    num += t.weight * eff;
    den += t.weight;
  }
  return den === 0 ? 1 : num / den / SCORE_SCALE;
}

/**
 * base = round(1e6 × ((1 − f) · S + f · F)), f = the fragmentation weight (0 without typical
 * shapes). For fill/each: base = min(replicas that still fit, 1e6).
 */
export function resourceScore(
  capacity: HostCapacity,
  ledger: HostLedger,
  request: PlacementRequest,
  allocation: Allocation,
  ctx: PlacementContext,
): number {
  if (ctx.strategy.kind === 'fill' || ctx.strategy.kind === 'each') {
    return Math.min(countFits(capacity, ledger, request.resources), MAX_FITS);
  }
  const after = reserve(ledger, allocation);
  const s = strategyTerm(ctx.strategy, utilization(capacity, after));
  const typical = ctx.typical ?? [];
  const f =
    typical.length > 0
      ? Math.min(1, Math.max(0, ctx.fragmentationWeight ?? DEFAULT_FRAGMENTATION_WEIGHT))
      : 0;
  const frag = f > 0 ? fragmentationTerm(capacity, ledger, after, request.resources, typical) : 1;
  const x = (1 - f) * s + f * frag;
  return Math.round(Math.min(1, Math.max(0, x)) * SCORE_SCALE);
}

/** Folds counts into the base score (see the module comment). */
export function composeScore(
  strategy: Strategy,
  request: PlacementRequest,
  counts: DeployCounts,
  base: number,
): number {
  let hostKey = 0;
  const onHost = Math.min(counts.onHost, MAX_HOST_KEY);
  if (strategy.kind === 'fill') hostKey = onHost;
  else if (strategy.kind === 'auto' || (request.antiAffinity === true && strategy.kind !== 'each'))
    hostKey = -onHost;
  let bucketKey = 0;
  if (request.spread !== undefined) {
    bucketKey = counts.inBucket === null ? MAX_BUCKET_KEY : Math.min(counts.inBucket, MAX_BUCKET_KEY - 1);
  }
  return base + hostKey * HOST_UNIT - bucketKey * BUCKET_UNIT;
}
