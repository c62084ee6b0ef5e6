import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { coordinatorAmong, fnv1a, rendezvous } from '../node/core/claims.ts';
import { SimCluster } from '../sim/cluster.ts';
import { SharedCoordination } from '../sim/shared-state.ts';
import { intent } from './sim-intent.ts';

/**
 * The shared-state stand-in (one copy of the cluster state, lazy visibility, events only for the
 * agents a change concerns) against the real path (every agent its own tables, one delivery per
 * agent and publish), both with hashed publish delays and no anti-entropy: the same seed must give
 * the same decisions — the same trace, byte for byte, once the per-agent deliveries of the state
 * topic (and the debug line each logs) are left out, which is what the stand-in does away with.
 * Deploys of every strategy (per-host included), an unplaceable one, two crashes, a scale-down, a
 * removal, a drain; zones with a heavy-tailed link between two of them.
 */

async function scenario(seed: number, size: number, shared: boolean, engine: boolean, formed = false) {
  const c = new SimCluster({
    seed,
    size,
    formed,
    trace: true,
    engine: engine ? {} : undefined,
    link: { baseMs: 1, jitterMs: 3 },
    network: {
      routeById: true,
      freezeValues: true,
      zoneLinks: {
        a: { b: { baseMs: 20, jitterMs: 5, tail: { kind: 'pareto', scaleMs: 5, alpha: 1.5, maxMs: 200 } } },
      },
    },
    // Whole host records on the real path: the stand-in shows each agent the newest version that
    // reached it, which is what whole records give. Patches rebuild the same records
    // (test/crdt-patch) but a patch that overtakes its base costs a want (test/state-patch-sim):
    // traffic the stand-in does not model.
    sync: { antiEntropyIntervalMs: 1e9, patches: false },
    ...(shared
      ? { sharedState: true }
      : { hashedTopics: true, republishAfterStart: true, shareDecoded: true }),
  });
  await c.start();
  const joined = await c.runUntil(() => c.membershipSettled('dead', true), 30_000, 100);
  const strategies = ['binpack', 'spread', 'auto', 'global'];
  for (let k = 0; k < 16; k++) {
    c.get((k * 7) % size).placement.submit(
      `d${k}`,
      intent(1 + (k % 6), 250 + 250 * (k % 3), strategies[k % 4]!),
    );
  }
  c.get(2).placement.submit('each', intent(2, 250, 'each', { hostLimit: 3 }));
  c.get(9).placement.submit('huge', intent(1, 64_000, 'binpack'));
  await c.run(3_000);
  c.crash(4);
  c.crash(11);
  await c.run(8_000);
  c.get(1).sync.updateIntent('d3', { replicas: 1 });
  c.get(6).sync.removeIntent('d5');
  c.get(8).sync.setDraining(true);
  for (let k = 16; k < 24; k++) c.get(k).placement.submit(`d${k}`, intent(2, 500, strategies[k % 4]!));
  await c.run(10_000);
  const rest = await c.runUntil(() => c.placementViolations(true).length === 0, 30_000, 250);
  await c.run(1_000);
  const decisions = c.trace!.filter(
    (l) => !l.includes('"kind":"topic"') && !l.includes('host record applied'),
  );
  return {
    c,
    joined,
    rest,
    decisions,
    hash: createHash('sha256').update(decisions.join('\n')).digest('hex'),
    placed: c.upAgents().reduce((n, a) => n + a.placement.workloads().length, 0),
  };
}

describe('shared-state stand-in', () => {
  it.each([
    [3, 24, false, false],
    [7, 40, true, false],
    [5, 40, true, true],
  ])(
    'seed %i, %i agents (engine %s, formed %s): same decisions as the real path, byte for byte',
    async (seed, size, engine, formed) => {
      const real = await scenario(seed, size, false, engine, formed);
      const lazy = await scenario(seed, size, true, engine, formed);
      expect(real.joined).toBeGreaterThanOrEqual(0);
      expect(real.rest).toBeGreaterThanOrEqual(0);
      expect(real.placed).toBeGreaterThan(50);
      expect(lazy.decisions.length).toBe(real.decisions.length);
      if (lazy.hash !== real.hash) {
        const i = real.decisions.findIndex((l, k) => l !== lazy.decisions[k]);
        expect(lazy.decisions.slice(i, i + 3)).toEqual(real.decisions.slice(i, i + 3));
      }
      expect(lazy.hash).toBe(real.hash);
      // The point of it: one arrival event per agent concerned, not one delivery per agent.
      const deliveries = real.c.trace!.filter((l) => l.includes('"kind":"topic"')).length;
      expect(lazy.c.shared!.counters.arrivals * 3).toBeLessThan(deliveries);
      expect(lazy.c.loop.fired).toBeLessThan(real.c.loop.fired);
      // Rounds of different coordinators shared one candidate list (HostTable.candidates).
      const { candidateListsBuilt, candidateListsShared } = lazy.c.shared!.counters;
      expect(candidateListsShared).toBeGreaterThan(candidateListsBuilt);
    },
    240_000,
  );

  it('ranks members in rendezvous order (the short top and the whole order)', () => {
    const ids = Array.from({ length: 300 }, (_, i) => SimCluster.idOf(i));
    const c = new SharedCoordination(
      ids,
      () => {},
      () => {},
    );
    for (let d = 0; d < 100; d++) {
      const id = `dep${d}`;
      c.addDeploy(id); // nobody settled: the whole order is needed
      const want = [...ids].sort((a, b) => rendezvous(id, b) - rendezvous(id, a) || (a < b ? -1 : 1));
      expect(c.ranking(id).map((m) => ids[m])).toEqual(want);
      expect(coordinatorAmong(fnv1a(id), ids[0]!, ids.slice(1))).toBe(want[0]);
      expect(c.candidates(id)).toEqual([]); // nobody is up
    }
  });

  it('refuses what it does not model', () => {
    expect(() => new SimCluster({ seed: 1, size: 4, sharedState: true, link: { loss: 0.01 } })).toThrow(
      /message loss/,
    );
    expect(
      () =>
        new SimCluster({
          seed: 1,
          size: 4,
          sharedState: true,
          link: { tail: { kind: 'lognormal', medianMs: 2, sigma: 1 } },
        }),
    ).toThrow(/bounded/);
    const c = new SimCluster({ seed: 1, size: 4, sharedState: true });
    expect(() => c.net.partition(['n00000'])).toThrow(/fixed/);
    expect(() => c.net.setLoss(0.1)).toThrow(/fixed/);
  });
});
