import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StateMessageError } from '../crdt/codec.ts';
import { bucketOf, canonicalJson, DIGEST_BUCKETS } from '../crdt/hash.ts';
import { canonicalEntryOf, IntentTable } from '../crdt/intents.ts';
import type { IntentFields, IntentWire, Json } from '../crdt/types.ts';

const base: IntentFields = {
  name: 'web',
  spec: { image: 'nginx:1', env: { A: '1' } },
  replicas: 3,
  strategy: 'spread',
};
const copy = (w: IntentWire): IntentWire => JSON.parse(JSON.stringify(w));

type Op =
  | { k: 'put'; r: number; id: string; f: IntentFields; dt: number }
  | { k: 'update'; r: number; id: string; p: Partial<IntentFields>; dt: number }
  | { k: 'remove'; r: number; id: string; dt: number };

const R = 3;
const idArb = fc.constantFrom('d1', 'd2', 'd3');
const jsonArb: fc.Arbitrary<Json> = fc.oneof(
  fc.integer(),
  fc.string({ maxLength: 4 }),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 3 }),
);
const specArb = fc.dictionary(fc.constantFrom('image', 'cmd', 'env', 'ports'), jsonArb, { maxKeys: 4 });
const fieldsArb: fc.Arbitrary<IntentFields> = fc.record({
  name: fc.constantFrom('web', 'api'),
  spec: specArb,
  replicas: fc.integer({ min: 0, max: 5 }),
  strategy: fc.constantFrom('spread', 'binpack'),
});
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    k: fc.constant('put' as const),
    r: fc.nat(R - 1),
    id: idArb,
    f: fieldsArb,
    dt: fc.integer({ min: -5, max: 5 }),
  }),
  fc.record({
    k: fc.constant('update' as const),
    r: fc.nat(R - 1),
    id: idArb,
    p: fc.record({ replicas: fc.integer({ min: 0, max: 9 }), spec: specArb }, { requiredKeys: [] }),
    dt: fc.integer({ min: -5, max: 5 }),
  }),
  {
    arbitrary: fc.record({
      k: fc.constant('remove' as const),
      r: fc.nat(R - 1),
      id: idArb,
      dt: fc.integer({ min: -5, max: 5 }),
    }),
    weight: 1,
  },
);

/**
 * Run ops on R replicas with skewed clocks, delivering each delta to a random subset of replicas
 * immediately (concurrency); then deliver every delta to everyone in a permuted order with
 * duplicates. All replicas must end with the same hash and content.
 */
