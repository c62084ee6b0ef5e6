import './polyfill.ts';
import { type GossipSub, type GossipsubMessage, gossipsub, StrictNoSign } from '@libp2p/gossipsub';
import { identify } from '@libp2p/identify';
import type { Connection, PrivateKey, Stream, StreamMessageEvent } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { ping } from '@libp2p/ping';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { yamux } from '@libp2p/yamux';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
/**
 * The structured logger the transport writes to (a pino logger, or the agent's Logger — any
 * object of this shape). Declared here so gossip/ depends on nothing above it.
 */
export interface TransportLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): TransportLogger;
}

const nullLogger: TransportLogger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => nullLogger,
};

import { FRAME_HEADER_BYTES, FrameDecoder, FrameTooLargeError, frameHeader } from './frame.ts';
import { noiseTuned, tuneYamuxWindowUpdates } from './libp2p-tuning.ts';
import { encodeSwarmKey, parseSwarmKey, SWARM_KEY_BYTES } from './swarm-key.ts';
import {
  MAX_MESSAGE_BYTES,
  type PeerId,
  type Transport,
  TransportError,
  type TransportErrorCode,
  type TransportHandlers,
} from './transport.ts';

/**
 * The real Transport: libp2p 3 over TCP (noise + yamux, optionally inside a pnet private
 * network), with three channels:
 *
 * - `send`    → `/shoal/msg/1.0.0`: ONE long-lived outbound stream per peer carrying
 *               length-prefixed frames. Opening a stream costs a yamux SYN plus a
 *               multistream-select round trip; reusing one makes a send a single write and keeps
 *               per-peer order. If the stream dies, the next send opens a new one.
 * - `request` → `/shoal/req/1.0.0`: one short stream per request (framed request, framed
 *               response, close). Requests are rarer and must not head-of-line block each other.
 * - `publish` → gossipsub (@libp2p/gossipsub 17).
 *
 * Everything inbound reaches the handlers through `setImmediate`, so a handler never runs
 * inside a call the core made into the transport (no re-entrancy), and never after stop().
 */

export const MSG_PROTOCOL = '/shoal/msg/1.0.0';
/**
 * The message stream with a kind byte per frame, so one long-lived stream per peer carries both
 * direct messages and topic messages (direct fan-out, see `publish`):
 *   [KIND_MESSAGE][payload]
 *   [KIND_TOPIC][u8 topic length, 1…255][topic, UTF-8][payload]
 *   [KIND_REQUEST][u32 request id][payload]
 *   [KIND_RESPONSE][u32 request id][u8 status][payload]
 * Dialers offer 2.0.0 then 1.0.0; a peer that only speaks 1.0.0 (an older build) gets plain
 * message frames, its topic traffic goes through gossipsub and requests to it open a
 * /shoal/req/1.0.0 stream each.
 */
export const MSG2_PROTOCOL = '/shoal/msg/2.0.0';
export const REQ_PROTOCOL = '/shoal/req/1.0.0';
export const KIND_MESSAGE = 0x00;
export const KIND_TOPIC = 0x01;
/** [KIND_REQUEST][u32 BE request id][payload]: a request riding the message stream. */
export const KIND_REQUEST = 0x02;
/** [KIND_RESPONSE][u32 BE request id][u8 status][payload]: its answer, on the other direction's stream. */
export const KIND_RESPONSE = 0x03;
const MAX_TOPIC_BYTES = 255;
/** Largest /shoal/msg/2.0.0 frame body: kind, topic length, topic and a MAX_MESSAGE_BYTES payload. */
const MAX_MSG2_BODY = MAX_MESSAGE_BYTES + 2 + MAX_TOPIC_BYTES;
/**
 * Publish by direct fan-out (one frame per subscriber on its message stream) when a topic has at
 * most this many subscribers, all speaking /shoal/msg/2.0.0; above it, gossipsub. See `publish`.
 */
const DEFAULT_DIRECT_TOPIC_MAX_PEERS = 64;
/** addPeer re-writes unchanged addresses of a peer at most this often. */
const ADDR_REFRESH_MS = 60_000;

export interface Libp2pTransportOptions {
  privateKey: PrivateKey;
  /** Multiaddrs to listen on. Default: all interfaces, a random TCP port. */
  listen?: string[];
  /**
   * Private-network pre-shared key: the 32 key bytes (`loadSwarmKey`) or the raw contents of a
   * swarm.key file. Peers without the same key cannot complete a connection.
   */
  swarmKey?: Uint8Array;
  logger?: TransportLogger;
  /** Budget for dialling a peer (all its addresses) before a send is dropped. Default 5 s. */
  dialTimeoutMs?: number;
  /** Gossipsub heartbeat; lower forms meshes faster at some CPU cost. Default 200 ms. */
  heartbeatMs?: number;
  /**
   * Publish by direct fan-out while a topic has at most this many subscribers (default 64;
   * 0 = always gossipsub). See `publish`.
   */
  directTopicMaxPeers?: number;
}

/** Drop counters (best-effort traffic the transport gave up on), for metrics. */
export interface Libp2pTransportStats {
  sendDropped: number;
  publishDropped: number;
  /** Inbound streams reset for announcing a frame above MAX_MESSAGE_BYTES. */
  oversizeFramesRejected: number;
  /** Inbound streams reset for a malformed frame (unknown kind, bad topic header). */
  malformedFramesRejected: number;
  /** Publishes sent by direct fan-out / through gossipsub. */
  topicDirect: number;
  topicGossip: number;
  /** Frames (messages and direct topic copies) written to message streams, in how many writes, bytes. */
  framesSent: number;
  frameWrites: number;
  frameBytesSent: number;
  /** Frames and bytes read from message streams. */
  framesReceived: number;
  frameBytesReceived: number;
  /** Requests sent and answered; of those sent, how many rode a message stream (no stream of their own). */
  requestsSent: number;
  requestsServed: number;
  requestsFramed: number;
}

