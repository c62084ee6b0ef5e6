import { describe, expect, it } from 'vitest';
import { encodeMessage } from '../crdt/codec.ts';
import { SimCluster } from '../sim/cluster.ts';
import { intent as simIntent } from './sim-intent.ts';

const intent = (replicas = 1) => simIntent(replicas, 100, 'spread');

/** Anti-entropy between agents (docs/state.md, "Anti-entropy"): digests of the differing buckets. */
describe('anti-entropy with digest buckets (simulated network)', () => {
  it('repairs what a partitioned agent missed by digesting only the buckets that differ', async () => {
    const c = new SimCluster({ seed: 41, size: 4 });
    await c.start();
    expect(await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000)).toBeGreaterThanOrEqual(0);
    const a = c.get(0);
    for (let i = 0; i < 400; i++) a.sync.putIntent(`bulk-${String(i).padStart(3, '0')}`, intent());
    expect(await c.runUntil(() => c.converged(), 10_000)).toBeGreaterThanOrEqual(0);
    // Every digest an agent sends from now on, and how large it is.
    const digests: { buckets: readonly number[] | undefined; bytes: number; whole: number }[] = [];
    for (const x of c.agents) {
      const state = x.sync.state;
      const digest = state.digest.bind(state);
      state.digest = (buckets) => {
        const d = digest(buckets);
        const whole = encodeMessage({ t: 'digest', ...digest() }).length;
        digests.push({ buckets, bytes: encodeMessage({ t: 'digest', ...d }).length, whole });
        return d;
      };
    }
    const late = c.get(3);
    const heal = c.net.partition([late.id]);
    a.sync.putIntent('missed-1', intent(2));
    a.sync.updateIntent('bulk-007', { replicas: 3 });
    c.get(1).sync.removeIntent('bulk-123');
    await c.run(200);
    heal();
    // The publishes are gone for agent 3: anti-entropy (1 s, a random peer) brings them.
    expect(await c.runUntil(() => c.converged(), 10_000)).toBeGreaterThanOrEqual(0);
    expect(late.sync.state.intents.get('missed-1')?.replicas).toBe(2);
    expect(late.sync.state.intents.get('bulk-007')?.replicas).toBe(3);
    expect(late.sync.state.intents.get('bulk-123')).toBeUndefined();
    expect(
      late.sync.counters.bucketsDiffering +
        c.agents.reduce((n, x) => n + x.sync.counters.bucketsDiffering, 0),
    ).toBeGreaterThan(0);
    // Each repair digested at most the few buckets that differed: a small part of the state.
    const repairs = digests.filter((d) => d.buckets !== undefined);
    expect(repairs.length).toBeGreaterThan(0);
    expect(digests.every((d) => d.buckets !== undefined)).toBe(true);
    for (const d of repairs) {
      expect(d.buckets!.length).toBeLessThanOrEqual(6);
      expect(d.bytes * 10).toBeLessThan(d.whole);
    }
    await c.stop();
  });
});
