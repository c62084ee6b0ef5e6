import '../gossip/polyfill.ts';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { afterEach, describe, expect, it } from 'vitest';
import { frameHeader } from '../gossip/frame.ts';
import { Libp2pTransport } from '../gossip/libp2p.ts';
import {
  StreamError,
  type StreamHandler,
  StreamProtocol,
  type StreamProtocolOptions,
} from '../gossip/streams.ts';
import type { TransportHandlers } from '../gossip/transport.ts';

/**
 * The request → streamed-response protocol (gossip/streams.ts) between two real libp2p nodes on
 * loopback: framing, backpressure, cancellation both ways, bounds, admission, unreachable peers.
 */

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const noHandlers: TransportHandlers = { onMessage() {}, onTopic() {}, onRequest: (_f, d) => d };

async function eventually(what: string, condition: () => boolean, budgetMs = 10_000): Promise<void> {
  for (let waited = 0; !condition(); waited += 10) {
    if (waited >= budgetMs) throw new Error(`gave up waiting for ${what}`);
    await sleep(10);
  }
}

interface Node {
  t: Libp2pTransport;
  p: StreamProtocol;
}

describe('StreamProtocol over libp2p', () => {
  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.all(stops.splice(0).map((s) => s()));
  });

  async function node(opts: StreamProtocolOptions = {}, handler?: StreamHandler): Promise<Node> {
    const t = await Libp2pTransport.create({
      privateKey: await generateKeyPair('Ed25519'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      dialTimeoutMs: 2_000,
    });
    await t.start(noHandlers);
    const p = new StreamProtocol(t.libp2p, { accept: () => true, dialTimeoutMs: 2_000, ...opts });
    if (handler) await p.handle(handler);
    stops.push(async () => {
      await p.stop();
      await t.stop();
    });
    return { t, p };
  }

  /** A client and a server, the client knowing the server's addresses. */
  async function pair(handler: StreamHandler, serverOpts: StreamProtocolOptions = {}, clientOpts = {}) {
    const server = await node(serverOpts, handler);
    const client = await node(clientOpts);
    client.t.addPeer(server.t.id, server.t.addrs());
    await client.t.dial(server.t.addrs()[0]!);
    return { server, client };
  }

  async function collect(it: AsyncIterable<Uint8Array>): Promise<string[]> {
    const out: string[] = [];
    for await (const m of it) out.push(dec(m));
    return out;
  }

  it('frames: head, then every message in order, then a clean end', async () => {
    const seen: { from: string; req: string }[] = [];
    const { server, client } = await pair(async function* (from, req) {
      seen.push({ from, req: dec(req) });
      yield enc('head');
      for (let i = 0; i < 200; i++) yield enc(`m${i}`);
      yield new Uint8Array(0); // empty messages survive framing
      yield enc('last');
    });
    const res = await client.p.request(server.t.id, enc('hello'));
    expect(dec(res.head)).toBe('head');
    const rest = await collect(res);
    expect(rest).toEqual([...Array.from({ length: 200 }, (_, i) => `m${i}`), '', 'last']);
    expect(seen).toEqual([{ from: client.t.id, req: 'hello' }]);
  });

  it('a handler error before the head rejects; after it, ends the iteration with the message', async () => {
    const { server, client } = await pair(async function* (_from, req) {
      if (dec(req) === 'early') throw new Error('no such workload w1');
      yield enc('head');
      yield enc('one');
      throw new Error('engine went away');
    });
    const early = client.p.request(server.t.id, enc('early'));
    await expect(early).rejects.toMatchObject({
      code: 'remote',
      message: expect.stringContaining('no such workload w1'),
    });
    const res = await client.p.request(server.t.id, enc('late'));
    const got: string[] = [];
    await expect(
      (async () => {
        for await (const m of res) got.push(dec(m));
      })(),
    ).rejects.toMatchObject({ code: 'remote', message: expect.stringContaining('engine went away') });
    expect(got).toEqual(['one']);
  });

  it('backpressure: a slow reader holds the producer to a bounded lead', async () => {
    let produced = 0;
    const chunk = new Uint8Array(64 * 1024);
    const { server, client } = await pair(
      async function* (_f, _r, signal) {
        yield enc('head');
        while (!signal.aborted && produced < 4096) {
          produced++;
          yield chunk;
        }
      },
      {},
      { highWaterBytes: 256 * 1024 },
    );
    const res = await client.p.request(server.t.id, enc('go'));
    const it = res[Symbol.asyncIterator]();
    await it.next();
    await sleep(600); // the reader stalls
    const lead = produced;
    // Without flow control all 4096 × 64 KiB = 256 MiB would be pushed at once.
    expect(lead * chunk.byteLength).toBeLessThan(24 * 1024 * 1024);
    // Reading resumes the flow.
    for (let i = 0; i < 200; i++) await it.next();
    expect(produced).toBeGreaterThan(Math.min(lead, 200));
    res.cancel();
  });

  it('the caller cancelling (or breaking out) aborts the server handler', async () => {
    let aborted = 0;
    let finished = 0;
    const { server, client } = await pair(async function* (_f, _r, signal) {
      signal.addEventListener('abort', () => aborted++);
      try {
        yield enc('head');
        // A follow that only ends when the caller goes away.
        while (!signal.aborted) {
          yield enc('tick');
          await sleep(20);
        }
      } finally {
        finished++;
      }
    });
    const a = await client.p.request(server.t.id, enc('a'));
    const it = a[Symbol.asyncIterator]();
    expect(dec((await it.next()).value as Uint8Array)).toBe('tick');
    a.cancel();
    await eventually('the handler sees the cancel', () => aborted === 1 && finished === 1);
    expect((await it.next()).done).toBe(true);

    const b = await client.p.request(server.t.id, enc('b'));
    let n = 0;
    for await (const _ of b) if (++n === 3) break;
    await eventually('the handler sees the break', () => aborted === 2 && finished === 2);

    const ctrl = new AbortController();
    const c = await client.p.request(server.t.id, enc('c'), { signal: ctrl.signal });
    await c[Symbol.asyncIterator]().next();
    ctrl.abort();
    await eventually('the handler sees the signal', () => aborted === 3 && finished === 3);
  });

  it('the server going away ends the caller with a truncated error naming the peer', async () => {
    const { server, client } = await pair(async function* (_f, _r, signal) {
      yield enc('head');
      while (!signal.aborted) {
        yield enc('tick');
        await sleep(20);
      }
    });
    const res = await client.p.request(server.t.id, enc('x'));
    const it = res[Symbol.asyncIterator]();
    await it.next();
    await server.t.stop();
    const err = await (async () => {
      for (;;) await it.next();
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StreamError);
    expect(err).toMatchObject({ code: 'truncated', peer: server.t.id });
    expect((err as Error).message).toContain(server.t.id);
  });

  it('bounds: oversize request refused on both sides, oversize message ends the response', async () => {
    const { server, client } = await pair(
      async function* (_f, req) {
        yield enc('head');
        if (dec(req) === 'big') yield new Uint8Array(5000);
      },
      { maxRequestBytes: 1000, maxMessageBytes: 4000 },
      { maxRequestBytes: 1000 },
    );
    await expect(client.p.request(server.t.id, new Uint8Array(1001))).rejects.toMatchObject({
      code: 'too-large',
    });
    const res = await client.p.request(server.t.id, enc('big'));
    await expect(collect(res)).rejects.toMatchObject({
      code: 'too-large',
      message: expect.stringContaining('5000'),
    });

    // A caller that ignores its own bound: the server refuses what the frame header announces.
    const raw = await client.t.libp2p.dialProtocol(server.t.libp2p.peerId, server.p.protocol);
    const answer: Uint8Array[] = [];
    raw.addEventListener('message', (e) =>
      answer.push(e.data instanceof Uint8Array ? e.data : e.data.subarray()),
    );
    raw.send(frameHeader(1_000_000));
    await eventually('the refusal', () => dec(Buffer.concat(answer)).includes('too-large'));
    expect(server.p.stats.oversize).toBe(1);
  });

  it('admission: a peer the server does not accept is refused with its reason', async () => {
    const { server, client } = await pair(
      async function* () {
        yield enc('secret');
      },
      { accept: (peer) => `${peer} is not a live member of this cluster` },
    );
    const err = await client.p.request(server.t.id, enc('x')).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'refused', peer: server.t.id });
    expect((err as Error).message).toContain(`${client.t.id} is not a live member`);
    expect(server.p.stats.refused).toBe(1);
  });

  it('unknown or unreachable peers: a clear error naming the peer, within the dial budget', async () => {
    const client = await node({ dialTimeoutMs: 1_000 });
    const gone = await node();
    const goneId = gone.t.id;
    const addrs = gone.t.addrs();
    await gone.t.stop();
    client.t.addPeer(goneId, addrs);
    const t0 = Date.now();
    const err = await client.p.request(goneId, enc('x'), { timeoutMs: 5_000 }).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(4_000);
    expect(err).toBeInstanceOf(StreamError);
    expect(['unreachable', 'timeout']).toContain((err as StreamError).code);
    expect((err as Error).message).toContain(goneId);

    // A peer id with no known address at all.
    const stranger = (await node()).t.id;
    const err2 = await client.p.request(stranger, enc('x')).catch((e: unknown) => e);
    expect(err2).toMatchObject({ peer: stranger });
    expect((err2 as Error).message).toContain(stranger);
    await expect(client.p.request('not-a-peer', enc('x'))).rejects.toMatchObject({ code: 'unreachable' });
  });

  it('a handler slower than the head budget times out (504 material)', async () => {
    const { server, client } = await pair(async function* (_f, _r, signal) {
      await sleep(2_000);
      if (!signal.aborted) yield enc('late');
    });
    const err = await client.p.request(server.t.id, enc('x'), { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'timeout', peer: server.t.id });
  });
});
