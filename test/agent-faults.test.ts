import { describe, expect, it } from 'vitest';
import { STORE_STATE_KEY } from '../node/core/state-sync.ts';
import { TAG_MEMBERSHIP, TAG_STATE } from '../node/core/wire.ts';
import { SimCluster } from '../sim/cluster.ts';

const enc = new TextEncoder();

describe('agent faults: nothing lost, clear errors, no crash loop', () => {
  it('a corrupt state snapshot on restart: clear error, starts, re-syncs from peers', async () => {
    const c = new SimCluster({ seed: 11, size: 4, trace: true });
    await c.start();
    await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000);
    await c.run(1_500); // let the snapshot be persisted
    const store = c.get(2).store;
    expect(store.read(STORE_STATE_KEY)).toBeDefined();
    c.crash(2);
    store.corrupt(STORE_STATE_KEY);
    const back = await c.restart(2);
    const line = c.trace!.find((l) => l.includes('stored cluster state is unreadable'));
    expect(line).toBeDefined();
    expect(line).toContain(STORE_STATE_KEY);
    expect(await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000)).toBeGreaterThanOrEqual(0);
    expect(back.sync.state.hosts.liveSize).toBe(4);
  });

  it('a full disk is logged and retried; the agent keeps working and persists once space returns', async () => {
    const c = new SimCluster({ seed: 12, size: 3, trace: true });
    await c.start();
    await c.runUntil(() => c.converged(), 10_000);
    const a = c.get(1);
    a.store.failWrites = 'enospc';
    a.sync.setHost({ ...a.sync.hostFacts(), labels: { zone: 'full-disk' } });
    await c.run(3_000);
    expect(c.trace!.some((l) => l.includes('ENOSPC'))).toBe(true);
    // The change still reached everyone (gossip does not need the disk).
    expect(c.get(0).sync.state.hosts.live(a.id)?.capacity.labels.zone).toBe('full-disk');
    a.store.failWrites = null;
    await c.run(1_500);
    const snap = a.store.read(STORE_STATE_KEY)!;
    expect(new TextDecoder().decode(snap)).toContain('full-disk');
  });

  it('malformed and malicious frames are rejected with the peer and field named; state unchanged', async () => {
    const c = new SimCluster({ seed: 13, size: 3, trace: true });
    await c.start();
    await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000);
    const before = c.get(0).sync.state.hash();
    const attacker = c.net.createTransport('mallory');
    await attacker.start({ onMessage() {}, onTopic() {}, onRequest: () => new Uint8Array() });
    const victim = c.get(0).id;
    const dialed = attacker.dial(`sim://${victim}`);
    await c.run(100); // virtual time must pass for the dial to complete
    await dialed;
    const frames = [
      new Uint8Array([]),
      new Uint8Array([0x7f, 1, 2, 3]),
      Uint8Array.of(TAG_MEMBERSHIP, ...enc.encode('{"t":"ping","seq":-1,"upd":[]}')),
      Uint8Array.of(
        TAG_MEMBERSHIP,
        ...enc.encode('{"t":"gossip","upd":[{"id":"x","addrs":[],"incarnation":1,"status":"zombie"}]}'),
      ),
      Uint8Array.of(TAG_MEMBERSHIP, ...enc.encode('not json')),
      Uint8Array.of(
        TAG_STATE,
        ...enc.encode('{"v":1,"t":"delta","hosts":[{"id":"h","version":"9"}],"intents":[]}'),
      ),
      Uint8Array.of(
        TAG_STATE,
        ...enc.encode('{"v":1,"t":"delta","hosts":[],"intents":[],"__proto__":{"x":1}}'),
      ),
    ];
    for (const f of frames) attacker.send(victim, f);
    await c.run(500);
    expect(c.get(0).agent.counters.badMessages).toBe(frames.length);
    const rejected = c.trace!.filter((l) => l.includes('rejected message') && l.includes('"peer":"mallory"'));
    expect(rejected.length).toBe(frames.length);
    expect(rejected.some((l) => l.includes('"field":"upd[0].status"'))).toBe(true);
    expect(rejected.some((l) => l.includes('"field":"seq"'))).toBe(true);
    expect(rejected.some((l) => l.includes('"field":"hosts[0].'))).toBe(true);
    expect(c.get(0).sync.state.hash()).toBe(before);
    expect(c.get(0).agent.membership.get('x')).toBeUndefined();
  });

  it('a host that lost its disk comes back with the same id and its new record wins everywhere', async () => {
    const c = new SimCluster({ seed: 14, size: 4 });
    await c.start();
    await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000);
    const a = c.get(3);
    for (let i = 0; i < 5; i++) {
      a.sync.setHost({ ...a.sync.hostFacts(), labels: { zone: `v${i}` } });
      await c.run(100);
    }
    const oldVersion = c.get(0).sync.state.hosts.versionOf(a.id)!;
    c.crash(3);
    await c.runUntil(() => c.statusOf(0, 3) === 'dead', 10_000);
    // Same id, empty disk (a replaced drive): the agent must rise above what peers remember.
    for (const k of a.store.keys()) a.store.remove(k);
    const back = await c.restart(3);
    back.sync.setHost({ ...back.sync.hostFacts(), labels: { zone: 'new-disk' } });
    expect(await c.runUntil(() => c.converged() && c.membershipSettled(), 15_000)).toBeGreaterThanOrEqual(0);
    for (const x of c.agents) {
      expect(x.sync.state.hosts.live(a.id)?.capacity.labels.zone).toBe('new-disk');
      expect(x.sync.state.hosts.versionOf(a.id)!).toBeGreaterThan(oldVersion);
    }
  });
});
