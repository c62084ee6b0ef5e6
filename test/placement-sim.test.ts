import { describe, expect, it } from 'vitest';
import type { DeployIntent } from '../crdt/types.ts';
import { defaultHost, SimCluster } from '../sim/cluster.ts';

const GiB = 2 ** 30;

function intent(
  replicas: number,
  cpuMilli: number,
  memGiB: number,
  strategy = 'binpack',
  extra = {},
): Omit<DeployIntent, 'id' | 'revision'> {
  return {
    name: 'web',
    replicas,
    strategy,
    spec: { resources: { cpu: { milli: cpuMilli }, memoryBytes: memGiB * GiB }, ...extra },
  };
}

async function cluster(seed: number, size: number) {
  const c = new SimCluster({ seed, size });
  await c.start();
  await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000);
  return c;
}

/** Every live agent knows the deploy with `replicas`, and the invariants hold at rest. */
function settled(c: SimCluster, deployId: string, replicas: number): boolean {
  if (!c.upAgents().every((a) => a.sync.state.intents.get(deployId)?.replicas === replicas)) return false;
  return c.placementViolations(true).length === 0;
}

function placedOn(c: SimCluster, deployId: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const a of c.upAgents()) {
    const n = a.placement.workloads().filter((w) => w.deployId === deployId).length;
    if (n > 0) m.set(a.id, n);
  }
  return m;
}

