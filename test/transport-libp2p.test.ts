import '../gossip/polyfill.ts';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { type GossipSub, gossipsub, StrictNoSign } from '@libp2p/gossipsub';
import { identify } from '@libp2p/identify';
import type { Stream } from '@libp2p/interface';
import { noise } from '@libp2p/noise';
import { tcp } from '@libp2p/tcp';
import { yamux } from '@libp2p/yamux';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { frameHeader } from '../gossip/frame.ts';
import { IdentityError, loadOrCreateIdentity, peerIdOf } from '../gossip/identity.ts';
import {
  KIND_REQUEST,
  KIND_RESPONSE,
  KIND_TOPIC,
  Libp2pTransport,
  MalformedFrameError,
  MSG_PROTOCOL,
  MSG2_PROTOCOL,
  parseKindFrame,
  REQ_PROTOCOL,
} from '../gossip/libp2p.ts';
import { tuningStats, uint16BELength } from '../gossip/libp2p-tuning.ts';
import {
  encodeSwarmKey,
  generateSwarmKey,
  loadSwarmKey,
  parseSwarmKey,
  SwarmKeyError,
  writeSwarmKeyFile,
} from '../gossip/swarm-key.ts';
import {
  MAX_MESSAGE_BYTES,
  type PeerId,
  TransportError,
  type TransportHandlers,
} from '../gossip/transport.ts';
import type { TransportHarness } from './conformance/harness.ts';
import { transportConformance } from './conformance/transport.ts';

const LOOPBACK = ['/ip4/127.0.0.1/tcp/0'];
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const text = (s: string) => new TextEncoder().encode(s);

async function makeTransport(
  options: { swarmKey?: Uint8Array; directTopicMaxPeers?: number } = {},
): Promise<Libp2pTransport> {
  return Libp2pTransport.create({
    privateKey: await generateKeyPair('Ed25519'),
    listen: LOOPBACK,
    dialTimeoutMs: 3_000,
    ...options,
  });
}

/** Real transports on 127.0.0.1 random ports; `settle` is wall-clock time. */
function libp2pHarness(options: { directTopicMaxPeers?: number } = {}): TransportHarness {
  const made: Libp2pTransport[] = [];
  return {
    async create(n) {
      const out: Libp2pTransport[] = [];
      for (let i = 0; i < n; i++) out.push(await makeTransport(options));
      made.push(...out);
      return out;
    },
    async connect(a, b) {
      const addr = b.addrs()[0];
      if (addr === undefined) throw new Error('connect: the target is not listening');
      await a.dial(addr);
      // dial() resolves when *a* has the connection; b finishes its side of the handshake a
      // moment later. Wait for it so b can answer over this connection straight away.
      const target = made.find((t) => t === b);
      if (target === undefined) throw new Error('connect: not a transport of this harness');
      await eventually('the connection on the accepting side', () =>
        target.libp2p.getConnections().some((c) => c.remotePeer.toString() === a.id),
      );
    },
    settle: sleep,
    async cleanup() {
      await Promise.all(made.map((t) => t.stop()));
    },
  };
}

// Topics by direct fan-out (the default for small clusters), and through gossipsub only.
transportConformance('libp2p', () => libp2pHarness());
transportConformance('libp2p, gossipsub topics', () => libp2pHarness({ directTopicMaxPeers: 0 }));

/** Handlers that record everything (for the libp2p-only tests below). */
function recorder() {
  const messages: { from: PeerId; data: Uint8Array }[] = [];
  const disconnected: PeerId[] = [];
  const handlers: TransportHandlers = {
    onMessage: (from, data) => messages.push({ from, data }),
    onTopic: () => {},
    onRequest: (_from, data) => data,
    onPeerDisconnected: (peer) => disconnected.push(peer),
  };
  return { messages, disconnected, handlers };
}

async function eventually(what: string, condition: () => boolean, budgetMs = 10_000): Promise<void> {
  for (let waited = 0; !condition(); waited += 10) {
    if (waited >= budgetMs) throw new Error(`gave up waiting for ${what}`);
    await sleep(10);
  }
}

