import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeMessage, encodeMessage, MESSAGE_LIMITS, StateMessageError } from '../crdt/codec.ts';
import { makeCapacity, makeHostRecord, makeWorkload } from '../crdt/fixtures.ts';
import { hostEntryHash } from '../crdt/hosts.ts';
import { applyHostPatch, diffHostRecord } from '../crdt/patch.ts';
import type { HostPatch, HostRecord, WorkloadRecord } from '../crdt/types.ts';

const MAX = MESSAGE_LIMITS.maxWorkloadsPerHost;

/** Workloads sorted like Placement publishes them (deploy, then replica). */
function workloads(ids: readonly [string, number][], status = 'running' as WorkloadRecord['status']) {
  return ids.map(([d, r]) => makeWorkload(`${d}.${r}`, d, r, { status }));
}

function roundTrip(p: HostPatch): HostPatch {
  const msg = decodeMessage(encodeMessage({ t: 'delta', hosts: [], intents: [], patches: [p] }), 'peer');
  if (msg.t !== 'delta' || !msg.patches) throw new Error('expected a delta with patches');
  return msg.patches[0]!;
}

function errorOf(fn: () => unknown): StateMessageError {
  try {
    fn();
  } catch (err) {
    if (err instanceof StateMessageError) return err;
    throw err;
  }
  throw new Error('expected a StateMessageError');
}

