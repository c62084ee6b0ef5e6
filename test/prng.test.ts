import { describe, expect, it } from 'vitest';
import { Prng, sample, shuffle } from '../node/core/random.ts';

describe('Prng', () => {
  it('is deterministic for a seed and differs across seeds', () => {
    const a = new Prng(42);
    const b = new Prng(42);
    const c = new Prng(43);
    const sa = Array.from({ length: 8 }, () => a.nextU32());
    const sb = Array.from({ length: 8 }, () => b.nextU32());
    const sc = Array.from({ length: 8 }, () => c.nextU32());
    expect(sa).toEqual(sb);
    expect(sa).not.toEqual(sc);
  });
  it('stays in range and is roughly uniform', () => {
    const r = new Prng('uniform');
    const buckets = new Array(10).fill(0);
    for (let i = 0; i < 100_000; i++) buckets[r.int(10)]++;
    for (const n of buckets) expect(Math.abs(n - 10_000)).toBeLessThan(600);
    expect(() => r.int(0)).toThrow(/maxExclusive/);
  });
  it('shuffle and sample are permutations/subsets', () => {
    const r = new Prng(1);
    const xs = [1, 2, 3, 4, 5, 6];
    expect(shuffle(r, xs.slice()).sort()).toEqual(xs);
    const s = sample(r, xs, 3);
    expect(new Set(s).size).toBe(3);
    for (const v of s) expect(xs).toContain(v);
  });
  it('sample picks every item equally often (not the first k)', () => {
    const r = new Prng('sample');
    const xs = Array.from({ length: 10 }, (_, i) => i);
    const counts = new Array(10).fill(0);
    for (let n = 0; n < 30_000; n++) for (const v of sample(r, xs, 3)) counts[v]++;
    // 30,000 × 3 / 10 = 9,000 each
    for (const c of counts) expect(Math.abs(c - 9_000)).toBeLessThan(600);
  });
  it('sample equals a partial Fisher–Yates on a copy, draw for draw', () => {
    const dense = <T>(rng: Prng, items: readonly T[], k: number): T[] => {
      const copy = items.slice();
      const out: T[] = [];
      for (let i = 0; i < k; i++) {
        const j = i + rng.int(copy.length - i);
        [copy[i], copy[j]] = [copy[j]!, copy[i]!];
        out.push(copy[i]!);
      }
      return out;
    };
    for (let n = 2; n < 40; n++) {
      for (const k of [1, 2, 3, n - 1].filter((k) => k < n)) {
        const xs = Array.from({ length: n }, (_, i) => i);
        const a = new Prng(`s${n}.${k}`);
        const b = new Prng(`s${n}.${k}`);
        for (let rep = 0; rep < 5; rep++) expect(sample(a, xs, k)).toEqual(dense(b, xs, k));
      }
    }
  });
});
