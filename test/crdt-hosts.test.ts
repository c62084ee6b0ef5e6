import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { makeHostRecord, makeWorkload } from '../crdt/fixtures.ts';
import { compareHostEntries, HostTable, nextVersion } from '../crdt/hosts.ts';
import type { HostEntry, HostRecord } from '../crdt/types.ts';

const ids = ['h1', 'h2', 'h3'];

/** Random entries for a few ids: versions collide often, contents differ, tombstones included. */
const entryArb: fc.Arbitrary<HostEntry> = fc
  .record({
    id: fc.constantFrom(...ids),
    version: fc.integer({ min: 1, max: 4 }),
    tomb: fc.boolean(),
    draining: fc.boolean(),
    at: fc.integer({ min: 0, max: 3 }),
    wl: fc.integer({ min: 0, max: 2 }),
  })
  .map(
    ({ id, version, tomb, draining, at, wl }): HostEntry =>
      tomb
        ? { id, version, deleted: true, updatedAt: at }
        : makeHostRecord(id, version, {
            draining,
            updatedAt: at,
            workloads: Array.from({ length: wl }, (_, i) => makeWorkload(`w${i}`, 'd1', i)),
          }),
  );

function tableOf(entries: readonly HostEntry[]): HostTable {
  const t = new HostTable();
  for (const e of entries) t.merge(e);
  return t;
}

/** Structural copy: a peer receives a different object with the same content. */
const copy = (e: HostEntry): HostEntry => JSON.parse(JSON.stringify(e));

describe('HostTable merge', () => {
  it('is commutative, idempotent and associative (any order, duplicates, copies → same state)', () => {
    fc.assert(
      fc.property(fc.array(entryArb, { maxLength: 25 }), fc.nat(), (entries, seed) => {
        const a = tableOf(entries);
        // Reverse order, with duplicates and structural copies.
        const shuffled = [...entries]
          .reverse()
          .flatMap((e, i) => ((i + seed) % 3 === 0 ? [copy(e), e] : [e]));
        const b = tableOf(shuffled);
        // Associativity: merge two halves separately, then merge tables.
        const mid = seed % (entries.length + 1);
        const c1 = tableOf(entries.slice(0, mid));
        const c2 = tableOf(entries.slice(mid));
        for (const e of c2.all()) c1.merge(copy(e));
        expect(b.hash()).toBe(a.hash());
        expect(c1.hash()).toBe(a.hash());
        expect(b.all()).toEqual(a.all());
        // Idempotent: re-merging everything changes nothing.
        for (const e of entries) expect(a.merge(copy(e))).not.toBe('newer');
        expect(a.hash()).toBe(b.hash());
      }),
      { numRuns: 300 },
    );
  });

  it('max version wins; equal version resolves by tombstone, then content hash', () => {
    const t = new HostTable();
    expect(t.merge(makeHostRecord('h', 2))).toBe('newer');
    expect(t.merge(makeHostRecord('h', 1))).toBe('stale');
    expect(t.merge(makeHostRecord('h', 2))).toBe('equal');
    const x = makeHostRecord('h', 2, { draining: true });
    const y = makeHostRecord('h', 2, { draining: false });
    const winner = compareHostEntries(x, y) > 0 ? x : y;
    const t1 = tableOf([x, y]);
    const t2 = tableOf([y, x]);
    expect(t1.get('h')).toBe(winner);
    expect(t2.get('h')).toBe(winner);
    expect(t.merge({ id: 'h', version: 2, deleted: true, updatedAt: 0 })).toBe('newer');
    expect(t.live('h')).toBeUndefined();
    expect(t.merge(makeHostRecord('h', 3))).toBe('newer');
    expect(t.live('h')?.version).toBe(3);
  });

  it('incremental hash equals the hash of a table built from scratch', () => {
    fc.assert(
      fc.property(fc.array(entryArb, { maxLength: 30 }), fc.integer({ min: 1, max: 29 }), (entries, cut) => {
        const inc = new HostTable();
        entries.forEach((e, i) => {
          inc.merge(e);
          if (i % cut === 0) inc.hash();
        });
        inc.gc(1);
        const fresh = tableOf(inc.all().map(copy));
        expect(inc.hash()).toBe(fresh.hash());
      }),
      { numRuns: 200 },
    );
  });
});