describe('delta host records (crdt/patch.ts)', () => {
  it('carries only the changed workloads and rebuilds the same record (same hash)', () => {
    const ws = workloads(
      Array.from({ length: 40 }, (_, i): [string, number] => [`d${String(i).padStart(2, '0')}`, 0]),
    );
    const base = makeHostRecord('h1', 7, { workloads: ws });
    const next = makeHostRecord('h1', 8, {
      workloads: [
        ...ws.slice(0, 10),
        makeWorkload('d09x.0', 'd09x', 0, { status: 'pending' }), // inserted
        { ...ws[10]!, status: 'exited', exitCode: 3 }, // changed
        ...ws.slice(12), // ws[11] removed
      ],
      allocated: { cpuMilli: 1, cores: [], memory: 2, disk: 0, gpus: [] },
    });
    const patch = diffHostRecord(base, next)!;
    expect(patch).toBeDefined();
    expect(patch.del).toEqual([ws[11]!.id]);
    expect(patch.put.map(([i, w]) => [i, w.id])).toEqual([
      [10, 'd09x.0'],
      [11, ws[10]!.id],
    ]);
    expect(patch.capacity).toBeUndefined();
    expect(patch.allocated).toEqual(next.allocated);
    const rebuilt = applyHostPatch(base, roundTrip(patch), 'peer', 'patches[0]', MAX);
    expect(rebuilt).toEqual(next);
    expect(hostEntryHash(rebuilt).equals(hostEntryHash(next))).toBe(true);
    expect(encodeMessage({ t: 'delta', hosts: [], intents: [], patches: [patch] }).length).toBeLessThan(
      encodeMessage({ t: 'delta', hosts: [next], intents: [] }).length / 5,
    );
  });

  it('a change of host ports alone (a workload’s or the total) is carried and rebuilds the same record', () => {
    const ws = workloads(Array.from({ length: 10 }, (_, i): [string, number] => [`d${i}`, 0]));
    const p80 = { port: 80, protocol: 'tcp' as const };
    const p81 = { port: 81, protocol: 'tcp' as const };
    const withPorts = (w: WorkloadRecord, ports: (typeof p80)[]) => ({
      ...w,
      resources: { ...w.resources, ports },
    });
    const base = makeHostRecord('h1', 7, {
      workloads: [withPorts(ws[0]!, [p80]), ...ws.slice(1)],
      allocated: { cpuMilli: 0, cores: [], memory: 0, disk: 0, gpus: [], ports: [p80] },
    });
    const next = makeHostRecord('h1', 8, {
      workloads: [withPorts(ws[0]!, [p81, p80]), ...ws.slice(1)],
      allocated: { cpuMilli: 0, cores: [], memory: 0, disk: 0, gpus: [], ports: [p80, p81] },
    });
    const patch = diffHostRecord(base, next)!;
    expect(patch.put.map(([i]) => i)).toEqual([0]);
    expect(patch.allocated?.ports).toEqual([p80, p81]);
    const rebuilt = applyHostPatch(base, roundTrip(patch), 'peer', 'patches[0]', MAX);
    expect(rebuilt).toEqual(next);
    expect(hostEntryHash(rebuilt).equals(hostEntryHash(next))).toBe(true);
  });

  it('falls back to the full record when the order changes, ids repeat or most workloads change', () => {
    const ws = workloads([
      ['a', 0],
      ['b', 0],
      ['c', 0],
      ['d', 0],
      ['e', 0],
      ['f', 0],
    ]);
    const base = makeHostRecord('h1', 1, { workloads: ws });
    const swapped = [ws[1]!, ws[0]!, ...ws.slice(2)];
    expect(diffHostRecord(base, makeHostRecord('h1', 2, { workloads: swapped }))).toBeUndefined();
    expect(diffHostRecord(base, makeHostRecord('h1', 2, { workloads: [...ws, ws[0]!] }))).toBeUndefined();
    const allNew = ws.map((w) => ({ ...w, status: 'exited' as const }));
    expect(diffHostRecord(base, makeHostRecord('h1', 2, { workloads: allNew }))).toBeUndefined();
    expect(diffHostRecord(base, makeHostRecord('h1', 1, { workloads: ws }))).toBeUndefined();
    expect(diffHostRecord(base, makeHostRecord('h2', 2, { workloads: ws }))).toBeUndefined();
  });

  it('carries changed top-level fields (capacity, labels, addrs, draining)', () => {
    const base = makeHostRecord('h1', 1);
    const next = makeHostRecord('h1', 2, {
      capacity: makeCapacity({ labels: { zone: 'z2' } }),
      addrs: ['/ip4/10.0.0.2/tcp/1'],
      draining: true,
    });
    const p = diffHostRecord(base, next)!;
    expect(p.capacity?.labels).toEqual({ zone: 'z2' });
    expect(p.addrs).toEqual(['/ip4/10.0.0.2/tcp/1']);
    expect(p.draining).toBe(true);
    expect(applyHostPatch(base, roundTrip(p), 'x', 'p', MAX)).toEqual(next);
  });

  it('property: diff then apply gives the next record whenever a patch is produced', () => {
    const wl = fc.record({
      deploy: fc.constantFrom('a', 'b', 'c', 'd', 'e'),
      replica: fc.integer({ min: 0, max: 5 }),
      status: fc.constantFrom('pending', 'running', 'exited'),
      gen: fc.integer({ min: 1, max: 3 }),
    });
    const list = fc.array(wl, { maxLength: 25 }).map((xs) => {
      const seen = new Map<string, WorkloadRecord>();
      for (const x of xs) {
        const id = `${x.deploy}.${x.replica}`;
        seen.set(id, makeWorkload(id, x.deploy, x.replica, { status: x.status as 'running', gen: x.gen }));
      }
      return [...seen.values()].sort((p, q) =>
        p.deployId === q.deployId ? p.replica - q.replica : p.deployId < q.deployId ? -1 : 1,
      );
    });
    fc.assert(
      fc.property(list, list, fc.boolean(), (a, b, drain) => {
        const base = makeHostRecord('h', 3, { workloads: a });
        const next = makeHostRecord('h', 4, { workloads: b, draining: drain });
        const p = diffHostRecord(base, next);
        if (p === undefined) return;
        const rebuilt = applyHostPatch(base, roundTrip(p), 'peer', 'p', MAX);
        expect(rebuilt).toEqual(next);
        expect(hostEntryHash(rebuilt).equals(hostEntryHash(next))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('rejects a patch inconsistent with the base, naming the peer and the field', () => {
    const base = makeHostRecord('h1', 5, {
      workloads: workloads([
        ['a', 0],
        ['b', 0],
      ]),
    });
    const patch = (over: Partial<HostPatch>): HostPatch => ({
      id: 'h1',
      version: 6,
      base: 5,
      updatedAt: 1,
      del: [],
      put: [],
      ...over,
    });
    const cases: [HostPatch, string][] = [
      [patch({ base: 4 }), 'p.base'],
      [patch({ del: ['zz.0'] }), 'p.del[0]'],
      [patch({ del: ['a.0', 'a.0'] }), 'p.del[1]'],
      [patch({ put: [[3, makeWorkload('c.0', 'c', 0)]] }), 'p.put[0][0]'],
      [patch({ put: [[0, makeWorkload('b.0', 'b', 0)]] }), 'p.put[0][1].id'],
    ];
    for (const [p, path] of cases) {
      const err = errorOf(() => applyHostPatch(base, p, 'peer-7', 'p', MAX));
      expect(err.path).toBe(path);
      expect(err.message).toContain('peer-7');
    }
  });

  it('validates patches on the wire: shape, bounds, ascending indices, version above base', () => {
    const good: HostPatch = {
      id: 'h1',
      version: 6,
      base: 5,
      updatedAt: 1,
      del: ['x.0'],
      put: [[0, makeWorkload('a.0', 'a', 0)]],
    };
    const bytes = (p: unknown) =>
      new TextEncoder().encode(JSON.stringify({ v: 1, t: 'delta', hosts: [], intents: [], patches: [p] }));
    expect(roundTrip(good)).toEqual(good);
    const cases: [unknown, string][] = [
      [{ ...good, version: 5 }, 'patches[0].version'],
      [{ ...good, base: 0 }, 'patches[0].base'],
      [{ ...good, extra: 1 }, 'patches[0].extra'],
      [{ ...good, del: [''] }, 'patches[0].del[0]'],
      [{ ...good, put: [[0]] }, 'patches[0].put[0]'],
      [{ ...good, put: [[-1, good.put[0]![1]]] }, 'patches[0].put[0][0]'],
      [{ ...good, put: [[0, { ...good.put[0]![1], status: 'odd' }]] }, 'patches[0].put[0][1].status'],
      [
        {
          ...good,
          put: [
            [1, good.put[0]![1]],
            [1, good.put[0]![1]],
          ],
        },
        'patches[0].put[1][0]',
      ],
      [{ ...good, capacity: { cpuMilli: 1 } }, 'patches[0].capacity.cores'],
      [{ ...good, draining: 'yes' }, 'patches[0].draining'],
    ];
    for (const [p, path] of cases) {
      const err = errorOf(() => decodeMessage(bytes(p), 'peer-3'));
      expect(err.path).toBe(path);
      expect(err.peer).toBe('peer-3');
    }
    // Only deltas carry patches.
    const snap = new TextEncoder().encode(
      JSON.stringify({ v: 1, t: 'snapshot', hosts: [], intents: [], patches: [] }),
    );
    expect(errorOf(() => decodeMessage(snap, 'p')).path).toBe('patches');
  });

  it('keeps the record unchanged where the patch says nothing', () => {
    const base: HostRecord = makeHostRecord('h1', 1, { workloads: workloads([['a', 0]]) });
    const p = diffHostRecord(base, { ...base, version: 2, updatedAt: 99 })!;
    expect(p.put).toEqual([]);
    expect(p.del).toEqual([]);
    const rebuilt = applyHostPatch(base, p, 'x', 'p', MAX);
    expect(rebuilt.workloads).toBe(base.workloads);
    expect(rebuilt.updatedAt).toBe(99);
  });
});
