import { describe, expect, it } from 'vitest';
import type { MembershipMessage, PushPull } from '../node/core/membership.ts';
import { Prng } from '../node/core/random.ts';
import {
  decodePushPull,
  encodeMembership,
  encodePushPull,
  membershipByteLength,
  pushPullByteLength,
  WireError,
} from '../node/core/wire.ts';
import { MembershipSim } from '../sim/membership-sim.ts';

/**
 * Membership at rest costs O(1) per agent (docs/membership.md, "Cost at rest"): no gossip timer
 * while nothing is queued, push-pull compares digests before lists, reconnect attempts scale with
 * dead/alive (Serf), and decisions do not depend on how member ids are numbered.
 */

async function formed(opts: ConstructorParameters<typeof MembershipSim>[0]) {
  const c = new MembershipSim(opts);
  await c.start();
  const ms = await c.runUntil(() => c.settled('dead', false), 30_000, 100);
  expect(ms).toBeGreaterThanOrEqual(0);
  return c;
}

/** A scripted run with a crash, a restart, a partition and its heal; returns the trace hash. */
async function scripted(sharedIds: boolean, shareDecoded = true, size = 40) {
  const c = new MembershipSim({ seed: 21, size, trace: true, sharedIds, shareDecoded, link: { loss: 0.01 } });
  await c.start();
  await c.runUntil(() => c.settled('dead', true), 30_000, 100);
  c.crash(7);
  await c.run(8_000);
  const heal = c.net.partition(c.agents.slice(30).map((a) => a.id));
  await c.run(6_000);
  heal();
  await c.restart(7);
  c.get(3).agent.membership.refreshSelf();
  await c.run(15_000);
  const settled = c.settled('dead', true);
  const views = c.agents.map((a) => a.agent.membership.digest);
  return { c, hash: c.traceHash(), settled, views };
}

