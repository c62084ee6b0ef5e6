import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { makeCluster, makeRequests, makeTypical, SeededRandom } from '../allocator/bench-helpers.ts';
import {
  type Allocation,
  allocate,
  bid,
  checkNoOvercommit,
  countFits,
  emptyLedger,
  type Host,
  ledgerFrom,
  type PlacementRequest,
  type Plan,
  plan,
  release,
  reserve,
  type Strategy,
  select,
} from '../allocator/index.ts';

const strategies: Strategy[] = [
  { kind: 'binpack' },
  { kind: 'spread' },
  { kind: 'auto' },
  { kind: 'global' },
  { kind: 'fill' },
  { kind: 'fill', hostLimit: 2 },
  { kind: 'each' },
  { kind: 'each', hostLimit: 3 },
];

function shuffled<T>(rnd: SeededRandom, xs: readonly T[]): T[] {
  const out = xs.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = rnd.int(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Commits a plan onto the hosts' books, as awarded hosts would. */
function commit(hosts: Host[], p: Plan): Host[] {
  const byId = new Map(p.placements.map((x) => [x.hostId, x.allocations]));
  return hosts.map((h) => {
    let ledger = h.ledger;
    for (const a of byId.get(h.id) ?? []) ledger = reserve(ledger, a);
    return { ...h, ledger };
  });
}

/** About a third of the requests publish host ports from a small pool, so that they clash. */
function withPorts(seed: number, reqs: PlacementRequest[]): PlacementRequest[] {
  const rnd = new SeededRandom(seed ^ 0x2545f491);
  const pool = [
    { port: 80, protocol: 'tcp' as const },
    { port: 443, protocol: 'tcp' as const },
    { port: 53, protocol: 'udp' as const },
  ];
  return reqs.map((r) => {
    if (rnd.int(3) !== 0) return r;
    const ports = pool.filter(() => rnd.int(2) === 0);
    return ports.length === 0 ? r : { ...r, resources: { ...r.resources, ports } };
  });
}

const scenario = fc.record({
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  hosts: fc.integer({ min: 1, max: 8 }),
  deploys: fc.integer({ min: 1, max: 12 }),
  oversell: fc.constantFrom(1000, 1500, 3000),
  withTypical: fc.boolean(),
});

describe('invariant: no overcommit', () => {
  it('no sequence of plans, committed, ever violates checkNoOvercommit', () => {
    fc.assert(
      fc.property(scenario, ({ seed, hosts: n, deploys, oversell, withTypical }) => {
        const rnd = new SeededRandom(seed ^ 0x5bd1e995);
        let hosts = makeCluster(seed, { hosts: n, zones: 2, gpuPermille: 400, oversell });
        const typical = withTypical ? makeTypical(seed + 1) : undefined;
        const counts = new Map<string, Map<string, number>>();
        const reqs = withPorts(seed, makeRequests(seed + 2, deploys));
        for (const req of [...reqs, ...reqs]) {
          const strategy = rnd.pick(strategies);
          const replicas = 1 + rnd.int(6);
          const existing = [...(counts.get(req.deployId) ?? new Map<string, number>())].map(
            ([hostId, count]) => ({
              hostId,
              count,
            }),
          );
          const p = plan(hosts, req, replicas, strategy, existing, typical ? { typical } : {});
          if (strategy.kind !== 'fill' && strategy.kind !== 'each') {
            expect(p.placements.reduce((s, x) => s + x.count, 0) + p.unplaced).toBe(replicas);
          }
          hosts = commit(hosts, p);
          const mine = counts.get(req.deployId) ?? new Map<string, number>();
          for (const x of p.placements) mine.set(x.hostId, (mine.get(x.hostId) ?? 0) + x.count);
          counts.set(req.deployId, mine);
          for (const h of hosts) expect(checkNoOvercommit(h.capacity, h.ledger)).toEqual([]);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('no sequence of bids, committed, ever violates checkNoOvercommit', () => {
    fc.assert(
      fc.property(scenario, ({ seed, hosts: n, deploys, oversell }) => {
        const rnd = new SeededRandom(seed);
        let hosts = makeCluster(seed, { hosts: n, gpuPermille: 400, oversell });
        for (const req of withPorts(seed, makeRequests(seed + 7, deploys * 2))) {
          const ctx = { strategy: rnd.pick(strategies), existing: [] };
          hosts = hosts.map((h) => {
            const b = bid(h, req, ctx, 1 + rnd.int(8));
            if (!b.ok) return h;
            let ledger = h.ledger;
            for (const a of b.allocations) ledger = reserve(ledger, a);
            return { ...h, ledger };
          });
          for (const h of hosts) expect(checkNoOvercommit(h.capacity, h.ledger)).toEqual([]);
        }
      }),
      { numRuns: 150 },
    );
  });
});

/** Random allocations that a host actually granted, in grant order. */
function grantedOn(seed: number): { host: Host; allocations: Allocation[] } {
  const [first] = makeCluster(seed, { hosts: 1, gpuPermille: 500 });
  const host = first!;
  const allocations: Allocation[] = [];
  let ledger = host.ledger;
  for (const req of withPorts(seed, makeRequests(seed + 1, 30))) {
    const r = allocate(host.capacity, ledger, req.resources, req.limits);
    if (!r.ok) continue;
    allocations.push(r.allocation);
    ledger = reserve(ledger, r.allocation);
  }
  return { host, allocations };
}

describe('ledger algebra', () => {
  it('ledgerFrom(allocs) equals incremental reserve, in any order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), (seed) => {
        const { host, allocations } = grantedOn(seed);
        let incremental = emptyLedger(host.capacity);
        for (const a of allocations) incremental = reserve(incremental, a);
        expect(ledgerFrom(host.capacity, allocations)).toEqual(incremental);
        const perm = shuffled(new SeededRandom(seed), allocations);
        expect(ledgerFrom(host.capacity, perm)).toEqual(incremental);
      }),
      { numRuns: 100 },
    );
  });

  it('release undoes reserve, and releasing everything gives the empty ledger', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), (seed) => {
        const { host, allocations } = grantedOn(seed);
        const full = ledgerFrom(host.capacity, allocations);
        for (const a of allocations) expect(release(reserve(full, a), a)).toEqual(full);
        let l = full;
        for (const a of shuffled(new SeededRandom(seed + 3), allocations)) l = release(l, a);
        expect(l).toEqual(emptyLedger(host.capacity));
        expect(checkNoOvercommit(host.capacity, full)).toEqual([]);
      }),
      { numRuns: 100 },
    );
  });

  it('reserve and release do not mutate their input', () => {
    const { host, allocations } = grantedOn(42);
    const l = ledgerFrom(host.capacity, allocations);
    const snapshot = JSON.stringify(l);
    for (const a of allocations) {
      reserve(l, a);
      release(l, a);
    }
    expect(JSON.stringify(l)).toBe(snapshot);
  });
});

