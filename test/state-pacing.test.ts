import { describe, expect, it } from 'vitest';
import { makeWorkload } from '../crdt/fixtures.ts';
import type { DeployIntent, WorkloadRecord } from '../crdt/types.ts';
import { zeroResources } from '../node/core/state-sync.ts';
import { SimCluster } from '../sim/cluster.ts';

/**
 * Publish pacing (StateSyncConfig.publishGapMs, on in the real agent): at most one state publish
 * per window; what changes meanwhile goes out together; a waiting intent reaches its coordinator
 * at once.
 */
const GAP = 50;
const GiB = 2 ** 30;

function intent(replicas: number): Omit<DeployIntent, 'id' | 'revision'> {
  return {
    name: 'web',
    replicas,
    strategy: 'binpack',
    spec: { resources: { cpu: { milli: 250 }, memoryBytes: GiB } },
  };
}

async function cluster(seed: number, size: number, publishGapMs = GAP) {
  const c = new SimCluster({ seed, size, sync: { publishGapMs } });
  await c.start();
  await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000);
  await c.run(200); // quiet: the next change is the first after a quiet spell
  return c;
}

describe('state publish pacing (simulated network)', () => {
  it('the first change goes at once; changes within the window go out in one publish', async () => {
    const c = await cluster(3, 5);
    const a = c.get(0);
    const far = c.get(4);
    const published = a.sync.counters.published;
    const deferred = a.sync.counters.publishDeferred;
    a.placement.submit('first', intent(0));
    expect(a.sync.counters.published).toBe(published + 1);
    expect(a.sync.counters.publishDeferred).toBe(deferred);
    // Four more within the window: they wait, and leave together.
    for (const id of ['b1', 'b2', 'b3', 'b4']) a.placement.submit(id, intent(0));
    expect(a.sync.counters.published).toBe(published + 1);
    expect(a.sync.counters.publishDeferred).toBe(deferred + 4);
    const t = await c.runUntil(
      () => ['b1', 'b2', 'b3', 'b4'].every((id) => far.sync.state.intents.get(id)),
      1_000,
      1,
    );
    expect(t).toBeGreaterThanOrEqual(GAP - 5);
    expect(a.sync.counters.published).toBe(published + 2);
    expect(await c.runUntil(() => c.converged(), 5_000)).toBeGreaterThanOrEqual(0);
    await c.stop();
  });

  it('a waiting intent reaches its coordinator at once, and is placed', async () => {
    const c = await cluster(5, 5);
    const a = c.get(0);
    a.placement.submit('opener', intent(0)); // opens the window
    // An id another agent coordinates.
    const id = Array.from({ length: 50 }, (_, i) => `w${i}`).find(
      (d) => a.placement.coordinatorOf(d) !== a.id,
    )!;
    const coord = c.agents.find((x) => x.id === a.placement.coordinatorOf(id))!;
    const urgent = a.sync.counters.urgentSends;
    a.placement.submit(id, intent(2));
    expect(a.sync.counters.urgentSends).toBe(urgent + 1);
    // Well before the window ends: one message delay.
    expect(
      await c.runUntil(() => coord.sync.state.intents.get(id) !== undefined, GAP / 2, 1),
    ).toBeGreaterThanOrEqual(0);
    expect(
      await c.runUntil(() => c.placementViolations(true).length === 0, 5_000, 10),
    ).toBeGreaterThanOrEqual(0);
    const placed = c
      .upAgents()
      .reduce((n, x) => n + x.placement.workloads().filter((w) => w.deployId === id).length, 0);
    expect(placed).toBe(2);
    expect(await c.runUntil(() => c.converged(), 5_000)).toBeGreaterThanOrEqual(0);
    await c.stop();
  });

  it("versions of a host's record within one window travel as one patch since the last one published", async () => {
    const c = await cluster(7, 4);
    const host = c.get(1);
    const other = c.get(3);
    const ws = (n: number, status: WorkloadRecord['status'] = 'running') =>
      Array.from({ length: n }, (_, i) => makeWorkload(`d${i}.0`, `d${i}`, 0, { status }));
    host.sync.setWorkloads(ws(20), zeroResources());
    await c.runUntil(() => c.converged(), 5_000);
    await c.run(200);
    const patches = host.sync.counters.patchesPublished;
    const gaps = () => c.agents.reduce((n, x) => n + x.sync.counters.patchGaps, 0);
    const gapsBefore = gaps();
    const published = host.sync.counters.published;
    // Three versions 15 ms apart: the first goes at once, the other two wait for the window.
    host.sync.setWorkloads(ws(21), zeroResources());
    await c.run(15);
    host.sync.setWorkloads(ws(22), zeroResources());
    await c.run(15);
    const last = [
      ...ws(22).slice(0, 3),
      makeWorkload('d3.0', 'd3', 0, { status: 'exited' }),
      ...ws(22).slice(4),
    ];
    host.sync.setWorkloads(last, zeroResources());
    await c.run(15);
    const version = host.sync.self()!.version;
    expect(
      await c.runUntil(() => other.sync.state.hosts.live(host.id)?.version === version, 200, 1),
    ).toBeGreaterThanOrEqual(0);
    expect(other.sync.state.hosts.live(host.id)!.workloads).toEqual(last);
    expect(host.sync.counters.published).toBe(published + 2);
    expect(host.sync.counters.patchesPublished).toBe(patches + 2);
    // Nobody lacked the base: the patch was against the version they hold.
    expect(gaps()).toBe(gapsBefore);
    await c.stop();
  });

  it('stopping publishes what waits', async () => {
    const c = await cluster(9, 3);
    const a = c.get(0);
    a.placement.submit('x0', intent(0));
    a.placement.submit('x1', intent(0));
    const published = a.sync.counters.published;
    await a.sync.stop();
    expect(a.sync.counters.published).toBe(published + 1);
    await c.run(20);
    expect(c.get(2).sync.state.intents.get('x1')).toBeDefined();
    await c.stop();
  });

  it('unpaced (publishGapMs 0): every change is published at once, alone', async () => {
    const c = await cluster(3, 3, 0);
    const a = c.get(0);
    const published = a.sync.counters.published;
    for (const id of ['u1', 'u2', 'u3']) a.placement.submit(id, intent(0));
    expect(a.sync.counters.published).toBe(published + 3);
    expect(a.sync.counters.publishDeferred).toBe(0);
    await c.stop();
  });
});
