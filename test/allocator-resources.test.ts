import { describe, expect, it } from 'vitest';
import { makeHost } from '../allocator/bench-helpers.ts';
import {
  type Allocation,
  allocate,
  checkNoOvercommit,
  feasibility,
  GiB,
  type Host,
  ledgerFrom,
  type PlacementRequest,
  type ResourceRequest,
  reserve,
} from '../allocator/index.ts';

const ctx = { strategy: { kind: 'binpack' as const }, existing: [] };

/** Allocates `r` on `host`, asserts success, and returns the host with the allocation reserved. */
function take(host: Host, r: ResourceRequest): [Host, Allocation] {
  const got = allocate(host.capacity, host.ledger, r);
  if (!got.ok) throw new Error(got.failures.map((f) => f.message).join('; '));
  return [{ ...host, ledger: reserve(host.ledger, got.allocation) }, got.allocation];
}

function why(host: Host, r: ResourceRequest): string {
  const got = allocate(host.capacity, host.ledger, r);
  if (got.ok) throw new Error('expected a rejection');
  return got.failures.map((f) => f.message).join('; ');
}

const cpu = (milli: number, bind = false): ResourceRequest => ({ cpu: { milli, bind }, memoryBytes: 0 });

describe('cpu: shared pool and oversell', () => {
  it('oversells the shared pool by the cpu ratio', () => {
    let h = makeHost({ id: 'h', cores: 4, oversell: { cpu: 1500 } });
    [h] = take(h, cpu(5000));
    expect(why(h, cpu(1500))).toBe('cpu: need 1500 milli, free 1000 milli');
    [h] = take(h, cpu(1000));
    expect(checkNoOvercommit(h.capacity, h.ledger)).toEqual([]);
  });

  it('carves bound cores out of the pool before oversell', () => {
    let h = makeHost({ id: 'h', cores: 2, oversell: { cpu: 2000 } });
    [h] = take(h, cpu(1000, true));
    expect(why(h, cpu(2500))).toBe('cpu: need 2500 milli, free 2000 milli');
  });

  it('refuses a bind that would shrink the pool below shared use', () => {
    let h = makeHost({ id: 'h', cores: 2, oversell: { cpu: 2000 } });
    [h] = take(h, cpu(3000));
    expect(why(h, cpu(1000, true))).toBe(
      'cpu: binding 1 core would shrink the shared pool to 2000 milli, below the 3000 milli in shared use',
    );
    [h] = take(h, cpu(500, true)); // pool (2000 − 500) × 2 = 3000 ≥ 3000
    expect(checkNoOvercommit(h.capacity, h.ledger)).toEqual([]);
  });
});

describe('cpu: bound cores and fragments (Eru)', () => {
  it('splits 1.5 cores into one whole core and a 500 milli fragment, lowest index first', () => {
    let h = makeHost({ id: 'h', cores: 4 });
    let a: Allocation;
    [h, a] = take(h, cpu(1500, true));
    expect(a.cpu).toEqual({
      sharedMilli: 0,
      cores: [
        { index: 0, milli: 1000 },
        { index: 1, milli: 500 },
      ],
    });
    // The next fragment fills core 1's other half; the whole core is the lowest free one.
    [h, a] = take(h, cpu(1500, true));
    expect(a.cpu.cores).toEqual([
      { index: 1, milli: 500 },
      { index: 2, milli: 1000 },
    ]);
    expect(h.ledger.cpu.cores).toEqual([1000, 1000, 1000, 0]);
    expect(why(h, cpu(1500, true))).toBe('cpu: need 1 core + 500 milli bound, free 1 whole core');
  });

  it('puts a fragment on the fullest core that still fits (best fit)', () => {
    const base = makeHost({ id: 'h', cores: 4 });
    // Cores bound [300, 700, 0, 0].
    const h: Host = {
      ...base,
      ledger: ledgerFrom(base.capacity, [
        alloc({ cores: [{ index: 0, milli: 300 }] }),
        alloc({ cores: [{ index: 1, milli: 700 }] }),
      ]),
    };
    const [, a] = take(h, cpu(250, true));
    expect(a.cpu.cores).toEqual([{ index: 1, milli: 250 }]);
    expect(why(h, cpu(2800, true))).toBe(
      'cpu: need 2 cores + 800 milli bound, free 2 whole cores, largest fragment 700 milli',
    );
  });

  it('honours maxFragmentCores of the host and of the request', () => {
    let h = makeHost({ id: 'h', cores: 4, maxFragmentCores: 1 });
    [h] = take(h, cpu(500, true));
    expect(why(h, cpu(600, true))).toBe(
      'cpu: need a 600 milli fragment, no fragment core has it free and 1 fragment core in use (max 1)',
    );
    const [, a] = take(h, cpu(2000, true));
    expect(a.cpu.cores.map((c) => c.index)).toEqual([1, 2]);
    const [, b] = take(h, cpu(400, true)); // fits on the existing fragment core 0
    expect(b.cpu.cores).toEqual([{ index: 0, milli: 400 }]);

    const free = makeHost({ id: 'f', cores: 2 });
    expect(why(free, { cpu: { milli: 500, bind: true, maxFragmentCores: 0 }, memoryBytes: 0 })).toMatch(
      /0 fragment cores in use \(max 0\)/,
    );
  });
});

