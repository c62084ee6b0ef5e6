import { describe, expect, it } from 'vitest';
import { SimCluster } from '../sim/cluster.ts';
import { intent } from './sim-intent.ts';

/**
 * The indexed placement scan (claims per deploy kept from record changes, coordinators kept from
 * member changes, only the deploys an agent coordinates or backs off looked at) must decide
 * exactly as the reference scan (every intent against claims rebuilt from every record): the same
 * seed gives the same trace — every log line, every message — byte for byte, through deploys of
 * every strategy, a crash and a restart, a permanent crash, a scale-down, a removal, a drain and
 * a partition that heals.
 */

async function scenario(seed: number, referenceScan: boolean) {
  const c = new SimCluster({
    seed,
    size: 16,
    trace: true,
    referenceScan,
    engine: {},
    link: { baseMs: 1, jitterMs: 3, loss: 0.02 },
  });
  await c.start();
  const joined = await c.runUntil(() => c.membershipSettled('dead', true), 30_000, 100);
  const strategies = ['binpack', 'spread', 'auto', 'global'];
  for (let k = 0; k < 12; k++) {
    c.get((k * 5) % 16).placement.submit(
      `d${k}`,
      intent(1 + (k % 5), 250 + 250 * (k % 3), strategies[k % 4]!),
    );
  }
  c.get(2).placement.submit('each', intent(2, 250, 'each', { hostLimit: 3 }));
  c.get(7).placement.submit('fill', intent(2, 250, 'fill', { hostLimit: 2 }));
  c.get(9).placement.submit('huge', intent(1, 64_000, 'binpack')); // never fits: pending, backoff
  await c.run(3_000);
  c.crash(4); // back after the reassign grace: its stale copies lose to the re-placements
  c.crash(11); // for good
  await c.run(8_000);
  await c.restart(4);
  c.get(1).sync.updateIntent('d3', { replicas: 1 });
  c.get(6).sync.removeIntent('d5');
  c.get(8).sync.setDraining(true);
  await c.run(3_000);
  const heal = c.net.partition(c.agents.slice(0, 6).map((a) => a.id));
  for (let k = 12; k < 16; k++) c.get(k).placement.submit(`d${k}`, intent(2, 500, strategies[k % 4]!));
  await c.run(12_000);
  heal();
  const settled = await c.runUntil(
    () => c.converged() && c.membershipSettled('dead', true) && c.placementViolations(true).length === 0,
    60_000,
    250,
  );
  await c.run(2_000);
  return { c, joined, settled };
}

describe('indexed placement scan', () => {
  it('decides exactly as the reference scan: same seed → same trace, byte for byte', async () => {
    const ref = await scenario(5, true);
    expect(ref.joined).toBeGreaterThanOrEqual(0);
    expect(ref.settled).toBeGreaterThanOrEqual(0);
    const idx = await scenario(5, false);
    expect(idx.settled).toBe(ref.settled);
    expect(idx.c.trace!.length).toBe(ref.c.trace!.length);
    if (idx.c.traceHash() !== ref.c.traceHash()) {
      const i = ref.c.trace!.findIndex((l, k) => l !== idx.c.trace![k]);
      expect(idx.c.trace!.slice(i, i + 3)).toEqual(ref.c.trace!.slice(i, i + 3));
    }
    expect(idx.c.traceHash()).toBe(ref.c.traceHash());
    const placed = idx.c.upAgents().reduce((n, a) => n + a.placement.workloads().length, 0);
    expect(placed).toBeGreaterThan(20);
  }, 240_000);
});

describe('candidate sampling above sampleAbove live hosts', () => {
  async function sampled(seed: number) {
    const c = new SimCluster({ seed, size: 40, trace: true, placement: { sampleAbove: 10, sampleSize: 8 } });
    await c.start();
    await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000);
    for (let k = 0; k < 12; k++) {
      c.get(k * 3).placement.submit(`s${k}`, intent(1 + (k % 3), 500, k % 2 ? 'spread' : 'binpack'));
    }
    const t = await c.runUntil(() => c.placementViolations(true).length === 0, 20_000, 50);
    return { c, t };
  }

  it('ranks a deterministic sample per deploy, and still places exactly once', async () => {
    const a = await sampled(9);
    expect(a.t).toBeGreaterThanOrEqual(0);
    const placed = a.c.agents.reduce((n, x) => n + x.placement.workloads().length, 0);
    expect(placed).toBe(Array.from({ length: 12 }, (_, k) => 1 + (k % 3)).reduce((x, y) => x + y, 0));
    const rounds = a.c.trace!.filter((l) => l.includes('placement: bids collected'));
    expect(rounds.length).toBeGreaterThan(0);
    for (const l of rounds) {
      const f = JSON.parse(l.slice(l.indexOf('{'))) as { deploys: string[]; views: number; ranked: number };
      expect(f.views).toBe(40);
      expect(f.ranked).toBeLessThanOrEqual(f.deploys.length * 12); // max(8, 4 × up to 3 replicas)
    }
    const b = await sampled(9);
    expect(b.c.traceHash()).toBe(a.c.traceHash());
  }, 60_000);
});
