import { describe, expect, it } from 'vitest';
import { makeHost } from '../allocator/bench-helpers.ts';
import {
  type Allocation,
  allocate,
  bid,
  checkNoOvercommit,
  countFits,
  emptyLedger,
  feasibility,
  fits,
  GiB,
  type Host,
  ledgerFrom,
  type PlacementContext,
  type PlacementRequest,
  type Plan,
  plan,
  type ResourceRequest,
  release,
  reserve,
  select,
  validateRequest,
} from '../allocator/index.ts';

/** Host ports as an allocator resource (docs/placement.md, "Host ports"). */

const web80: PlacementRequest = {
  deployId: 'web',
  resources: { cpu: { milli: 100 }, memoryBytes: 64 * 2 ** 20, ports: [{ port: 80, protocol: 'tcp' }] },
};
const ctx: PlacementContext = { strategy: { kind: 'binpack' }, existing: [] };
const host = (id: string): Host => makeHost({ id, cores: 4, memoryBytes: 8 * GiB });

function take(h: Host, r: ResourceRequest): [Host, Allocation] {
  const got = allocate(h.capacity, h.ledger, r);
  if (!got.ok) throw new Error(got.failures.map((f) => f.message).join('; '));
  return [{ ...h, ledger: reserve(h.ledger, got.allocation) }, got.allocation];
}

function counts(p: Plan): Record<string, number> {
  return Object.fromEntries(p.placements.map((x) => [x.hostId, x.count]));
}

describe('host ports: allocation and the ledger', () => {
  it('grants the requested ports in request order and books them', () => {
    const r: ResourceRequest = {
      cpu: { milli: 100 },
      memoryBytes: 0,
      ports: [
        { port: 8443, protocol: 'tcp' },
        { port: 53, protocol: 'udp' },
      ],
    };
    const [h, a] = take(host('h'), r);
    expect(a.ports).toEqual([
      { port: 8443, protocol: 'tcp' },
      { port: 53, protocol: 'udp' },
    ]);
    expect(h.ledger.ports).toEqual({ '8443/tcp': 1, '53/udp': 1 });
    // Release is the exact inverse: the keys go away.
    expect(release(h.ledger, a)).toEqual(emptyLedger(h.capacity));
  });

  it('an allocation without ports carries no ports key', () => {
    const [, a] = take(host('h'), { cpu: { milli: 100 }, memoryBytes: 0 });
    expect('ports' in a).toBe(false);
  });

  it('refuses a port already held, with one reason per port, after the other dimensions', () => {
    const [h] = take(host('h'), {
      cpu: { milli: 100 },
      memoryBytes: 0,
      ports: [
        { port: 80, protocol: 'tcp' },
        { port: 443, protocol: 'tcp' },
      ],
    });
    const f = feasibility(
      h,
      {
        deployId: 'x',
        resources: {
          cpu: { milli: 100 },
          memoryBytes: 16 * GiB,
          ports: [
            { port: 443, protocol: 'tcp' },
            { port: 80, protocol: 'udp' },
            { port: 80, protocol: 'tcp' },
          ],
        },
      },
      ctx,
    );
    expect(f).toEqual({
      ok: false,
      reason: 'memory: need 16.0 GiB, free 8.0 GiB; port 443/tcp: in use; port 80/tcp: in use',
      failures: [
        { dimension: 'memory', message: 'memory: need 16.0 GiB, free 8.0 GiB' },
        { dimension: 'port', message: 'port 443/tcp: in use' },
        { dimension: 'port', message: 'port 80/tcp: in use' },
      ],
    });
  });

  it('tcp and udp of the same number are different ports', () => {
    const [h] = take(host('h'), {
      cpu: { milli: 0 },
      memoryBytes: 0,
      ports: [{ port: 53, protocol: 'udp' }],
    });
    expect(
      allocate(h.capacity, h.ledger, {
        cpu: { milli: 0 },
        memoryBytes: 0,
        ports: [{ port: 53, protocol: 'tcp' }],
      }).ok,
    ).toBe(true);
  });

  it('countFits is at most 1 for a request with ports, 0 once a port is taken', () => {
    const h = host('h');
    expect(countFits(h.capacity, h.ledger, web80.resources)).toBe(1);
    expect(countFits(h.capacity, h.ledger, { ...web80.resources, ports: [] })).toBe(40); // cpu: 4000 / 100
    const [h2] = take(h, web80.resources);
    expect(countFits(h2.capacity, h2.ledger, web80.resources)).toBe(0);
  });

  it('checkNoOvercommit reports a port held twice, a negative count and a malformed key', () => {
    const h = host('h');
    const [, a] = take(h, web80.resources);
    const twice = ledgerFrom(h.capacity, [a, a]);
    expect(fits(h.capacity, ledgerFrom(h.capacity, [a]), a)).toBe(false);
    expect(checkNoOvercommit(h.capacity, twice)).toEqual([
      {
        dimension: 'port[80/tcp]',
        used: 2,
        limit: 1,
        message: 'port[80/tcp]: held by 2 allocations (max 1)',
      },
    ]);
    const negative = checkNoOvercommit(h.capacity, release(emptyLedger(h.capacity), a));
    expect(negative.filter((v) => v.dimension.startsWith('port'))).toEqual([
      { dimension: 'port[80/tcp]', used: -1, limit: 1, message: 'port[80/tcp]: usage -1 is negative' },
    ]);
    const bad = { ...emptyLedger(h.capacity), ports: { '70000/tcp': 1, '80/sctp': 1 } };
    expect(checkNoOvercommit(h.capacity, bad).map((v) => v.message)).toEqual([
      'port[70000/tcp]: not a port/protocol (1..65535, tcp|udp)',
      'port[80/sctp]: not a port/protocol (1..65535, tcp|udp)',
    ]);
  });

  it('validates ports with field paths', () => {
    const bad = (ports: unknown) =>
      validateRequest({
        deployId: 'x',
        resources: { cpu: { milli: 1 }, memoryBytes: 0, ports: ports as never },
      });
    expect(bad([{ port: 0, protocol: 'tcp' }])).toEqual([
      'resources.ports[0].port: must be an integer in 1..65535, got 0',
    ]);
    expect(bad([{ port: 80, protocol: 'sctp' }])).toEqual([
      'resources.ports[0].protocol: must be tcp or udp, got sctp',
    ]);
    expect(
      bad([
        { port: 80, protocol: 'tcp' },
        { port: 80, protocol: 'tcp' },
      ]),
    ).toEqual(['resources.ports[1]: duplicate port 80/tcp (also resources.ports[0])']);
    expect(bad('80')).toEqual(['resources.ports: must be a list of {port, protocol}']);
  });
});