function alloc(p: { cores?: Allocation['cpu']['cores']; shared?: number; memoryBytes?: number }): Allocation {
  return {
    cpu: { sharedMilli: p.shared ?? 0, cores: p.cores ?? [] },
    memoryBytes: p.memoryBytes ?? 0,
    diskBytes: 0,
    volumes: [],
    gpus: [],
    limits: { cpuMilli: 0, memoryBytes: 0 },
  };
}

describe('memory, disk, volumes', () => {
  it('names the dimension and the amounts', () => {
    const h = makeHost({ id: 'h', memoryBytes: 1.5 * GiB, diskBytes: 10 * GiB });
    expect(why(h, { cpu: { milli: 0 }, memoryBytes: 2 * GiB })).toBe('memory: need 2.0 GiB, free 1.5 GiB');
    expect(why(h, { cpu: { milli: 0 }, memoryBytes: 0, diskBytes: 20 * GiB })).toBe(
      'disk: need 20.0 GiB, free 10.0 GiB',
    );
    // Every failing dimension is reported, in a fixed order.
    expect(why(h, { cpu: { milli: 9000 }, memoryBytes: 2 * GiB, diskBytes: 20 * GiB })).toBe(
      'cpu: need 9000 milli, free 4000 milli; memory: need 2.0 GiB, free 1.5 GiB; disk: need 20.0 GiB, free 10.0 GiB',
    );
  });

  it('oversells memory by its ratio', () => {
    let h = makeHost({ id: 'h', memoryBytes: 4 * GiB, oversell: { memory: 1500 } });
    [h] = take(h, { cpu: { milli: 0 }, memoryBytes: 6 * GiB });
    expect(why(h, { cpu: { milli: 0 }, memoryBytes: 1 })).toBe('memory: need 1 B, free 0 B');
  });

  it('places volumes largest first into the best-fitting pool, grants in request order', () => {
    const h = makeHost({
      id: 'h',
      volumes: [
        { name: 'hdd', bytes: 500 * GiB },
        { name: 'ssd', bytes: 100 * GiB, path: '/ssd' },
      ],
    });
    const [after, a] = take(h, {
      cpu: { milli: 0 },
      memoryBytes: 0,
      volumes: [
        { name: 'a', bytes: 50 * GiB },
        { name: 'b', bytes: 80 * GiB },
      ],
    });
    expect(a.volumes).toEqual([
      { name: 'a', pool: 'hdd', bytes: 50 * GiB },
      { name: 'b', pool: 'ssd', bytes: 80 * GiB },
    ]);
    expect(after.ledger.volumes).toEqual({ hdd: 50 * GiB, ssd: 80 * GiB });
    expect(
      why(after, { cpu: { milli: 0 }, memoryBytes: 0, volumes: [{ name: 'x', bytes: GiB, pool: 'nvme' }] }),
    ).toBe('volume: x needs 1.0 GiB in pool nvme, host has no such pool');
    expect(
      why(after, {
        cpu: { milli: 0 },
        memoryBytes: 0,
        volumes: [{ name: 'x', bytes: 30 * GiB, pool: 'ssd' }],
      }),
    ).toBe('volume: x needs 30.0 GiB in pool ssd, free 20.0 GiB');
    expect(
      why(after, { cpu: { milli: 0 }, memoryBytes: 0, volumes: [{ name: 'x', bytes: 600 * GiB }] }),
    ).toBe('volume: x needs 600.0 GiB, largest free pool hdd has 450.0 GiB');
  });
});

