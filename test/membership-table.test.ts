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
    for (const shared of [true, false]) {
      const rng = new Prng(shared ? 11 : 12);
      const ids = new MemberIds();
      // A shared table may hold ids this agent never heard of.
      if (shared) for (let i = 0; i < 1500; i += 3) ids.intern(id(i));
      const t = new MemberTable(ids, 1_000);
      const self = id(777);
      t.self = ids.intern(self);
      t.set(t.self, 1, ST_ALIVE, 0, 1_000);
      const ref = new Map<string, Ref>([[self, { inc: 1, st: ST_ALIVE }]]);
      for (let step = 0; step < 6000; step++) {
        const x = id(rng.int(1500));
        const st = 1 + rng.int(4);
        const inc = rng.int(5);
        t.set(ids.intern(x), inc, st, 0, 1_000 + step);
        if (x !== self) ref.set(x, { inc, st });
        else ref.set(x, { inc, st });
        if (step % 500 === 0 || step === 5999) {
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
