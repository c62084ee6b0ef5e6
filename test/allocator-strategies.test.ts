import { describe, expect, it } from 'vitest';
import { makeHost } from '../allocator/bench-helpers.ts';
import {
  type Allocation,
  bid,
  type ExistingPlacement,
  GiB,
  type Host,
  ledgerFrom,
  type PlacementRequest,
  type Plan,
  parseConstraint,
  plan,
  type Strategy,
  score,
  select,
} from '../allocator/index.ts';

/** A host whose books already hold `milli` shared CPU and `mem` bytes. */
function used(host: Host, milli: number, mem = 0): Host {
  const a: Allocation = {
    cpu: { sharedMilli: milli, cores: [] },
    memoryBytes: mem,
    diskBytes: 0,
    volumes: [],
    gpus: [],
    limits: { cpuMilli: milli, memoryBytes: mem },
  };
  return { ...host, ledger: ledgerFrom(host.capacity, [a]) };
}

const web: PlacementRequest = { deployId: 'web', resources: { cpu: { milli: 1000 }, memoryBytes: GiB } };

/** hostId → count, for terse expectations. */
function counts(p: Plan): Record<string, number> {
  return Object.fromEntries(p.placements.map((x) => [x.hostId, x.count]));
}

// a: empty 4c/8G; b: 4c/8G with 2 cores + 2 GiB in use; c: empty 8c/32G.
const a = makeHost({ id: 'a', cores: 4, memoryBytes: 8 * GiB });
const b = used(makeHost({ id: 'b', cores: 4, memoryBytes: 8 * GiB }), 2000, 2 * GiB);
const c = makeHost({ id: 'c', cores: 8, memoryBytes: 32 * GiB });
const run = (
  strategy: Strategy,
  replicas: number,
  hosts = [a, b, c],
  existing: ExistingPlacement[] = [],
): Plan => plan(hosts, web, replicas, strategy, existing);

describe('binpack (default)', () => {
  it('fills the fullest host first, then the next fullest', () => {
    const p = run({ kind: 'binpack' }, 3);
    expect(counts(p)).toEqual({ a: 1, b: 2 });
    expect(p.unplaced).toBe(0);
    expect(p.reasons).toEqual({ b: 'cpu: need 1000 milli, free 0 milli' });
  });

  it('accounts replica 2 against replica 1 on the same host', () => {
    const p = run({ kind: 'binpack' }, 2, [b]);
    expect(p.placements[0]?.count).toBe(2);
    expect(run({ kind: 'binpack' }, 3, [b])).toMatchObject({
      unplaced: 1,
      reasons: { b: 'cpu: need 1000 milli, free 0 milli' },
    });
  });
});

describe('spread', () => {
  it('fills the emptiest host first', () => {
    expect(counts(run({ kind: 'spread' }, 3))).toEqual({ a: 1, c: 2 });
  });
});

describe('auto (Eru AUTO)', () => {
  it('evens out the deploy over hosts, binpack among equals', () => {
    const a1 = used(a, 1000, GiB);
    const p = run({ kind: 'auto' }, 3, [a1, b, c], [{ hostId: 'a', count: 1 }]);
    // counts a1 b0 c0 → b (fuller); a1 b1 c0 → c; a1 b1 c1 → b (fullest).
    expect(counts(p)).toEqual({ b: 2, c: 1 });
  });
});

describe('global (Eru GLOBAL)', () => {
  // After one replica: x is cpu 0.1 / mem 0.9, y is cpu 0.8 / mem 0.5.
  const x = used(makeHost({ id: 'x', cores: 10, memoryBytes: 10 * GiB }), 0, 8 * GiB);
  const y = used(makeHost({ id: 'y', cores: 5, memoryBytes: 10 * GiB }), 3000, 4 * GiB);
  it('minimises the dominant utilisation where spread minimises the mean', () => {
    expect(counts(plan([x, y], web, 1, { kind: 'global' }, []))).toEqual({ y: 1 });
    expect(counts(plan([x, y], web, 1, { kind: 'spread' }, []))).toEqual({ x: 1 });
    expect(counts(plan([x, y], web, 1, { kind: 'binpack' }, []))).toEqual({ y: 1 });
  });
});