describe('gpu', () => {
  const a100 = { model: 'A100', memoryBytes: 40 * GiB };
  const gpu = (milli: number, extra: { model?: string; memoryBytes?: number } = {}): ResourceRequest => ({
    cpu: { milli: 0 },
    memoryBytes: 0,
    gpu: { milli, ...extra },
  });

  it('rejects on model with the host inventory', () => {
    const h = makeHost({
      id: 'h',
      gpus: [
        { model: 'T4', memoryBytes: 16 * GiB },
        { model: 'T4', memoryBytes: 16 * GiB },
      ],
    });
    expect(why(h, gpu(500, { model: 'A100' }))).toBe('gpu: need 1 × A100 ≥ 500 milli, host has 2 × T4');
    expect(why(makeHost({ id: 'n' }), gpu(1000))).toBe('gpu: need 1 × GPU (whole), host has no GPUs');
  });

  it('packs fractions onto the fullest device, whole devices must be idle', () => {
    let h = makeHost({ id: 'h', gpus: [a100, a100] });
    const grants: Allocation['gpus'][] = [];
    for (let i = 0; i < 3; i++) {
      let a: Allocation;
      [h, a] = take(h, gpu(250, { model: 'A100' }));
      grants.push(a.gpus);
    }
    expect(grants).toEqual([
      [{ index: 0, milli: 250, memoryBytes: 0 }],
      [{ index: 0, milli: 250, memoryBytes: 0 }],
      [{ index: 0, milli: 250, memoryBytes: 0 }],
    ]);
    const [after, a] = take(h, gpu(600));
    h = after;
    expect(a.gpus).toEqual([{ index: 1, milli: 600, memoryBytes: 0 }]);
    expect(why(h, gpu(1000, { model: 'A100' }))).toBe(
      'gpu: need 1 × A100 (whole), free 0 whole A100s, largest fraction 400 milli',
    );
    expect(h.ledger.gpus).toEqual([
      { milli: 750, memoryBytes: 0 },
      { milli: 600, memoryBytes: 0 },
    ]);
  });

  it('reserves per-device memory for fractions and filters devices by memory', () => {
    let h = makeHost({ id: 'h', gpus: [a100, a100] });
    let a: Allocation;
    [h, a] = take(h, gpu(250, { memoryBytes: 30 * GiB }));
    expect(a.gpus).toEqual([{ index: 0, milli: 250, memoryBytes: 30 * GiB }]);
    [h, a] = take(h, gpu(250, { memoryBytes: 30 * GiB }));
    expect(a.gpus).toEqual([{ index: 1, milli: 250, memoryBytes: 30 * GiB }]);
    expect(why(h, gpu(250, { memoryBytes: 50 * GiB }))).toBe(
      'gpu: need 1 × GPU ≥ 250 milli with 50.0 GiB memory, host has 2 × A100',
    );
  });

  it('grants whole devices with all their memory plus one fraction', () => {
    const h = makeHost({ id: 'h', gpus: [a100, a100, a100, a100] });
    const [after, a] = take(h, gpu(1500, { model: 'A100' }));
    expect(a.gpus).toEqual([
      { index: 0, milli: 1000, memoryBytes: 40 * GiB },
      { index: 1, milli: 500, memoryBytes: 0 },
    ]);
    const [, b] = take(after, gpu(2000));
    expect(b.gpus.map((g) => g.index)).toEqual([2, 3]);
  });
});