describe('Libp2pTransport (libp2p only)', () => {
  const running: { stop(): void | Promise<void> }[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map(async (t) => t.stop()));
  });

  async function started(options: { swarmKey?: Uint8Array; directTopicMaxPeers?: number } = {}) {
    const t = await makeTransport(options);
    const rec = recorder();
    await t.start(rec.handlers);
    running.push(t);
    return { t, ...rec };
  }

  it('announces dialable addresses ending in its own /p2p id, also when listening on 0.0.0.0', async () => {
    const t = await Libp2pTransport.create({
      privateKey: await generateKeyPair('Ed25519'),
      listen: ['/ip4/0.0.0.0/tcp/0'],
    });
    running.push(t);
    await t.start(recorder().handlers);
    const addrs = t.addrs();
    expect(addrs.length).toBeGreaterThan(0);
    for (const a of addrs) {
      expect(a.endsWith(`/p2p/${t.id}`)).toBe(true);
      expect(a).not.toContain('/0.0.0.0/');
    }
    expect(addrs.some((a) => a.startsWith('/ip4/127.0.0.1/tcp/'))).toBe(true);
  });

  it('reports a lost connection through onPeerDisconnected', async () => {
    const a = await started();
    const b = await started();
    await a.t.dial(b.t.addrs()[0]!);
    await b.t.stop();
    await eventually('the disconnect hint', () => a.disconnected.includes(b.t.id));
  });

  it('re-opens the message stream after the connection drops', async () => {
    const a = await started();
    const b = await started();
    a.t.addPeer(b.t.id, b.t.addrs());
    a.t.send(b.t.id, text('one'));
    await eventually('first message', () => b.messages.length === 1);
    await a.t.libp2p.hangUp(multiaddr(b.t.addrs()[0]!));
    await eventually('the disconnect', () => a.disconnected.includes(b.t.id));
    a.t.send(b.t.id, text('two'));
    await eventually('second message over a new connection', () => b.messages.length === 2);
    expect(b.messages.map((m) => new TextDecoder().decode(m.data))).toEqual(['one', 'two']);
  });

  describe('topics by direct fan-out', () => {
    it('publishes once per subscriber on the message stream, or through gossipsub when asked', async () => {
      const topics: string[] = [];
      const a = await started();
      const b = await started();
      const c = await started({ directTopicMaxPeers: 0 });
      for (const n of [a, b, c]) n.t.subscribe('t');
      b.handlers.onTopic = (_topic, from, data) =>
        topics.push(`b<-${from === a.t.id ? 'a' : 'c'}:${new TextDecoder().decode(data)}`);
      await a.t.dial(b.t.addrs()[0]!);
      await c.t.dial(b.t.addrs()[0]!);
      const subscribers = (n: Libp2pTransport) =>
        (n.libp2p.services as { pubsub: GossipSub }).pubsub.getSubscribers('t').length;
      await eventually('subscriptions', () => subscribers(a.t) === 1 && subscribers(c.t) === 1);
      a.t.publish('t', text('direct'));
      await eventually('the direct copy', () => topics.includes('b<-a:direct'));
      expect(a.t.stats.topicDirect).toBe(1);
      expect(a.t.stats.topicGossip).toBe(0);
      // directTopicMaxPeers 0: gossipsub (the mesh may need a heartbeat or two).
      await eventually('the gossipsub copy', () => {
        c.t.publish('t', text('gossip'));
        return topics.includes('b<-c:gossip');
      });
      expect(c.t.stats.topicDirect).toBe(0);
      expect(c.t.stats.topicGossip).toBeGreaterThan(0);
    });

    it('speaks /shoal/msg/1.0.0 to an older peer and publishes to it through gossipsub', async () => {
      // An older build: gossipsub (same settings) and the 1.0.0 message protocol only.
      const old = await createLibp2p({
        addresses: { listen: LOOPBACK },
        transports: [tcp()],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
        services: {
          identify: identify(),
          pubsub: gossipsub({
            globalSignaturePolicy: StrictNoSign,
            allowPublishToZeroTopicPeers: true,
            emitSelf: false,
            heartbeatInterval: 200,
            scoreParams: { IPColocationFactorWeight: 0 },
          }),
        },
      });
      running.push(old);
      const raw: Uint8Array[] = [];
      await old.handle(MSG_PROTOCOL, (stream) => {
        stream.addEventListener('message', (evt) => {
          raw.push(evt.data instanceof Uint8Array ? evt.data.slice() : evt.data.subarray());
        });
      });
      const heard: string[] = [];
      old.services.pubsub.subscribe('t');
      old.services.pubsub.addEventListener('gossipsub:message', (evt) => {
        heard.push(new TextDecoder().decode(evt.detail.msg.data.subarray(16)));
      });
      const a = await started();
      a.t.subscribe('t');
      a.t.addPeer(
        old.peerId.toString(),
        old.getMultiaddrs().map((m) => m.toString()),
      );
      a.t.send(old.peerId.toString(), text('hi'));
      await eventually('the plain 1.0.0 frame', () => raw.length > 0);
      // 4-byte length + payload, no kind byte.
      expect([...raw[0]!]).toEqual([0, 0, 0, 2, ...text('hi')]);
      await eventually('the gossipsub copy', () => {
        a.t.publish('t', text('to the old one'));
        return heard.includes('to the old one');
      });
      expect(a.t.stats.topicGossip).toBeGreaterThan(0);
      // Nothing but the one message frame reached its 1.0.0 stream.
      expect(raw.reduce((n, c) => n + c.byteLength, 0)).toBe(6);
    });
  });

  describe('requests on the message stream', () => {
    it('answers, reports handler errors and oversize answers, times out — without a stream per request', async () => {
      const a = await started();
      const b = await started();
      b.handlers.onRequest = async (_from, data) => {
        const t = new TextDecoder().decode(data);
        if (t === 'throw') throw new Error('handler says no');
        if (t === 'big') return new Uint8Array(MAX_MESSAGE_BYTES + 1);
        if (t === 'slow') return new Promise<Uint8Array>((r) => setTimeout(() => r(text('late')), 1_000));
        return text(`re:${t}`);
      };
      a.t.addPeer(b.t.id, b.t.addrs());
      a.t.send(b.t.id, text('open the stream'));
      await eventually('the message stream', () => b.messages.length === 1);
      const answers = await Promise.all(
        Array.from({ length: 50 }, (_, i) => a.t.request(b.t.id, text(`q${i}`), 5_000)),
      );
      expect(answers.map((x) => new TextDecoder().decode(x))).toEqual(
        Array.from({ length: 50 }, (_, i) => `re:q${i}`),
      );
      const remote = await a.t.request(b.t.id, text('throw'), 5_000).catch((e: unknown) => e);
      expect((remote as TransportError).code).toBe('remote');
      expect((remote as TransportError).message).toContain('handler says no');
      const big = await a.t.request(b.t.id, text('big'), 5_000).catch((e: unknown) => e);
      expect((big as TransportError).code).toBe('too-large');
      const slow = await a.t.request(b.t.id, text('slow'), 100).catch((e: unknown) => e);
      expect((slow as TransportError).code).toBe('timeout');
      expect(a.t.stats.requestsFramed).toBe(53);
      // The late answer to the timed-out request is ignored; the stream keeps working.
      await sleep(1_100);
      expect(new TextDecoder().decode(await a.t.request(b.t.id, text('again'), 5_000))).toBe('re:again');
    });

    it("ignores a response from a peer that was not asked (it cannot settle another peer's request)", async () => {
      const a = await started();
      const b = await started();
      const c = await started();
      b.handlers.onRequest = () => new Promise<Uint8Array>((r) => setTimeout(() => r(text('from b')), 300));
      c.handlers.onRequest = (_f, d) => d;
      a.t.addPeer(b.t.id, b.t.addrs());
      a.t.send(b.t.id, text('open'));
      await eventually('the stream to b', () => b.messages.length === 1);
      const pending = a.t.request(b.t.id, text('q'), 5_000);
      // c forges a response with every small request id on its own stream to a.
      c.t.addPeer(a.t.id, a.t.addrs());
      const raw = await c.t.libp2p.dialProtocol(multiaddr(a.t.addrs()[0]!), MSG2_PROTOCOL);
      for (let id = 0; id < 64; id++) {
        const body = Uint8Array.of(KIND_RESPONSE, 0, 0, 0, id, 0, 0x78);
        const framed = new Uint8Array(4 + body.byteLength);
        framed.set(frameHeader(body.byteLength));
        framed.set(body, 4);
        raw.send(framed);
      }
      expect(new TextDecoder().decode(await pending)).toBe('from b');
    });
  });

  describe('libp2p tuning (gossip/libp2p-tuning.ts)', () => {
    it('replaces the noise length decoder and skips most yamux window updates; big messages still flow', async () => {
      const before = { ...tuningStats };
      const a = await started();
      const b = await started();
      a.t.addPeer(b.t.id, b.t.addrs());
      for (let i = 0; i < 200; i++) a.t.send(b.t.id, text(`m${i}`));
      await eventually('200 small messages', () => b.messages.length === 200);
      expect(tuningStats.noiseDecoders).toBeGreaterThanOrEqual(before.noiseDecoders + 2);
      expect(tuningStats.windowUpdatesSkipped).toBeGreaterThan(before.windowUpdatesSkipped);
      // Flow control still works past many windows (256 KiB each): 2 × 3 MiB at once (within
      // the transport's per-peer buffer), then one more.
      const big = new Uint8Array(3 * 1024 * 1024).fill(1);
      a.t.send(b.t.id, big);
      a.t.send(b.t.id, big);
      await eventually('two big messages', () => b.messages.length === 202, 20_000);
      a.t.send(b.t.id, big);
      await eventually('three big messages', () => b.messages.length === 203, 20_000);
      expect(b.messages.slice(200).every((m) => m.data.byteLength === big.byteLength)).toBe(true);
    });

    it('reads noise lengths without throwing', () => {
      expect(uint16BELength(new Uint8Array(0))).toBe(0);
      expect(uint16BELength(Uint8Array.of(1))).toBe(0);
      expect(uint16BELength(Uint8Array.of(1, 2, 3))).toBe(258);
      expect(uint16BELength({ byteLength: 2, get: (i: number) => [0xff, 0xfe][i]! })).toBe(0xfffe);
    });
  });

  describe('private network (pnet)', () => {
    const key = parseSwarmKey(generateSwarmKey());
    const otherKey = parseSwarmKey(generateSwarmKey());

    it('connects nodes that share the swarm key', async () => {
      const a = await started({ swarmKey: key });
      // The raw file contents work as well as the parsed bytes.
      const b = await started({ swarmKey: text(encodeSwarmKey(key)) });
      expect(await a.t.dial(b.t.addrs()[0]!)).toBe(b.t.id);
      a.t.send(b.t.id, text('members only'));
      await eventually('the message', () => b.messages.length === 1);
      expect(await a.t.request(b.t.id, text('ping'), 5_000)).toEqual(text('ping'));
    });

    it.each([
      ['a different key', { swarmKey: otherKey }],
      ['no key', {}],
    ])('refuses a node with %s, in both directions', async (_label, outsiderOptions) => {
      const member = await started({ swarmKey: key });
      const outsider = await started(outsiderOptions);
      await expect(outsider.t.dial(member.t.addrs()[0]!)).rejects.toBeInstanceOf(TransportError);
      await expect(member.t.dial(outsider.t.addrs()[0]!)).rejects.toBeInstanceOf(TransportError);

      outsider.t.addPeer(member.t.id, member.t.addrs());
      outsider.t.send(member.t.id, text('let me in'));
      const err = await outsider.t.request(member.t.id, text('?'), 5_000).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TransportError);
      expect(['unreachable', 'timeout']).toContain((err as TransportError).code);
      await sleep(300);
      expect(member.messages).toEqual([]);
      expect(member.t.libp2p.getConnections()).toEqual([]);
    });
  });

  describe('hostile peers (a bare libp2p node speaking our protocols)', () => {
    let bare: Libp2p;
    beforeEach(async () => {
      bare = await createLibp2p({
        addresses: { listen: LOOPBACK },
        transports: [tcp()],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
      });
      running.push(bare);
    });

    const hugeHeader = frameHeader(0xffff_ffff);

    it.each([
      ['an unknown kind', Uint8Array.of(7, 1, 2, 3)],
      ['a topic length of 0', Uint8Array.of(KIND_TOPIC, 0, 1)],
      ['a topic longer than the frame', Uint8Array.of(KIND_TOPIC, 9, 0x74)],
      ['an empty frame', new Uint8Array(0)],
    ])('resets a /shoal/msg/2.0.0 stream sending %s, and still serves others', async (_label, body) => {
      const victim = await started();
      victim.t.subscribe('t');
      const stream: Stream = await bare.dialProtocol(multiaddr(victim.t.addrs()[0]!), MSG2_PROTOCOL);
      const framed = new Uint8Array(4 + body.byteLength);
      framed.set(frameHeader(body.byteLength));
      framed.set(body, 4);
      stream.send(framed);
      await eventually('the stream to be reset', () => stream.status !== 'open');
      expect(victim.t.stats.malformedFramesRejected).toBe(1);
      expect(victim.messages).toEqual([]);
      const honest = await started();
      honest.t.addPeer(victim.t.id, victim.t.addrs());
      honest.t.send(victim.t.id, text('still here'));
      await eventually('an honest message', () => victim.messages.length === 1);
    });

    it.each([MSG_PROTOCOL, MSG2_PROTOCOL, REQ_PROTOCOL])(
      'resets a %s stream that announces a 4 GiB frame',
      async (protocol) => {
        const victim = await started();
        const stream: Stream = await bare.dialProtocol(multiaddr(victim.t.addrs()[0]!), protocol);
        stream.send(hugeHeader);
        stream.send(new Uint8Array(1024));
        await eventually('the stream to be reset', () => stream.status !== 'open');
        await eventually('the rejection to be counted', () => victim.t.stats.oversizeFramesRejected === 1);
        // The victim still serves honest peers.
        const honest = await started();
        await honest.t.dial(victim.t.addrs()[0]!);
        expect(await honest.t.request(victim.t.id, text('ok?'), 5_000)).toEqual(text('ok?'));
      },
    );

    it("rejects a response announcing a 4 GiB frame with 'too-large' (nothing allocated)", async () => {
      await bare.handle(REQ_PROTOCOL, (stream) => {
        stream.addEventListener('message', () => {
          if (stream.writeStatus === 'writable') stream.send(hugeHeader);
        });
      });
      const client = await started();
      client.t.addPeer(
        bare.peerId.toString(),
        bare.getMultiaddrs().map((ma) => ma.toString()),
      );
      const err = await client.t.request(bare.peerId.toString(), text('hi'), 5_000).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TransportError);
      expect((err as TransportError).code).toBe('too-large');
    });
  });
});

