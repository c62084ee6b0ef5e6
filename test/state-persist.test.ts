import { describe, expect, it } from 'vitest';
import { STORE_KEYS } from '../node/core/agent.ts';
import type { Store } from '../node/core/io.ts';
import { STORE_LOG_PREFIX, STORE_STATE_KEY } from '../node/core/state-sync.ts';
import { SimCluster } from '../sim/cluster.ts';

/** Incremental persistence of the cluster state (docs/state.md, "Persistence"). */

const intent = (replicas = 1) => ({
  name: 'p',
  replicas,
  strategy: 'spread' as const,
  spec: { resources: { cpu: { milli: 100 }, memoryBytes: 64 * 2 ** 20 } },
});

/** What a restart must restore: every intent and every other host's record (its own gets a new version). */
function restored(sync: SimCluster['agents'][number]['sync']) {
  const hosts = sync.state.hosts
    .all()
    .filter((h) => h.id !== sync.id)
    .map((h) => `${h.id}@${h.version}`);
  return { intents: sync.state.intents.hash(), hosts };
}

const logKeys = (keys: string[]) => keys.filter((k) => k.startsWith(STORE_LOG_PREFIX));

async function cluster(seed: number, size = 3) {
  const c = new SimCluster({ seed, size, trace: true });
  await c.start();
  expect(await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000)).toBeGreaterThanOrEqual(0);
  await c.run(1_500); // the first base is written by the periodic persist
  return c;
}