describe('fill (Eru FILL)', () => {
  const a1 = used(a, 1000, GiB);
  const existing = [{ hostId: 'a', count: 1 }];
  it('tops chosen hosts up to N, those already running most first, then by capacity', () => {
    const p = run({ kind: 'fill', hostLimit: 2 }, 2, [a1, b, c], existing);
    expect(counts(p)).toEqual({ a: 1, c: 2 });
    expect(p.unplaced).toBe(0);
    expect(p.reasons).toEqual({ b: 'fill: not chosen, host limit 2 reached' });
  });

  it('without a limit fills every eligible host; a host that cannot reach N takes none', () => {
    const p = run({ kind: 'fill' }, 3, [a1, b, c], existing);
    expect(counts(p)).toEqual({ a: 2, c: 3 });
    expect(p.unplaced).toBe(3);
    expect(p.reasons).toEqual({ b: 'fill: only 2 of 3 replicas fit; cpu: need 1000 milli, free 0 milli' });
  });

  it('treats hosts already at N as filled', () => {
    const p = run({ kind: 'fill' }, 1, [a1], existing);
    expect(p).toEqual({ placements: [], unplaced: 0, reasons: {} });
  });
});

describe('each (Eru EACH)', () => {
  it('puts exactly N on every eligible host', () => {
    expect(counts(run({ kind: 'each' }, 2))).toEqual({ a: 2, b: 2, c: 2 });
  });
  it('with a host limit picks the roomiest hosts', () => {
    const p = run({ kind: 'each', hostLimit: 2 }, 2);
    expect(counts(p)).toEqual({ a: 2, c: 2 });
    expect(p.reasons).toEqual({ b: 'each: not chosen, host limit 2 reached' });
  });
  it('counts N unplaced for each missing host', () => {
    const p = run({ kind: 'each', hostLimit: 4 }, 3);
    expect(counts(p)).toEqual({ a: 3, c: 3 });
    expect(p.unplaced).toBe(6);
  });
});

describe('constraints in plans', () => {
  const zone = (id: string, z: string | null, extra = 0): Host =>
    used(makeHost({ id, cores: 16, memoryBytes: 64 * GiB, labels: z === null ? {} : { zone: z } }), extra);

  it('spreads replicas evenly over zones; unlabelled hosts last', () => {
    const hosts = [zone('z1a', 'z1', 500), zone('z1b', 'z1'), zone('z2a', 'z2'), zone('n', null, 8000)];
    const p = plan(hosts, { ...web, spread: {} }, 4, { kind: 'binpack' }, []);
    expect(counts(p)).toEqual({ z1a: 2, z2a: 2 });
  });

  it('counts existing replicas per zone', () => {
    const hosts = [zone('z1a', 'z1'), zone('z2a', 'z2')];
    const p = plan(hosts, { ...web, spread: { label: 'zone' } }, 2, { kind: 'binpack' }, [
      { hostId: 'z1a', count: 2 },
    ]);
    expect(counts(p)).toEqual({ z2a: 2 });
  });

  it('filters on labels and explains why', () => {
    const cons = parseConstraint('zone in (z1)');
    if (!cons.ok) throw new Error(cons.error.message);
    const p = plan(
      [zone('z1a', 'z1'), zone('z2a', 'z2')],
      { ...web, constraints: [cons.constraint] },
      1,
      { kind: 'binpack' },
      [],
    );
    expect(counts(p)).toEqual({ z1a: 1 });
    expect(p.reasons).toEqual({ z2a: 'label: zone in (z1) not satisfied (zone=z2)' });
  });

  it('caps replicas per host', () => {
    const p = plan([a, b, c], { ...web, maxPerHost: 1 }, 4, { kind: 'binpack' }, []);
    expect(counts(p)).toEqual({ a: 1, b: 1, c: 1 });
    expect(p.unplaced).toBe(1);
    expect(p.reasons.a).toBe('max-per-host: 1 replica of web already on this host (max 1)');
  });

  it('anti-affinity prefers hosts without the deploy, binpack otherwise', () => {
    expect(counts(plan([a, b], web, 2, { kind: 'binpack' }, []))).toEqual({ b: 2 });
    expect(counts(plan([a, b], { ...web, antiAffinity: true }, 2, { kind: 'binpack' }, []))).toEqual({
      a: 1,
      b: 1,
    });
  });
});

