import { describe, expect, it } from 'vitest';
import {
  IntFifo,
  M_ALIVE,
  M_DEAD,
  M_LEFT,
  M_SUSPECT,
  MemberIds,
  MemberTable,
  Permutation,
  ST_ALIVE,
  ST_DEAD,
  ST_LEFT,
  ST_SUSPECT,
  ST_UNKNOWN,
} from '../node/core/member-table.ts';
import { Prng } from '../node/core/random.ts';

const id = (i: number) => `m${String(i).padStart(5, '0')}`;

/** A reference model: plain objects keyed by id. */
interface Ref {
  inc: number;
  st: number;
}

function refKth(ref: Map<string, Ref>, self: string, mask: number, k: number): string | undefined {
  const ids = [...ref.keys()].filter((x) => x !== self && (mask >> ref.get(x)!.st) & 1).sort();
  return ids[k];
}

describe('MemberIds', () => {
  it('interns ids once, keeps them in id order whatever the order of arrival', () => {
    const ids = new MemberIds();
    const rng = new Prng(3);
    const order = Array.from({ length: 700 }, (_, i) => id(i));
    for (let i = order.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (const x of order) ids.intern(x);
    for (const x of order) expect(ids.intern(x)).toBe(ids.lookup(x));
    expect(ids.size).toBe(700);
    expect([...ids.sorted()].map((n) => ids.id(n))).toEqual([...order].sort());
    for (const x of order) expect([...ids.sorted()][ids.rank(ids.lookup(x)!)]).toBe(ids.lookup(x));
    expect(ids.lookup('nope')).toBeUndefined();
  });

  it('appending ids in order keeps the ranks valid (no re-sort)', () => {
    const ids = new MemberIds();
    for (let i = 0; i < 300; i++) ids.intern(id(i));
    expect(ids.ranksValid).toBe(true);
    expect(ids.layout).toBe(0);
    ids.intern('a-first');
    expect(ids.ranksValid).toBe(false);
    expect(ids.rank(ids.lookup('a-first')!)).toBe(0);
    expect(ids.layout).toBe(1);
  });

  it('address lists are interned by content and frozen; the caller keeps its array', () => {
    const ids = new MemberIds();
    const mine = ['/ip4/1.2.3.4/tcp/1', '/ip4/1.2.3.4/tcp/2'];
    const a = ids.addrsNum(mine);
    expect(ids.addrsNum([...mine])).toBe(a);
    expect(ids.addrsNum(ids.addrs(a))).toBe(a);
    expect(ids.addrs(a)).toEqual(mine);
    expect(Object.isFrozen(ids.addrs(a))).toBe(true);
    mine.push('x');
    expect(ids.addrs(a)).toHaveLength(2);
    expect(ids.addrsNum([])).toBe(0);
    expect(ids.addrsNum(['/other'])).not.toBe(a);
  });

  it('state objects are frozen, keyed like the wire, and reused while unchanged', () => {
    const ids = new MemberIds();
    const n = ids.intern('a');
    const ad = ids.addrsNum(['x']);
    const s1 = ids.state(n, 3, 'alive', ad);
    expect(JSON.stringify(s1)).toBe('{"id":"a","addrs":["x"],"incarnation":3,"status":"alive"}');
    expect(Object.isFrozen(s1)).toBe(true);
    expect(ids.state(n, 3, 'alive', ad)).toBe(s1);
    const s2 = ids.state(n, 3, 'suspect', ad);
    expect(s2).not.toBe(s1);
    expect(s2.status).toBe('suspect');
  });
});

describe('MemberTable', () => {
  it('counts, kth and kthSkipping agree with a sorted reference under random updates', () => {
    for (const [shared, N] of [
      [true, 1500],
      [false, 1500],
      [true, 9000], // several super-blocks (4,096 ranks each)
    ] as const) {
      const rng = new Prng(shared ? N + 11 : 12);
      const ids = new MemberIds();
      // A shared table may hold ids this agent never heard of.
      if (shared) for (let i = 0; i < N; i += 3) ids.intern(id(i));
      const t = new MemberTable(ids, 1_000);
      const self = id(777);
      t.self = ids.intern(self);
      t.set(t.self, 1, ST_ALIVE, 0, 1_000);
      const ref = new Map<string, Ref>([[self, { inc: 1, st: ST_ALIVE }]]);
      const steps = N > 5000 ? 30_000 : 6000;
      for (let step = 0; step < steps; step++) {
        const x = id(rng.int(N));
        const st = 1 + rng.int(4);
        const inc = rng.int(5);
        t.set(ids.intern(x), inc, st, 0, 1_000 + step);
        if (x !== self) ref.set(x, { inc, st });
        else ref.set(x, { inc, st });
        if (step % 2500 === 0 || step === steps - 1) {
          for (const mask of [M_ALIVE, M_DEAD, M_ALIVE | M_SUSPECT, M_SUSPECT | M_LEFT]) {
            const n = [...ref.entries()].filter(([k, v]) => k !== self && (mask >> v.st) & 1).length;
            expect(t.count(mask)).toBe(n);
            for (const k of [0, 1, Math.floor(n / 2), n - 1, n]) {
              const num = t.kth(mask, k);
              expect(num < 0 ? undefined : ids.id(num)).toBe(refKth(ref, self, mask, k));
            }
            // Skipping one member: as if it were absent.
            const skip = ids.lookup(refKth(ref, self, mask, Math.floor(n / 3)) ?? self)!;
            const without = new Map(ref);
            without.delete(ids.id(skip));
            for (const k of [0, Math.floor(n / 3), n - 2]) {
              const num = t.kthSkipping(mask, k, skip);
              expect(num < 0 ? undefined : ids.id(num)).toBe(refKth(without, self, mask, k));
            }
          }
          expect(t.known).toBe(ref.size);
          expect([...t.numsSorted()].map((n) => ids.id(n))).toEqual([...ref.keys()].sort());
        }
      }
    }
  });

  it('kth when every other id matches (the fast path) equals the general walk', () => {
    const ids = new MemberIds();
    const order = [5, 1, 9, 3, 7, 0, 8, 2, 6, 4].map(id);
    const t = new MemberTable(ids, 0);
    t.self = ids.intern(id(4));
    for (const x of order)
      t.set(ids.intern(x), 1, x === id(4) ? ST_ALIVE : x < id(5) ? ST_ALIVE : ST_SUSPECT, 0, 0);
    const ref = new Map(order.map((x) => [x, { inc: 1, st: x < id(5) ? ST_ALIVE : ST_SUSPECT }] as const));
    for (let k = 0; k <= 10; k++) {
      const fast = t.kth(M_ALIVE | M_SUSPECT, k);
      expect(fast < 0 ? undefined : ids.id(fast)).toBe(refKth(ref, id(4), M_ALIVE | M_SUSPECT, k));
      const part = t.kth(M_ALIVE, k); // not every id: general path
      expect(part < 0 ? undefined : ids.id(part)).toBe(refKth(ref, id(4), M_ALIVE, k));
    }
  });

  it('the digest depends on the view only: not on the numbering or the order of updates', () => {
    const rng = new Prng(5);
    const entries = Array.from({ length: 400 }, (_, i) => ({
      id: id(i),
      inc: rng.int(9),
      st: 1 + rng.int(4),
    }));
    const build = (order: typeof entries, ids: MemberIds) => {
      const t = new MemberTable(ids, 0);
      t.self = ids.intern(id(0));
      for (const e of order) t.set(ids.intern(e.id), 0, ST_ALIVE, 0, 0); // intermediate states
      for (const e of order) t.set(ids.intern(e.id), e.inc, e.st, 0, 0);
      return t;
    };
    const a = build(entries, new MemberIds());
    const shuffledIds = new MemberIds();
    for (let i = 399; i >= 0; i--) shuffledIds.intern(id((i * 7) % 400));
    const b = build([...entries].reverse(), shuffledIds);
    expect(a.digest()).toBe(b.digest());
    expect(Number.isSafeInteger(a.digest())).toBe(true);
    // Any difference (incarnation, status, a missing member) changes it.
    const ids = new MemberIds();
    const c = build(entries, ids);
    c.set(ids.lookup(id(17))!, entries[17]!.inc + 1, entries[17]!.st, 0, 0);
    expect(c.digest()).not.toBe(a.digest());
    c.set(ids.lookup(id(17))!, entries[17]!.inc, entries[17]!.st, 0, 0);
    expect(c.digest()).toBe(a.digest());
    c.set(ids.lookup(id(17))!, entries[17]!.inc, entries[17]!.st === ST_DEAD ? ST_LEFT : ST_DEAD, 0, 0);
    expect(c.digest()).not.toBe(a.digest());
    const d = build(entries.slice(1), new MemberIds());
    expect(d.digest()).not.toBe(a.digest());
  });

  it('adoptFrom: a copy of another agent’s view equals setting every entry, counted for its own self', () => {
    const rng = new Prng(17);
    const ids = new MemberIds();
    const N = 5000; // two super-blocks
    for (let i = 0; i < N; i++) ids.intern(id(i));
    const entries = Array.from({ length: N }, (_, i) => ({
      num: i,
      inc: rng.int(4) === 0 ? 2 ** 33 + i : rng.int(9), // some incarnations in the side map
      st: 1 + rng.int(4),
      at: rng.int(3) === 0 ? 5_000 + 2 ** 32 : 5_000 + i, // some change times in the side map
    }));
    const build = (self: number) => {
      const t = new MemberTable(ids, 5_000);
      t.self = self;
      for (const e of entries) t.set(e.num, e.inc, e.st, e.num % 7, e.at);
      t.setQ(3, 2);
      return t;
    };
    const src = build(11);
    src.kth(M_ALIVE, 0); // block counts built, for src.self
    for (const self of [11, 4321, 0]) {
      const want = build(self);
      const got = new MemberTable(ids, 5_000);
      got.self = self;
      got.set(self, entries[self]!.inc, entries[self]!.st, self % 7, entries[self]!.at);
      got.adoptFrom(src);
      expect(got.counts).toEqual(want.counts);
      expect(got.known).toBe(want.known);
      expect(got.digest()).toBe(want.digest());
      for (let n = 0; n < N; n += 97) {
        expect([got.incarnation(n), got.statusOf(n), got.changedAt(n), got.addrOf(n), got.q(n)]).toEqual([
          want.incarnation(n),
          want.statusOf(n),
          want.changedAt(n),
          want.addrOf(n),
          want.q(n),
        ]);
      }
      for (const mask of [M_ALIVE, M_DEAD, M_ALIVE | M_SUSPECT, M_SUSPECT | M_LEFT]) {
        const n = want.count(mask);
        expect(got.count(mask)).toBe(n);
        for (const k of [0, 1, 1000, Math.floor(n / 2), n - 1, n])
          expect(got.kth(mask, k)).toBe(want.kth(mask, k));
      }
      // And it stays in step with later changes.
      got.set(42, 99, ST_DEAD, 0, 9_000);
      want.set(42, 99, ST_DEAD, 0, 9_000);
      expect(got.digest()).toBe(want.digest());
      expect(got.kth(M_DEAD, 3)).toBe(want.kth(M_DEAD, 3));
    }
    expect(() => new MemberTable(ids, 1).adoptFrom(src)).toThrow(/base/);
    expect(() => new MemberTable(new MemberIds(), 5_000).adoptFrom(src)).toThrow(/ids/);
  });

  it('huge incarnations and far-away change times are kept exactly', () => {
    const ids = new MemberIds();
    const t = new MemberTable(ids, 1_700_000_000_000);
    const n = ids.intern('x');
    t.set(n, 2 ** 40 + 3, ST_SUSPECT, 0, 1_700_000_000_000 - 5);
    expect(t.incarnation(n)).toBe(2 ** 40 + 3);
    expect(t.changedAt(n)).toBe(1_700_000_000_000 - 5);
    t.set(n, 2 ** 40 + 3, ST_DEAD, 0, 1_700_000_000_000 + 2 ** 33);
    expect(t.changedAt(n)).toBe(1_700_000_000_000 + 2 ** 33);
    t.set(n, 7, ST_ALIVE, 0, 1_700_000_000_000 + 10);
    expect(t.incarnation(n)).toBe(7);
    expect(t.changedAt(n)).toBe(1_700_000_000_010);
    t.set(n, 7, ST_ALIVE, 0, undefined); // no status change: time kept
    expect(t.changedAt(n)).toBe(1_700_000_000_010);
    expect(t.statusOf(ids.intern('never-set'))).toBe(ST_UNKNOWN);
  });
});

describe('Permutation', () => {
  it('is a permutation of [0, n) for any n, and another key gives another order', () => {
    const rng = new Prng(9);
    for (const n of [1, 2, 3, 4, 5, 17, 255, 256, 257, 1000, 4097]) {
      const p = new Permutation();
      p.reset(n, () => rng.nextU32());
      const seen = new Set<number>();
      for (let i = 0; i < n; i++) seen.add(p.at(i));
      expect(seen.size).toBe(n);
      expect(Math.min(...seen)).toBe(0);
      expect(Math.max(...seen)).toBe(n - 1);
    }
    const p = new Permutation();
    p.reset(1000, () => rng.nextU32());
    const a = Array.from({ length: 1000 }, (_, i) => p.at(i));
    p.reset(1000, () => rng.nextU32());
    const b = Array.from({ length: 1000 }, (_, i) => p.at(i));
    expect(a).not.toEqual(b);
    // Roughly uniform first picks over many keys (each of 10 values ≈ 10% of 5000 draws).
    const hits = new Array(10).fill(0);
    for (let r = 0; r < 5000; r++) {
      p.reset(10, () => rng.nextU32());
      hits[p.at(0)]++;
    }
    for (const h of hits) expect(h).toBeGreaterThan(380);
  });
});

describe('IntFifo', () => {
  it('keeps FIFO order across growth and wrap-around', () => {
    const q = new IntFifo();
    const ref: number[] = [];
    const rng = new Prng(1);
    for (let i = 0; i < 20_000; i++) {
      if (rng.next() < 0.6 || ref.length === 0) {
        q.push(i);
        ref.push(i);
      } else {
        expect(q.shift()).toBe(ref.shift());
      }
      expect(q.size).toBe(ref.length);
    }
    while (ref.length > 0) expect(q.shift()).toBe(ref.shift());
  });
});
