import { describe, expect, it } from 'vitest';
import { StaleStateError } from '../node/core/state-sync.ts';
import { SimCluster } from '../sim/cluster.ts';
import { intent as simIntent } from './sim-intent.ts';

const intent = (replicas = 1) => simIntent(replicas, 100, 'spread');

/** Tombstone collection (docs/state.md, "Tombstones"). */
describe('tombstones: collected after the TTL; a stale agent does not bring them back', () => {
  it('every agent forgets a deleted deploy once its tombstone is older than the TTL, and still converges', async () => {
    const c = new SimCluster({
      seed: 51,
      size: 3,
      trace: true,
      sync: { tombstoneTtlMs: 3_600_000, gcIntervalMs: 60_000 },
    });
    await c.start();
    expect(await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000)).toBeGreaterThanOrEqual(0);
    const a = c.get(0);
    a.sync.putIntent('gone', intent());
    a.sync.putIntent('kept', intent());
    expect(await c.runUntil(() => c.converged(), 5_000)).toBeGreaterThanOrEqual(0);
    a.sync.removeIntent('gone');
    expect(await c.runUntil(() => c.converged(), 5_000)).toBeGreaterThanOrEqual(0);
    for (const x of c.agents) expect(x.sync.state.intents.ids()).toContain('gone'); // the tombstone
    await c.run(30 * 60_000);
    for (const x of c.agents) expect(x.sync.state.intents.ids()).toContain('gone'); // not yet
    await c.run(32 * 60_000);
    for (const x of c.agents) {
      expect(x.sync.state.intents.ids()).not.toContain('gone');
      expect(x.sync.state.intents.get('kept')).toBeDefined();
      expect(x.sync.counters.tombstonesCollected).toBeGreaterThan(0);
    }
    expect(await c.runUntil(() => c.converged(), 5_000)).toBeGreaterThanOrEqual(0);
    expect(c.trace!.some((l) => l.includes('tombstones collected'))).toBe(true);
    // Collected everywhere, it stays collected: nobody hands the old tombstone back.
    const before = c.agents.map((x) => x.sync.counters.tombstonesCollected);
    await c.run(10 * 60_000);
    expect(c.agents.map((x) => x.sync.counters.tombstonesCollected)).toEqual(before);
    await c.stop();
  });

  it('an agent down longer than the TTL refuses to start from its stored state, naming why and what to do; within the TTL it restarts', async () => {
    const c = new SimCluster({
      seed: 52,
      size: 3,
      sync: { tombstoneTtlMs: 3_600_000, gcIntervalMs: 60_000 },
    });
    await c.start();
    expect(await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000)).toBeGreaterThanOrEqual(0);
    c.get(0).sync.putIntent('d', intent());
    expect(await c.runUntil(() => c.converged(), 5_000)).toBeGreaterThanOrEqual(0);
    await c.run(2_000); // persisted
    // Down for 20 minutes: back with its state.
    c.crash(2);
    await c.run(20 * 60_000);
    const back = await c.restart(2);
    expect(back.sync.state.intents.get('d')).toBeDefined();
    expect(await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000)).toBeGreaterThanOrEqual(0);
    // Up for a while (self.json's aliveAt is refreshed), then down for longer than the TTL.
    await c.run(20 * 60_000);
    c.get(0).sync.removeIntent('d');
    expect(await c.runUntil(() => c.converged(), 5_000)).toBeGreaterThanOrEqual(0);
    c.crash(1);
    await c.run(2 * 3_600_000);
    // The others forgot the delete (and do not take the old tombstone back from one another).
    expect(c.get(0).sync.state.intents.ids()).not.toContain('d');
    const err = await c.restart(1).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StaleStateError);
    expect(String((err as Error).message)).toMatch(
      /longer than the tombstone TTL \(0\.0\d* d|longer than the tombstone TTL/,
    );
    expect(String((err as Error).message)).toMatch(/--tombstone-ttl/);
    await c.stop();
  });
});
