import { describe, expect, it } from 'vitest';
import { feasibility } from '../allocator/feasibility.ts';
import { ledgerFrom } from '../allocator/ledger.ts';
import type { Allocation } from '../allocator/types.ts';
import { decodeMessage, encodeMessage, StateMessageError, validateHostEntry } from '../crdt/codec.ts';
import { makeHostRecord, makeWorkload } from '../crdt/fixtures.ts';
import type { DeployIntent, JsonObject } from '../crdt/types.ts';
import type { WorkloadInfo } from '../engines/engine.ts';
import { simProgram } from '../engines/sim.ts';
import {
  hostFromRecord,
  IntentSpecError,
  placementSpec,
  resourcesOf,
  sumResources,
} from '../node/core/placement-adapter.ts';
import { decodePlacement, encodePlacement, TAG_PLACE } from '../node/core/placement-wire.ts';
import { adoptable, desiredOf, LABEL_ALLOC, LABEL_GEN, LABEL_REPLICA } from '../node/core/reconcile.ts';
import { frameJson, WireError } from '../node/core/wire.ts';
import { SimCluster } from '../sim/cluster.ts';

/**
 * Host ports end to end below the HTTP API: the wire and gossip validators, the adapter between
 * the deploy spec and the allocator, the reconcile loop's engine spec and adoption, and leaderless
 * placement of a deploy publishing a port on a simulated cluster.
 */

const GiB = 2 ** 30;
const P80 = { port: 80, protocol: 'tcp' as const };

function intent(spec: JsonObject, replicas = 1, strategy = 'binpack'): DeployIntent {
  return { id: 'web', name: 'web', replicas, strategy, spec, revision: [0, 0, 'x'] };
}

const base = { resources: { cpu: { milli: 100 }, memoryBytes: 64 * 2 ** 20 } };

const alloc = (ports?: Allocation['ports']): Allocation => ({
  cpu: { sharedMilli: 100, cores: [] },
  memoryBytes: 64 * 2 ** 20,
  diskBytes: 0,
  volumes: [],
  gpus: [],
  ...(ports ? { ports } : {}),
  limits: { cpuMilli: 100, memoryBytes: 64 * 2 ** 20 },
});

describe('adapter: spec.ports → the placement request', () => {
  it('target is the host port; protocol defaults to tcp', () => {
    const { request } = placementSpec(
      intent({ ...base, ports: [{ target: 80 }, { target: 53, published: 53, protocol: 'udp' }] }),
    );
    expect(request.resources.ports).toEqual([P80, { port: 53, protocol: 'udp' }]);
    expect(placementSpec(intent(base)).request.resources.ports).toBeUndefined();
  });

  it('a mapping or a host IP is refused with the field named', () => {
    expect(() => placementSpec(intent({ ...base, ports: [{ target: 80, published: 8080 }] }))).toThrow(
      new IntentSpecError(
        'web',
        'spec.ports[0].published',
        'must equal target (80), got 8080: published ports use host networking, so the workload listens on the host port itself (no port mapping)',
      ),
    );
    expect(() => placementSpec(intent({ ...base, ports: [{ target: 80, hostIp: '::1' }] }))).toThrow(
      /^deploy web: spec\.ports\[0\]\.hostIp: not supported/,
    );
    expect(() => placementSpec(intent({ ...base, ports: [{ target: 80 }, { target: 80 }] }))).toThrow(
      /spec: resources\.ports\[1\]: duplicate port 80\/tcp/,
    );
  });

  it('during a rollout the request also holds the stable template ports (both run)', () => {
    const rollout = {
      version: 2,
      target: 'new',
      stable: { hash: 'old', version: 1, template: { ports: [{ target: 80, protocol: 'tcp' }] } },
      updated: [],
      state: 'rolling',
    };
    const { request } = placementSpec(intent({ ...base, ports: [{ target: 81 }], rollout }));
    expect(request.resources.ports).toEqual([{ port: 81, protocol: 'tcp' }, P80]);
    // Same ports in both: once each.
    const same = placementSpec(intent({ ...base, ports: [{ target: 80 }], rollout }));
    expect(same.request.resources.ports).toEqual([P80]);
  });

  it('gossiped usage carries the ports; a coordinator sees the host as taken', () => {
    const r = resourcesOf(alloc([P80]));
    expect(r.ports).toEqual([P80]);
    expect('ports' in resourcesOf(alloc())).toBe(false);
    expect(sumResources([r, resourcesOf(alloc([{ port: 22, protocol: 'tcp' }, P80]))]).ports).toEqual([
      { port: 22, protocol: 'tcp' },
      P80,
    ]);
    const rec = makeHostRecord('h1', 1, { workloads: [makeWorkload('x.0', 'x', 0, { resources: r })] });
    const host = hostFromRecord(rec);
    expect(host.ledger.ports).toEqual({ '80/tcp': 1 });
    const f = feasibility(host, placementSpec(intent({ ...base, ports: [{ target: 80 }] })).request, {
      strategy: { kind: 'binpack' },
      existing: [],
    });
    expect(f).toMatchObject({ ok: false, reason: 'port 80/tcp: in use' });
  });
});

