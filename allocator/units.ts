/** Integer helpers, formatting and hashing shared by the allocator modules. */
import type { Bytes, HostCapacity, OversellRatios, Permille } from './types.ts';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

const DEFAULT_RATIO: Permille = 1000;

/** Oversell ratios with defaults filled in. */
export function ratiosOf(capacity: HostCapacity): OversellRatios {
  return {
    cpu: capacity.oversell?.cpu ?? DEFAULT_RATIO,
    memory: capacity.oversell?.memory ?? DEFAULT_RATIO,
    disk: capacity.oversell?.disk ?? DEFAULT_RATIO,
  };
}

/**
 * `floor(value × permille / 1000)` computed without an intermediate product that could leave the
 * safe-integer range (value = 1000q + r, so the result is qp + floor(rp / 1000)).
 */
export function scalePermille(value: number, permille: Permille): number {
  const q = Math.floor(value / 1000);
  const r = value - q * 1000;
  return q * permille + Math.floor((r * permille) / 1000);
}

/** floor(a / b) for b > 0, never below 0. */
export function fitsOf(free: number, need: number): number {
  return free <= 0 ? 0 : Math.floor(free / need);
}

export function formatBytes(n: Bytes): string {
  const abs = Math.abs(n);
  if (abs >= TiB) return `${(n / TiB).toFixed(1)} TiB`;
  if (abs >= GiB) return `${(n / GiB).toFixed(1)} GiB`;
  if (abs >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (abs >= KiB) return `${(n / KiB).toFixed(1)} KiB`;
  return `${n} B`;
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** Own-property lookup: label and pool names like "constructor" must not hit Object.prototype. */
export function own<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/** Own-property write that also works for a key named "__proto__". */
export function setOwn<T>(record: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
}

/** 32-bit FNV-1a over UTF-16 code units: a tiny, stable, platform-independent hash. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * Tie-break rank of a host for a deploy: equal scores are ordered by this hash ascending (then by
 * hostId). Hashing with the deploy id spreads ties over hosts instead of always favouring the
 * lexically smallest id, and every agent computes the same order.
 */
export function tieBreak(deployId: string, hostId: string): number {
  return fnv1a32(`${deployId}\u0000${hostId}`);
}

export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function isSafeNonNegativeInt(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}