const DEFAULT_LISTEN = ['/ip4/0.0.0.0/tcp/0'];
const DEFAULT_DIAL_TIMEOUT_MS = 5_000;
const DEFAULT_HEARTBEAT_MS = 200;
/** Bytes of sends allowed to wait (for a dial, or in a slow stream's buffer) per peer. */
const OUTBOUND_BUFFER_LIMIT = 2 * MAX_MESSAGE_BYTES + 64 * 1024;
/** An inbound request must arrive complete within this, or its stream is reset (slowloris). */
const INBOUND_REQUEST_READ_TIMEOUT_MS = 60_000;
/** Error messages from a remote handler are cut to this many characters. */
const MAX_REMOTE_ERROR_CHARS = 2_000;
/** Concurrent request streams per connection and direction (libp2p's default is 32/64). */
const MAX_REQUEST_STREAMS = 1_024;

/** First byte of a response body. */
enum ResponseStatus {
  Ok = 0,
  /** The remote handler threw; the payload is its message (UTF-8). */
  HandlerError = 1,
  /** The remote handler's answer exceeded MAX_MESSAGE_BYTES; the payload is a message. */
  TooLarge = 2,
}

/**
 * Every published payload is prefixed with (8 random bytes per transport instance, 8-byte
 * counter). Unsigned gossipsub identifies a message by the SHA-256 of its data, so without this
 * two publishes of identical bytes (a periodic "nothing changed" heartbeat, say) would be
 * dropped as duplicates — and an agent restarting within seenTTL would have its first messages
 * swallowed. We keep gossipsub's content hash as the id (rather than reading our header) so a
 * peer cannot suppress someone else's message by reusing its header.
 */
const TOPIC_HEADER_BYTES = 16;

type State = 'new' | 'running' | 'stopped';
type Services = { identify: unknown; ping: unknown; pubsub: GossipSub };

