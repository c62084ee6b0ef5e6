import { describe, expect, it } from 'vitest';
import { makeWorkload } from '../crdt/fixtures.ts';
import type { WorkloadRecord } from '../crdt/types.ts';
import { zeroResources } from '../node/core/state-sync.ts';
import { SimCluster } from '../sim/cluster.ts';

/** A host's own record as its workloads change: patches, and the repair of a missed one. */
describe('delta host records between agents (simulated network)', () => {
  const ws = (n: number, status: WorkloadRecord['status'] = 'running') =>
    Array.from({ length: n }, (_, i) => makeWorkload(`d${i}.0`, `d${i}`, 0, { status }));

  it('publishes changes as patches, and an agent that missed one asks for the whole record', async () => {
    const c = new SimCluster({ seed: 11, size: 4 });
    await c.start();
    await c.runUntil(() => c.converged(), 10_000);
    const host = c.get(0);
    const late = c.get(3);
    const set = async (list: WorkloadRecord[]) => {
      host.sync.setWorkloads(list, zeroResources());
      // Changes are coalesced for a few ms before they are published.
      expect(await c.runUntil(() => host.sync.self()!.workloads === list, 1_000, 1)).toBeGreaterThanOrEqual(
        0,
      );
    };
    await set(ws(20));
    await c.runUntil(() => c.converged(), 5_000);
    const published = host.sync.counters.patchesPublished;
    // One change that agent 3 does not hear…
    const heal = c.net.partition([late.id]);
    await set(ws(21));
    await c.run(20);
    heal();
    // …then the next patch: its base is missing on agent 3.
    const latest = [
      ...ws(21).slice(0, 5),
      makeWorkload('d5.0', 'd5', 0, { status: 'exited' }),
      ...ws(21).slice(6),
    ];
    host.sync.setWorkloads(latest, zeroResources());
    expect(await c.runUntil(() => host.sync.self()!.workloads === latest, 1_000, 1)).toBeGreaterThanOrEqual(
      0,
    );
    const version = host.sync.self()!.version;
    const t = await c.runUntil(() => late.sync.state.hosts.live(host.id)?.version === version, 2_000, 1);
    expect(host.sync.counters.patchesPublished).toBeGreaterThanOrEqual(published + 2);
    expect(late.sync.counters.patchGaps).toBeGreaterThan(0);
    // Repaired by the want within a few message delays, not by the next anti-entropy round.
    expect(t).toBeGreaterThanOrEqual(0);
    expect(t).toBeLessThan(50);
    expect(late.sync.state.hosts.live(host.id)!.workloads).toEqual(latest);
    expect(await c.runUntil(() => c.converged(), 5_000)).toBeGreaterThanOrEqual(0);
    await c.stop();
  });
});
