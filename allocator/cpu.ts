/**
 * CPU: a shared pool of milli (oversellable) plus cores that can be bound (never oversold).
 *
 * Shared pool: `schedulable = floor((cores × 1000 − boundMilli) × ratio.cpu / 1000)`; bound milli
 * is carved out of the pool before oversell is applied, so binding a core can never oversubscribe
 * it through the shared pool, and a bind is refused if it would shrink the pool below what shared
 * workloads already hold.
 *
 * Bound requests follow Eru's fragment model: `milli = whole × 1000 + fragment`. Whole cores must
 * be completely free; the fragment goes onto one core — the partially bound core with the least
 * free milli that still fits (best fit, keeps free cores whole), else a fresh core, subject to the
 * `maxFragmentCores` limit. Ties go to the lowest core index.
 */
import type { CoreGrant, CpuRequest, HostCapacity, HostLedger, Milli } from './types.ts';
import { SHARE_BASE } from './types.ts';
import { plural, ratiosOf, scalePermille } from './units.ts';

export interface CpuGrant {
  sharedMilli: Milli;
  cores: CoreGrant[];
}

export type CpuResult = { ok: true; grant: CpuGrant } | { ok: false; message: string };

export function boundMilli(ledger: HostLedger): Milli {
  let sum = 0;
  for (const m of ledger.cpu.cores) sum += m;
  return sum;
}

/** Size of the shared pool when `bound` milli are bound. */
export function schedulableSharedMilli(capacity: HostCapacity, bound: Milli): Milli {
  return scalePermille(capacity.cpu.cores * SHARE_BASE - bound, ratiosOf(capacity).cpu);
}

export function freeSharedMilli(capacity: HostCapacity, ledger: HostLedger): Milli {
  return schedulableSharedMilli(capacity, boundMilli(ledger)) - ledger.cpu.sharedMilli;
}

/** Effective limit on partially bound cores (null = unlimited). */
export function fragmentLimit(capacity: HostCapacity, req: CpuRequest): number | null {
  const host = capacity.cpu.maxFragmentCores ?? null;
  const own = req.maxFragmentCores ?? null;
  if (host === null) return own;
  if (own === null) return host;
  return Math.min(host, own);
}

/** "2 cores + 500 milli", "1 core", "300 milli". */
export function describeCores(milli: Milli): string {
  const whole = Math.floor(milli / SHARE_BASE);
  const frag = milli % SHARE_BASE;
  if (whole === 0) return `${frag} milli`;
  return frag === 0 ? plural(whole, 'core') : `${plural(whole, 'core')} + ${frag} milli`;
}

/** Free/partial classification of the host's cores. */
export interface CoreState {
  /** Indices of cores with nothing bound, ascending. */
  free: number[];
  /** Cores with 0 < bound < 1000: index and free milli, ascending index. */
  partial: Array<{ index: number; free: Milli }>;
}

export function coreState(capacity: HostCapacity, ledger: HostLedger): CoreState {
  const free: number[] = [];
  const partial: Array<{ index: number; free: Milli }> = [];
  for (let i = 0; i < capacity.cpu.cores; i++) {
    const used = ledger.cpu.cores[i] ?? 0;
    if (used === 0) free.push(i);
    else if (used < SHARE_BASE) partial.push({ index: i, free: SHARE_BASE - used });
  }
  return { free, partial };
}

