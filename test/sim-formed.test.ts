import { describe, expect, it } from 'vitest';
import { nullLogger } from '../node/core/io.ts';
import { MemberIds } from '../node/core/member-table.ts';
import { type MemberNet, Membership } from '../node/core/membership.ts';
import { Prng } from '../node/core/random.ts';
import { EventLoop, VirtualClock } from '../sim/clock.ts';
import { SimCluster } from '../sim/cluster.ts';

/**
 * `formed: true` starts a simulated cluster as if it had formed before time 0 (no join storm). It
 * must give the view a real join reaches once its gossip has drained, and from there the agents
 * must behave as after a real join: failure detection, restart, placement, state convergence.
 */
const views = (c: SimCluster) =>
  c.agents.map((a) =>
    a.agent.membership
      .list()
      .map((m) => `${m.id}:${m.status}:${m.incarnation}`)
      .join(','),
  );

const intent = (replicas: number) => ({
  name: 'web',
  replicas,
  strategy: 'spread',
  spec: { resources: { cpu: { milli: 500 }, memoryBytes: 2 ** 30 }, image: 'shoal/busybox:latest' },
});

describe('a formed cluster (SimClusterOptions.formed)', () => {
  it('starts with the view a real join reaches once drained, with nothing queued', async () => {
    const joined = new SimCluster({ seed: 5, size: 60, link: { baseMs: 2, jitterMs: 6 } });
    await joined.start();
    const settled = await joined.runUntil(
      () =>
        joined.membershipSettled() &&
        joined.agents.every((a) => a.agent.membership.queueLength === 0) &&
        joined.converged(),
      120_000,
      100,
    );
    expect(settled).toBeGreaterThan(0);

    const formed = new SimCluster({ seed: 5, size: 60, link: { baseMs: 2, jitterMs: 6 }, formed: true });
    await formed.start();
    expect(formed.membershipSettled()).toBe(true);
    expect(formed.agents.every((a) => a.agent.membership.queueLength === 0)).toBe(true);
    expect(views(formed)).toEqual(views(joined));
    // Nothing to join: no push-pull while starting, and no membership message at all at once.
    await formed.run(5);
    expect(formed.agents.every((a) => a.agent.membership.counters.pushPullsFull === 0)).toBe(true);
    // State: the records published at start reach everyone (the network does not need the view).
    expect(await formed.runUntil(() => formed.converged(), 5_000, 50)).toBeGreaterThanOrEqual(0);
    await joined.stop();
    await formed.stop();
  });

  it('then behaves as after a join: a crash is detected, a restart rejoins, deploys are placed once', async () => {
    const c = new SimCluster({ seed: 9, size: 40, link: { baseMs: 2, jitterMs: 6 }, formed: true });
    await c.start();
    c.get(3).placement.submit('web', intent(12));
    expect(
      await c.runUntil(() => c.placementViolations(true).length === 0, 20_000, 100),
    ).toBeGreaterThanOrEqual(0);
    c.crash(7);
    expect(await c.runUntil(() => c.membershipSettled('dead'), 30_000, 100)).toBeGreaterThan(0);
    await c.restart(7);
    expect(await c.runUntil(() => c.membershipSettled() && c.converged(), 30_000, 100)).toBeGreaterThan(0);
    expect(
      await c.runUntil(() => c.placementViolations(true).length === 0, 20_000, 100),
    ).toBeGreaterThanOrEqual(0);
    const held = c.upAgents().reduce((n, a) => n + a.placement.workloads().length, 0);
    expect(held).toBe(12);
    await c.stop();
  });

  it('agents that copy the first agent’s formed view (formedCopy) run exactly as if each had learned every member', async () => {
    for (const sharedState of [false, true]) {
      const run = async (formedCopy: boolean) => {
        const c = new SimCluster({ seed: 7, size: 50, trace: true, formed: true, formedCopy, sharedState });
        await c.start();
        const m = c.agents.map((a) => a.agent.membership);
        const start = {
          views: views(c),
          digests: m.map((x) => x.digest),
          versions: m.map((x) => x.version),
          quiet: m.map((x) => x.counters.learnedQuietly),
          queued: m.map((x) => x.queueLength),
          kth: m.map((x) => [0, 17, 48, 49].map((k) => x.aliveAt(k))),
        };
        c.get(1).placement.submit('web', intent(6));
        c.crash(4);
        await c.run(20_000);
        return { start, trace: c.traceHash(), lines: c.trace!.length };
      };
      const copied = await run(true);
      const learned = await run(false);
      expect(copied.start).toEqual(learned.start);
      expect(copied.start.quiet.every((n) => n === 49)).toBe(true);
      expect(copied.lines).toBeGreaterThan(1000);
      expect(copied.trace).toBe(learned.trace);
    }
  });

  it('same seed, same run', async () => {
    const run = async () => {
      const c = new SimCluster({ seed: 3, size: 30, trace: true, formed: true });
      await c.start();
      c.get(1).placement.submit('web', intent(6));
      c.crash(4);
      await c.run(15_000);
      return c.traceHash();
    };
    expect(await run()).toBe(await run());
  });
});

