import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeployView } from '../node/deploys-api.ts';
import { ClusterProcs, waitFor } from './cluster-procs.ts';

/**
 * Placement across real agent processes over libp2p: a deploy submitted to one agent is placed by
 * the cluster, visible from any agent; killing a host that runs replicas re-places them on the
 * survivors, each replica on exactly one live host.
 */
describe('placement across 3 agent processes', { timeout: 120_000 }, () => {
  const c = new ClusterProcs({ prefix: 'shoal-place-' });
  const spec = { resources: { cpu: { milli: 500 }, memoryBytes: 256 * 2 ** 20 } };

  beforeAll(async () => {
    const seed = await c.spawn({ extraArgs: ['--cpu', '4', '--memory', '8GiB'], labels: ['zone=a'] });
    await c.spawnMany(2, (i) => ({
      join: [seed.addrs[0]!],
      // One agent paces its state publishes (--publish-gap-ms): placement works the same.
      extraArgs: ['--cpu', '4', '--memory', '8GiB', ...(i === 0 ? ['--publish-gap-ms', '50'] : [])],
      labels: [`zone=z${i}`],
    }));
    // Every agent (whichever becomes a deploy's coordinator) must know all three hosts.
    await waitFor(
      async () => {
        const views = await Promise.all([0, 1, 2].map((i) => c.nodes(i)));
        return views.every((v) => v.filter((n) => n.status === 'alive' && n.capacity).length === 3);
      },
      30_000,
      100,
    );
  }, 90_000);

  afterAll(async () => {
    await c.stopAll();
  });

  const deploy = (i: number, id: string) => c.http<DeployView>(i, 'GET', `/v1/deploys/${id}`);

  it('a deploy sent to agent 1 is placed and seen from agent 2 (spread: 2/2/2)', async () => {
    const created = await c.http<DeployView>(1, 'POST', '/v1/deploys', {
      id: 'web',
      name: 'web',
      replicas: 6,
      strategy: 'spread',
      spec,
    });
    expect(created.id).toBe('web');
    const t0 = Date.now();
    await waitFor(async () => (await deploy(2, 'web').catch(() => undefined))?.placed === 6, 15_000, 50);
    console.log(`[placement] 6 replicas placed and visible at another agent in ${Date.now() - t0} ms`);
    const d = await deploy(2, 'web');
    const perHost = new Map<string, number>();
    for (const inst of d.instances) perHost.set(inst.host!, (perHost.get(inst.host!) ?? 0) + 1);
    expect([...perHost.values()]).toEqual([2, 2, 2]);
  });

  it('an invalid spec is refused with the field named; an unplaceable one stays pending with reasons', async () => {
    await expect(
      c.http(0, 'POST', '/v1/deploys', {
        name: 'bad',
        spec: { resources: { cpu: { milli: 'lots' }, memoryBytes: 1 } },
      }),
    ).rejects.toThrow(/400.*spec\.resources\.cpu\.milli/);
    await c.http(0, 'POST', '/v1/deploys', {
      id: 'huge',
      name: 'huge',
      spec: { resources: { cpu: { milli: 1000 }, memoryBytes: 64 * 2 ** 30 } },
    });
    const coord = await waitFor(
      async () => {
        for (const i of [0, 1, 2]) {
          const d = await deploy(i, 'huge').catch(() => undefined);
          if (d?.pending) return d;
        }
        return undefined;
      },
      15_000,
      100,
    );
    expect(coord.placed).toBe(0);
    expect(coord.pending!.reasons.join(' ')).toMatch(/memory: need 64\.0 GiB/);
    // Every agent shows why, not only the coordinator (the others ask it over libp2p).
    for (const i of [0, 1, 2]) {
      const d = await deploy(i, 'huge');
      expect(d.pending?.reasons.join(' ')).toMatch(/memory: need 64\.0 GiB/);
    }
    await c.http(0, 'DELETE', '/v1/deploys/huge').catch(() => undefined);
  });

  it('kill -9 a host with replicas → they are re-placed on the survivors, each exactly once', async () => {
    const before = await deploy(0, 'web');
    const victimId = before.instances.find((i) => i.host !== c.get(0).id)!.host!;
    const victim = c.procs.findIndex((p) => p.id === victimId);
    const observer = [0, 1, 2].find((i) => i !== victim)!;
    const t0 = Date.now();
    await c.kill(victim, 'SIGKILL');
    const after = await waitFor(
      async () => {
        const d = await deploy(observer, 'web');
        return d.placed === 6 && d.instances.every((i) => i.host !== victimId) ? d : undefined;
      },
      20_000,
      100,
    );
    console.log(
      `[placement] replicas of the killed host re-placed in ${Date.now() - t0} ms (incl. dead detection)`,
    );
    const hosts = new Set(after.instances.map((i) => i.host));
    expect(hosts.has(victimId)).toBe(false);
    expect(hosts.size).toBe(2);
    // Every replica is claimed by exactly one live host: both survivors agree.
    const other = [0, 1, 2].find((i) => i !== victim && i !== observer)!;
    await waitFor(
      async () => JSON.stringify((await deploy(other, 'web')).instances) === JSON.stringify(after.instances),
      5_000,
      100,
    );
  });
});