describe('leaderless placement on the simulated network', () => {
  it('a deploy submitted at any agent is placed exactly once per replica (binpack fills hosts)', async () => {
    const c = await cluster(21, 6);
    c.get(4).placement.submit('d1', intent(10, 1000, 2));
    const t = await c.runUntil(() => settled(c, 'd1', 10), 10_000, 5);
    expect(t).toBeGreaterThanOrEqual(0);
    // 8 cores per host: binpack puts 8 on one host and 2 on the next.
    expect([...placedOn(c, 'd1').values()].sort((a, b) => b - a)).toEqual([8, 2]);
    expect(c.placementViolations(false)).toEqual([]);
  });

  it('spread puts replicas on distinct hosts', async () => {
    const c = await cluster(22, 6);
    c.get(1).placement.submit('s1', intent(6, 500, 1, 'spread'));
    expect(await c.runUntil(() => settled(c, 's1', 6), 10_000, 5)).toBeGreaterThanOrEqual(0);
    expect([...placedOn(c, 's1').values()]).toEqual([1, 1, 1, 1, 1, 1]);
  });

  it('unplaceable replicas stay pending with a reason and are placed when capacity appears', async () => {
    const c = await cluster(23, 3);
    c.get(0).placement.submit('big', intent(1, 1000, 64));
    await c.run(3_000);
    expect(placedOn(c, 'big').size).toBe(0);
    const pend = c.upAgents().flatMap((a) => a.placement.pending());
    expect(pend.length).toBe(1);
    expect(pend[0]!.reasons.join(' ')).toMatch(/memory/);
    const h = c.get(2);
    h.sync.setHost({ ...h.sync.hostFacts(), memoryBytes: 128 * GiB });
    expect(
      await c.runUntil(() => settled(c, 'big', 1) && placedOn(c, 'big').size === 1, 60_000, 50),
    ).toBeGreaterThanOrEqual(0);
    expect(placedOn(c, 'big').get(h.id)).toBe(1);
  });

  it('scaling down drops the highest replicas; deleting a deploy drops all', async () => {
    const c = await cluster(24, 4);
    c.get(0).placement.submit('sc', intent(6, 500, 1, 'spread'));
    await c.runUntil(() => settled(c, 'sc', 6), 10_000, 5);
    c.get(3).sync.updateIntent('sc', { replicas: 2 });
    expect(await c.runUntil(() => settled(c, 'sc', 2), 10_000, 5)).toBeGreaterThanOrEqual(0);
    expect([...placedOn(c, 'sc').values()].reduce((a, b) => a + b, 0)).toBe(2);
    c.get(2).sync.removeIntent('sc');
    expect(await c.runUntil(() => placedOn(c, 'sc').size === 0, 10_000, 5)).toBeGreaterThanOrEqual(0);
  });

  it('replicas of a crashed host are re-placed elsewhere; when it returns, its stale copies stop', async () => {
    const c = await cluster(25, 5);
    c.get(0).placement.submit('heal', intent(5, 500, 1, 'spread'));
    expect(await c.runUntil(() => settled(c, 'heal', 5), 10_000, 5)).toBeGreaterThanOrEqual(0);
    const victim = [...placedOn(c, 'heal').keys()].find((id) => id !== c.get(0).id)!;
    const vi = c.agents.findIndex((a) => a.id === victim);
    c.crash(vi);
    const t = await c.runUntil(() => settled(c, 'heal', 5), 20_000, 10);
    expect(t).toBeGreaterThanOrEqual(0);
    await c.restart(vi);
    expect(
      await c.runUntil(() => c.membershipSettled() && settled(c, 'heal', 5), 20_000, 10),
    ).toBeGreaterThanOrEqual(0);
  });

  it('many deploys submitted concurrently at many agents: invariants hold, all placed', async () => {
    const c = await cluster(26, 8);
    for (let i = 0; i < 40; i++)
      c.get(i % 8).placement.submit(
        `m${i}`,
        intent(1 + (i % 4), 250 + 125 * (i % 3), 1, ['binpack', 'spread', 'auto', 'global'][i % 4]!),
      );
    const over: string[] = [];
    const t = await c.runUntil(
      () => {
        over.push(...c.placementViolations(false));
        return Array.from({ length: 40 }, (_, i) => settled(c, `m${i}`, 1 + (i % 4))).every(Boolean);
      },
      20_000,
      5,
    );
    expect(over).toEqual([]);
    expect(t).toBeGreaterThanOrEqual(0);
    const total = c.upAgents().reduce((n, a) => n + a.placement.workloads().length, 0);
    expect(total).toBe(Array.from({ length: 40 }, (_, i) => 1 + (i % 4)).reduce((a, b) => a + b, 0));
  });

  it('each (no host limit): N replicas on every eligible host; labels exclude hosts; per-host slots', async () => {
    const c = await cluster(27, 5);
    // zone a/b/c round robin: hosts 0 and 3 are zone a.
    c.get(2).placement.submit('daemon', intent(2, 250, 1, 'each', { constraints: ['zone != a'] }));
    const ok = () => {
      const m = placedOn(c, 'daemon');
      return (
        m.size === 3 && [...m.values()].every((n) => n === 2) && c.placementViolations(true).length === 0
      );
    };
    expect(await c.runUntil(ok, 10_000, 10)).toBeGreaterThanOrEqual(0);
    expect(placedOn(c, 'daemon').has(c.get(0).id)).toBe(false);
    expect(placedOn(c, 'daemon').has(c.get(3).id)).toBe(false);
  });

  it('each with a host limit: exactly N on each of L hosts; a dead chosen host is replaced after the grace', async () => {
    const c = await cluster(28, 5);
    c.get(1).placement.submit('pair', intent(3, 250, 1, 'each', { hostLimit: 2 }));
    const ok = () => {
      const m = placedOn(c, 'pair');
      return (
        m.size === 2 && [...m.values()].every((n) => n === 3) && c.placementViolations(true).length === 0
      );
    };
    expect(await c.runUntil(ok, 10_000, 10)).toBeGreaterThanOrEqual(0);
    const victim = c.agents.findIndex((a) => placedOn(c, 'pair').has(a.id));
    c.crash(victim);
    expect(await c.runUntil(ok, 20_000, 20)).toBeGreaterThanOrEqual(0);
    expect(placedOn(c, 'pair').has(c.get(victim).id)).toBe(false);
  });

  it('fill tops chosen hosts up to N; scaling N down drops the highest k on each host', async () => {
    const c = await cluster(29, 4);
    c.get(0).placement.submit('f', intent(3, 500, 1, 'fill', { hostLimit: 2 }));
    const per = (n: number) => () => {
      const m = placedOn(c, 'f');
      return (
        m.size === 2 && [...m.values()].every((x) => x === n) && c.placementViolations(true).length === 0
      );
    };
    expect(await c.runUntil(per(3), 10_000, 10)).toBeGreaterThanOrEqual(0);
    c.get(3).sync.updateIntent('f', { replicas: 1 });
    expect(await c.runUntil(per(1), 10_000, 10)).toBeGreaterThanOrEqual(0);
    c.get(3).sync.updateIntent('f', { replicas: 4 });
    expect(await c.runUntil(per(4), 10_000, 10)).toBeGreaterThanOrEqual(0);
  });

  it('a realloc refused for room is retried when the host frees room (another deploy leaves it)', async () => {
    const c = new SimCluster({
      seed: 30,
      size: 2,
      host: (i) => ({ ...defaultHost(i), labels: { name: `h${i}` } }),
    });
    await c.start();
    await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000);
    const on = (id: string, extra: Record<string, unknown>) => ({
      ...intent(1, 500, 1, 'binpack', { constraints: ['name = h0'] }),
      ...extra,
      name: id,
    });
    c.get(1).placement.submit('filler', on('filler', {}));
    c.get(1).sync.updateIntent('filler', {
      spec: { resources: { cpu: { milli: 500 }, memoryBytes: 20 * GiB }, constraints: ['name = h0'] },
    });
    c.get(1).placement.submit('app', on('app', {}));
    const h0 = c.get(0);
    const mem = (d: string) => h0.placement.workloads().find((w) => w.deployId === d)?.allocation.memoryBytes;
    expect(
      await c.runUntil(() => mem('filler') === 20 * GiB && mem('app') === GiB, 10_000, 10),
    ).toBeGreaterThanOrEqual(0);
    // 16 GiB for app does not fit next to the filler's 20 on a 32 GiB host: refused, kept at 1 GiB.
    c.get(1).sync.updateIntent('app', {
      spec: { resources: { cpu: { milli: 500 }, memoryBytes: 16 * GiB }, constraints: ['name = h0'] },
    });
    expect(
      await c.runUntil(() => h0.placement.reallocRefusals().size === 1, 10_000, 10),
    ).toBeGreaterThanOrEqual(0);
    expect(mem('app')).toBe(GiB);
    // The filler leaves: the room is there now, and the realloc goes through without another change.
    c.get(1).sync.removeIntent('filler');
    const tFree = await c.runUntil(() => mem('app') === 16 * GiB, 10_000, 10);
    // At once (the host's own record changed with its books), not at some later wake-up.
    expect(tFree).toBeGreaterThanOrEqual(0);
    expect(tFree).toBeLessThan(1_000);
    expect(h0.placement.reallocRefusals().size).toBe(0);
    expect(c.placementViolations(true)).toEqual([]);
  });
});