export class Libp2pTransport implements Transport {
  readonly id: PeerId;
  readonly #node: Libp2p<Services>;
  readonly #log: TransportLogger;
  readonly #dialTimeoutMs: number;
  #state: State = 'new';
  #handlers: TransportHandlers | undefined;
  readonly #outbound = new Map<PeerId, OutboundMessages>();
  /** In-flight requests; stop() rejects each with 'stopped'. */
  readonly #pending = new Set<() => void>();
  /** Peer-store writes from addPeer still in flight; a dial to that peer waits for its write. */
  readonly #addrWrites = new Map<PeerId, Promise<void>>();
  readonly #topics = new Set<string>();
  readonly #topicHeader = new Uint8Array(TOPIC_HEADER_BYTES);
  #topicSeq = 0n;
  readonly #stats: Libp2pTransportStats = {
    sendDropped: 0,
    publishDropped: 0,
    oversizeFramesRejected: 0,
    malformedFramesRejected: 0,
    topicDirect: 0,
    topicGossip: 0,
    framesSent: 0,
    frameWrites: 0,
    frameBytesSent: 0,
    framesReceived: 0,
    frameBytesReceived: 0,
    requestsSent: 0,
    requestsServed: 0,
    requestsFramed: 0,
  };
  readonly #directTopicMaxPeers: number;
  /** Peers whose message stream negotiated /shoal/msg/1.0.0 (no topic frames): publish via gossipsub. */
  readonly #legacyPeers = new Set<PeerId>();
  /** Framed requests (on message streams) waiting for their response, by request id. */
  readonly #awaiting = new Map<
    number,
    { peer: PeerId; succeed: (v: Uint8Array) => void; fail: (e: TransportError) => void }
  >();
  #requestSeq = 0;
  #addrsCache: string[] | undefined;
  /** What addPeer last wrote to the peer store per peer, and when (repeats are skipped). */
  readonly #learned = new Map<PeerId, { addrs: string; at: number }>();
  /** Inbound deliveries waiting for the next turn of the event loop (one setImmediate for all). */
  #inbox: ((handlers: TransportHandlers) => void)[] = [];

  /** Build (not start) a transport. */
  static async create(options: Libp2pTransportOptions): Promise<Libp2pTransport> {
    const heartbeatInterval = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    const dialTimeout = options.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
    // Per-message costs of noise and yamux (gossip/libp2p-tuning.ts).
    tuneYamuxWindowUpdates();
    const node = await createLibp2p({
      start: false,
      privateKey: options.privateKey,
      nodeInfo: { name: 'shoal' },
      addresses: { listen: options.listen ?? DEFAULT_LISTEN },
      transports: [tcp()],
      connectionEncrypters: [noiseTuned()],
      // A burst of requests right after a dial can reach the remote before its side of the
      // connection is wired up; yamux parks such "early" streams, and by default *aborts the
      // whole connection* past 10 of them.
      streamMuxers: [yamux({ maxEarlyStreams: MAX_REQUEST_STREAMS })],
      ...(options.swarmKey === undefined
        ? {}
        : { connectionProtector: preSharedKey({ psk: swarmKeyFileBytes(options.swarmKey) }) }),
      connectionManager: {
        // Many agents share one host (tests, dense racks): the default of 5 inbound
        // connections per second per IP would refuse a cluster booting on 127.0.0.1.
        inboundConnectionThreshold: 100_000,
        maxIncomingPendingConnections: 1_000,
        maxConnections: 4_096,
        dialTimeout,
        addressDialTimeout: Math.min(dialTimeout, 3_000),
      },
      // No connection monitor: it pings every connection every 10 s on a new stream (protocol
      // negotiation, noise and pnet frames both ways) — with N agents, N−1 connections each, that
      // is (N−1)/10 streams per second per idle agent — only to measure round trips nothing here
      // reads, or to kill connections whose pings a busy event loop missed (churn). Liveness is
      // the membership protocol's job. Peers' pings are still answered (the ping service).
      connectionMonitor: { enabled: false },
      services: {
        identify: identify(),
        ping: ping(),
        pubsub: gossipsub({
          // Unsigned messages: signing + verifying costs ~3.5x the CPU of an unsigned broadcast
          // (GUIDE §5: 27 ms vs 7.5 ms to 20 agents). Signatures would only prove the publisher
          // of a message to peers relaying it; the cluster is closed by the pnet key, and
          // anything that matters (bids, awards, state) is checked by the core on receipt.
          globalSignaturePolicy: StrictNoSign,
          allowPublishToZeroTopicPeers: true,
          ignoreDuplicatePublishError: true,
          emitSelf: false,
          fallbackToFloodsub: false,
          heartbeatInterval,
          // Keep ~3 s of messages for IWANT replies whatever the heartbeat (defaults: 5 × 1 s).
          mcacheLength: Math.max(5, Math.ceil(3_000 / heartbeatInterval)),
          mcacheGossip: 3,
          // Room for a MAX_MESSAGE_BYTES payload plus our header and protobuf framing.
          maxInboundDataLength: MAX_MESSAGE_BYTES + 64 * 1024,
          // All agents of a test (or a dense host) share one IP: colocation scoring would push
          // them below the graylist threshold and prune them from the mesh — silently.
          scoreParams: { IPColocationFactorWeight: 0 },
        }),
      },
    });
    return new Libp2pTransport(node, options);
  }

  private constructor(node: Libp2p<Services>, options: Libp2pTransportOptions) {
    this.#node = node;
    this.id = node.peerId.toString();
    this.#log = (options.logger ?? nullLogger).child({ component: 'libp2p', peer: this.id });
    this.#dialTimeoutMs = options.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
    this.#directTopicMaxPeers = options.directTopicMaxPeers ?? DEFAULT_DIRECT_TOPIC_MAX_PEERS;
    crypto.getRandomValues(this.#topicHeader.subarray(0, 8));
    node.services.pubsub.addEventListener('gossipsub:message', (evt) => this.#onTopicMessage(evt.detail));
    node.addEventListener('self:peer:update', () => {
      this.#addrsCache = undefined;
    });
    node.addEventListener('peer:disconnect', (evt) => {
      const peer = evt.detail.toString();
      this.#deliver((h) => h.onPeerDisconnected?.(peer));
    });
  }

  get stats(): Readonly<Libp2pTransportStats> {
    return { ...this.#stats };
  }

  /** The underlying libp2p node, for diagnostics (connections, metrics). Do not send through it. */
  get libp2p(): Libp2p {
    return this.#node;
  }

  async start(handlers: TransportHandlers): Promise<void> {
    if (this.#state !== 'new') throw new Error(`transport cannot start: it is ${this.#state}`);
    this.#handlers = handlers;
    // Register before listening so no early inbound stream finds the protocol missing.
    await this.#node.handle(MSG2_PROTOCOL, (stream, connection) =>
      this.#onMessageStream(stream, connection, true),
    );
    await this.#node.handle(MSG_PROTOCOL, (stream, connection) =>
      this.#onMessageStream(stream, connection, false),
    );
    await this.#node.handle(REQ_PROTOCOL, (stream, connection) => this.#onRequestStream(stream, connection), {
      maxInboundStreams: MAX_REQUEST_STREAMS,
      maxOutboundStreams: MAX_REQUEST_STREAMS,
    });
    try {
      await this.#node.start();
    } catch (err) {
      // e.g. the listen port is taken: release whatever did start, and stay unusable.
      this.#state = 'stopped';
      await Promise.resolve(this.#node.stop()).catch(() => {});
      throw err;
    }
    this.#state = 'running';
    for (const topic of this.#topics) this.#node.services.pubsub.subscribe(topic);
    this.#log.info({ addrs: this.addrs() }, 'transport listening');
  }

  async stop(): Promise<void> {
    const wasRunning = this.#state === 'running';
    this.#state = 'stopped';
    for (const reject of [...this.#pending]) reject();
    this.#pending.clear();
    for (const channel of this.#outbound.values()) channel.close();
    this.#outbound.clear();
    if (wasRunning) await this.#node.stop();
  }

  addrs(): string[] {
    if (this.#state !== 'running') return [];
    // Cached until libp2p reports a change of our addresses: the core asks on every record
    // version and membership message.
    this.#addrsCache ??= this.#computeAddrs();
    return this.#addrsCache.slice();
  }

  #computeAddrs(): string[] {
    // libp2p already expands a wildcard listener (0.0.0.0, ::) into the interface addresses,
    // loopback included; what remains is to drop anything still unspecified (undialable) and
    // make every address name this peer, so a dialer can verify who it reached.
    const self = `/p2p/${this.id}`;
    const out: string[] = [];
    for (const ma of this.#node.getMultiaddrs()) {
      const { host } = tcpEndpoint(ma);
      if (host === '0.0.0.0' || host === '::') continue;
      const s = ma.toString();
      out.push(s.endsWith(self) ? s : `${s}${self}`);
    }
    return out;
  }

  send(to: PeerId, data: Uint8Array): void {
    if (this.#state !== 'running') {
      this.#dropSend(to, 'transport not running');
      return;
    }
    if (to === this.id) {
      this.#dropSend(to, 'send to self');
      return;
    }
    if (data.byteLength > MAX_MESSAGE_BYTES) {
      this.#log.warn(
        { to, bytes: data.byteLength, max: MAX_MESSAGE_BYTES },
        'send: message too large, dropped',
      );
      this.#dropSend(to, 'too large');
      return;
    }
    this.#channel(to).write(KIND_MESSAGE_PREFIX, data);
  }

  /** The long-lived message stream to `to` (opened on first use). */
  #channel(to: PeerId): OutboundMessages {
    let channel = this.#outbound.get(to);
    if (channel === undefined) {
      const created = new OutboundMessages(
        () => this.#openStream(to, [MSG2_PROTOCOL, MSG_PROTOCOL], AbortSignal.timeout(this.#dialTimeoutMs)),
        (count, topics, reason) => {
          for (let i = 0; i < count; i++) this.#dropSend(to, reason);
          for (let i = 0; i < topics; i++) this.#dropPublish('(direct)', reason);
        },
        () => {
          if (this.#outbound.get(to) === created) this.#outbound.delete(to);
        },
        (protocol) => {
          if (protocol === MSG_PROTOCOL) this.#legacyPeers.add(to);
          else this.#legacyPeers.delete(to);
        },
        this.#stats,
      );
      channel = created;
      this.#outbound.set(to, channel);
    }
    return channel;
  }

  request(to: PeerId, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.#state !== 'running')
      return Promise.reject(new TransportError('stopped', to, 'transport stopped'));
    if (data.byteLength > MAX_MESSAGE_BYTES) {
      return Promise.reject(
        new TransportError(
          'too-large',
          to,
          `request of ${data.byteLength} bytes exceeds ${MAX_MESSAGE_BYTES}`,
        ),
      );
    }
    if (to === this.id) return Promise.reject(new TransportError('unreachable', to, 'cannot request self'));
    this.#stats.requestsSent++;
    return new Promise<Uint8Array>((resolve, reject) => {
      const abort = new AbortController();
      let stream: Stream | undefined;
      let done = false;
      let requestId: number | undefined;
      const settled = (): void => {
        done = true;
        clearTimeout(timer);
        this.#pending.delete(onStop);
        if (requestId !== undefined) this.#awaiting.delete(requestId);
      };
      const fail = (err: TransportError): void => {
        if (done) return;
        settled();
        abort.abort(err);
        stream?.abort(err);
        reject(err);
      };
      const succeed = (value: Uint8Array): void => {
        if (done) return;
        settled();
        resolve(value);
      };
      const timer = setTimeout(
        () => fail(new TransportError('timeout', to, `no response from ${to} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onStop = (): void => fail(new TransportError('stopped', to, 'transport stopped'));
      this.#pending.add(onStop);

      const channel = this.#outbound.get(to);
      if (channel?.speaksKinds) {
        // On the long-lived message stream, batched with other traffic: opening a stream per
        // request (yamux SYN, protocol negotiation, close) cost ~5 ms of CPU per request.
        this.#stats.requestsFramed++;
        requestId = this.#nextRequestId();
        this.#awaiting.set(requestId, { peer: to, succeed, fail });
        channel.write(idPrefix(KIND_REQUEST, requestId), data);
        return;
      }
      this.#openStream(to, REQ_PROTOCOL, abort.signal)
        .then((opened) => {
          stream = opened;
          if (done) {
            opened.abort(new Error('request already settled'));
            return;
          }
          readResponse(opened, to, succeed, fail);
          // One write (one yamux frame, one noise message) for header and body.
          const framed = new Uint8Array(FRAME_HEADER_BYTES + data.byteLength);
          framed.set(frameHeader(data.byteLength));
          framed.set(data, FRAME_HEADER_BYTES);
          opened.send(framed);
          // Half-close: the responder sees the end of the request; we keep reading.
          opened.close().catch(() => {});
        })
        .catch((err: unknown) =>
          fail(new TransportError('unreachable', to, `cannot reach ${to}: ${messageOf(err)}`)),
        );
    });
  }

  #nextRequestId(): number {
    for (;;) {
      this.#requestSeq = (this.#requestSeq + 1) >>> 0;
      if (!this.#awaiting.has(this.#requestSeq)) return this.#requestSeq;
    }
  }

  /** A request that arrived on a message stream: run the handler, answer on our stream to `from`. */
  #serveFramed(from: PeerId, id: number, payload: Uint8Array): void {
    this.#deliver((h) => {
      this.#stats.requestsServed++;
      const respond = (status: ResponseStatus, body: Uint8Array): void => {
        if (this.#state !== 'running') return;
        this.#channel(from).write(responsePrefix(id, status), body);
      };
      const answered = (answer: unknown): void => {
        if (!(answer instanceof Uint8Array)) {
          respond(ResponseStatus.HandlerError, utf8('request handler returned no bytes'));
        } else if (answer.byteLength > MAX_MESSAGE_BYTES) {
          this.#log.warn({ from, bytes: answer.byteLength }, 'request handler answer too large');
          respond(
            ResponseStatus.TooLarge,
            utf8(`response of ${answer.byteLength} bytes exceeds ${MAX_MESSAGE_BYTES}`),
          );
        } else respond(ResponseStatus.Ok, answer);
      };
      const failed = (err: unknown): void =>
        respond(ResponseStatus.HandlerError, utf8(messageOf(err).slice(0, MAX_REMOTE_ERROR_CHARS)));
      let answer: Uint8Array | Promise<Uint8Array>;
      try {
        answer = h.onRequest(from, payload);
      } catch (err) {
        failed(err);
        return;
      }
      if (answer instanceof Promise) answer.then(answered, failed);
      else answered(answer);
    });
  }

  /** The answer to one of our framed requests; only the peer we asked can settle it. */
  #onFramedResponse(from: PeerId, id: number, status: number, payload: Uint8Array): void {
    const waiting = this.#awaiting.get(id);
    if (waiting === undefined || waiting.peer !== from) return; // late (timed out) or not ours
    if (status === ResponseStatus.Ok) waiting.succeed(payload);
    else if (status === ResponseStatus.HandlerError)
      waiting.fail(new TransportError('remote', from, new TextDecoder().decode(payload)));
    else if (status === ResponseStatus.TooLarge)
      waiting.fail(new TransportError('too-large', from, new TextDecoder().decode(payload)));
    else waiting.fail(new TransportError('remote', from, `malformed response from ${from}`));
  }

  subscribe(topic: string): void {
    if (this.#topics.has(topic)) return;
    this.#topics.add(topic);
    if (this.#state === 'running') this.#node.services.pubsub.subscribe(topic);
  }

  publish(topic: string, data: Uint8Array): void {
    if (this.#state !== 'running') {
      this.#dropPublish(topic, 'transport not running');
      return;
    }
    if (data.byteLength > MAX_MESSAGE_BYTES) {
      this.#log.warn(
        { topic, bytes: data.byteLength, max: MAX_MESSAGE_BYTES },
        'publish: message too large, dropped',
      );
      this.#dropPublish(topic, 'too large');
      return;
    }
    const pubsub = this.#node.services.pubsub;
    const subscribers = pubsub.getSubscribers(topic);
    if (
      subscribers.length <= this.#directTopicMaxPeers &&
      subscribers.every((p) => !this.#legacyPeers.has(p.toString()))
    ) {
      // Direct fan-out: gossipsub with floodPublish already sends a publisher's message to every
      // subscriber it knows; the mesh forwards then deliver each message 5–6 times more per
      // agent in a small, fully connected cluster (each copy decoded, hashed and dropped). One
      // frame per subscriber on its message stream — batched with the other traffic to it —
      // reaches the same peers once. Above the threshold gossipsub's relaying reaches peers this
      // node is not connected to.
      this.#stats.topicDirect++;
      const header = topicPrefix(topic);
      if (header === undefined) {
        this.#dropPublish(topic, 'topic name longer than 255 bytes');
        return;
      }
      for (const p of subscribers) this.#channel(p.toString()).write(header, data, true);
      return;
    }
    this.#stats.topicGossip++;
    const framed = new Uint8Array(TOPIC_HEADER_BYTES + data.byteLength);
    framed.set(this.#topicHeader);
    new DataView(framed.buffer).setBigUint64(8, this.#topicSeq++, false);
    framed.set(data, TOPIC_HEADER_BYTES);
    pubsub.publish(topic, framed).catch((err: unknown) => this.#dropPublish(topic, messageOf(err)));
  }

  addPeer(peer: PeerId, addrs: readonly string[]): void {
    if (peer === this.id || this.#state === 'stopped') return;
    let peerId: ReturnType<typeof peerIdFromString>;
    try {
      peerId = peerIdFromString(peer);
    } catch (err) {
      this.#log.warn({ peer, err: messageOf(err) }, 'addPeer: not a peer id, ignored');
      return;
    }
    const multiaddrs: Multiaddr[] = [];
    for (const addr of addrs) {
      try {
        const ma = multiaddr(addr);
        const embedded = ma.getComponents().find((c) => c.name === 'p2p')?.value;
        // An address naming another peer would make the dial fail the noise handshake anyway.
        if (embedded === undefined || embedded === peer) multiaddrs.push(ma);
        else this.#log.warn({ peer, addr }, 'addPeer: address belongs to another peer, ignored');
      } catch {
        this.#log.warn({ peer, addr }, 'addPeer: invalid multiaddr, ignored');
      }
    }
    if (multiaddrs.length === 0) return;
    // Membership hands us a peer's addresses with every update about it: a peer-store merge
    // (locks, protobuf, datastore) each time was ~1% of a busy agent. Skip unchanged addresses,
    // refreshing them at most once a minute.
    const key = addrs.join(' ');
    const now = Date.now();
    const last = this.#learned.get(peer);
    if (last !== undefined && last.addrs === key && now - last.at < ADDR_REFRESH_MS) return;
    if (this.#learned.size > 100_000) this.#learned.clear();
    this.#learned.set(peer, { addrs: key, at: now });
    // Chain writes per peer so they land in call order, and let dials wait for the latest one.
    const previous = this.#addrWrites.get(peer) ?? Promise.resolve();
    const write: Promise<void> = previous
      .then(() => this.#node.peerStore.merge(peerId, { multiaddrs }))
      .then(
        () => {},
        (err: unknown) => {
          this.#learned.delete(peer);
          this.#log.warn({ peer, err: messageOf(err) }, 'addPeer: peer store write failed');
        },
      )
      .finally(() => {
        if (this.#addrWrites.get(peer) === write) this.#addrWrites.delete(peer);
      });
    this.#addrWrites.set(peer, write);
  }

  async dial(addr: string): Promise<PeerId> {
    if (this.#state !== 'running') throw new TransportError('stopped', undefined, 'transport stopped');
    let ma: Multiaddr;
    try {
      ma = multiaddr(addr);
    } catch (err) {
      throw new TransportError('unreachable', undefined, `invalid multiaddr "${addr}": ${messageOf(err)}`);
    }
    try {
      const connection = await this.#node.dial(ma, { signal: AbortSignal.timeout(this.#dialTimeoutMs) });
      return connection.remotePeer.toString();
    } catch (err) {
      throw new TransportError('unreachable', undefined, `cannot dial ${addr}: ${messageOf(err)}`);
    }
  }

  // ---- inbound ----------------------------------------------------------------------------

  #onMessageStream(stream: Stream, connection: Connection, kinds: boolean): void {
    const from = connection.remotePeer.toString();
    const decoder = new FrameDecoder(kinds ? MAX_MSG2_BODY : MAX_MESSAGE_BYTES);
    stream.addEventListener('message', (evt) => {
      let frames: Uint8Array[];
      const chunk = chunkBytes(evt);
      this.#stats.frameBytesReceived += chunk.byteLength;
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        this.#rejectStream(stream, from, err);
        return;
      }
      this.#stats.framesReceived += frames.length;
      for (const frame of frames) {
        if (!kinds) {
          this.#deliver((h) => h.onMessage(from, frame));
          continue;
        }
        let parsed: ParsedFrame;
        try {
          parsed = parseKindFrame(from, frame);
        } catch (err) {
          this.#rejectStream(stream, from, err);
          return;
        }
        switch (parsed.kind) {
          case 'message': {
            const payload = parsed.payload;
            this.#deliver((h) => h.onMessage(from, payload));
            break;
          }
          case 'topic': {
            const { topic, payload } = parsed;
            // A topic we do not (or no longer) subscribe to: dropped, like gossipsub does.
            if (this.#topics.has(topic)) this.#deliver((h) => h.onTopic(topic, from, payload));
            break;
          }
          case 'request':
            this.#serveFramed(from, parsed.id, parsed.payload);
            break;
          case 'response':
            this.#onFramedResponse(from, parsed.id, parsed.status, parsed.payload);
            break;
        }
      }
    });
    // We never write on this stream; close our half once the sender closes theirs.
    stream.addEventListener('remoteCloseWrite', () => {
      stream.close().catch(() => {});
    });
  }

  #onRequestStream(stream: Stream, connection: Connection): void {
    const from = connection.remotePeer.toString();
    const decoder = new FrameDecoder(MAX_MESSAGE_BYTES);
    const readTimer = setTimeout(
      () => stream.abort(new Error('request not received in time')),
      INBOUND_REQUEST_READ_TIMEOUT_MS,
    );
    stream.addEventListener('close', () => clearTimeout(readTimer));
    const onChunk = (evt: StreamMessageEvent): void => {
      let frames: Uint8Array[];
      try {
        frames = decoder.push(chunkBytes(evt));
      } catch (err) {
        clearTimeout(readTimer);
        this.#rejectStream(stream, from, err);
        return;
      }
      const request = frames[0];
      if (request === undefined) return;
      clearTimeout(readTimer);
      stream.removeEventListener('message', onChunk);
      void this.#answer(stream, from, request);
    };
    stream.addEventListener('message', onChunk);
  }

  async #answer(stream: Stream, from: PeerId, request: Uint8Array): Promise<void> {
    // Yield to the event loop first: the handler must not run inside libp2p's event dispatch.
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#stats.requestsServed++;
    const handlers = this.#handlers;
    if (this.#state !== 'running' || handlers === undefined) {
      stream.abort(new Error('transport stopped'));
      return;
    }
    let status: ResponseStatus;
    let payload: Uint8Array;
    try {
      const answer = await handlers.onRequest(from, request);
      if (!(answer instanceof Uint8Array)) throw new Error('request handler returned no bytes');
      if (answer.byteLength > MAX_MESSAGE_BYTES) {
        status = ResponseStatus.TooLarge;
        payload = utf8(`response of ${answer.byteLength} bytes exceeds ${MAX_MESSAGE_BYTES}`);
        this.#log.warn({ from, bytes: answer.byteLength }, 'request handler answer too large');
      } else {
        status = ResponseStatus.Ok;
        payload = answer;
      }
    } catch (err) {
      status = ResponseStatus.HandlerError;
      payload = utf8(messageOf(err).slice(0, MAX_REMOTE_ERROR_CHARS));
    }
    if (this.#state !== 'running' || stream.writeStatus !== 'writable') return; // caller gave up
    try {
      // One write for header, status and payload.
      const out = new Uint8Array(FRAME_HEADER_BYTES + 1 + payload.byteLength);
      out.set(frameHeader(1 + payload.byteLength));
      out[FRAME_HEADER_BYTES] = status;
      out.set(payload, FRAME_HEADER_BYTES + 1);
      stream.send(out);
      await stream.close();
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(messageOf(err)));
    }
  }

  #onTopicMessage(event: GossipsubMessage): void {
    const { msg, propagationSource } = event;
    if (!this.#topics.has(msg.topic)) return;
    const from = propagationSource.toString();
    if (msg.data.byteLength < TOPIC_HEADER_BYTES) {
      this.#log.warn({ from, topic: msg.topic }, 'topic message without shoal header, dropped');
      return;
    }
    // Copy: gossipsub keeps `msg.data` in its cache to forward; a handler must not alias it.
    const data = msg.data.slice(TOPIC_HEADER_BYTES);
    const topic = msg.topic;
    this.#deliver((h) => h.onTopic(topic, from, data));
  }

  /**
   * Run `fn` with the handlers on a later turn of the event loop, unless stopped by then. All
   * deliveries queued until then run in one callback, so whatever the handlers send in reply goes
   * out as one write per peer (the outbound queues flush once, after the callback) instead of one
   * per inbound message.
   */
  #deliver(fn: (handlers: TransportHandlers) => void): void {
    this.#inbox.push(fn);
    if (this.#inbox.length > 1) return;
    setImmediate(() => {
      const batch = this.#inbox;
      this.#inbox = [];
      for (const f of batch) {
        const handlers = this.#handlers;
        if (this.#state !== 'running' || handlers === undefined) return;
        try {
          f(handlers);
        } catch (err) {
          this.#log.error({ err: messageOf(err) }, 'transport handler threw');
        }
      }
    });
  }

  #rejectStream(stream: Stream, from: PeerId, err: unknown): void {
    if (err instanceof FrameTooLargeError) {
      this.#stats.oversizeFramesRejected++;
      this.#log.warn({ from, announced: err.announced }, 'peer announced an oversize frame; stream reset');
    } else if (err instanceof MalformedFrameError) {
      this.#stats.malformedFramesRejected++;
      this.#log.warn(
        { peer: err.peer, field: err.field, problem: err.problem },
        'malformed frame; stream reset',
      );
    }
    stream.abort(err instanceof Error ? err : new Error(messageOf(err)));
  }

  // ---- outbound ---------------------------------------------------------------------------

  async #openStream(to: PeerId, protocol: string | string[], signal: AbortSignal): Promise<Stream> {
    await this.#addrWrites.get(to);
    const stream = await this.#node.dialProtocol(peerIdFromString(to), protocol, { signal });
    stream.maxReadBufferLength = OUTBOUND_BUFFER_LIMIT;
    if (this.#state !== 'running') {
      stream.abort(new Error('transport stopped'));
      throw new Error('transport stopped');
    }
    return stream;
  }

  #dropSend(to: PeerId, reason: string): void {
    this.#stats.sendDropped++;
    this.#log.debug({ to, reason }, 'send dropped');
  }

  #dropPublish(topic: string, reason: string): void {
    this.#stats.publishDropped++;
    this.#log.debug({ topic, reason }, 'publish dropped');
  }
}

/** One queued frame: its kind prefix (kind byte, and topic header for topic frames) and payload. */
interface Queued {
  prefix: Uint8Array;
  data: Uint8Array;
  topic: boolean;
}

/**
 * The sends to one peer: a single long-lived stream, opened on first use and re-opened after
 * it dies. Sends are queued and flushed once per microtask as ONE write: every stream write is
 * a yamux frame, a noise encryption and a socket write, so coalescing a burst (a gossip round
 * fanning out, a retransmit queue draining) cuts that cost per batch instead of per message.
 * Sends made while the stream opens wait in the same bounded queue; if the open fails they are
 * dropped (best effort — the membership layer above notices silence, not the transport).
 * Topic frames need /shoal/msg/2.0.0; on a stream that negotiated 1.0.0 they are dropped (the
 * transport then publishes through gossipsub while that peer subscribes).
 */
class OutboundMessages {
  #stream: Stream | undefined;
  /** The stream speaks /shoal/msg/2.0.0 (kind bytes); false for 1.0.0. */
  #kinds = true;
  #opening = false;
  #flushScheduled = false;
  #closed = false;
  #queue: Queued[] = [];
  /** Framed size (headers and prefixes included) of everything in #queue. */
  #queuedBytes = 0;

  constructor(
    private readonly open: () => Promise<Stream>,
    private readonly drop: (messages: number, topics: number, reason: string) => void,
    /** Called when the channel holds nothing (stream gone, nothing queued): forget it. */
    private readonly idle: () => void,
    /** Called with the protocol each opened stream negotiated. */
    private readonly negotiated: (protocol: string) => void,
    private readonly stats: Pick<Libp2pTransportStats, 'framesSent' | 'frameWrites' | 'frameBytesSent'>,
  ) {}

  /** A stream is open and speaks /shoal/msg/2.0.0 (frames with kinds: topics, requests). */
  get speaksKinds(): boolean {
    return this.#stream !== undefined && this.#stream.status === 'open' && this.#kinds;
  }

  write(prefix: Uint8Array, data: Uint8Array, topic = false): void {
    const framed = FRAME_HEADER_BYTES + prefix.byteLength + data.byteLength;
    // Yamux keeps buffering while the peer's window is exhausted; cap what one peer may hold
    // (queued here plus buffered in the stream) so a stuck peer cannot grow our heap unbounded.
    const buffered = this.#queuedBytes + (this.#stream?.writeBufferLength ?? 0);
    if (buffered + framed > OUTBOUND_BUFFER_LIMIT) {
      this.drop(topic ? 0 : 1, topic ? 1 : 0, this.#opening ? 'dial queue full' : 'peer too slow');
      return;
    }
    this.#queue.push({ prefix, data, topic });
    this.#queuedBytes += framed;
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  close(): void {
    this.#closed = true;
    this.#dropQueue('transport stopped');
    const stream = this.#stream;
    this.#stream = undefined;
    stream?.close().catch(() => stream.abort(new Error('transport stopped')));
  }

  #dropQueue(reason: string): void {
    let topics = 0;
    for (const q of this.#queue) if (q.topic) topics++;
    const messages = this.#queue.length - topics;
    this.#queue = [];
    this.#queuedBytes = 0;
    if (messages + topics > 0) this.drop(messages, topics, reason);
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#closed || this.#queue.length === 0) return;
    const stream = this.#stream;
    if (stream === undefined || stream.status !== 'open' || stream.writeStatus !== 'writable') {
      this.#stream = undefined;
      if (!this.#opening) void this.#openAndFlush();
      return;
    }
    let batch = this.#queue;
    let bytes = this.#queuedBytes;
    this.#queue = [];
    this.#queuedBytes = 0;
    if (!this.#kinds) {
      // A 1.0.0 stream: plain message frames, no kind byte; topic frames cannot travel here.
      const topics = batch.filter((q) => q.topic).length;
      if (topics > 0) {
        this.drop(0, topics, 'peer speaks /shoal/msg/1.0.0 (no topic frames)');
        batch = batch.filter((q) => !q.topic);
      }
      bytes = batch.reduce((n, q) => n + FRAME_HEADER_BYTES + q.data.byteLength, 0);
      if (batch.length === 0) return;
    }
    const buf = new Uint8Array(bytes);
    const view = new DataView(buf.buffer);
    let at = 0;
    for (const q of batch) {
      const prefix = this.#kinds ? q.prefix : EMPTY;
      view.setUint32(at, prefix.byteLength + q.data.byteLength, false);
      at += FRAME_HEADER_BYTES;
      buf.set(prefix, at);
      at += prefix.byteLength;
      buf.set(q.data, at);
      at += q.data.byteLength;
    }
    this.stats.frameWrites++;
    this.stats.framesSent += batch.length;
    this.stats.frameBytesSent += bytes;
    try {
      stream.send(buf);
    } catch (err) {
      this.#stream = undefined;
      stream.abort(err instanceof Error ? err : new Error(messageOf(err)));
      const topics = batch.filter((q) => q.topic).length;
      this.drop(batch.length - topics, topics, messageOf(err));
    }
  }

  async #openAndFlush(): Promise<void> {
    this.#opening = true;
    let stream: Stream;
    try {
      stream = await this.open();
    } catch (err) {
      this.#opening = false;
      this.#dropQueue(`cannot open stream: ${messageOf(err)}`);
      this.idle();
      return;
    }
    this.#opening = false;
    if (this.#closed) {
      stream.abort(new Error('transport stopped'));
      return;
    }
    this.#kinds = stream.protocol !== MSG_PROTOCOL;
    this.negotiated(stream.protocol ?? MSG2_PROTOCOL);
    stream.addEventListener('close', () => {
      if (this.#stream !== stream) return;
      this.#stream = undefined;
      if (!this.#opening && this.#queue.length === 0) this.idle();
    });
    this.#stream = stream;
    this.#flush();
  }
}

const EMPTY = new Uint8Array(0);
const KIND_MESSAGE_PREFIX = Uint8Array.of(KIND_MESSAGE);
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
/** Topic frame prefixes by topic (a handful of topics per agent). */
const topicPrefixes = new Map<string, Uint8Array>();

/** [KIND_TOPIC][length][topic], or undefined when the topic name exceeds 255 bytes. */
function topicPrefix(topic: string): Uint8Array | undefined {
  let prefix = topicPrefixes.get(topic);
  if (prefix === undefined) {
    const name = utf8Encoder.encode(topic);
    if (name.byteLength === 0 || name.byteLength > MAX_TOPIC_BYTES) return undefined;
    prefix = new Uint8Array(2 + name.byteLength);
    prefix[0] = KIND_TOPIC;
    prefix[1] = name.byteLength;
    prefix.set(name, 2);
    if (topicPrefixes.size < 1024) topicPrefixes.set(topic, prefix);
  }
  return prefix;
}

/** A /shoal/msg/2.0.0 frame that does not follow the format; names the peer and the field. */
export class MalformedFrameError extends Error {
  constructor(
    readonly peer: PeerId,
    readonly field: string,
    readonly problem: string,
  ) {
    super(`malformed frame from ${peer}: ${field}: ${problem}`);
    this.name = 'MalformedFrameError';
  }
}

export type ParsedFrame =
  | { kind: 'message'; payload: Uint8Array }
  | { kind: 'topic'; topic: string; payload: Uint8Array }
  | { kind: 'request'; id: number; payload: Uint8Array }
  | { kind: 'response'; id: number; status: number; payload: Uint8Array };

/** [kind][u32 BE id], the head of a request frame. */
function idPrefix(kind: number, id: number): Uint8Array {
  const out = new Uint8Array(5);
  out[0] = kind;
  new DataView(out.buffer).setUint32(1, id, false);
  return out;
}

/** [KIND_RESPONSE][u32 BE id][status], the head of a response frame. */
function responsePrefix(id: number, status: number): Uint8Array {
  const out = new Uint8Array(6);
  out[0] = KIND_RESPONSE;
  new DataView(out.buffer).setUint32(1, id, false);
  out[5] = status;
  return out;
}

/** Split a /shoal/msg/2.0.0 frame body into its kind, header fields and payload (validated). */
export function parseKindFrame(peer: PeerId, frame: Uint8Array): ParsedFrame {
  if (frame.byteLength === 0) throw new MalformedFrameError(peer, 'kind', 'empty frame');
  const kind = frame[0]!;
  if (kind === KIND_MESSAGE) return { kind: 'message', payload: frame.subarray(1) };
  if (kind === KIND_REQUEST || kind === KIND_RESPONSE) {
    const head = kind === KIND_REQUEST ? 5 : 6;
    if (frame.byteLength < 5) throw new MalformedFrameError(peer, 'requestId', 'truncated');
    const id = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(1, false);
    if (kind === KIND_REQUEST) return { kind: 'request', id, payload: frame.subarray(head) };
    if (frame.byteLength < head) throw new MalformedFrameError(peer, 'status', 'missing');
    if (frame.byteLength - head > MAX_MESSAGE_BYTES + 1)
      throw new MalformedFrameError(peer, 'payload', `more than ${MAX_MESSAGE_BYTES} bytes`);
    return { kind: 'response', id, status: frame[5]!, payload: frame.subarray(head) };
  }
  if (kind !== KIND_TOPIC) throw new MalformedFrameError(peer, 'kind', `unknown frame kind ${kind}`);
  if (frame.byteLength < 2) throw new MalformedFrameError(peer, 'topicLength', 'missing');
  const length = frame[1]!;
  if (length === 0) throw new MalformedFrameError(peer, 'topicLength', 'expected 1…255, got 0');
  if (frame.byteLength < 2 + length)
    throw new MalformedFrameError(
      peer,
      'topic',
      `announced ${length} bytes, frame has ${frame.byteLength - 2}`,
    );
  let topic: string;
  try {
    topic = utf8Decoder.decode(frame.subarray(2, 2 + length));
  } catch {
    throw new MalformedFrameError(peer, 'topic', 'not valid UTF-8');
  }
  if (frame.byteLength - 2 - length > MAX_MESSAGE_BYTES)
    throw new MalformedFrameError(peer, 'payload', `more than ${MAX_MESSAGE_BYTES} bytes`);
  return { kind: 'topic', topic, payload: frame.subarray(2 + length) };
}

/** Read one framed response from a request stream and settle the request with it. */
function readResponse(
  stream: Stream,
  peer: PeerId,
  succeed: (value: Uint8Array) => void,
  fail: (err: TransportError) => void,
): void {
  const decoder = new FrameDecoder(MAX_MESSAGE_BYTES + 1);
  stream.addEventListener('message', (evt) => {
    let frames: Uint8Array[];
    try {
      frames = decoder.push(chunkBytes(evt));
    } catch (err) {
      fail(
        err instanceof FrameTooLargeError
          ? new TransportError('too-large', peer, `response from ${peer} announced ${err.announced} bytes`)
          : new TransportError('unreachable', peer, messageOf(err)),
      );
      return;
    }
    const body = frames[0];
    if (body === undefined) return;
    const payload = body.subarray(1);
    switch (body[0]) {
      case ResponseStatus.Ok:
        return succeed(payload);
      case ResponseStatus.HandlerError:
        return fail(new TransportError('remote', peer, new TextDecoder().decode(payload)));
      case ResponseStatus.TooLarge:
        return fail(new TransportError('too-large', peer, new TextDecoder().decode(payload)));
      default:
        return fail(new TransportError('remote', peer, `malformed response from ${peer}`));
    }
  });
  stream.addEventListener('close', (evt) => {
    const reason = evt.error === undefined ? 'stream closed' : messageOf(evt.error);
    fail(new TransportError('unreachable', peer, `${peer} closed the request before answering: ${reason}`));
  });
}

function swarmKeyFileBytes(key: Uint8Array): Uint8Array {
  // Accept the parsed 32 bytes or a whole swarm.key file; pnet wants the file format.
  const raw = key.byteLength === SWARM_KEY_BYTES ? key : parseSwarmKey(key);
  return utf8(encodeSwarmKey(raw));
}

function chunkBytes(evt: StreamMessageEvent): Uint8Array {
  return evt.data instanceof Uint8Array ? evt.data : evt.data.subarray();
}

function tcpEndpoint(ma: Multiaddr): { host?: string; port?: number } {
  let host: string | undefined;
  let port: number | undefined;
  for (const c of ma.getComponents()) {
    if (c.name === 'ip4' || c.name === 'ip6') host = c.value;
    else if (c.name === 'tcp' && c.value !== undefined) port = Number(c.value);
  }
  return { host, port };
}

function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// Re-exported so callers can match on codes without importing transport.ts separately.
export type { TransportErrorCode };
