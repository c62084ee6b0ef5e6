import { describe, expect, it } from 'vitest';
import { encodeMessage } from '../crdt/codec.ts';
import { STORE_KEYS } from '../node/core/agent.ts';
import type { Store } from '../node/core/io.ts';
import { LEGACY_LOG_PREFIX, STORE_LOG_KEY, STORE_STATE_KEY } from '../node/core/state-sync.ts';
import { SimCluster } from '../sim/cluster.ts';
import type { MemoryStore } from '../sim/store.ts';

/** Incremental persistence of the cluster state (docs/state.md, "Persistence"). */

const intent = (replicas = 1, pad = 0) => ({
  name: 'p',
  replicas,
  strategy: 'spread' as const,
  spec: {
    resources: { cpu: { milli: 100 }, memoryBytes: 64 * 2 ** 20 },
    ...(pad > 0 ? { note: 'x'.repeat(pad) } : {}),
  },
});

/** What a restart must restore: every intent and every other host's record (its own gets a new version). */
function restored(sync: SimCluster['agents'][number]['sync']) {
  const hosts = sync.state.hosts
    .all()
    .filter((h) => h.id !== sync.id)
    .map((h) => `${h.id}@${h.version}`);
  return { intents: sync.state.intents.hash(), hosts };
}

/** The records of the state log: [u32 BE seq][delta message]. */
const logRecords = (store: Store) => store.readLog(STORE_LOG_KEY)?.records ?? [];
const seqOf = (record: Uint8Array) => new DataView(record.buffer, record.byteOffset).getUint32(0);
/** Observe the state log's appends (the simulator's store is synchronous: `append`). */
function watchAppends(store: MemoryStore, seen: (record: Uint8Array) => void): void {
  const append = store.append.bind(store);
  store.append = (key, r) => {
    if (key === STORE_LOG_KEY) seen(r);
    append(key, r);
  };
}

async function cluster(seed: number, size = 3) {
  const c = new SimCluster({ seed, size, trace: true });
  await c.start();
  expect(await c.runUntil(() => c.converged() && c.membershipSettled(), 10_000)).toBeGreaterThanOrEqual(0);
  await c.run(1_500); // the first base is written by the periodic persist
  return c;
}

