/**
 * `plan`: the centralized best-fit baseline — one coordinator that sees every host places the
 * replicas one by one, re-scoring after each (replica k sees the usage of replicas 1..k−1).
 * `bid`: the per-host piece of the decentralized protocol — a host scores itself from its own
 * ledger and offers concrete allocations.
 *
 * Both are pure and deterministic: hosts are processed in hostId order, ties are broken by
 * `compareRanked`, and the input order of hosts or existing placements never matters.
 */
import { unmetConstraints } from './constraints.ts';
import {
  allocate,
  countsFor,
  type DeployCounts,
  maxPerHostReason,
  placementFailures,
  spreadLabel,
} from './feasibility.ts';
import { countFits, MAX_FITS } from './fit.ts';
import { reserve } from './ledger.ts';
import { composeScore, resourceScore } from './score.ts';
import type {
  Allocation,
  Bid,
  Dimension,
  ExistingPlacement,
  Host,
  HostLedger,
  HostPlacement,
  PlacementContext,
  PlacementRequest,
  Plan,
  Strategy,
  TypicalShape,
} from './types.ts';
import { compareStrings, own, plural, setOwn, tieBreak } from './units.ts';
import { validateRequest, validateTypical } from './validate.ts';

export interface PlanOptions {
  typical?: readonly TypicalShape[];
  fragmentationWeight?: number;
}

/** Allocates up to `want` replicas one after another on a private copy of the books. */
function allocateMany(
  host: Host,
  ledger: HostLedger,
  request: PlacementRequest,
  want: number,
): { allocations: Allocation[]; ledger: HostLedger; stop: string | null; dimension: Dimension } {
  const allocations: Allocation[] = [];
  let books = ledger;
  while (allocations.length < want) {
    const r = allocate(host.capacity, books, request.resources, request.limits);
    if (!r.ok) {
      const stop = r.failures.map((f) => f.message).join('; ');
      return { allocations, ledger: books, stop, dimension: r.failures[0]?.dimension ?? 'request' };
    }
    allocations.push(r.allocation);
    books = reserve(books, r.allocation);
  }
  return { allocations, ledger: books, stop: null, dimension: 'request' };
}

function isBatch(strategy: Strategy): strategy is Extract<Strategy, { kind: 'fill' | 'each' }> {
  return strategy.kind === 'fill' || strategy.kind === 'each';
}

/**
 * What `host` offers for `request`. For binpack/spread/auto/global it offers up to `replicas`
 * allocations (at least one, each seeing the previous ones, within maxPerHost); the score is that
 * of the first. For fill/each `replicas` is the per-host N and the bid is all-or-nothing: each
 * offers N, fill offers N minus what the host already runs (possibly zero).
 */
export function bid(host: Host, request: PlacementRequest, ctx: PlacementContext, replicas = 1): Bid {
  const reject = (reason: string, dimension: Dimension): Bid => ({
    ok: false,
    hostId: host.id,
    reason,
    dimension,
  });
  const invalid = [...validateRequest(request), ...validateTypical(ctx.typical ?? [])];
  if (invalid.length > 0) return reject(invalid.map((e) => `request: ${e}`).join('; '), 'request');
  const counts = countsFor(host, request, ctx);
  const strategy = ctx.strategy;

  if (isBatch(strategy)) {
    const labels = unmetConstraints(request.constraints, host.labels);
    if (labels.length > 0) return reject(labels.join('; '), 'label');
    const want = strategy.kind === 'each' ? replicas : Math.max(0, replicas - counts.onHost);
    const cap = batchCapReason(request, strategy, counts.onHost, want);
    if (cap !== null) return reject(cap, 'max-per-host');
    const got = allocateMany(host, host.ledger, request, want);
    if (got.stop !== null) {
      return reject(shortReason(strategy, got.allocations.length, want, got.stop), got.dimension);
    }
    const base = Math.min(countFits(host.capacity, host.ledger, request.resources), MAX_FITS);
    return {
      ok: true,
      hostId: host.id,
      score: composeScore(strategy, request, counts, base),
      allocations: got.allocations,
    };
  }

  const placement = placementFailures(host, request, counts.onHost);
  if (placement.length > 0) {
    return reject(placement.map((f) => f.message).join('; '), placement[0]?.dimension ?? 'label');
  }
  const room =
    request.maxPerHost === undefined ? replicas : Math.min(replicas, request.maxPerHost - counts.onHost);
  const got = allocateMany(host, host.ledger, request, Math.max(1, room));
  const first = got.allocations[0];
  if (first === undefined) return reject(got.stop ?? 'no allocation', got.dimension);
  const base = resourceScore(host.capacity, host.ledger, request, first, ctx);
  const short =
    got.allocations.length >= replicas
      ? undefined
      : (got.stop ?? maxPerHostReason(request, counts.onHost + got.allocations.length));
  return {
    ok: true,
    hostId: host.id,
    score: composeScore(strategy, request, counts, base),
    allocations: got.allocations,
    ...(short !== undefined ? { short } : {}),
  };
}

