import { describe, expect, it } from 'vitest';
import { LARGE_SCALE, SimCluster } from '../sim/cluster.ts';

/**
 * The large-scale options of SimCluster (route by id, slower persistence, per-host bandwidth,
 * heavy-tailed zone links, one shared decode per publish) on a small cluster: the run still
 * converges and places exactly once, and the same seed gives the same trace, byte for byte —
 * with or without the shared decode.
 */
async function run(seed: number, shareDecoded = true) {
  const c = new SimCluster({
    ...LARGE_SCALE,
    shareDecoded,
    seed,
    size: 24,
    trace: true,
    link: { baseMs: 1, jitterMs: 2, loss: 0.01 },
    network: {
      ...LARGE_SCALE.network,
      // Membership and placement messages travel as values: any mutation of a shared one throws.
      freezeValues: true,
      zoneLinks: { a: { b: { baseMs: 20, tail: { kind: 'pareto', scaleMs: 5, alpha: 1.5, maxMs: 400 } } } },
    },
    bandwidth: (i) => (i % 4 === 0 ? { upBytesPerSec: 2_000_000, downBytesPerSec: 4_000_000 } : undefined),
  });
  await c.start();
  const joined = await c.runUntil(() => c.membershipSettled('dead', true), 30_000, 250);
  for (let k = 0; k < 4; k++) {
    c.get(k * 5).placement.submit(`d${k}`, {
      name: `d${k}`,
      replicas: 6,
      strategy: k % 2 ? 'spread' : 'binpack',
      spec: { resources: { cpu: { milli: 500 }, memoryBytes: 2 ** 30 } },
    });
  }
  await c.run(2_000);
  c.get(3).sync.removeIntent('d2'); // a departure, from another agent than the one that deployed it
  const settled = await c.runUntil(
    () => c.converged() && c.placementViolations(true).length === 0,
    30_000,
    250,
  );
  return { c, joined, settled };
}

describe('SimCluster large-scale options', () => {
  it('converge and place exactly once; same seed → same trace', async () => {
    const a = await run(11);
    expect(a.joined).toBeGreaterThanOrEqual(0);
    expect(a.settled).toBeGreaterThanOrEqual(0);
    const placed = a.c.agents.reduce((n, x) => n + x.placement.workloads().length, 0);
    expect(placed).toBe(18); // d0, d1, d3 × 6; d2 removed
    const b = await run(11);
    expect(b.c.traceHash()).toBe(a.c.traceHash());
    // Decoding each publish once for all agents (shared immutable records) decides exactly as
    // every agent decoding its own copy: the same trace, byte for byte.
    const own = await run(11, false);
    expect(own.c.trace!.length).toBe(a.c.trace!.length);
    expect(own.c.traceHash()).toBe(a.c.traceHash());
  }, 120_000);
});