export function allocateCpu(capacity: HostCapacity, ledger: HostLedger, req: CpuRequest): CpuResult {
  const milli = req.milli;
  if (!req.bind) {
    const free = freeSharedMilli(capacity, ledger);
    if (milli > free)
      return { ok: false, message: `cpu: need ${milli} milli, free ${Math.max(0, free)} milli` };
    return { ok: true, grant: { sharedMilli: milli, cores: [] } };
  }
  if (milli === 0) return { ok: true, grant: { sharedMilli: 0, cores: [] } };

  const whole = Math.floor(milli / SHARE_BASE);
  const frag = milli % SHARE_BASE;
  const { free, partial } = coreState(capacity, ledger);
  const shortOfCores = (): CpuResult => {
    const largest = partial.reduce((m, c) => Math.max(m, c.free), 0);
    const extra = largest > 0 ? `, largest fragment ${largest} milli` : '';
    return {
      ok: false,
      message: `cpu: need ${describeCores(milli)} bound, free ${plural(free.length, 'whole core')}${extra}`,
    };
  };
  if (free.length < whole) return shortOfCores();

  const cores: CoreGrant[] = free.slice(0, whole).map((index) => ({ index, milli: SHARE_BASE }));
  if (frag > 0) {
    let best: { index: number; free: Milli } | undefined;
    for (const c of partial) {
      if (c.free >= frag && (best === undefined || c.free < best.free)) best = c;
    }
    if (best !== undefined) {
      cores.push({ index: best.index, milli: frag });
    } else {
      const fresh = free[whole];
      if (fresh === undefined) return shortOfCores();
      const limit = fragmentLimit(capacity, req);
      if (limit !== null && partial.length + 1 > limit) {
        return {
          ok: false,
          message:
            `cpu: need a ${frag} milli fragment, no fragment core has it free and ` +
            `${plural(partial.length, 'fragment core')} in use (max ${limit})`,
        };
      }
      cores.push({ index: fresh, milli: frag });
    }
  }

  const poolAfter = schedulableSharedMilli(capacity, boundMilli(ledger) + milli);
  if (ledger.cpu.sharedMilli > poolAfter) {
    return {
      ok: false,
      message:
        `cpu: binding ${describeCores(milli)} would shrink the shared pool to ${Math.max(0, poolAfter)} milli, ` +
        `below the ${ledger.cpu.sharedMilli} milli in shared use`,
    };
  }
  cores.sort((a, b) => a.index - b.index);
  return { ok: true, grant: { sharedMilli: 0, cores } };
}

/** How many more copies of `req` fit on the CPU side (capped at `cap`). */
export function cpuFits(capacity: HostCapacity, ledger: HostLedger, req: CpuRequest, cap: number): number {
  const milli = req.milli;
  if (milli === 0) return cap;
  if (!req.bind) return Math.min(cap, Math.max(0, Math.floor(freeSharedMilli(capacity, ledger) / milli)));

  const whole = Math.floor(milli / SHARE_BASE);
  const frag = milli % SHARE_BASE;
  const { free, partial } = coreState(capacity, ledger);
  let byCores: number;
  if (frag === 0) {
    byCores = Math.floor(free.length / whole);
  } else {
    let onPartial = 0;
    for (const c of partial) onPartial += Math.floor(c.free / frag);
    const perFresh = Math.floor(SHARE_BASE / frag);
    // Fresh cores become fragment cores only once every partial core is "stuck" (free < frag
    // after its fill). A fresh core filled exactly (1000 % frag = 0) stops being a fragment core;
    // otherwise it stays one, so at most limit − stuck fresh cores can be opened.
    const limit = fragmentLimit(capacity, req);
    let stuck = 0;
    for (const c of partial) if (c.free % frag !== 0) stuck++;
    let movable = free.length;
    if (limit !== null) {
      if (SHARE_BASE % frag === 0) movable = stuck + 1 <= limit ? free.length : 0;
      else movable = Math.max(0, Math.min(free.length, limit - stuck));
    }
    if (whole === 0) {
      byCores = onPartial + movable * perFresh;
    } else {
      // Eru's split: turn `moved` free cores into fragment cores, the rest serve whole cores.
      byCores = 0;
      for (let moved = 0; moved <= movable; moved++) {
        byCores = Math.max(
          byCores,
          Math.min(Math.floor((free.length - moved) / whole), onPartial + moved * perFresh),
        );
      }
    }
  }

  // Binding k copies must leave the shared pool large enough for what is in shared use.
  const bound = boundMilli(ledger);
  const shared = ledger.cpu.sharedMilli;
  let lo = 0;
  let hi = Math.min(cap, byCores);
  if (schedulableSharedMilli(capacity, bound) < shared) return 0;
  while (lo < hi) {
    const mid = lo + Math.ceil((hi - lo) / 2);
    if (schedulableSharedMilli(capacity, bound + mid * milli) >= shared) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