describe('state persistence: base snapshot + log of changes', () => {
  it('a flush appends one small record holding the changed intents (not the whole state), and a crash right after loses none', async () => {
    const c = await cluster(21);
    const a = c.get(1);
    const writes: string[] = [];
    const write = a.store.write.bind(a.store);
    a.store.write = (key, v) => {
      writes.push(key);
      write(key, v);
    };
    const appends: number[] = [];
    watchAppends(a.store, (r) => appends.push(r.length));
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const id = `d-${String(i).padStart(3, '0')}`;
      a.sync.putIntent(id, intent());
      ids.push(id);
      const from = appends.length;
      const done = a.sync.flush();
      await c.run(10);
      await done;
      // One small record per flush, holding the one intent: not the state (which grows with i).
      const records = appends.slice(from);
      expect(records.length).toBeGreaterThanOrEqual(1);
      expect(Math.min(...records)).toBeLessThan(1_000);
    }
    expect(writes).not.toContain(STORE_STATE_KEY);
    // Nothing but the log (and no new key per write): one log key.
    expect(a.store.keys().filter((k) => k.startsWith('state.log'))).toEqual([STORE_LOG_KEY]);
    expect(a.sync.state.encodeSnapshot().length).toBeGreaterThan(10_000);
    const records = logRecords(a.store);
    expect(records.length).toBeGreaterThanOrEqual(40);
    // Sequence numbers increase record by record.
    for (let i = 1; i < records.length; i++) expect(seqOf(records[i]!)).toBe(seqOf(records[i - 1]!) + 1);
    c.crash(1);
    const back = await c.restart(1); // loads from the store before any message arrives
    for (const id of ids) expect(back.sync.state.intents.get(id)?.replicas).toBe(1);
    expect(c.trace!.some((l) => l.includes('state restored from disk'))).toBe(true);
  });

  it('the log is compacted into a new base (and removed); a restart restores the same state', async () => {
    const c = await cluster(22);
    const a = c.get(0);
    const bases: number[] = [];
    const write = a.store.write.bind(a.store);
    a.store.write = (key, v) => {
      if (key === STORE_STATE_KEY) bases.push(logRecords(a.store).length);
      write(key, v);
    };
    const removed: string[] = [];
    const remove = a.store.remove.bind(a.store);
    a.store.remove = (key) => {
      removed.push(key);
      remove(key);
    };
    let logged = 0;
    watchAppends(a.store, (r) => {
      logged += 8 + r.length;
    });
    for (let i = 0; i < 300; i++) {
      a.sync.putIntent(`c-${String(i).padStart(3, '0')}`, intent(1 + (i % 3), 1_500));
      const done = a.sync.flush();
      await c.run(6);
      await done;
    }
    // 300 records of ~1.6 KB outgrow 256 KiB: at least one base replaced the log, which was removed.
    expect(logged).toBeGreaterThan(256 * 1024);
    expect(bases.length).toBeGreaterThanOrEqual(1);
    expect(Math.max(...bases)).toBeGreaterThan(100); // a base replaced a long log…
    expect(removed).toContain(STORE_LOG_KEY); // …and the log went with it
    expect(logRecords(a.store).length).toBeLessThan(300);
    expect(a.store.read(STORE_STATE_KEY)![0]).toBe(0x00); // a base with its sequence number
    a.agent.persistNow();
    const before = restored(a.sync);
    c.crash(0);
    const back = await c.restart(0);
    expect(restored(back.sync)).toEqual(before);
  });

  it('log records a base already covers are skipped (crash between base write and log removal)', async () => {
    const c = await cluster(23);
    const a = c.get(2);
    a.sync.putIntent('old', intent(1));
    await c.run(1_100); // periodic persist: a record
    const stale = logRecords(a.store);
    expect(stale.length).toBeGreaterThan(0);
    a.sync.updateIntent('old', { replicas: 5 });
    // Force a base: many flushes exceed the log size bound.
    let bases = 0;
    const write = a.store.write.bind(a.store);
    a.store.write = (key, v) => {
      if (key === STORE_STATE_KEY) bases++;
      write(key, v);
    };
    for (let i = 0; i < 260; i++) {
      a.sync.putIntent(`x-${i}`, intent(1, 1_500));
      const done = a.sync.flush();
      await c.run(6);
      await done;
    }
    a.agent.persistNow();
    expect(bases).toBeGreaterThanOrEqual(1);
    // Put the covered records back in front of the log, as if the agent died before removing it.
    const fresh = logRecords(a.store);
    expect(seqOf(fresh[0]!)).toBeGreaterThan(seqOf(stale.at(-1)!));
    a.store.remove(STORE_LOG_KEY);
    for (const r of [...stale, ...fresh]) a.store.append(STORE_LOG_KEY, r);
    const before = restored(a.sync);
    const lines = c.trace!.length;
    c.crash(2);
    const back = await c.restart(2);
    expect(back.sync.state.intents.get('old')?.replicas).toBe(5);
    expect(restored(back.sync)).toEqual(before);
    // Only the records above the base's sequence number were replayed.
    const line = c.trace!.slice(lines).find((l) => l.includes('state restored from disk'));
    expect(line).toContain(`"logRecords":${fresh.length}`);
  });

  it('a corrupt log record: clear error naming the log, the records before it are restored, peers fill the gap', async () => {
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
    const records = logRecords(a.store);
    const text = (r: Uint8Array) => new TextDecoder().decode(r.subarray(4));
    const bad = records.findIndex((r) => text(r).includes('"lost"'));
    expect(bad).toBeGreaterThan(0);
    expect(records.slice(bad + 1).some((r) => text(r).includes('"keep-2"'))).toBe(true);
    c.crash(1);
    a.store.corruptLogRecord(STORE_LOG_KEY, bad);
    const back = await c.restart(1);
    const line = c.trace!.find((l) => l.includes('is unreadable and was dropped'));
    expect(line).toContain(`"key":"${STORE_LOG_KEY}"`);
    expect(line).toContain(`checksum mismatch at record ${bad}`);
    expect(line).toContain('peers re-sync what it held');
    // The records before the bad one are restored; it and the ones after it were kept aside.
    expect(back.sync.state.intents.get('keep-1')).toBeDefined();
    expect(back.sync.state.intents.get('lost')).toBeUndefined();
    expect(back.sync.state.intents.get('keep-2')).toBeUndefined();
    expect([...a.store.keptAside.keys()]).toEqual([`${STORE_LOG_KEY}.corrupt-0`]);
    // The log goes on after the last good record; peers fill the gap.
    expect(await c.runUntil(() => c.converged(), 10_000)).toBeGreaterThanOrEqual(0);
    expect(back.sync.state.intents.get('lost')).toBeDefined();
    expect(back.sync.state.intents.get('keep-2')).toBeDefined();
    // What peers re-supplied is logged again, after the last good record.
    await c.run(1_100);
    const after = logRecords(back.store);
    expect(after.length).toBeGreaterThan(bad);
    expect(after.slice(bad).some((r) => text(r).includes('"lost"'))).toBe(true);
  });

  it('log files of older builds (`state.log.<seq>`) are replayed, then replaced by a base and removed', async () => {
    const c = await cluster(28);
    const a = c.get(1);
    a.agent.persistNow();
    c.crash(1);
    // Intents the crashed agent never saw, as an older build would have logged them: one file each.
    const other = c.get(0);
    other.sync.putIntent('legacy-1', intent(2));
    other.sync.putIntent('legacy-2', intent(3));
    const wire = (id: string) => other.sync.state.intents.wire(id)!;
    a.store.write(
      `${LEGACY_LOG_PREFIX}1000`,
      encodeMessage({ t: 'delta', hosts: [], intents: [wire('legacy-1')] }),
    );
    a.store.write(
      `${LEGACY_LOG_PREFIX}1001`,
      encodeMessage({ t: 'delta', hosts: [], intents: [wire('legacy-2')] }),
    );
    const back = await c.restart(1); // loads before any message arrives
    expect(back.sync.state.intents.get('legacy-1')?.replicas).toBe(2);
    expect(back.sync.state.intents.get('legacy-2')?.replicas).toBe(3);
    // The next persist writes a base covering them, then removes them.
    await c.run(1_100);
    expect(a.store.keys().filter((k) => k.startsWith(LEGACY_LOG_PREFIX))).toEqual([]);
    const base = a.store.read(STORE_STATE_KEY)!;
    expect(new DataView(base.buffer, base.byteOffset).getUint32(1)).toBeGreaterThanOrEqual(1001);
    // New records follow the legacy sequence numbers (else a restart would skip them).
    back.sync.putIntent('after', intent());
    const done = back.sync.flush();
    await c.run(10);
    await done;
    expect(seqOf(logRecords(a.store).at(-1)!)).toBeGreaterThan(1001);
    c.crash(1);
    const again = await c.restart(1);
    for (const id of ['legacy-1', 'legacy-2', 'after'])
      expect(again.sync.state.intents.get(id)).toBeDefined();
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

  it('with an async store: flush waits for the append, records land in order, a failed append is redone as a base', async () => {
    const c = await cluster(27);
    const a = c.get(1);
    type Held = { key: string; seq: number; land: () => void; fail: (e: Error) => void };
    const held: Held[] = [];
    const write = a.store.write.bind(a.store);
    const append = a.store.append.bind(a.store);
    // A store whose writes and appends complete when the test says so (as DiskStore's fsyncs on
    // the thread pool).
    const store: Store = a.store;
    store.writeAsync = (key, v) =>
      new Promise<void>((resolve, reject) =>
        held.push({
          key,
          seq: -1,
          land: () => {
            write(key, v);
            resolve();
          },
          fail: reject,
        }),
      );
    store.appendAsync = (key, r) =>
      new Promise<void>((resolve, reject) =>
        held.push({
          key,
          seq: seqOf(r),
          land: () => {
            append(key, r);
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
    // The first record is in flight; the deploy API's answer waits for it.
    expect(held.map((h) => h.key)).toEqual([STORE_LOG_KEY]);
    expect(flushed).toBe(false);
    a.sync.putIntent('three', intent());
    void a.sync.flush();
    await c.run(10);
    // Serial: the next append is not even started before the first one lands.
    expect(held).toHaveLength(1);
    held[0]!.land();
    await tick();
    expect(flushed).toBe(true);
    await tick();
    expect(held).toHaveLength(2);
    expect(held[1]!.key).toBe(STORE_LOG_KEY);
    expect(held[1]!.seq).toBe(held[0]!.seq + 1);
    held[1]!.fail(new Error('EIO: injected'));
    await tick();
    expect(a.sync.counters.persistFailures).toBe(1);
    // The failed record's entries are written again, inside a full base.
    a.sync.persist();
    await tick();
    const base = held.find((h, i) => i >= 2 && h.key === STORE_STATE_KEY);
    expect(base).toBeDefined();
    for (const h of held.slice(2)) h.land();
    await a.sync.settled();
    // After the base landed, the log it covers was removed.
    expect(a.store.readLog(STORE_LOG_KEY)).toBeUndefined();
    store.writeAsync = undefined;
    store.appendAsync = undefined;
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
    watchAppends(a.store, (r) => logged.push({ at: c.loop.now, text: new TextDecoder().decode(r) }));
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