describe('state persistence: base snapshot + log of changes', () => {
  it('a flush writes only the changed intents (not the whole state), and a crash right after loses none', async () => {
    const c = await cluster(21);
    const a = c.get(1);
    const writes: { key: string; bytes: number }[] = [];
    const write = a.store.write.bind(a.store);
    a.store.write = (key, v) => {
      writes.push({ key, bytes: v.length });
      write(key, v);
    };
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const id = `d-${String(i).padStart(3, '0')}`;
      a.sync.putIntent(id, intent());
      ids.push(id);
      const from = writes.length;
      const done = a.sync.flush();
      await c.run(10);
      await done;
      // One small log file per flush, holding the one intent: not the state (which grows with i).
      const logs = writes.slice(from).filter((w) => w.key.startsWith(STORE_LOG_PREFIX));
      expect(logs.length).toBeGreaterThanOrEqual(1);
      expect(Math.min(...logs.map((w) => w.bytes))).toBeLessThan(1_000);
    }
    expect(writes.some((w) => w.key === STORE_STATE_KEY)).toBe(false);
    expect(a.sync.state.encodeSnapshot().length).toBeGreaterThan(10_000);
    expect(logKeys(a.store.keys()).length).toBeGreaterThan(0);
    c.crash(1);
    const back = await c.restart(1); // loads from the store before any message arrives
    for (const id of ids) expect(back.sync.state.intents.get(id)?.replicas).toBe(1);
    expect(c.trace!.some((l) => l.includes('state restored from disk'))).toBe(true);
  });

  it('the log is compacted into a new base; a restart restores the same state', async () => {
    const c = await cluster(22);
    const a = c.get(0);
    for (let i = 0; i < 300; i++) {
      a.sync.putIntent(`c-${String(i).padStart(3, '0')}`, intent(1 + (i % 3)));
      const done = a.sync.flush();
      await c.run(6);
      await done;
    }
    // 300 flushes, at most 256 log files between two bases.
    expect(logKeys(a.store.keys()).length).toBeLessThan(256);
    expect(a.store.read(STORE_STATE_KEY)![0]).toBe(0x00); // a base with its sequence number
    a.agent.persistNow();
    const before = restored(a.sync);
    c.crash(0);
    const back = await c.restart(0);
    expect(restored(back.sync)).toEqual(before);
  });

  it('log files a base already covers are skipped and removed (crash between base write and cleanup)', async () => {
    const c = await cluster(23);
    const a = c.get(2);
    a.sync.putIntent('old', intent(1));
    await c.run(1_100); // periodic persist: a log file
    const stale = logKeys(a.store.keys());
    expect(stale.length).toBeGreaterThan(0);
    const staleBytes = stale.map((k) => [k, a.store.read(k)!] as const);
    a.sync.updateIntent('old', { replicas: 5 });
    // Force a base: many flushes exceed the log size bound.
    for (let i = 0; i < 260; i++) {
      a.sync.putIntent(`x-${i}`, intent());
      const done = a.sync.flush();
      await c.run(6);
      await done;
    }
    a.agent.persistNow();
    // Put the covered files back, as if the agent died before removing them.
    for (const [k, v] of staleBytes) a.store.write(k, v);
    const before = restored(a.sync);
    c.crash(2);
    const back = await c.restart(2);
    expect(back.sync.state.intents.get('old')?.replicas).toBe(5);
    expect(restored(back.sync)).toEqual(before);
    for (const [k] of staleBytes) expect(back.store.read(k)).toBeUndefined();
  });

  it('a corrupt log file: clear error naming it, the rest is restored, peers fill the gap', async () => {
    const c = await cluster(24);
    const a = c.get(1);
    a.sync.putIntent('keep-1', intent());
    const e = a.sync.flush();
    await c.run(10);
    await e;
    a.sync.putIntent('lost', intent());
    const f = a.sync.flush();
    await c.run(10);
    await f;
    a.sync.putIntent('keep-2', intent());
    const g = a.sync.flush();
    await c.run(10);
    await g;
    const keys = logKeys(a.store.keys()).sort(
      (x, y) => Number(x.slice(STORE_LOG_PREFIX.length)) - Number(y.slice(STORE_LOG_PREFIX.length)),
    );
    const bad = keys.at(-2)!;
    c.crash(1);
    a.store.corrupt(bad);
    const back = await c.restart(1);
    const line = c.trace!.find((l) => l.includes('a stored state change is unreadable'));
    expect(line).toContain(bad);
    expect(back.sync.state.intents.get('keep-1')).toBeDefined();
    expect(back.sync.state.intents.get('keep-2')).toBeDefined();
    expect(back.sync.state.intents.get('lost')).toBeUndefined();
    expect(await c.runUntil(() => c.converged(), 10_000)).toBeGreaterThanOrEqual(0);
    expect(back.sync.state.intents.get('lost')).toBeDefined();
  });

  it('own record versions: a burst writes self.json at most once, a restart starts above all published versions', async () => {
    const c = await cluster(25);
    const a = c.get(0);
    const writes: string[] = [];
    const write = a.store.write.bind(a.store);
    a.store.write = (k, v) => {
      writes.push(k);
      write(k, v);
    };
    for (let i = 0; i < 50; i++) {
      a.sync.setHost({ ...a.sync.hostFacts(), labels: { zone: 'a', n: String(i) } });
    }
    const published = a.sync.self()!.version;
    expect(writes.filter((k) => k === 'self.json').length).toBeLessThanOrEqual(1);
    c.crash(0);
    // The peers' copies are not consulted: the restarted host is above on its own.
    const back = await c.restart(0);
    expect(back.sync.self()!.version).toBeGreaterThan(published);
  });

  it('an idle cluster writes nothing: no membership list, no base, no log, no self.json, no books', async () => {
    const c = await cluster(26, 4);
    await c.run(3_000);
    // Lossy links: members flap alive ↔ suspect; the stored list (ids and addresses) stays the same.
    c.net.setLoss(0.25);
    const writes: string[] = [];
    for (const a of c.agents) {
      const write = a.store.write.bind(a.store);
      a.store.write = (k, v) => {
        writes.push(`${a.id}:${k}`);
        write(k, v);
      };
    }
    await c.run(10_000);
    const flaps = c.trace!.filter((l) => l.includes('"status":"suspect"')).length;
    expect(flaps).toBeGreaterThan(0);
    // Refuting a suspicion raises the incarnation (agent.json): that one is a real change.
    expect(writes.filter((w) => !w.endsWith(':agent.json'))).toEqual([]);
    c.net.setLoss(0);
    await c.run(3_000);
    // A real change is still written.
    c.get(1).sync.setHost({ ...c.get(1).sync.hostFacts(), labels: { zone: 'moved' } });
    await c.run(1_100);
    expect(writes.some((w) => w.startsWith(c.get(1).id))).toBe(true);
    expect(STORE_KEYS.members).toBe('members.json');
  });

  it('with an async store: flush waits for the write, files land in order, a failed write is redone as a base', async () => {
    const c = await cluster(27);
    const a = c.get(1);
    type Held = { key: string; land: () => void; fail: (e: Error) => void };
    const held: Held[] = [];
    const write = a.store.write.bind(a.store);
    // A store whose writes complete when the test says so (as DiskStore's fsync on the thread pool).
    const store: Store = a.store;
    store.writeAsync = (key, v) =>
      new Promise<void>((resolve, reject) =>
        held.push({
          key,
          land: () => {
            write(key, v);
            resolve();
          },
          fail: reject,
        }),
      );
    const tick = () => new Promise((r) => setImmediate(r));
    a.sync.putIntent('one', intent());
    let flushed = false;
    void a.sync.flush().then(() => {
      flushed = true;
    });
    a.sync.putIntent('two', intent());
    void a.sync.flush();
    await c.run(10);
    // The first log file is in flight; the deploy API's answer waits for it.
    expect(held.map((h) => h.key)).toHaveLength(1);
    expect(flushed).toBe(false);
    a.sync.putIntent('three', intent());
    void a.sync.flush();
    await c.run(10);
    // Serial: the next file is not even started before the first one lands.
    expect(held).toHaveLength(1);
    held[0]!.land();
    await tick();
    expect(flushed).toBe(true);
    await tick();
    expect(held).toHaveLength(2);
    expect(held[1]!.key > held[0]!.key || held[1]!.key.length > held[0]!.key.length).toBe(true);
    held[1]!.fail(new Error('EIO: injected'));
    await tick();
    expect(a.sync.counters.persistFailures).toBe(1);
    // The failed file's entries are written again, inside a full base.
    a.sync.persist();
    await tick();
    const base = held.find((h, i) => i >= 2 && h.key === STORE_STATE_KEY);
    expect(base).toBeDefined();
    for (const h of held.slice(2)) h.land();
    await a.sync.settled();
    store.writeAsync = undefined;
    c.crash(1);
    const back = await c.restart(1);
    for (const id of ['one', 'two', 'three']) expect(back.sync.state.intents.get(id)).toBeDefined();
  });
});