function batchCapReason(
  request: PlacementRequest,
  strategy: Strategy,
  onHost: number,
  want: number,
): string | null {
  if (request.maxPerHost === undefined || onHost + want <= request.maxPerHost) return null;
  return (
    `max-per-host: ${strategy.kind} needs ${plural(want, 'more replica')} of ${request.deployId} ` +
    `next to ${onHost} (max ${request.maxPerHost})`
  );
}

function shortReason(strategy: Strategy, got: number, want: number, why: string): string {
  return `${strategy.kind}: only ${got} of ${plural(want, 'replica')} fit; ${why}`;
}

interface Working {
  host: Host;
  ledger: HostLedger;
  allocations: Allocation[];
  /** Bucket value of the spread label, or null if the host lacks it. */
  bucket: string | null;
  /** tieBreak(deployId, hostId), computed once. */
  tie: number;
}

/** Same order as `compareRanked`, with the tie hash precomputed. */
function better(a: { w: Working; score: number }, b: { w: Working; score: number }): boolean {
  if (a.score !== b.score) return a.score > b.score;
  if (a.w.tie !== b.w.tie) return a.w.tie < b.w.tie;
  return a.w.host.id < b.w.host.id;
}

interface Book {
  onHost: Map<string, number>;
  inBucket: Map<string, number>;
}

function counts(book: Book, w: Working): DeployCounts {
  return {
    onHost: book.onHost.get(w.host.id) ?? 0,
    inBucket: w.bucket === null ? null : (book.inBucket.get(w.bucket) ?? 0),
  };
}

function addTo(book: Book, w: Working, n: number): void {
  book.onHost.set(w.host.id, (book.onHost.get(w.host.id) ?? 0) + n);
  if (w.bucket !== null) book.inBucket.set(w.bucket, (book.inBucket.get(w.bucket) ?? 0) + n);
}

/**
 * Places `replicas` new replicas of `request` over `hosts` (whose ledgers already include the
 * `existing` replicas). For fill/each `replicas` is the per-host N. Throws on duplicate host ids
 * or an invalid request (programming errors: validate specs at the API boundary).
 */
export function plan(
  hosts: readonly Host[],
  request: PlacementRequest,
  replicas: number,
  strategy: Strategy,
  existing: readonly ExistingPlacement[],
  options: PlanOptions = {},
): Plan {
  const invalid = [...validateRequest(request), ...validateTypical(options.typical ?? [])];
  if (!Number.isSafeInteger(replicas) || replicas < 0)
    invalid.push(`replicas: must be a non-negative integer`);
  if (invalid.length > 0) throw new Error(`plan: invalid input: ${invalid.join('; ')}`);

  const sorted = [...hosts].sort((a, b) => compareStrings(a.id, b.id));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.id === sorted[i - 1]!.id) throw new Error(`plan: duplicate host id ${sorted[i]!.id}`);
  }
  const label = spreadLabel(request);
  const byId = new Map<string, Working>();
  const working: Working[] = sorted.map((host) => {
    const value = label === null ? undefined : own(host.labels, label);
    const tie = tieBreak(request.deployId, host.id);
    const w: Working = { host, ledger: host.ledger, allocations: [], bucket: value ?? null, tie };
    byId.set(host.id, w);
    return w;
  });

  const book: Book = { onHost: new Map(), inBucket: new Map() };
  const existingSorted = [...existing].sort(
    (a, b) => compareStrings(a.hostId, b.hostId) || a.count - b.count,
  );
  for (const e of existingSorted) {
    book.onHost.set(e.hostId, (book.onHost.get(e.hostId) ?? 0) + e.count);
    if (label === null) continue;
    const labels = byId.get(e.hostId)?.host.labels ?? e.labels ?? {};
    const value = own(labels, label);
    if (value !== undefined) book.inBucket.set(value, (book.inBucket.get(value) ?? 0) + e.count);
  }

  const ctx: PlacementContext = {
    strategy,
    existing: [],
    ...(options.typical !== undefined ? { typical: options.typical } : {}),
    ...(options.fragmentationWeight !== undefined
      ? { fragmentationWeight: options.fragmentationWeight }
      : {}),
  };
  const reasons = new Map<string, string>();
  const unplaced = isBatch(strategy)
    ? planBatch(working, request, replicas, strategy, ctx, book, reasons)
    : planEach(working, request, replicas, ctx, book, reasons);

  const placements: HostPlacement[] = working
    .filter((w) => w.allocations.length > 0)
    .map((w) => ({ hostId: w.host.id, count: w.allocations.length, allocations: w.allocations }));
  const reasonRecord: Record<string, string> = {};
  for (const w of working) {
    const r = reasons.get(w.host.id);
    if (r !== undefined) setOwn(reasonRecord, w.host.id, r);
  }
  return { placements, unplaced, reasons: reasonRecord };
}