describe('Membership.assumeFormed: learned members announced once', () => {
  const loop = new EventLoop();
  const ids = new MemberIds();
  const learnedAddrs: string[] = [];
  const net: MemberNet = {
    send() {},
    pushPull: () => Promise.reject(new Error('no push-pull in this test')),
    dial: () => Promise.reject(new Error('no dial in this test')),
    learn: (id) => void learnedAddrs.push(id),
  };
  const lines: string[] = [];
  const log = { ...nullLogger, info: (_o: object, msg?: string) => void lines.push(msg ?? '') };
  const make = (i: number) =>
    new Membership(
      { id: `m${i}`, addrs: () => [`sim://m${i}`], incarnation: 1 },
      new VirtualClock(loop),
      new Prng(`r${i}`),
      net,
      log,
      {},
      ids,
    );

  it('a listener with a `learned` handler is called once; one without, once per member; one log line', () => {
    const ms = [0, 1, 2, 3].map(make);
    for (const m of ms) m.start([]);
    const states = ms.map((m) => m.selfState());
    const perMember: string[] = [];
    const bulk: number[] = [];
    ms[1]!.onChange(
      () => perMember.push('b'),
      (n) => bulk.push(n),
    );
    ms[2]!.onChange((m, prev) => perMember.push(`c:${m.id}:${m.status}:${prev}`));
    lines.length = 0;
    learnedAddrs.length = 0;
    ms[0]!.assumeFormed(states);
    for (const m of ms.slice(1)) m.assumeFormed(states, ms[0]); // the copy path
    expect(bulk).toEqual([3]);
    expect(perMember).toEqual(['c:m0:alive:undefined', 'c:m1:alive:undefined', 'c:m3:alive:undefined']);
    expect(lines).toEqual(Array(4).fill('formed: members learned'));
    expect(learnedAddrs.length).toBe(4 * 3); // every agent's transport learned every other member
    for (const m of ms) expect(m.version).toBeGreaterThanOrEqual(3);
  });

  it('members not all fresh and alive: per-member calls, bulk handler or not', () => {
    const ms = [4, 5, 6].map(make);
    for (const m of ms) m.start([]);
    const states = ms.map((m) => m.selfState());
    states[2] = { ...states[2]!, status: 'dead' }; // learned dead
    const calls: string[] = [];
    const bulk: number[] = [];
    ms[0]!.onChange(
      (m) => calls.push(`${m.id}:${m.status}`),
      (n) => bulk.push(n),
    );
    ms[0]!.assumeFormed(states);
    expect(bulk).toEqual([]);
    expect(calls).toEqual(['m5:alive', 'm6:dead']);
  });
});