describe('membership at scale: cost at rest', () => {
  it('an idle cluster runs no gossip timer, and its push-pulls carry digests only', async () => {
    const c = await formed({ seed: 4, size: 40 });
    await c.run(30_000); // drain the join's retransmit queues
    const m = c.agents.map((a) => a.agent.membership);
    const ticks0 = m.reduce((n, x) => n + x.counters.gossipTicks, 0);
    const full0 = m.reduce((n, x) => n + x.counters.pushPullsFull, 0);
    const digest0 = m.reduce((n, x) => n + x.counters.pushPullsDigestOnly, 0);
    const events0 = c.loop.fired;
    await c.run(60_000);
    expect(m.reduce((n, x) => n + x.counters.gossipTicks, 0)).toBe(ticks0);
    expect(m.reduce((n, x) => n + x.counters.pushPullsFull, 0)).toBe(full0);
    // push-pull every 2 s × (⌈log2 40 − 5⌉ + 1) = 4 s per agent: ≈ 15 per agent per minute.
    expect(m.reduce((n, x) => n + x.counters.pushPullsDigestOnly, 0) - digest0).toBeGreaterThan(40 * 10);
    // Per agent per second: 2 probes × (tick, ping, ack), push-pull legs every 4 s, the agent's
    // persist timer (1 s): 7.5 loop events. (Before: + 5 gossip ticks and 0.5 reconnect ticks.)
    const perAgentS = (c.loop.fired - events0) / 40 / 60;
    expect(perAgentS).toBeLessThan(8);
    // All views equal.
    expect(new Set(m.map((x) => x.digest)).size).toBe(1);
  }, 60_000);

  it('push-pull: equal digest → empty answer; other or no digest (older agents) → the full list', async () => {
    const c = await formed({ seed: 8, size: 12 });
    const m = c.get(2).agent.membership;
    const peer = c.get(3).agent.membership;
    expect(peer.digest).toBe(m.digest);
    expect(
      m.handlePushPull(peer.id, { t: 'push-pull', join: false, digest: peer.digest, members: [] }).members,
    ).toEqual([]);
    expect(
      m.handlePushPull(peer.id, { t: 'push-pull', join: false, digest: peer.digest + 1, members: [] })
        .members,
    ).toHaveLength(12);
    expect(m.handlePushPull(peer.id, { t: 'push-pull', join: false, members: [] }).members).toHaveLength(12);
    expect(
      m.handlePushPull(peer.id, { t: 'push-pull', join: true, digest: peer.digest, members: [] }).members,
    ).toHaveLength(12);
    // Wire: the digest round-trips, is optional, and must be a non-negative integer.
    const msg = { t: 'push-pull' as const, join: false, digest: 2 ** 52 + 7, members: [] };
    expect(decodePushPull('p', encodePushPull(msg))).toEqual(msg);
    expect(
      decodePushPull('p', encodePushPull({ t: 'push-pull', join: false, members: [] })).digest,
    ).toBeUndefined();
    for (const bad of [-1, 1.5, 'x'])
      expect(() => decodePushPull('p', encodePushPull({ ...msg, digest: bad as number }))).toThrow(WireError);
  }, 60_000);

  it('members.json holds a bounded, stable set of join candidates; the seed rejoins from it', async () => {
    const c = await formed({ seed: 10, size: 100, persistIntervalMs: 1_000 });
    const m = c.get(0).agent.membership;
    const first = m.joinCandidates();
    expect(first).toHaveLength(64);
    expect(first.map((x) => x.id)).toEqual([...first.map((x) => x.id)].sort());
    expect(first.some((x) => x.id === m.id)).toBe(false);
    expect(m.joinCandidates()).toEqual(first); // stable while nothing changes
    // Small clusters: everyone alive is remembered.
    expect(c.get(5).agent.membership.joinCandidates(200)).toHaveLength(99);
    await c.run(2_000);
    const stored = JSON.parse(new TextDecoder().decode(c.get(0).store.read('members.json')!));
    expect(stored).toHaveLength(64);
    // The seed (no --join) crashes and restarts: it rejoins through the members it remembered.
    c.crash(0);
    await c.runUntil(() => c.settled('dead', false), 30_000, 100);
    await c.restart(0);
    expect(await c.runUntil(() => c.settled('dead', false), 30_000, 100)).toBeGreaterThanOrEqual(0);
    expect(c.get(0).agent.membership.aliveCount).toBe(99);
  }, 60_000);

  it('a change is gossiped at once when the queue was empty', async () => {
    const c = await formed({ seed: 5, size: 30 });
    await c.run(30_000);
    const a = c.get(4).agent.membership;
    a.refreshSelf();
    const inc = a.incarnation;
    await c.run(10); // < one gossip interval: only the immediate round can have carried it
    const seen = c.countViews((x) => (x.agent.membership.get(a.id)?.incarnation ?? 0) >= inc);
    expect(seen).toBeGreaterThanOrEqual(1 + 3); // itself + the fanout
  }, 60_000);

  it('reconnect attempts to a dead member scale with dead/alive, not with the cluster size', async () => {
    const c = await formed({ seed: 6, size: 40, trace: true });
    c.crash(9);
    await c.runUntil(() => c.settled('dead', false), 30_000, 100);
    const from = c.trace!.length;
    await c.run(60_000);
    // Each of 39 agents would try every 2 s (≈ 1,170 requests a minute); with probability
    // dead/alive = 1/39 per tick the cluster makes ≈ 30.
    const reqs = c
      .trace!.slice(from)
      .filter((l) => l.includes('"kind":"req"') && l.includes('"to":"n00009"'));
    expect(reqs.length).toBeGreaterThan(5);
    expect(reqs.length).toBeLessThan(120);
    // A restarted member is still found quickly (it also rejoins by itself).
    await c.restart(9);
    expect(await c.runUntil(() => c.settled('dead', false), 30_000, 50)).toBeLessThan(5_000);
  }, 60_000);

  it('same decisions with one shared id table or one per agent (numbering does not matter)', async () => {
    const shared = await scripted(true);
    const own = await scripted(false);
    expect(shared.settled).toBe(true);
    expect(new Set(shared.views).size).toBe(1);
    expect(own.c.trace!.length).toBe(shared.c.trace!.length);
    expect(own.hash).toBe(shared.hash);
    // And the same seed twice → the same run.
    expect((await scripted(true)).hash).toBe(shared.hash);
  }, 120_000);

  it('same trace with membership messages as shared values or as JSON bytes (the sim stand-in)', async () => {
    for (const size of [40, 120]) {
      const values = await scripted(true, true, size);
      const bytes = await scripted(true, false, size);
      expect(values.settled).toBe(true);
      expect(bytes.c.trace!.length).toBe(values.c.trace!.length);
      expect(bytes.hash).toBe(values.hash);
      // The bytes path really decoded JSON; the values path never encoded.
      expect(values.c.net.totalStats().sentBytes).toBe(bytes.c.net.totalStats().sentBytes);
    }
  }, 180_000);
});

describe('membershipByteLength, pushPullByteLength', () => {
  it('equals the length of the JSON encoding for every message kind (unicode, escapes, big numbers)', () => {
    const rng = new Prng(2);
    const pick = <T>(xs: readonly T[]) => xs[rng.int(xs.length)]!;
    const ids = ['n00001', 'tä"rg', '😀\\x', 'a\nb', '12D3KooWabc'];
    const state = () =>
      Object.freeze({
        id: pick(ids),
        addrs: Array.from({ length: rng.int(3) }, () => pick(['/ip4/10.0.0.1/tcp/4001', 'sim://é€𝄞', ''])),
        incarnation: pick([0, 7, 123456, 2 ** 40 + 1]),
        status: pick(['alive', 'suspect', 'dead', 'left'] as const),
      });
    for (let i = 0; i < 500; i++) {
      const upd = Array.from({ length: rng.int(5) }, state);
      const seq = pick([0, 9, 10, 2 ** 31 - 2]);
      const msg: MembershipMessage = pick([
        { t: 'gossip', upd },
        { t: 'ping', seq, upd },
        { t: 'ack', seq, upd },
        { t: 'ping-req', seq, target: pick(ids), upd },
      ] as MembershipMessage[]);
      expect(membershipByteLength(msg)).toBe(encodeMembership(msg).length);
      const pp: PushPull = {
        t: 'push-pull',
        join: rng.next() < 0.5,
        ...(rng.next() < 0.7 ? { digest: pick([0, 12, 2 ** 53 - 1]) } : {}),
        members: upd,
      };
      expect(pushPullByteLength(pp)).toBe(encodePushPull(pp).length);
    }
  });
});