describe('host ports: strategies never put two holders of a port on one host', () => {
  const hosts = [host('a'), host('b')];

  for (const kind of ['binpack', 'spread', 'auto', 'global'] as const) {
    it(`${kind}: 3 replicas publishing 80 on 2 hosts → one per host, 1 unplaced with the port reason`, () => {
      const p = plan(hosts, web80, 3, { kind }, []);
      expect(counts(p)).toEqual({ a: 1, b: 1 });
      expect(p.unplaced).toBe(1);
      expect(p.reasons).toEqual({ a: 'port 80/tcp: in use', b: 'port 80/tcp: in use' });
    });
  }

  it('binpack without ports would stack all 3 on one host (the port is what spreads them)', () => {
    const p = plan(
      hosts,
      { ...web80, resources: { ...web80.resources, ports: [] } },
      3,
      { kind: 'binpack' },
      [],
    );
    expect(p.placements).toHaveLength(1);
    expect(p.placements[0]!.count).toBe(3);
  });

  it('a host whose books already hold the port (another deploy) is skipped', () => {
    const [busy] = take(host('a'), {
      cpu: { milli: 0 },
      memoryBytes: 0,
      ports: [{ port: 80, protocol: 'tcp' }],
    });
    const p = plan([busy, host('b'), host('c')], web80, 2, { kind: 'binpack' }, []);
    expect(counts(p)).toEqual({ b: 1, c: 1 });
    expect(p.unplaced).toBe(0);
    // Reasons are each host's last evaluation: c took the first replica and was then refused.
    expect(p.reasons).toEqual({ a: 'port 80/tcp: in use', c: 'port 80/tcp: in use' });
  });

  it('each: N = 2 per host cannot fit (one holder per port): every host rejects the batch', () => {
    const p = plan(hosts, web80, 2, { kind: 'each' }, []);
    expect(p.placements).toEqual([]);
    expect(p.unplaced).toBe(4);
    expect(p.reasons).toEqual({
      a: 'each: only 1 of 2 replicas fit; port 80/tcp: in use',
      b: 'each: only 1 of 2 replicas fit; port 80/tcp: in use',
    });
    expect(counts(plan(hosts, web80, 1, { kind: 'each' }, []))).toEqual({ a: 1, b: 1 });
  });

  it('fill: tops each host up to 1; a host already holding it is filled', () => {
    const [a1, alloc] = take(host('a'), web80.resources);
    const p = plan([a1, host('b')], web80, 1, { kind: 'fill' }, [{ hostId: 'a', count: 1 }]);
    expect(counts(p)).toEqual({ b: 1 });
    expect(alloc.ports).toEqual([{ port: 80, protocol: 'tcp' }]);
  });

  it('bid offers one allocation and says why not more; select places one per host', () => {
    const bids = hosts.map((h) => bid(h, web80, ctx, 3));
    for (const b of bids) {
      expect(b).toMatchObject({ ok: true, short: 'port 80/tcp: in use' });
      expect(b.ok && b.allocations.length).toBe(1);
    }
    const sel = select(bids, web80, 3, { kind: 'binpack' });
    expect(sel.placements.map((x) => [x.hostId, x.count])).toEqual([
      ['a', 1],
      ['b', 1],
    ]);
    expect(sel.unplaced).toBe(1);
    // A bid that offers everything asked carries no `short`.
    expect('short' in bid(hosts[0]!, web80, ctx, 1)).toBe(false);
  });

  it('bid on a host already holding the port is refused with the port dimension', () => {
    const [h] = take(host('a'), web80.resources);
    expect(bid(h, web80, ctx, 1)).toEqual({
      ok: false,
      hostId: 'a',
      reason: 'port 80/tcp: in use',
      dimension: 'port',
    });
  });
});