describe('wire and gossip: ports are validated strictly, naming the peer and field', () => {
  const bid = (ports: unknown) =>
    frameJson(TAG_PLACE, {
      t: 'bid',
      round: 'r1',
      items: [
        {
          request: { deployId: 'web', resources: { cpu: { milli: 1 }, memoryBytes: 0, ports } },
          strategy: { kind: 'binpack' },
          existing: [],
          count: 1,
        },
      ],
    });
  const award = (allocation: unknown) =>
    frameJson(TAG_PLACE, {
      t: 'award',
      round: 'r1',
      items: [{ deployId: 'web', slots: [{ replica: 0, gen: 1, allocation }] }],
    });

  it('round-trips requests, allocations and a bid that offers fewer than asked', () => {
    const msg = decodePlacement('peerA', bid([P80, { port: 53, protocol: 'udp' }]));
    expect(msg.t === 'bid' && msg.items[0]!.request.resources.ports).toEqual([
      P80,
      { port: 53, protocol: 'udp' },
    ]);
    const a = decodePlacement('peerA', award(alloc([P80])));
    expect(a.t === 'award' && a.items[0]!.slots[0]!.allocation.ports).toEqual([P80]);
    const b = decodePlacement('peerA', award(alloc()));
    expect(b.t === 'award' && 'ports' in b.items[0]!.slots[0]!.allocation).toBe(false);
    const bids = encodePlacement({
      t: 'bids',
      round: 'r1',
      items: [
        { deployId: 'web', ok: true, score: 1, allocations: [alloc([P80])], short: 'port 80/tcp: in use' },
      ],
    });
    expect(decodePlacement('peerA', bids)).toMatchObject({ items: [{ short: 'port 80/tcp: in use' }] });
  });

  it('malformed ports → WireError naming the peer and the field', () => {
    const cases: [Uint8Array, string][] = [
      [
        bid([{ port: 0, protocol: 'tcp' }]),
        'items[0].request.resources.ports[0].port: expected an integer in [1, 65535]',
      ],
      [
        bid([{ port: 80, protocol: 'sctp' }]),
        'items[0].request.resources.ports[0].protocol: expected one of',
      ],
      [bid([P80, P80]), 'items[0].request.resources.ports[1]: duplicate port 80/tcp'],
      [bid('80'), 'items[0].request.resources.ports: expected an array'],
      [
        award({ ...alloc(), ports: [{ port: 70_000, protocol: 'tcp' }] }),
        'items[0].slots[0].allocation.ports[0].port',
      ],
      [
        award({ ...alloc(), ports: [{ port: 80, protocol: 'tcp', host: 'x' }] }),
        'allocation.ports[0].host: unknown field',
      ],
    ];
    for (const [frame, want] of cases) {
      let err: unknown;
      try {
        decodePlacement('peerA', frame);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(WireError);
      expect((err as WireError).message).toContain('bad message from peerA: ');
      expect((err as WireError).message).toContain(want);
    }
  });

  it('host records: ports in a workload and in the total survive the codec; malformed ones are refused', () => {
    const w = makeWorkload('web.0', 'web', 0, { resources: resourcesOf(alloc([P80])) });
    const rec = makeHostRecord('h1', 3, { workloads: [w], allocated: sumResources([w.resources]) });
    const bytes = encodeMessage({ t: 'delta', hosts: [rec], intents: [] });
    const back = decodeMessage(bytes, 'peerB');
    expect(back.t === 'delta' && back.hosts[0]).toEqual(rec);
    const bad = structuredClone(rec);
    bad.workloads[0]!.resources.ports = [P80, P80];
    expect(() => validateHostEntry(bad, 'hosts[0]', 'peerB')).toThrow(
      new StateMessageError('peerB', 'hosts[0].workloads[0].resources.ports[1]', 'duplicate port 80/tcp'),
    );
    const badProto = structuredClone(rec);
    (badProto.allocated.ports as unknown[]) = [{ port: 80, protocol: 'icmp' }];
    expect(() => validateHostEntry(badProto, 'hosts[0]', 'peerB')).toThrow(
      /hosts\[0\]\.allocated\.ports\[0\]\.protocol/,
    );
  });
});

describe('reconcile: the engine spec and adoption', () => {
  const local = (allocation: Allocation) => ({
    deployId: 'web',
    replica: 0,
    gen: 1,
    allocation,
    createdAt: 0,
  });

  it('the workload publishes the spec ports; ports the allocation does not hold are flagged', () => {
    const spec = { ...base, image: 'img', ports: [{ target: 80, protocol: 'tcp' }] };
    const d = desiredOf('h1', local(alloc([P80])), spec);
    expect(d.spec.ports).toEqual([P80]);
    expect(d.unreserved).toBeUndefined();
    expect(desiredOf('h1', local(alloc()), spec).unreserved).toEqual(['80/tcp']);
    expect(desiredOf('h1', local(alloc()), { ...base, image: 'img' }).spec.ports).toBeUndefined();
  });

  it('adoption re-derives the ports from the allocation label and from what the engine publishes', () => {
    const info = (labelAlloc: Allocation, ports?: WorkloadInfo['spec']['ports']): WorkloadInfo => ({
      id: 'web.0',
      deployId: 'web',
      hostId: 'h1',
      labels: { [LABEL_REPLICA]: '0', [LABEL_GEN]: '2', [LABEL_ALLOC]: JSON.stringify(labelAlloc) },
      state: 'running',
      createdAt: 5,
      spec: { id: 'web.0', deployId: 'web', hostId: 'h1', ...(ports ? { ports } : {}) },
      enforced: { cpu: true, cpuset: true, memory: true, gpus: true, notes: [] },
      ref: 'x',
    });
    expect(adoptable(info(alloc([P80])))?.allocation.ports).toEqual([P80]);
    expect(adoptable(info(alloc(), [P80]))?.allocation.ports).toEqual([P80]);
    expect(adoptable(info(alloc()))?.allocation.ports).toBeUndefined();
    expect(adoptable(info({ ...alloc(), ports: [{ port: -1, protocol: 'tcp' }] }))).toBeUndefined();
  });
});

describe('leaderless placement of a deploy publishing a port (simulated cluster, sim engine)', () => {
  const spec = (ports: number[], extra: JsonObject = {}): JsonObject => ({
    resources: { cpu: { milli: 500 }, memoryBytes: GiB },
    image: 'shoal/busybox:latest',
    command: simProgram({}),
    ports: ports.map((target) => ({ target, protocol: 'tcp' })),
    ...extra,
  });

  async function cluster(seed: number, size: number) {
    const c = new SimCluster({ seed, size, engine: { startDelayMs: [20, 80] } });
    await c.start();
    await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000);
    return c;
  }

  const placedOn = (c: SimCluster, deployId: string) =>
    Object.fromEntries(
      c
        .upAgents()
        .map((a) => [a.id, a.placement.workloads().filter((w) => w.deployId === deployId).length] as const)
        .filter(([, n]) => n > 0),
    );
  const pending = (c: SimCluster, deployId: string) =>
    c.upAgents().flatMap((a) => a.placement.pending().filter((p) => p.deployId === deployId));
  const running = (c: SimCluster, deployId: string) =>
    c
      .upAgents()
      .flatMap((a) =>
        c.machines[a.index]!.all(a.id).filter((w) => w.spec.deployId === deployId && w.state === 'running'),
      );

  it('3 replicas publishing 80 on 2 hosts: one per host, the third pending with `port 80/tcp: in use`', async () => {
    const c = await cluster(41, 2);
    // binpack would stack all three on one host; the port forbids a second holder per host.
    c.get(0).placement.submit('web', { name: 'web', replicas: 3, strategy: 'binpack', spec: spec([80]) });
    expect(await c.runUntil(() => running(c, 'web').length === 2, 15_000, 20)).toBeGreaterThanOrEqual(0);
    await c.runUntil(() => pending(c, 'web').length === 1, 5_000, 20);
    expect(placedOn(c, 'web')).toEqual({ [c.get(0).id]: 1, [c.get(1).id]: 1 });
    const [p] = pending(c, 'web');
    expect(p!.pending).toBe(1);
    expect(p!.reasons).toHaveLength(2); // one per host, each naming the port
    for (const r of p!.reasons) expect(r).toMatch(/: port 80\/tcp: in use$/);
    // The engines run them with the port; the gossiped records show it; the books are sound.
    for (const w of running(c, 'web')) expect(w.spec.ports).toEqual([P80]);
    for (const a of c.upAgents()) {
      const rec = a.sync.state.hosts.live(c.get(0).id)!;
      expect(rec.allocated.ports).toEqual([P80]);
      expect(rec.workloads.find((w) => w.deployId === 'web')?.resources.ports).toEqual([P80]);
    }
    expect(c.placementViolations(false)).toEqual([]);

    // Another deploy on 80 is pending everywhere; when web is deleted it takes the port.
    c.get(1).placement.submit('other', { name: 'other', replicas: 1, strategy: 'spread', spec: spec([80]) });
    await c.run(2_000);
    expect(placedOn(c, 'other')).toEqual({});
    expect(pending(c, 'other')[0]?.reasons.every((r) => /port 80\/tcp: in use/.test(r))).toBe(true);
    c.get(0).sync.removeIntent('web');
    expect(await c.runUntil(() => running(c, 'other').length === 1, 15_000, 20)).toBeGreaterThanOrEqual(0);
    expect(running(c, 'web')).toEqual([]);
    expect(c.placementViolations(true)).toEqual([]);
  });

  it('a restarted agent that lost its books re-derives the ports from the engine (invariant 5)', async () => {
    const c = await cluster(42, 2);
    c.get(0).placement.submit('web', { name: 'web', replicas: 1, strategy: 'binpack', spec: spec([80]) });
    await c.runUntil(() => running(c, 'web').length === 1, 15_000, 20);
    const victim = c.upAgents().find((a) => a.placement.workloads().length === 1)!.index;
    // The books as persisted carry the ports.
    await c.run(500);
    const stored = JSON.parse(new TextDecoder().decode(c.get(victim).store.read('workloads.json')!));
    expect(stored[0].allocation.ports).toEqual([P80]);
    c.crash(victim);
    c.get(victim).store.remove('workloads.json');
    const back = await c.restart(victim);
    await c.run(3_000);
    expect(back.reconciler!.counters.adopted).toBe(1);
    const [w] = back.placement.workloads();
    expect(w!.allocation.ports).toEqual([P80]);
    expect(ledgerFrom(back.placement.capacity(), [w!.allocation]).ports).toEqual({ '80/tcp': 1 });
    expect(c.machines[victim]!.all(back.id)).toHaveLength(1); // adopted, not created again
    expect(c.placementViolations(true)).toEqual([]);
  });

  it('a port change rolls out with both ports held meanwhile; a port taken on the host blocks the replace and rolls back', async () => {
    const c = await cluster(43, 2);
    const zoneA = { constraints: ['zone = a'] };
    c.get(0).placement.submit('web', {
      name: 'web',
      replicas: 1,
      strategy: 'binpack',
      spec: spec([80], { ...zoneA, update: { monitorMs: 1_000, deadlineMs: 8_000 } }),
    });
    await c.runUntil(() => running(c, 'web').length === 1, 15_000, 20);
    await c.run(1_000); // the rollout record (version 1) is written
    const host = c.agents.find((a) => a.placement.workloads().length === 1)!;
    const edit = (ports: number[]) => {
      const cur = host.sync.state.intents.get('web')!;
      host.sync.updateIntent('web', {
        spec: { ...cur.spec, ports: ports.map((target) => ({ target, protocol: 'tcp' })) },
      });
    };
    edit([81]);
    await c.run(300);
    expect(host.placement.workloads()[0]!.allocation.ports).toEqual([{ port: 81, protocol: 'tcp' }, P80]);
    const done = await c.runUntil(
      () =>
        running(c, 'web')[0]?.spec.ports?.[0]?.port === 81 &&
        host.placement.workloads()[0]!.allocation.ports?.length === 1,
      20_000,
      50,
    );
    expect(done).toBeGreaterThanOrEqual(0);
    expect(host.placement.workloads()[0]!.allocation.ports).toEqual([{ port: 81, protocol: 'tcp' }]);

    // Another deploy takes 82 on the same host; web's change to 82 cannot be reserved there.
    c.get(1).placement.submit('other', {
      name: 'other',
      replicas: 1,
      strategy: 'binpack',
      spec: spec([82], zoneA),
    });
    await c.runUntil(() => running(c, 'other').length === 1, 15_000, 20);
    const webBefore = running(c, 'web')[0]!;
    edit([82]);
    const rolledBack = await c.runUntil(
      () => {
        const ro = host.sync.state.intents.get('web')!.spec.rollout as { state?: string } | undefined;
        return ro?.state === 'rolled-back';
      },
      30_000,
      100,
    );
    expect(rolledBack).toBeGreaterThanOrEqual(0);
    // The rollout failed with the reason the replica's status gave (its host could not reserve 82).
    const ro = host.sync.state.intents.get('web')!.spec.rollout as { reason?: string };
    expect(ro.reason).toBe(
      `replica 0 on ${host.id}: not updated within 8000 ms (port 82/tcp not reserved for this replica on this host (port 82/tcp: in use): left as it is)`,
    );
    // The running replica was never stopped for a workload that could not get its port.
    expect(running(c, 'web')[0]!.createdAt).toBe(webBefore.createdAt);
    expect(running(c, 'other')).toHaveLength(1);
    expect(c.placementViolations(false)).toEqual([]);
  });
});