describe('parseKindFrame', () => {
  it('splits message and topic frames and names the field of a malformed one', () => {
    expect(parseKindFrame('p', Uint8Array.of(0, 9, 8))).toEqual({
      kind: 'message',
      payload: Uint8Array.of(9, 8),
    });
    expect(parseKindFrame('p', Uint8Array.of(KIND_TOPIC, 1, 0x74, 5))).toEqual({
      kind: 'topic',
      topic: 't',
      payload: Uint8Array.of(5),
    });
    expect(parseKindFrame('p', Uint8Array.of(KIND_REQUEST, 0, 0, 1, 2, 7))).toEqual({
      kind: 'request',
      id: 258,
      payload: Uint8Array.of(7),
    });
    expect(parseKindFrame('p', Uint8Array.of(KIND_RESPONSE, 0, 0, 0, 9, 1, 7))).toEqual({
      kind: 'response',
      id: 9,
      status: 1,
      payload: Uint8Array.of(7),
    });
    const cases: [Uint8Array, string][] = [
      [new Uint8Array(0), 'kind'],
      [Uint8Array.of(9), 'kind'],
      [Uint8Array.of(KIND_TOPIC), 'topicLength'],
      [Uint8Array.of(KIND_TOPIC, 0), 'topicLength'],
      [Uint8Array.of(KIND_TOPIC, 3, 0x74), 'topic'],
      [Uint8Array.of(KIND_TOPIC, 1, 0xff), 'topic'],
      [Uint8Array.of(KIND_REQUEST, 0, 0), 'requestId'],
      [Uint8Array.of(KIND_RESPONSE, 0, 0, 0, 1), 'status'],
    ];
    for (const [frame, field] of cases) {
      let err: unknown;
      try {
        parseKindFrame('peer-x', frame);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MalformedFrameError);
      expect((err as MalformedFrameError).field).toBe(field);
      expect((err as MalformedFrameError).message).toContain('peer-x');
    }
  });
});

