import { describe, expect, it } from 'vitest';
import { STORE_KEYS } from '../node/core/agent.ts';
import { SimCluster } from '../sim/cluster.ts';

describe('agent core on the simulated network', () => {
  it('5 agents join through one seed and all see each other alive', async () => {
    const c = new SimCluster({ seed: 1, size: 5 });
    await c.start();
    const t = await c.runUntil(() => c.membershipSettled(), 10_000);
    expect(t).toBeGreaterThanOrEqual(0);
    expect(await c.runUntil(() => c.converged(), 10_000)).toBeGreaterThanOrEqual(0);
    // Every agent knows every host record (capacity, labels).
    for (const a of c.agents) expect(a.sync.state.hosts.liveSize).toBe(5);
    await c.stop();
  });

  it('a crashed agent is seen dead by all within the bound, and comes back alive with the same id', async () => {
    const c = new SimCluster({ seed: 2, size: 5 });
    await c.start();
    await c.runUntil(() => c.membershipSettled(), 10_000);
    const victim = c.get(3);
    const incBefore = c.get(0).agent.membership.get(victim.id)!.incarnation;
    c.crash(3);
    const dead = await c.runUntil(() => c.membershipSettled('dead'), 10_000, 10);
    expect(dead).toBeGreaterThan(0);
    expect(dead).toBeLessThanOrEqual(5_000);
    const back = await c.restart(3);
    expect(back.id).toBe(victim.id);
    const alive = await c.runUntil(() => c.membershipSettled(), 10_000, 10);
    expect(alive).toBeGreaterThanOrEqual(0);
    expect(c.get(0).agent.membership.get(victim.id)!.incarnation).toBeGreaterThan(incBefore);
    expect(await c.runUntil(() => c.converged(), 10_000)).toBeGreaterThanOrEqual(0);
    await c.stop();
  });

  it('a seed that learns its first peers writes them at once: killed right after, it restarts knowing them', async () => {
    for (const seed of [3, 4, 5]) {
      const c = new SimCluster({ seed, size: 3 });
      await c.start();
      const first = c.get(0);
      const members = () => {
        const raw = first.store.read(STORE_KEYS.members);
        return raw ? (JSON.parse(new TextDecoder().decode(raw)) as { id: string }[]).map((m) => m.id) : [];
      };
      // The moment the seed has learned another member…
      const t = await c.runUntil(
        () => first.agent.membership.list().some((m) => m.id !== first.id && m.status === 'alive'),
        10_000,
        1,
      );
      expect(t).toBeGreaterThanOrEqual(0);
      const learned = first.agent.membership
        .list()
        .filter((m) => m.id !== first.id && m.status === 'alive')
        .map((m) => m.id);
      // …it is on disk within 50 ms (was: at the next 1 s persist tick).
      await c.run(60);
      for (const id of learned) expect(members()).toContain(id);
      // Killed now, it comes back knowing them as join candidates, and rejoins.
      c.crash(0);
      const back = await c.restart(0);
      for (const id of learned) expect(back.agent.membership.get(id)).toBeDefined();
      expect(await c.runUntil(() => c.membershipSettled(), 10_000)).toBeGreaterThanOrEqual(0);
      await c.stop();
    }
  });

  it('a graceful leave is seen as left, not dead', async () => {
    const c = new SimCluster({ seed: 3, size: 4 });
    await c.start();
    await c.runUntil(() => c.membershipSettled(), 10_000);
    const leaving = c.get(2);
    const stopped = leaving.agent.stop({ leave: true });
    await c.run(300);
    await stopped;
    leaving.up = false;
    expect(await c.runUntil(() => c.membershipSettled('left'), 5_000)).toBeGreaterThanOrEqual(0);
  });

  it('a short partition raises suspicion that the member refutes (no false death)', async () => {
    const c = new SimCluster({ seed: 4, size: 6 });
    await c.start();
    await c.runUntil(() => c.membershipSettled(), 10_000);
    const heal = c.net.partition([c.get(5).id]);
    await c.run(700); // shorter than the suspicion timeout
    heal();
    await c.run(5_000);
    expect(c.membershipSettled()).toBe(true);
    expect(c.get(0).agent.membership.get(c.get(5).id)!.incarnation).toBeGreaterThanOrEqual(1);
  });

  it('a capacity change reaches every agent', async () => {
    const c = new SimCluster({ seed: 5, size: 8 });
    await c.start();
    await c.runUntil(() => c.converged(), 10_000);
    const a = c.get(4);
    a.sync.setHost({
      ...a.sync.self()!.capacity,
      cores: 16,
      cpuMilli: 16000,
      memoryBytes: 2 ** 36,
      diskBytes: 1,
      gpus: [],
      labels: { zone: 'z' },
    });
    const t = await c.runUntil(
      () => c.agents.every((x) => x.sync.state.hosts.live(a.id)?.capacity.cpuMilli === 16000),
      5_000,
      1,
    );
    expect(t).toBeGreaterThanOrEqual(0);
    expect(t).toBeLessThan(100);
    expect(c.converged()).toBe(true);
  });
});

describe('steady-state cost', () => {
  it('an idle cluster sends a bounded number of messages (no reply storms)', async () => {
    const c = new SimCluster({ seed: 9, size: 8 });
    await c.start();
    await c.runUntil(() => c.membershipSettled() && c.converged(), 20_000);
    await c.run(5_000);
    c.net.resetStats();
    await c.run(10_000);
    const t = c.net.totalStats();
    const perAgentPerSec = t.sent / 8 / 10;
    console.log(`[idle] ${perAgentPerSec.toFixed(1)} msgs/agent/s`, JSON.stringify(t));
    // Probes (2/s) with acks, anti-entropy hash probes (1/s, request+response), push-pull every
    // 2 s: ~7/s. A reply storm (every message answered) would be unbounded.
    expect(perAgentPerSec).toBeLessThan(10);
  });
});