describe('hostPersistIntervalMs: other hosts’ records are a cache, logged at most once per interval', () => {
  it('a remote record change is not logged by the next persists, but within the interval', async () => {
    const c = new SimCluster({ seed: 33, size: 3, sync: { hostPersistIntervalMs: 10_000 } });
    await c.start();
    expect(await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000)).toBeGreaterThanOrEqual(0);
    await c.run(12_000); // past the first interval: the first base and host log are behind us
    const a = c.get(1);
    const remote = c.get(0);
    const logged: { at: number; text: string }[] = [];
    const write = a.store.write.bind(a.store);
    a.store.write = (key, v) => {
      if (key.startsWith(STORE_LOG_PREFIX))
        logged.push({ at: c.loop.now, text: new TextDecoder().decode(v) });
      write(key, v);
    };
    const t0 = c.loop.now;
    remote.sync.setHost({
      ...remote.sync.hostFacts(),
      labels: { ...remote.sync.hostFacts().labels, zone: 'moved' },
    });
    const version = remote.sync.self()!.version;
    expect(
      await c.runUntil(() => a.sync.state.hosts.live(remote.id)?.version === version, 2_000),
    ).toBeGreaterThanOrEqual(0);
    // Intents are still logged at every persist: one changed now must be on disk within ~1 s.
    a.sync.putIntent('kept', intent());
    await c.run(3_000);
    expect(logged.some((l) => l.text.includes('"kept"'))).toBe(true);
    expect(logged.some((l) => l.text.includes('moved'))).toBe(false);
    await c.run(10_000);
    const hostLog = logged.find((l) => l.text.includes('moved'));
    expect(hostLog).toBeDefined();
    expect(hostLog!.at - t0).toBeLessThanOrEqual(11_000);
    await c.stop();
  });
});