describe('identity', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'shoal-identity-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('creates a key once (mode 0600) and reloads the same peer id', async () => {
    const dataDir = join(dir, 'data');
    const first = await loadOrCreateIdentity(dataDir);
    expect(first.created).toBe(true);
    expect(statSync(first.path).mode & 0o777).toBe(0o600);
    const second = await loadOrCreateIdentity(dataDir);
    expect(second.created).toBe(false);
    expect(second.peerId).toBe(first.peerId);
    expect(peerIdOf(second.privateKey)).toBe(first.peerId);
    // The transport built from it carries that id.
    const t = await Libp2pTransport.create({ privateKey: second.privateKey, listen: LOOPBACK });
    expect(t.id).toBe(first.peerId);
  });

  it('refuses a corrupt key, naming the file, and leaves it in place', async () => {
    const path = join(dir, 'identity.key');
    writeFileSync(path, 'definitely not a protobuf key');
    const err = await loadOrCreateIdentity(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdentityError);
    expect((err as Error).message).toContain(path);
    expect(readFileSync(path, 'utf8')).toBe('definitely not a protobuf key');
  });

  it('replaces a corrupt key only when asked, keeping the old bytes aside', async () => {
    const path = join(dir, 'identity.key');
    writeFileSync(path, 'garbage');
    writeFileSync(`${path}.corrupt-1`, 'an older casualty');
    const id = await loadOrCreateIdentity(dir, { replaceCorrupt: true });
    expect(id.created).toBe(true);
    expect(id.corruptKeptAt).toBe(`${path}.corrupt-2`);
    expect(readFileSync(`${path}.corrupt-2`, 'utf8')).toBe('garbage');
    expect((await loadOrCreateIdentity(dir)).peerId).toBe(id.peerId);
  });
});