function run(ops: Op[], perm: number[]): IntentTable[] {
  const reps = Array.from({ length: R }, (_, i) => new IntentTable(`agent-${i}`));
  const log: IntentWire[] = [];
  let now = 1000;
  ops.forEach((op, i) => {
    now += 1;
    const t = reps[op.r]!;
    const at = now + op.dt; // clock skew per op
    const w =
      op.k === 'put'
        ? t.put(op.id, op.f, at)
        : op.k === 'update'
          ? t.update(op.id, op.p, at)
          : t.remove(op.id, at);
    if (!w) return;
    log.push(w);
    // Partial immediate delivery to one other replica (some edits are concurrent, some not).
    const to = reps[(op.r + 1 + (i % 2)) % R]!;
    if (perm[i % perm.length]! % 2 === 0) to.merge(copy(w));
  });
  // Fisher–Yates with a tiny LCG seeded from the property input.
  const order = [...log];
  let seed = (perm[0] ?? 0) + 1;
  for (let i = order.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    const j = seed % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  for (const t of reps) {
    for (const w of [...order].reverse()) t.merge(copy(w));
    for (const w of order) t.merge(copy(w));
  }
  return reps;
}

describe('IntentTable convergence', () => {
  it('replicas converge under concurrent edits, random order and duplication', () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { maxLength: 30 }),
        fc.array(fc.nat(100), { minLength: 1, maxLength: 8 }),
        (ops, perm) => {
          const reps = run(ops, perm);
          const h = reps[0]!.hash();
          for (const t of reps) {
            expect(t.hash()).toBe(h);
            expect(t.all()).toEqual(reps[0]!.all());
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('merge of full states is commutative, associative and idempotent', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 20 }), (ops) => {
        // Three independent replicas (no delivery during the run): fully concurrent histories.
        const reps = Array.from({ length: 3 }, (_, i) => new IntentTable(`a${i}`));
        ops.forEach((op, i) => {
          const t = reps[op.r]!;
          if (op.k === 'put') t.put(op.id, op.f, 100 + i + op.dt);
          else if (op.k === 'update') t.update(op.id, op.p, 100 + i + op.dt);
          else t.remove(op.id, 100 + i + op.dt);
        });
        const [a, b, c] = reps.map((t) => t.allWire());
        const join = (...parts: IntentWire[][]) => {
          const t = new IntentTable('x');
          for (const p of parts) for (const w of p) t.merge(copy(w));
          return t;
        };
        const abc = join(a!, b!, c!);
        expect(join(c!, b!, a!).hash()).toBe(abc.hash()); // commutative
        expect(join(join(a!, b!).allWire(), c!).hash()).toBe(abc.hash()); // associative
        expect(join(a!, b!, c!, a!, b!, c!).hash()).toBe(abc.hash()); // idempotent
        const fresh = join(abc.allWire());
        expect(fresh.hash()).toBe(abc.hash()); // hash is a function of content only
      }),
      { numRuns: 300 },
    );
  });

  it('anti-entropy: one digest exchange reconciles two replicas', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 25 }), (ops) => {
        const a = new IntentTable('a');
        const b = new IntentTable('b');
        ops.forEach((op, i) => {
          const t = op.r % 2 ? a : b;
          if (op.k === 'put') t.put(op.id, op.f, 10 + i);
          else if (op.k === 'update') t.update(op.id, op.p, 10 + i);
          else t.remove(op.id, 10 + i);
        });
        const da = a.digest();
        const push = b.newerThan(da);
        const want = b.missingFrom(da);
        for (const w of push) a.merge(copy(w));
        for (const id of want) b.merge(copy(a.wire(id)!));
        expect(a.hash()).toBe(b.hash());
      }),
      { numRuns: 200 },
    );
  });
  it('a digest of some buckets (and what is newer there) is the whole digest filtered to them, before and after gc', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(199), fc.boolean()), { maxLength: 60 }),
        fc.uniqueArray(fc.nat(DIGEST_BUCKETS - 1), { minLength: 1, maxLength: 12 }),
        (ops, bs) => {
          const a = new IntentTable('a');
          const b = new IntentTable('b');
          ops.forEach(([n, del], i) => {
            const id = `dep-${n}`;
            a.put(id, { name: 'web', spec: { image: 'x' }, replicas: 1, strategy: 'binpack' }, 10 + i);
            if (del) a.remove(id, 10 + i);
            if (n % 3 === 0) b.merge(copy(a.wire(id)!));
          });
          const buckets = new Set(bs);
          const check = () => {
            const inB = (id: string) => buckets.has(bucketOf(id));
            expect(a.digest(buckets)).toEqual(a.digest().filter((d) => inB(d.id)));
            const theirs = b.digest(buckets);
            expect(a.newerThan(theirs, buckets)).toEqual(a.newerThan(b.digest()).filter((w) => inB(w.id)));
          };
          check(); // builds the per-bucket index
          a.gc(10 + Math.floor(ops.length / 2)); // drops the older half of the deleted ones
          check();
          for (const [n] of ops.slice(0, 5)) {
            a.put(
              `new-${n}`,
              { name: 'web', spec: { image: 'y' }, replicas: 2, strategy: 'spread' },
              1000 + n,
            );
          }
          check(); // entries added after the index was built
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('IntentTable semantics', () => {
  it('concurrent edits of different fields both survive; same field: larger stamp wins everywhere', () => {
    const a = new IntentTable('a');
    const b = new IntentTable('b');
    b.merge(a.put('d', base, 1000)!);
    const wa = a.update('d', { replicas: 5, spec: { ...base.spec, image: 'nginx:2' } }, 2000)!;
    const wb = b.update('d', { strategy: 'binpack', spec: { ...base.spec, env: { A: '2' } } }, 1999)!;
    // wa changes only replicas + spec.image; wb only strategy + spec.env.
    expect(wa.fields.map((f) => f[0]).sort()).toEqual(['replicas', 'spec.image']);
    a.merge(wb);
    b.merge(wa);
    const expected = { replicas: 5, strategy: 'binpack', spec: { env: { A: '2' }, image: 'nginx:2' } };
    expect(a.get('d')).toMatchObject(expected);
    expect(b.get('d')).toEqual(a.get('d'));
    // Same field, concurrently: larger wall time wins (then counter, then actor id).
    const x = a.update('d', { replicas: 7 }, 3000)!;
    const y = b.update('d', { replicas: 8 }, 3000)!;
    a.merge(y);
    b.merge(x);
    expect(a.get('d')?.replicas).toBe(8); // equal wall/counter → actor 'b' > 'a'
    expect(b.hash()).toBe(a.hash());
  });

  it('delete wins over a concurrent edit; a full put after the delete re-creates the id', () => {
    const a = new IntentTable('a');
    const b = new IntentTable('b');
    b.merge(a.put('d', base, 1000)!);
    const del = a.remove('d', 1001);
    const edit = b.update('d', { replicas: 9 }, 5000)!; // later wall time, concurrent
    a.merge(edit);
    b.merge(del);
    expect(a.get('d')).toBeUndefined(); // one register alone is no deploy
    expect(b.get('d')).toBeUndefined();
    expect(a.isDeleted('d')).toBe(true);
    expect(b.update('d', { replicas: 3 }, 6000)).toBeUndefined(); // cannot edit a deleted deploy
    expect(a.hash()).toBe(b.hash());
    expect(a.gc(1001)).toBe(0);
    expect(a.gc(1002)).toBe(1); // the delete is past the horizon; the stray register stays
    const re = a.put('d', { ...base, replicas: 2 }, 7000)!; // `shoal rm` then redeploy
    b.merge(re);
    expect(a.get('d')?.replicas).toBe(2);
    expect(b.get('d')?.replicas).toBe(2);
    expect(b.isDeleted('d')).toBe(false);
    // An old register from before the delete, arriving late, does not come back.
    const c = new IntentTable('c');
    c.merge(b.wire('d')!);
    c.merge({ id: 'd', fields: [['spec.old', [999, 0, 'z'], 1]], deleted: null });
    expect(c.get('d')?.spec.old).toBeUndefined();
    const gone = new IntentTable('g');
    gone.put('x', base, 10);
    gone.remove('x', 20);
    expect(gone.gc(21)).toBe(1);
    expect(gone.size).toBe(0);
  });

  it('an edit made after seeing another wins even with a slower clock (HLC)', () => {
    const a = new IntentTable('a');
    const b = new IntentTable('b');
    const w1 = a.put('d', base, 10_000)!; // a's clock is ahead
    b.merge(w1);
    const w2 = b.update('d', { replicas: 1 }, 5)!; // b's clock is behind, but b saw w1
    a.merge(w2);
    expect(a.get('d')?.replicas).toBe(1);
  });

  it('removed spec keys are removed everywhere and GCed after the horizon', () => {
    const a = new IntentTable('a');
    a.put('d', base, 100);
    a.put('d', { ...base, spec: { image: 'nginx:1' } }, 200);
    expect(a.get('d')?.spec).toEqual({ image: 'nginx:1' });
    expect(a.wire('d')!.fields.length).toBe(5);
    expect(a.gc(201)).toBe(1);
    expect(a.wire('d')!.fields.length).toBe(4);
  });

  it('rejects invalid local writes with field paths and leaves state unchanged', () => {
    const a = new IntentTable('a');
    a.put('d', base, 1);
    const h = a.hash();
    const bad: [Partial<IntentFields>, string][] = [
      [{ replicas: -1 }, 'replicas'],
      [{ name: '' }, 'name'],
      [{ spec: { ['__proto__']: 1 } as never }, 'spec["__proto__"]'],
      [{ spec: { x: { constructor: 1 } } }, 'spec["x"].constructor'],
      [{ spec: { x: Number.NaN } }, 'spec["x"]'],
    ];
    for (const [patch, path] of bad) {
      const err = (() => {
        try {
          a.update('d', patch, 2);
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(StateMessageError);
      expect((err as StateMessageError).path).toBe(path);
      expect((err as StateMessageError).peer).toBe('local');
    }
    // JSON.parse makes an own __proto__ key: must be rejected too.
    expect(() => a.update('d', { spec: JSON.parse('{"__proto__": {"polluted": true}}') }, 2)).toThrow(
      StateMessageError,
    );
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(a.hash()).toBe(h);
  });
});

describe('intent entry hash', () => {
  it('the canonical string built from the registers equals canonicalJson of the wire form, byte for byte', () => {
    const valueArb: fc.Arbitrary<Json> = fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>;
    const stampArb = fc.tuple(fc.nat(2 ** 40), fc.nat(1000), fc.string({ minLength: 1, maxLength: 6 }));
    const wireArb = fc.record({
      id: fc.string({ minLength: 1, maxLength: 8 }),
      fields: fc.uniqueArray(
        fc.tuple(fc.string({ maxLength: 10 }), stampArb, fc.option(valueArb, { nil: undefined })),
        { selector: (f) => f[0], maxLength: 6 },
      ),
      deleted: fc.option(stampArb, { nil: null }),
    });
    fc.assert(
      fc.property(wireArb, (w) => {
        const fields = [...w.fields]
          .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
          .map((f) => (f[2] === undefined ? [f[0], f[1]] : [f[0], f[1], f[2]]));
        const wire = { id: w.id, fields, deleted: w.deleted };
        const regs = new Map(
          w.fields.map((f) => [
            f[0],
            { stamp: f[1], value: f[2], canon: f[2] === undefined ? '' : canonicalJson(f[2]) },
          ]),
        );
        expect(canonicalEntryOf({ id: w.id, regs, deleted: w.deleted })).toBe(canonicalJson(wire));
      }),
      { numRuns: 300 },
    );
  });
});

describe('collected tombstones are not taken back', () => {
  it('after gc, a peer’s old tombstone for the id is refused; a newer write and a delete of a live entry are not', () => {
    const a = new IntentTable('a');
    const b = new IntentTable('b');
    const f = { name: 'x', spec: {}, replicas: 1, strategy: 'spread' };
    b.merge(a.put('d', f, 1_000)!);
    const tomb = a.remove('d', 2_000);
    b.merge(tomb);
    expect(a.gc(10_000)).toBe(1);
    expect(a.ids()).toEqual([]);
    expect(a.merge(tomb)).toBe(false); // b has not collected it yet: not taken back
    expect(b.wire('d')).toBeDefined();
    expect(a.merge(b.wire('d')!)).toBe(false);
    expect(a.ids()).toEqual([]);
    // A new deploy under that id (writes after the delete) is taken.
    const again = b.put('d', f, 20_000);
    expect(a.merge(again!)).toBe(true);
    expect(a.get('d')?.replicas).toBe(1);
    // A delete of an entry still held applies, however old its stamp.
    const c = new IntentTable('c');
    c.merge(b.put('e', f, 1_500)!);
    c.gc(10_000);
    expect(c.merge(b.remove('e', 1_600))).toBe(true);
    expect(c.isDeleted('e')).toBe(true);
  });
});
