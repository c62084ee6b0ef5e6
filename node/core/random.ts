import type { Random } from './io.ts';

/**
 * sfc32: a small, fast PRNG with a 128-bit state (PractRand-clean). Deterministic for a seed;
 * the real agent seeds it from crypto, the simulator from the scenario seed.
 */
export class Prng implements Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number | string) {
    // Derive the 128-bit state from the seed with splitmix32-like mixing.
    let h = typeof seed === 'number' ? seed >>> 0 : hashString(seed);
    const mix = () => {
      h = (h + 0x9e3779b9) | 0;
      let z = h;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  next(): number {
    return this.nextU32() / 4294967296;
  }

  int(maxExclusive: number): number {
    if (!(maxExclusive >= 1))
      throw new RangeError(`Random.int: maxExclusive must be >= 1, got ${maxExclusive}`);
    return Math.floor(this.next() * maxExclusive);
  }

  /** An independent stream derived from this one and a label (stable for the same seed and label). */
  fork(label: string): Prng {
    return new Prng((this.nextU32() ^ hashString(label)) >>> 0);
  }
}

/** FNV-1a 32-bit. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Fisher–Yates shuffle in place, driven by `rng`. */
export function shuffle<T>(rng: Random, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = items[i]!;
    items[i] = items[j]!;
    items[j] = t;
  }
  return items;
}

/**
 * Up to `k` distinct items chosen uniformly: a partial Fisher–Yates shuffle. For k much smaller
 * than the list (gossip fanout, probe helpers: 3 of thousands) the swaps are kept in a small map
 * instead of copying the list — O(k), same draws and same result as swapping in a copy.
 */
export function sample<T>(rng: Random, items: readonly T[], k: number): T[] {
  if (k >= items.length) return shuffle(rng, items.slice());
  const moved = new Map<number, T>();
  const at = (i: number): T => (moved.has(i) ? moved.get(i)! : items[i]!);
  const out: T[] = [];
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(items.length - i);
    const t = at(i);
    const picked = at(j);
    moved.set(j, t);
    moved.set(i, picked);
    out.push(picked);
  }
  return out;
}