type Evaluation = { ok: true; allocation: Allocation; base: number } | { ok: false; reason: string };

/** binpack / spread / auto / global: one replica at a time, best composite score wins. */
function planEach(
  working: Working[],
  request: PlacementRequest,
  replicas: number,
  ctx: PlacementContext,
  book: Book,
  reasons: Map<string, string>,
): number {
  // Resource evaluation depends only on the host's own books: cache it, invalidate the winner.
  const cache = new Map<string, Evaluation>();
  const evaluate = (w: Working): Evaluation => {
    const labels = unmetConstraints(request.constraints, w.host.labels);
    if (labels.length > 0) return { ok: false, reason: labels.join('; ') };
    const r = allocate(w.host.capacity, w.ledger, request.resources, request.limits);
    if (!r.ok) return { ok: false, reason: r.failures.map((f) => f.message).join('; ') };
    return {
      ok: true,
      allocation: r.allocation,
      base: resourceScore(w.host.capacity, w.ledger, request, r.allocation, ctx),
    };
  };
  for (let placed = 0; placed < replicas; placed++) {
    let best: { w: Working; allocation: Allocation; score: number } | undefined;
    for (const w of working) {
      const c = counts(book, w);
      if (request.maxPerHost !== undefined && c.onHost >= request.maxPerHost) {
        reasons.set(w.host.id, maxPerHostReason(request, c.onHost));
        continue;
      }
      let e = cache.get(w.host.id);
      if (e === undefined) {
        e = evaluate(w);
        cache.set(w.host.id, e);
      }
      if (!e.ok) {
        reasons.set(w.host.id, e.reason);
        continue;
      }
      reasons.delete(w.host.id);
      const candidate = {
        w,
        allocation: e.allocation,
        score: composeScore(ctx.strategy, request, c, e.base),
      };
      if (best === undefined || better(candidate, best)) best = candidate;
    }
    if (best === undefined) return replicas - placed;
    best.w.ledger = reserve(best.w.ledger, best.allocation);
    best.w.allocations.push(best.allocation);
    addTo(book, best.w, 1);
    cache.delete(best.w.host.id);
  }
  return 0;
}

/** fill / each: all-or-nothing batches per host, hosts chosen one by one by composite score. */
function planBatch(
  working: Working[],
  request: PlacementRequest,
  perHost: number,
  strategy: Extract<Strategy, { kind: 'fill' | 'each' }>,
  ctx: PlacementContext,
  book: Book,
  reasons: Map<string, string>,
): number {
  interface Candidate {
    w: Working;
    allocations: Allocation[];
    ledger: HostLedger;
    base: number;
  }
  const candidates: Candidate[] = [];
  let rejectedWant = 0;
  for (const w of working) {
    const labels = unmetConstraints(request.constraints, w.host.labels);
    if (labels.length > 0) {
      reasons.set(w.host.id, labels.join('; '));
      continue;
    }
    const onHost = book.onHost.get(w.host.id) ?? 0;
    const want = strategy.kind === 'each' ? perHost : Math.max(0, perHost - onHost);
    const cap = batchCapReason(request, strategy, onHost, want);
    if (cap !== null) {
      reasons.set(w.host.id, cap);
      rejectedWant += want;
      continue;
    }
    const got = allocateMany(w.host, w.ledger, request, want);
    if (got.stop !== null) {
      reasons.set(w.host.id, shortReason(strategy, got.allocations.length, want, got.stop));
      rejectedWant += want;
      continue;
    }
    const base = Math.min(countFits(w.host.capacity, w.ledger, request.resources), MAX_FITS);
    candidates.push({ w, allocations: got.allocations, ledger: got.ledger, base });
  }

  const limit = strategy.hostLimit;
  let chosen = 0;
  while (candidates.length > 0 && (limit === undefined || chosen < limit)) {
    let bestAt = 0;
    let best: { w: Working; score: number } | undefined;
    candidates.forEach((c, i) => {
      const candidate = { w: c.w, score: composeScore(ctx.strategy, request, counts(book, c.w), c.base) };
      if (best === undefined || better(candidate, best)) {
        best = candidate;
        bestAt = i;
      }
    });
    const [c] = candidates.splice(bestAt, 1);
    if (c === undefined) break;
    c.w.ledger = c.ledger;
    c.w.allocations.push(...c.allocations);
    addTo(book, c.w, c.allocations.length);
    chosen++;
  }
  for (const c of candidates) {
    reasons.set(c.w.host.id, `${strategy.kind}: not chosen, host limit ${limit} reached`);
  }
  return limit === undefined ? rejectedWant : Math.max(0, limit - chosen) * perHost;
}
