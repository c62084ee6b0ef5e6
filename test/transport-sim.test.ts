import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Transport, TransportError, TransportHandlers } from '../gossip/transport.ts';
import { Prng } from '../node/core/random.ts';
import { EventLoop } from '../sim/clock.ts';
import { SimNetwork, type SimNetworkOptions, type SimTransport, type TraceEvent } from '../sim/network.ts';
import type { TransportHarness } from './conformance/harness.ts';
import { transportConformance } from './conformance/transport.ts';

/** Drive the loop (with microtask draining) until `p` settles or `budgetMs` of virtual time pass. */
async function drive<T>(loop: EventLoop, p: Promise<T>, budgetMs = 60_000): Promise<T> {
  let done = false;
  const out = p.finally(() => {
    done = true;
  });
  out.catch(() => {});
  for (let waited = 0; !done && waited < budgetMs; waited += 10) await loop.runForAsync(10);
  return out;
}

function simHarness(opts: SimNetworkOptions = {}): TransportHarness {
  const loop = new EventLoop();
  const net = new SimNetwork(loop, new Prng('conformance'), opts);
  const created: Transport[] = [];
  let n = 0;
  return {
    async create(count) {
      const out: Transport[] = [];
      for (let i = 0; i < count; i++) out.push(net.createTransport(`node-${n++}`));
      created.push(...out);
      return out;
    },
    async connect(a, b) {
      await drive(loop, a.dial(b.addrs()[0]!));
    },
    async settle(ms) {
      await loop.runForAsync(ms);
    },
    async cleanup() {
      for (const t of created) await t.stop();
    },
    partition(a, b) {
      net.partition(
        a.map((t) => t.id),
        b.map((t) => t.id),
      );
    },
    heal() {
      net.heal();
    },
  };
}

transportConformance('SimNetwork', () => simHarness());
transportConformance('SimNetwork (jitter, zones, fifo)', () =>
  simHarness({ link: { baseMs: 2, jitterMs: 20 }, fifo: true }),
);

// ---- sim-specific behaviour ----

interface Inbox {
  messages: string[];
  topics: string[];
}

function recorder(inbox: Inbox, onRequest?: TransportHandlers['onRequest']): TransportHandlers {
  const dec = new TextDecoder();
  return {
    onMessage: (from, data) => inbox.messages.push(`${from}:${dec.decode(data)}`),
    onTopic: (topic, from, data) => inbox.topics.push(`${topic}:${from}:${dec.decode(data)}`),
    onRequest: onRequest ?? ((_from, data) => data),
  };
}

const enc = (s: string) => new TextEncoder().encode(s);

/** A cluster of started transports that route by id. */
async function cluster(n: number, seed: number | string, opts: SimNetworkOptions = {}) {
  const loop = new EventLoop();
  const trace: TraceEvent[] = [];
  const net = new SimNetwork(loop, new Prng(seed), { routeById: true, ...opts, trace: (e) => trace.push(e) });
  const nodes: SimTransport[] = [];
  const inboxes: Inbox[] = [];
  for (let i = 0; i < n; i++) {
    const t = net.createSimTransport(`n${i}`);
    const inbox: Inbox = { messages: [], topics: [] };
    await t.start(recorder(inbox));
    nodes.push(t);
    inboxes.push(inbox);
  }
  return { loop, net, nodes, inboxes, trace };
}

async function scenario(seed: number | string): Promise<string> {
  const { loop, net, nodes, trace } = await cluster(20, seed, {
    link: { baseMs: 1, jitterMs: 9, loss: 0.1 },
  });
  for (const t of nodes) t.subscribe('gossip');
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < nodes.length; i++) {
      nodes[i]!.send(`n${(i * 7 + round) % 20}`, enc(`r${round}`));
      if (i % 5 === round % 5) nodes[i]!.publish('gossip', enc(`g${round}-${i}`));
    }
    if (round === 5) net.partition(['n0', 'n1', 'n2'], ['n3', 'n4']);
    if (round === 8) net.crash('n7');
    if (round === 12) net.heal();
    loop.runFor(7);
  }
  loop.runFor(100);
  return createHash('sha256').update(JSON.stringify(trace)).digest('hex');
}