describe('feasibility', () => {
  const host = makeHost({ id: 'h1', labels: { zone: 'c' }, memoryBytes: 1.5 * GiB });
  const req = (p: Partial<PlacementRequest>): PlacementRequest => ({
    deployId: 'web',
    resources: { cpu: { milli: 500 }, memoryBytes: GiB },
    ...p,
  });

  it('returns the exact allocation with limits passed through', () => {
    const f = feasibility(host, req({ limits: { cpuMilli: 2000 } }), ctx);
    expect(f).toEqual({
      ok: true,
      allocation: {
        cpu: { sharedMilli: 500, cores: [] },
        memoryBytes: GiB,
        diskBytes: 0,
        volumes: [],
        gpus: [],
        limits: { cpuMilli: 2000, memoryBytes: GiB },
      },
    });
  });

  it('rejects on labels before resources, with the label value', () => {
    const f = feasibility(
      host,
      req({
        constraints: [{ op: 'in', key: 'zone', values: ['a', 'b'] }],
        resources: { cpu: { milli: 0 }, memoryBytes: 2 * GiB },
      }),
      ctx,
    );
    expect(f).toMatchObject({ ok: false, reason: 'label: zone in (a,b) not satisfied (zone=c)' });
  });

  it('rejects on max-per-host given the existing placements', () => {
    const f = feasibility(host, req({ maxPerHost: 2 }), { ...ctx, existing: [{ hostId: 'h1', count: 2 }] });
    expect(f).toMatchObject({
      ok: false,
      reason: 'max-per-host: 2 replicas of web already on this host (max 2)',
    });
  });

  it('rejects an invalid request naming the field', () => {
    const f = feasibility(host, req({ resources: { cpu: { milli: 1.5 }, memoryBytes: -1 } }), ctx);
    expect(f.ok).toBe(false);
    if (!f.ok) {
      expect(f.failures.map((x) => x.message)).toEqual([
        'request: resources.cpu.milli: must be a non-negative integer, got 1.5',
        'request: resources.memoryBytes: must be a non-negative integer, got -1',
      ]);
    }
  });
});

describe('checkNoOvercommit', () => {
  it('reports every dimension', () => {
    const h = makeHost({
      id: 'h',
      cores: 2,
      memoryBytes: GiB,
      diskBytes: GiB,
      volumes: [{ name: 'ssd', bytes: GiB }],
      gpus: [{ model: 'T4', memoryBytes: GiB }],
    });
    const over: Allocation = {
      cpu: {
        sharedMilli: 1500,
        cores: [
          { index: 0, milli: 1200 },
          { index: 5, milli: 100 },
        ],
      },
      memoryBytes: 2 * GiB,
      diskBytes: 2 * GiB,
      volumes: [
        { name: 'a', pool: 'ssd', bytes: 2 * GiB },
        { name: 'b', pool: 'nope', bytes: 1 },
      ],
      gpus: [{ index: 0, milli: 1100, memoryBytes: 2 * GiB }],
      limits: { cpuMilli: 0, memoryBytes: 0 },
    };
    const v = checkNoOvercommit(h.capacity, ledgerFrom(h.capacity, [over]));
    expect(v.map((x) => x.dimension)).toEqual([
      'cpu.core[0]',
      'cpu.core[5]',
      'cpu.shared',
      'memory',
      'disk',
      'volume[nope]',
      'volume[ssd]',
      'gpu[0].milli',
      'gpu[0].memory',
    ]);
    expect(v[0]?.message).toBe('cpu.core[0]: 1200 milli used > 1000 milli schedulable');
    expect(v[3]?.message).toBe('memory: 2.0 GiB used > 1.0 GiB schedulable');
  });

  it('flags negative and non-integer usage', () => {
    const h = makeHost({ id: 'h' });
    const l = ledgerFrom(h.capacity, []);
    const bad = { ...l, memoryBytes: -1, diskBytes: 0.5 };
    expect(checkNoOvercommit(h.capacity, bad).map((x) => x.message)).toEqual([
      'memory: usage -1 B is negative',
      'disk: usage 0.5 is not an integer',
    ]);
  });
});