describe('determinism', () => {
  it('shuffled host and existing order gives the same plan, byte for byte', () => {
    fc.assert(
      fc.property(scenario, fc.integer({ min: 0, max: strategies.length - 1 }), (s, k) => {
        const strategy = strategies[k]!;
        const typical = s.withTypical ? makeTypical(s.seed + 1) : undefined;
        let hosts = makeCluster(s.seed, { hosts: s.hosts, zones: 3, oversell: s.oversell });
        // Pre-load the cluster so hosts differ.
        for (const req of makeRequests(s.seed + 5, s.deploys))
          hosts = commit(hosts, plan(hosts, req, 2, { kind: 'spread' }, []));
        const [first] = makeRequests(s.seed + 9, 1);
        const req: PlacementRequest = { ...first!, spread: {} };
        const existing = hosts.slice(0, 2).map((h, i) => ({ hostId: h.id, count: i + 1 }));
        const rnd = new SeededRandom(s.seed);
        const opts = typical ? { typical } : {};
        const p1 = plan(hosts, req, 5, strategy, existing, opts);
        const p2 = plan(shuffled(rnd, hosts), req, 5, strategy, shuffled(rnd, existing), opts);
        expect(JSON.stringify(p2)).toBe(JSON.stringify(p1));
      }),
      { numRuns: 150 },
    );
  });
});

describe('select', () => {
  it('does not depend on the order of the bids', () => {
    fc.assert(
      fc.property(scenario, fc.integer({ min: 0, max: strategies.length - 1 }), (s, k) => {
        const strategy = strategies[k]!;
        const hosts = makeCluster(s.seed, { hosts: s.hosts, zones: 3 });
        const [req] = makeRequests(s.seed + 1, 1);
        const ctx = { strategy, existing: [] };
        const bids = hosts.map((h) => bid(h, req!, ctx, 3));
        const a = select(bids, req!, 7, strategy);
        const b = select(shuffled(new SeededRandom(s.seed), bids), req!, 7, strategy);
        expect(JSON.stringify(b)).toBe(JSON.stringify(a));
      }),
      { numRuns: 100 },
    );
  });
});

describe('countFits', () => {
  it('is ≥ 1 exactly when allocate succeeds, and never below what the allocator reaches', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), (seed) => {
        const rnd = new SeededRandom(seed);
        let [host] = makeCluster(seed, { hosts: 1, gpuPermille: 500, oversell: rnd.pick([1000, 2000]) });
        for (const req of makeRequests(seed + 1, 40)) {
          const h = host!;
          const fitsN = countFits(h.capacity, h.ledger, req.resources);
          const r = allocate(h.capacity, h.ledger, req.resources);
          expect(fitsN >= 1).toBe(r.ok);
          // Greedy replica-by-replica count, bounded.
          let ledger = h.ledger;
          let greedy = 0;
          while (greedy < 64) {
            const g = allocate(h.capacity, ledger, req.resources);
            if (!g.ok) break;
            ledger = reserve(ledger, g.allocation);
            greedy++;
          }
          expect(fitsN).toBeGreaterThanOrEqual(greedy);
          const exact = !req.resources.cpu.bind && req.resources.gpu === undefined;
          if (exact && greedy < 64) expect(fitsN).toBe(greedy);
          if (r.ok && rnd.chance(600)) host = { ...h, ledger: reserve(h.ledger, r.allocation) };
        }
      }),
      { numRuns: 200 },
    );
  });
});