describe('fragmentation-aware scoring', () => {
  // Typical requests are 2-core jobs. p has 2 free cores, q has 3.
  const p = used(makeHost({ id: 'p', cores: 4 }), 2000);
  const q = used(makeHost({ id: 'q', cores: 4 }), 1000);
  const typical = [{ resources: { cpu: { milli: 2000 }, memoryBytes: 2 * GiB }, weight: 1 }];
  it('binpack alone breaks p’s last 2-core slot; with typical shapes the odd core on q is used', () => {
    expect(counts(plan([p, q], web, 1, { kind: 'binpack' }, []))).toEqual({ p: 1 });
    expect(counts(plan([p, q], web, 1, { kind: 'binpack' }, [], { typical }))).toEqual({ q: 1 });
    const ctx = { strategy: { kind: 'binpack' as const }, existing: [], typical };
    // p: S = mean(.75, .125, 0) ≈ .2917, F = .5 → .3958; q: S ≈ .2083, F = 1 → .6042.
    expect(score(p, web, ctx)).toBe(395833);
    expect(score(q, web, ctx)).toBe(604167);
  });
});

describe('bid and select', () => {
  const ctx = { strategy: { kind: 'binpack' as const }, existing: [] };
  it('a host offers up to the wanted replicas, each seeing the previous', () => {
    const got = bid(b, web, ctx, 3);
    expect(got.ok && got.allocations.length).toBe(2);
    expect(bid(b, { ...web, maxPerHost: 1 }, ctx, 3)).toMatchObject({ ok: true, allocations: [{}] });
    expect(bid(used(b, 4000), web, ctx)).toEqual({
      ok: false,
      hostId: 'b',
      reason: 'cpu: need 1000 milli, free 0 milli',
      dimension: 'cpu',
    });
  });

  it('bid score equals score()', () => {
    const got = bid(a, web, ctx);
    expect(got.ok && got.score).toBe(score(a, web, ctx));
  });

  it('select: binpack takes the best bid whole, spread goes round robin', () => {
    const bids = [a, b, c].map((h) => bid(h, web, ctx, 5));
    expect(select(bids, web, 4, { kind: 'binpack' }).placements.map((x) => [x.hostId, x.count])).toEqual([
      ['a', 2],
      ['b', 2],
    ]);
    const spreadCtx = { strategy: { kind: 'spread' as const }, existing: [] };
    const sbids = [c, b, a].map((h) => bid(h, web, spreadCtx, 5));
    const s = select(sbids, web, 5, { kind: 'spread' });
    expect(s.placements.map((x) => [x.hostId, x.count])).toEqual([
      ['a', 2],
      ['b', 1],
      ['c', 2],
    ]);
    expect(select(sbids, web, 20, { kind: 'spread' }).unplaced).toBe(20 - 4 - 2 - 5);
  });

  it('select: without a limit, unplaced counts N per eligible host that could not bid', () => {
    const eachCtx = { strategy: { kind: 'each' as const }, existing: [] };
    const gpuOnly = { ...web, constraints: [{ op: 'exists' as const, key: 'gpu' }] };
    const labelled = [{ ...a, labels: { gpu: 'yes' } }, { ...b, labels: { gpu: 'yes' } }, c];
    const bids = labelled.map((h) => bid(h, gpuOnly, eachCtx, 3));
    expect(bids.map((x) => (x.ok ? 'ok' : x.dimension))).toEqual(['ok', 'cpu', 'label']);
    expect(select(bids, gpuOnly, 3, eachCtx.strategy)).toMatchObject({
      unplaced: 3,
      placements: [{ hostId: 'a', count: 3 }],
    });
  });

  it('a bid sees the deploy’s zone counts through ctx.existing labels', () => {
    const z1 = { ...c, id: 'c1', labels: { zone: 'z1' } };
    const z2 = { ...c, id: 'c2', labels: { zone: 'z2' } };
    const spreadWeb = { ...web, spread: {} };
    const ctx2 = {
      strategy: { kind: 'binpack' as const },
      existing: [{ hostId: 'other', count: 1, labels: { zone: 'z1' } }],
    };
    const s1 = bid(z1, spreadWeb, ctx2);
    const s2 = bid(z2, spreadWeb, ctx2);
    expect(s1.ok && s2.ok && s2.score > s1.score).toBe(true);
  });

  it('select: each takes whole offers up to the host limit', () => {
    const eachCtx = { strategy: { kind: 'each' as const, hostLimit: 2 }, existing: [] };
    const bids = [a, b, c].map((h) => bid(h, web, eachCtx, 3));
    expect(bids.map((x) => x.ok)).toEqual([true, false, true]);
    const s = select(bids, web, 3, eachCtx.strategy);
    expect(s.placements.map((x) => [x.hostId, x.count])).toEqual([
      ['a', 3],
      ['c', 3],
    ]);
    expect(s.unplaced).toBe(0);
  });
});