describe('swarm key', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'shoal-swarm-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('generates the libp2p swarm-key format and parses it back', () => {
    const encoded = generateSwarmKey();
    expect(encoded).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/);
    const key = parseSwarmKey(text(encoded));
    expect(key.byteLength).toBe(32);
    expect(encodeSwarmKey(key)).toBe(encoded);
    expect(parseSwarmKey(encoded.replaceAll('\n', '\r\n'))).toEqual(key); // CRLF-edited files
  });

  it.each([
    ['a wrong header', '/key/swarm/psk/2.0.0/\n/base16/\n' + 'ab'.repeat(32), 'first line'],
    ['a wrong encoding', '/key/swarm/psk/1.0.0/\n/base64/\n' + 'ab'.repeat(32), 'second line'],
    ['a short key', '/key/swarm/psk/1.0.0/\n/base16/\n' + 'ab'.repeat(31), '64 hex digits'],
    ['non-hex digits', '/key/swarm/psk/1.0.0/\n/base16/\n' + 'zz'.repeat(32), 'not hex'],
    ['an empty file', '', 'first line'],
  ])('rejects %s with an error naming the file', (_label, content, hint) => {
    const path = join(dir, 'swarm.key');
    writeFileSync(path, content);
    expect(() => loadSwarmKey(path)).toThrow(SwarmKeyError);
    expect(() => loadSwarmKey(path)).toThrow(path);
    expect(() => loadSwarmKey(path)).toThrow(hint);
  });

  it('names a missing file', () => {
    const path = join(dir, 'nope.key');
    expect(() => loadSwarmKey(path)).toThrow(path);
  });

  it('keygen writes a 0600 file and refuses to overwrite unless forced', () => {
    const path = join(dir, 'cluster.key');
    const key = writeSwarmKeyFile(path);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(loadSwarmKey(path)).toEqual(key);
    expect(() => writeSwarmKeyFile(path)).toThrow(/already exists/);
    expect(loadSwarmKey(path)).toEqual(key);
    const replaced = writeSwarmKeyFile(path, { force: true });
    expect(replaced).not.toEqual(key);
    expect(loadSwarmKey(path)).toEqual(replaced);
  });
});