describe('SimNetwork', () => {
  it('is deterministic: same seed → identical trace; another seed → a different one', async () => {
    const a = await scenario(1);
    const b = await scenario(1);
    const c = await scenario(2);
    expect(a).toBe(b);
    expect(c).not.toBe(a);
  });

  it('loses about the configured fraction of messages', async () => {
    const { loop, net, nodes, inboxes } = await cluster(2, 'loss', {
      link: { baseMs: 1, jitterMs: 0, loss: 0.2 },
    });
    const N = 20_000;
    for (let i = 0; i < N; i++) nodes[0]!.send('n1', enc('x'));
    loop.runFor(10);
    const got = inboxes[1]!.messages.length;
    // Binomial(20000, 0.8): sd ≈ 57; 5 sd tolerance.
    expect(Math.abs(got - 0.8 * N)).toBeLessThan(300);
    expect(net.stats('n1').dropped).toBe(N - got);
    expect(net.stats('n0').sent).toBe(N);
    expect(net.stats('n1').recv).toBe(got);
  });

  it('per-link loss overrides the default, one way', async () => {
    const { loop, net, nodes, inboxes } = await cluster(2, 'link', { link: { loss: 0 } });
    net.setLink('n0', 'n1', { loss: 1 }, true);
    nodes[0]!.send('n1', enc('lost'));
    nodes[1]!.send('n0', enc('kept'));
    loop.runFor(10);
    expect(inboxes[1]!.messages).toEqual([]);
    expect(inboxes[0]!.messages).toEqual(['n1:kept']);
  });

  it('latency stays within base + jitter, and zone pairs use their own table', async () => {
    const { loop, net, nodes, trace } = await cluster(4, 'lat', {
      link: { baseMs: 5, jitterMs: 10 },
      zoneLinks: { eu: { us: { baseMs: 80, jitterMs: 20 } } },
    });
    net.setZone('n0', 'eu');
    net.setZone('n1', 'eu');
    net.setZone('n2', 'us');
    const sentAt: number[] = [];
    for (let i = 0; i < 2000; i++) {
      sentAt.push(loop.now);
      nodes[0]!.send(i % 2 === 0 ? 'n1' : 'n2', enc(String(i)));
      loop.runFor(0.25);
    }
    loop.runFor(200);
    const lat = (to: string) =>
      trace
        .filter((e) => e.to === to && e.drop === undefined)
        .map((e, k) => e.t - sentAt[2 * k + (to === 'n1' ? 0 : 1)]!);
    const local = lat('n1');
    const remote = lat('n2');
    expect(local.length).toBe(1000);
    expect(Math.min(...local)).toBeGreaterThanOrEqual(5);
    expect(Math.max(...local)).toBeLessThan(15);
    expect(Math.min(...remote)).toBeGreaterThanOrEqual(80);
    expect(Math.max(...remote)).toBeLessThan(100);
    const mean = local.reduce((s, x) => s + x, 0) / local.length;
    expect(Math.abs(mean - 10)).toBeLessThan(0.5);
  });

  it('fifo keeps per-link order despite jitter; without it jitter reorders', async () => {
    for (const fifo of [true, false]) {
      const { loop, nodes, inboxes } = await cluster(2, 'fifo', { link: { baseMs: 1, jitterMs: 50 }, fifo });
      for (let i = 0; i < 200; i++) nodes[0]!.send('n1', enc(String(i)));
      loop.runFor(100);
      const got = inboxes[1]!.messages.map((m) => Number(m.split(':')[1]));
      expect(got.length).toBe(200);
      const sorted = [...got].sort((a, b) => a - b);
      if (fifo) expect(got).toEqual(sorted);
      else expect(got).not.toEqual(sorted);
    }
  });

  it('a partition drops traffic both ways (also in flight); heal restores it', async () => {
    const { loop, net, nodes, inboxes } = await cluster(4, 'part', { link: { baseMs: 10, jitterMs: 0 } });
    nodes[0]!.send('n2', enc('in-flight'));
    loop.runFor(5);
    const healOne = net.partition(['n0', 'n1'], ['n2', 'n3']);
    loop.runFor(10);
    expect(inboxes[2]!.messages).toEqual([]); // dropped on arrival
    nodes[0]!.send('n2', enc('a→b'));
    nodes[3]!.send('n1', enc('b→a'));
    nodes[0]!.send('n1', enc('same side'));
    loop.runFor(20);
    expect(inboxes[2]!.messages).toEqual([]);
    expect(inboxes[1]!.messages).toEqual(['n0:same side']);
    healOne();
    nodes[0]!.send('n2', enc('healed'));
    nodes[3]!.send('n1', enc('healed'));
    loop.runFor(20);
    expect(inboxes[2]!.messages).toEqual(['n0:healed']);
    expect(inboxes[1]!.messages).toEqual(['n0:same side', 'n3:healed']);
  });

  it('isolates a group from everyone else, and supports one-way partitions', async () => {
    const { loop, net, nodes, inboxes } = await cluster(3, 'iso');
    net.partition(['n0']);
    nodes[0]!.send('n1', enc('x'));
    nodes[2]!.send('n0', enc('y'));
    nodes[1]!.send('n2', enc('z'));
    loop.runFor(10);
    expect(inboxes.map((i) => i.messages.length)).toEqual([0, 0, 1]);
    net.heal();
    net.partition(['n0'], ['n1'], true);
    nodes[0]!.send('n1', enc('blocked'));
    nodes[1]!.send('n0', enc('passes'));
    loop.runFor(10);
    expect(inboxes[1]!.messages).toEqual([]);
    expect(inboxes[0]!.messages).toEqual(['n1:passes']);
  });

  it('crash drops in-flight inbound, stops the node, and restart allows a new transport', async () => {
    const { loop, net, nodes, inboxes } = await cluster(3, 'crash', { link: { baseMs: 10, jitterMs: 0 } });
    nodes[0]!.send('n1', enc('in flight'));
    nodes[1]!.send('n2', enc('outbound survives'));
    loop.runFor(5);
    net.crash('n1');
    expect(() => net.createTransport('n1')).toThrow(/crashed/);
    nodes[1]!.send('n2', enc('from a dead node'));
    loop.runFor(20);
    expect(inboxes[1]!.messages).toEqual([]);
    expect(inboxes[2]!.messages).toEqual(['n1:outbound survives']);
    expect(net.isUp('n1')).toBe(false);
    nodes[0]!.send('n1', enc('while down'));
    net.restart('n1');
    const again: Inbox = { messages: [], topics: [] };
    const t = net.createTransport('n1');
    await t.start(recorder(again));
    nodes[0]!.send('n1', enc('after restart'));
    loop.runFor(20);
    expect(again.messages).toEqual(['n0:after restart']);
  });

  it("a crashed caller's requests never settle, and an answer never reaches the restarted node", async () => {
    const { loop, net, nodes } = await cluster(2, 'crash-req', { link: { baseMs: 10, jitterMs: 0 } });
    const outcome: string[] = [];
    nodes[0]!.request('n1', enc('q'), 1000).then(
      () => outcome.push('resolved'),
      (e: TransportError) => outcome.push(e.code),
    );
    loop.runFor(15); // request arrived at n1; answer in flight
    net.crash('n0');
    net.restart('n0');
    const fresh = net.createSimTransport('n0');
    await fresh.start(recorder({ messages: [], topics: [] }));
    const second: string[] = [];
    fresh.request('n1', enc('q2'), 1000).then(
      (d) => second.push(new TextDecoder().decode(d)),
      (e: TransportError) => second.push(e.code),
    );
    await loop.runForAsync(2000);
    expect(outcome).toEqual([]);
    expect(second).toEqual(['q2']);
    expect(loop.pending).toBe(0);
  });

  it('request timeout runs on virtual time (a lost request)', async () => {
    const { loop, nodes } = await cluster(2, 'timeout', { link: { baseMs: 1, jitterMs: 0, loss: 1 } });
    let err: TransportError | undefined;
    nodes[0]!.request('n1', enc('q'), 750).catch((e: TransportError) => {
      err = e;
    });
    await loop.runForAsync(749);
    expect(err).toBeUndefined();
    await loop.runForAsync(1);
    expect(err?.code).toBe('timeout');
    expect(err?.peer).toBe('n1');
  });

  it("a request to a crashed node fails 'unreachable' quickly", async () => {
    const { loop, net, nodes } = await cluster(2, 'down', { link: { baseMs: 3, jitterMs: 0 } });
    net.crash('n1');
    let err: TransportError | undefined;
    nodes[0]!.request('n1', enc('q'), 10_000).catch((e: TransportError) => {
      err = e;
    });
    await loop.runForAsync(3);
    expect(err?.code).toBe('unreachable');
  });

  it('publish reaches live subscribers after ~2 hops, not the publisher, each loss independent', async () => {
    const { loop, net, nodes, inboxes, trace } = await cluster(6, 'pub', {
      link: { baseMs: 4, jitterMs: 2 },
    });
    for (const t of nodes) t.subscribe('t');
    net.crash('n5');
    nodes[0]!.publish('t', enc('hi'));
    loop.runFor(100);
    expect(inboxes[0]!.topics).toEqual([]);
    for (let i = 1; i < 5; i++) expect(inboxes[i]!.topics).toEqual(['t:n0:hi']);
    const delivered = trace.filter((e) => e.kind === 'topic' && e.drop === undefined);
    for (const e of delivered) {
      expect(e.t).toBeGreaterThanOrEqual(8);
      expect(e.t).toBeLessThan(12);
    }
    expect(net.stats('n0').published).toBe(1);
    expect(net.stats('n1').topicRecv).toBe(1);
  });

  it('copies bytes: a sender mutating its buffer after send does not change delivery', async () => {
    const { loop, nodes, inboxes } = await cluster(3, 'copy');
    const buf = enc('original');
    nodes[0]!.send('n1', buf);
    nodes[1]!.subscribe('t');
    nodes[2]!.subscribe('t');
    nodes[0]!.publish('t', buf);
    buf.fill(0x41);
    loop.runFor(10);
    expect(inboxes[1]!.messages).toEqual(['n0:original']);
    expect(inboxes[1]!.topics).toEqual(['t:n0:original']);
    expect(inboxes[2]!.topics).toEqual(['t:n0:original']);
  });

  it('without routeById, a node is reachable only once dialed, learned, or heard from', async () => {
    const loop = new EventLoop();
    const net = new SimNetwork(loop, new Prng(1));
    const a = net.createSimTransport('a');
    const b = net.createSimTransport('b');
    const ia: Inbox = { messages: [], topics: [] };
    const ib: Inbox = { messages: [], topics: [] };
    await a.start(recorder(ia));
    await b.start(recorder(ib));
    a.send('b', enc('unknown'));
    loop.runFor(10);
    expect(ib.messages).toEqual([]);
    a.addPeer('b', ['sim://b']);
    a.send('b', enc('learned'));
    loop.runFor(10);
    b.send('a', enc('reply over the inbound connection'));
    loop.runFor(10);
    expect(ib.messages).toEqual(['a:learned']);
    expect(ia.messages).toEqual(['b:reply over the inbound connection']);
  });

  it('dial: resolves with the id; unknown address fails; partitioned dial times out', async () => {
    const { loop, net, nodes } = await cluster(3, 'dial', { dialTimeoutMs: 2000 });
    expect(await drive(loop, nodes[0]!.dial('sim://n1'))).toBe('n1');
    await expect(drive(loop, nodes[0]!.dial('sim://nobody'))).rejects.toMatchObject({ code: 'unreachable' });
    await expect(drive(loop, nodes[0]!.dial('/ip4/1.2.3.4/tcp/1'))).rejects.toMatchObject({
      code: 'unreachable',
    });
    net.partition(['n0'], ['n2']);
    const start = loop.now;
    await expect(drive(loop, nodes[0]!.dial('sim://n2'))).rejects.toMatchObject({ code: 'timeout' });
    expect(loop.now - start).toBeGreaterThanOrEqual(2000);
  });

  it('handlers run as loop events, never inside send', async () => {
    const { loop, nodes, inboxes } = await cluster(2, 'async');
    nodes[0]!.send('n1', enc('x'));
    expect(inboxes[1]!.messages).toEqual([]);
    loop.runFor(5);
    expect(inboxes[1]!.messages).toEqual(['n0:x']);
  });

  it('sendValue hints: a wrong or stale toHint still reaches `to`; fromHint reaches onValue', async () => {
    const loop = new EventLoop();
    const net = new SimNetwork(loop, new Prng('hints'), { routeById: true });
    const got: string[] = [];
    const nodes: SimTransport[] = [];
    for (let i = 0; i < 3; i++) {
      const t = net.createSimTransport(`n${i}`);
      await t.start({
        onMessage() {},
        onTopic() {},
        onRequest: () => new Uint8Array(),
        onValue: (from, value, fromHint) =>
          got.push(`${i}<${from}:${(value as { v: number }).v}:${fromHint}`),
      });
      nodes.push(t);
    }
    nodes[0]!.sendValue('n1', { v: 1 }, 10, 5, 0); // hint 5 now names n1
    nodes[0]!.sendValue('n2', { v: 2 }, 10, 5, 0); // same hint, other node: found by id
    nodes[0]!.sendValue('n1', { v: 3 }, 10, 5); // stale hint (now n2): found by id
    nodes[2]!.sendValue('n1', { v: 4 }, 10);
    loop.runFor(10);
    expect(got.sort()).toEqual(['1<n0:1:0', '1<n0:3:-1', '1<n2:4:-1', '2<n0:2:0']);
    await nodes[1]!.stop();
    nodes[0]!.sendValue('n1', { v: 5 }, 10, 2, 0); // a stopped node is down, hint or not
    loop.runFor(10);
    expect(got.length).toBe(4);
    expect(net.stats('n1').dropped).toBe(1);
  });

  it('rejects a bad link model', () => {
    const loop = new EventLoop();
    expect(() => new SimNetwork(loop, new Prng(1), { link: { loss: 2 } })).toThrow(/loss/);
    expect(() => new SimNetwork(loop, new Prng(1), { link: { baseMs: -1 } })).toThrow(/latency/);
  });
});