describe('HostTable anti-entropy', () => {
  it('digest → newerThan + missingFrom → one exchange makes both sides equal', () => {
    fc.assert(
      fc.property(fc.array(entryArb, { maxLength: 20 }), fc.array(entryArb, { maxLength: 20 }), (ea, eb) => {
        const a = tableOf(ea);
        const b = tableOf(eb);
        const da = a.digest();
        // b pushes what a lacks and asks for what it lacks.
        const push = b.newerThan(da);
        const want = b.missingFrom(da);
        for (const e of push) a.merge(copy(e));
        for (const id of want) b.merge(copy(a.get(id)!));
        expect(a.hash()).toBe(b.hash());
        expect(a.newerThan(b.digest())).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});

describe('removal and versions', () => {
  it('tombstones converge, gc drops them after the horizon only', () => {
    const a = new HostTable();
    a.merge(makeHostRecord('dead', 7));
    const t = a.tombstone('dead', 1000);
    expect(t).toEqual({ id: 'dead', version: 8, deleted: true, updatedAt: 1000 });
    const b = new HostTable();
    b.merge(makeHostRecord('dead', 7));
    b.merge(t);
    expect(b.hash()).toBe(a.hash());
    expect(a.gc(1000)).toBe(0);
    expect(a.gc(1001)).toBe(1);
    expect(a.size).toBe(0);
    expect(a.hash()).toBe(new HostTable().hash());
  });

  it('nextVersion continues above everything seen, own history and the floor', () => {
    expect(nextVersion(0, undefined)).toBe(1);
    expect(nextVersion(0, 41)).toBe(42); // restarted with an empty disk, learnt 41 from peers
    expect(nextVersion(50, 41)).toBe(51);
    expect(nextVersion(0, undefined, 1_700_000_000_000)).toBe(1_700_000_000_000);
  });
});

describe('record hash', () => {
  it('covers every field (changing any leaf changes the hash) and ignores key order', () => {
    const base = makeHostRecord('h', 1, { workloads: [makeWorkload('w', 'd', 0)] });
    base.capacity.gpus = [{ index: 0, model: 'A100', memory: 1 }];
    base.allocated.gpus = [{ index: 0, milli: 500 }];
    base.allocated.cores = [1];
    base.workloads[0]!.resources.gpus = [{ index: 0, milli: 1 }];
    base.workloads[0]!.resources.ports = [{ port: 80, protocol: 'tcp' }];
    base.allocated.ports = [{ port: 80, protocol: 'tcp' }];
    const h0 = new HostTable();
    h0.merge(base);
    const ref = h0.hash();
    const leaves: (string | number)[][] = [];
    const walk = (x: unknown, p: (string | number)[]) => {
      if (x !== null && typeof x === 'object')
        for (const [k, v] of Object.entries(x)) walk(v, [...p, Array.isArray(x) ? Number(k) : k]);
      else leaves.push(p);
    };
    walk(base, []);
    expect(leaves.length).toBeGreaterThan(30);
    for (const path of leaves) {
      const m = structuredClone(base) as unknown as Record<string | number, unknown>;
      let o = m;
      for (const k of path.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
      const k = path.at(-1)!;
      const v = o[k];
      o[k] =
        typeof v === 'number' ? v + 1 : typeof v === 'string' ? v + 'x' : typeof v === 'boolean' ? !v : 7;
      const t = new HostTable();
      t.merge(m as unknown as HostEntry);
      expect(t.hash(), path.join('.')).not.toBe(ref);
    }
    const reverseKeys = (x: unknown): unknown =>
      Array.isArray(x)
        ? x.map(reverseKeys)
        : x !== null && typeof x === 'object'
          ? Object.fromEntries(
              Object.entries(x)
                .reverse()
                .map(([k, v]) => [k, reverseKeys(v)]),
            )
          : x;
    const withLabels = { ...base, capacity: { ...base.capacity, labels: { zone: 'z1', b: '2' } } };
    const a = new HostTable();
    a.merge(withLabels);
    const b = new HostTable();
    b.merge(reverseKeys(withLabels) as HostEntry);
    expect(Object.keys((reverseKeys(withLabels) as HostRecord).capacity.labels)).toEqual(['b', 'zone']);
    expect(a.hash()).toBe(b.hash());
  });
});
