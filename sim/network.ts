import {
  MAX_MESSAGE_BYTES,
  type PeerId,
  type Transport,
  TransportError,
  type TransportHandlers,
} from '../gossip/transport.ts';
import { hashString, type Prng } from '../node/core/random.ts';
import type { EventLoop, TimerGroup } from './clock.ts';

/**
 * A simulated network on one EventLoop: every SimTransport created by a SimNetwork talks to the
 * others through loop events, deterministically for a given Prng and sequence of calls.
 *
 * Model (see docs/simulator.md):
 * - One message = one loop event at the receiver, at send time + a latency drawn per message:
 *   `baseMs + jitterMs * u`, u uniform in [0, 1) from the network's Prng. The link model is the
 *   per-link override if set, else the zone-pair entry (nodes may have a zone), else the default.
 *   Messages on one link may be reordered by jitter unless `fifo` is set.
 * - Loss: each message is dropped independently with the link's probability (drawn at send).
 * - Partitions: a message is delivered only if its link is open both when it is sent and when it
 *   arrives. Partitions may be one-way.
 * - Crash: the node stops receiving; every message in flight towards it is dropped (its inbox
 *   timer group is cancelled); its pending requests never settle (the process is gone); the old
 *   transport object becomes inert. `restart(id)` lets a new transport with that id be created.
 * - Request = two legs (request, response), each subject to latency, loss and partitions; the
 *   caller's timeout runs on virtual time. A request to a node that does not exist, has crashed or
 *   has not started fails with 'unreachable' after one leg's latency (a refused connection); a
 *   lost or partitioned request fails with 'timeout'.
 * - Publish (gossipsub, simplified): each subscriber of the topic other than the publisher that
 *   exists, is alive and is not partitioned from the publisher receives the message once, after
 *   two latency draws of the publisher→subscriber link (≈ two mesh hops), subject to one loss
 *   draw of that link. `from` is the publisher. Subscriptions take effect immediately. A faithful
 *   mesh model (D-regular mesh, relays through third nodes, IHAVE/IWANT, duplicate traffic) is
 *   future work; counters report topic traffic separately so reports can scale it.
 * - Reachability: like libp2p, a node can address a peer only after dial(), addPeer(), or an
 *   inbound message from that peer; sends to other peers are dropped and requests fail
 *   'unreachable' at once. `routeById: true` lifts this (any live node is addressable) for very
 *   large runs. Publish ignores it (the mesh is assumed connected).
 * - Oversize messages (> maxMessageBytes) are dropped by send/publish (never thrown) and rejected
 *   'too-large' by request; an oversize answer rejects the caller with 'too-large'.
 * - Delivery handlers run as loop events (never re-entrantly); an exception thrown by onMessage or
 *   onTopic propagates out of the loop's run call (a bug in the agent fails the simulation loudly),
 *   while one thrown by onRequest becomes a 'remote' error for the caller. Bytes are copied on
 *   send, and each receiver gets its own copy, so senders and receivers may mutate their buffers.
 * - Determinism: all random draws come from the network's Prng in call order; subscribers are
 *   visited in subscription order (Set insertion order); nothing reads the wall clock.
 */

export interface LinkModel {
  /** Fixed one-way latency, ms. */
  baseMs: number;
  /** Extra latency uniform in [0, jitterMs), ms. */
  jitterMs: number;
  /** Probability in [0, 1] that one message on this link is lost. */
  loss: number;
  /** A heavy tail added on top of base + jitter (default none). */
  tail?: LatencyTail;
}

/**
 * Extra latency with a long tail, drawn per message:
 * - `lognormal`: medianMs · e^(sigma·Z), Z standard normal (Box–Muller, two uniform draws);
 * - `pareto` (Lomax, shifted so the minimum is 0): scaleMs · ((1 − U)^(−1/alpha) − 1), one draw.
 *   alpha ≤ 2 has infinite variance, alpha ≤ 1 an infinite mean — cap it with `maxMs`.
 * `maxMs` (default: none) clamps a draw.
 */
export type LatencyTail =
  | { kind: 'lognormal'; medianMs: number; sigma: number; maxMs?: number }
  | { kind: 'pareto'; scaleMs: number; alpha: number; maxMs?: number };

/**
 * A host's network interface: bytes per second out (`upBytesPerSec`) and in (`downBytesPerSec`);
 * a missing field is unlimited. A message occupies the sender's uplink for bytes/up after the
 * uplink is free (FIFO), then travels the link latency, then occupies the receiver's downlink for
 * bytes/down after it is free. Simplification: the receiver's downlink is reserved when the message
 * is sent (in send order), not when it arrives.
 */
export interface Bandwidth {
  upBytesPerSec?: number;
  downBytesPerSec?: number;
}

export interface SimNetworkOptions {
  /** Default link model. Default { baseMs: 1, jitterMs: 1, loss: 0 }. */
  link?: Partial<LinkModel>;
  /** Link models between zones: zoneLatency[a][b] (looked up both ways). Fields not given fall back to `link`. */
  zoneLinks?: Record<string, Record<string, Partial<LinkModel>>>;
  /** Keep per-link FIFO order (a message never overtakes an earlier one on the same link). Default false. */
  fifo?: boolean;
  /** Largest message carried. Default MAX_MESSAGE_BYTES. */
  maxMessageBytes?: number;
  /** How long a dial towards a partitioned node waits before failing, ms. Default 5000. */
  dialTimeoutMs?: number;
  /** Observe every delivery and drop (for traces and determinism checks). */
  trace?: (ev: TraceEvent) => void;
  /**
   * Let any transport reach any live node by id, without having dialed it or learned it via
   * addPeer. Default false: like libp2p, a node reaches a peer only after dial(), addPeer(), or an
   * inbound message from it (which opens the connection both ways). true saves the per-node
   * known-peer sets (O(peers) memory each) in very large runs.
   */
  routeById?: boolean;
  /** Default bandwidth of every host (default unlimited); per host: createTransport / setBandwidth. */
  bandwidth?: Bandwidth;
  /**
   * Copies of a published message charged to the publisher's uplink (gossipsub sends to its D
   * mesh peers, not to every subscriber). Default 6 (gossipsub D), at most the subscriber count.
   */
  publishUplinkCopies?: number;
  /**
   * Hand every subscriber of a publish the same bytes object instead of its own copy (receivers
   * must not mutate it). Lets receivers share work keyed by the object, e.g. one decode per
   * publish (StateSync `decodeCache`). Default false.
   */
  shareTopicBytes?: boolean;
  /**
   * Topic deliveries take their loss and latency from a hash of (salt, publish number, receiver)
   * instead of the shared PRNG (`publishDelay`): anyone can compute when a publish reaches a node
   * without an event, and the same publish reaches the same node at the same time whoever asks.
   * The shared-state stand-in relies on it (sim/shared-state.ts). Default: drawn from the PRNG.
   */
  hashedTopics?: { salt: number };
  /**
   * Deep-freeze every value sent with sendValue/requestValue (and every answer), so that a sender
   * or receiver that mutates a shared message throws (strict mode) instead of silently changing
   * another agent's copy. For tests; costs a walk of each message. Default false.
   */
  freezeValues?: boolean;
}

export type TraceKind = 'send' | 'topic' | 'req' | 'res';
export type DropReason = 'loss' | 'partition' | 'down' | 'stopped' | 'unknown' | 'too-large';

export interface TraceEvent {
  /** Loop time of the delivery or drop. */
  t: number;
  kind: TraceKind;
  from: PeerId;
  to: PeerId;
  bytes: number;
  /** Set when the message was dropped. */
  drop?: DropReason;
  topic?: string;
}

/** Per-node counters. Direct = send + request + response legs. Topic traffic is counted apart. */
export interface NodeStats {
  sent: number;
  sentBytes: number;
  recv: number;
  recvBytes: number;
  /** Publishes by this node (counted once each, whatever the number of subscribers). */
  published: number;
  publishedBytes: number;
  /** Topic messages delivered to this node. */
  topicRecv: number;
  topicRecvBytes: number;
  /** Messages towards this node that were dropped (loss, partition, crash). */
  dropped: number;
}

function copyStats(x: NodeStats): NodeStats {
  return {
    sent: x.sent,
    sentBytes: x.sentBytes,
    recv: x.recv,
    recvBytes: x.recvBytes,
    published: x.published,
    publishedBytes: x.publishedBytes,
    topicRecv: x.topicRecv,
    topicRecvBytes: x.topicRecvBytes,
    dropped: x.dropped,
  };
}

function newStats(): NodeStats {
  return {
    sent: 0,
    sentBytes: 0,
    recv: 0,
    recvBytes: 0,
    published: 0,
    publishedBytes: 0,
    topicRecv: 0,
    topicRecvBytes: 0,
    dropped: 0,
  };
}

interface Partition {
  a: Set<PeerId>;
  /** null = everyone not in `a`. */
  b: Set<PeerId> | null;
  oneWay: boolean;
}

/** One message in flight (SimNetwork.transmit): the argument of its arrival event. */
class Delivery {
  constructor(
    public kind: TraceKind,
    public from: PeerId,
    public to: PeerId,
    public bytes: number,
    public topic: string | undefined,
    public target: SimNode | null,
    public transport: SimTransport | null,
    public deliver: Deliver,
    public payload: unknown,
    public fromHint: number,
  ) {}
}

/** The arrival of a message at its receiver's transport (`fromHint`: see Transport.sendValue). */
type Deliver = (target: SimTransport, payload: unknown, from: PeerId, fromHint: number) => void;

const noDeliver = (): void => {};

/** A node; its counters (NodeStats) are its own fields, one object less to reach per message. */
interface SimNode extends NodeStats {
  readonly id: PeerId;
  zone: string | undefined;
  crashed: boolean;
  /** Current transport instance (null before the first create and after a crash). */
  transport: SimTransport | null;
  /** Inbound messages in flight and this node's request timeouts; cancelled on crash. */
  inbox: TimerGroup;
  /** `transport?.receiving`, kept on the node: a send need not reach the receiver's transport. */
  receiving: boolean;
  /** Bytes per ms out / in (Infinity = unlimited) and when the interface is next free (loop ms). */
  up: number;
  down: number;
  upFreeAt: number;
  downFreeAt: number;
}

const ADDR_PREFIX = 'sim://';
const SLAB_BYTES = 64 * 1024;
const SLAB_MAX_COPY = 4 * 1024;

export class SimNetwork {
  private readonly nodes = new Map<PeerId, SimNode>();
  /** topic → subscribers, in subscription order (Set iteration order is insertion order: deterministic). */
  private readonly topics = new Map<string, Set<PeerId>>();
  private readonly links = new Map<string, LinkModel>();
  private readonly zoneLinks = new Map<string, LinkModel>();
  private readonly fifoLast = new Map<string, number>();
  private partitions: Partition[] = [];
  private readonly defaultLink: LinkModel;
  readonly maxMessageBytes: number;
  readonly dialTimeoutMs: number;
  private readonly fifo: boolean;
  /** See SimNetworkOptions.routeById. */
  readonly routeById: boolean;
  private readonly trace: ((ev: TraceEvent) => void) | undefined;
  private readonly defaultBandwidth: Bandwidth;
  private readonly publishUplinkCopies: number;
  /** See SimNetworkOptions.shareTopicBytes. */
  readonly shareTopicBytes: boolean;
  /** SimNetworkOptions.freezeValues. */
  readonly freezeValues: boolean;
  /** Nodes whose uplink is limited (0: uplink() needs no lookup). */
  private limitedUplinks = 0;
  private slab = new Uint8Array(SLAB_BYTES);
  private slabOff = 0;
  /** Network-wide totals. */
  readonly totals = { delivered: 0, dropped: 0, bytes: 0 };
  /** See SimNetworkOptions.hashedTopics (undefined: topic latencies are drawn from the PRNG). */
  readonly topicSalt: number | undefined;
  private publishes = 0;
  private linksFrozen: string | undefined;

  constructor(
    readonly loop: EventLoop,
    private readonly rng: Prng,
    opts: SimNetworkOptions = {},
  ) {
    this.defaultLink = checkLink({ baseMs: 1, jitterMs: 1, loss: 0, ...opts.link });
    for (const [za, row] of Object.entries(opts.zoneLinks ?? {})) {
      for (const [zb, m] of Object.entries(row)) {
        const model = checkLink({ ...this.defaultLink, ...m });
        this.zoneLinks.set(za + '\n' + zb, model);
        if (!this.zoneLinks.has(zb + '\n' + za)) this.zoneLinks.set(zb + '\n' + za, model);
      }
    }
    this.fifo = opts.fifo ?? false;
    this.maxMessageBytes = opts.maxMessageBytes ?? MAX_MESSAGE_BYTES;
    this.dialTimeoutMs = opts.dialTimeoutMs ?? 5000;
    this.trace = opts.trace;
    this.routeById = opts.routeById ?? false;
    this.defaultBandwidth = checkBandwidth(opts.bandwidth ?? {});
    this.publishUplinkCopies = opts.publishUplinkCopies ?? 6;
    this.shareTopicBytes = opts.shareTopicBytes ?? false;
    this.freezeValues = opts.freezeValues ?? false;
    this.topicSalt = opts.hashedTopics === undefined ? undefined : opts.hashedTopics.salt >>> 0;
    if (!Number.isInteger(this.publishUplinkCopies) || this.publishUplinkCopies < 1)
      throw new RangeError(
        `SimNetwork: publishUplinkCopies must be an integer ≥ 1, got ${opts.publishUplinkCopies}`,
      );
  }

  /**
   * A transport for node `id` (created on first use; optionally in `zone`). Throws if `id` has a
   * live transport already, or has crashed and not been restarted.
   */
  createTransport(id: PeerId, opts: { zone?: string; bandwidth?: Bandwidth } = {}): Transport {
    return this.createSimTransport(id, opts);
  }

  createSimTransport(id: PeerId, opts: { zone?: string; bandwidth?: Bandwidth } = {}): SimTransport {
    if (id.length === 0 || id.includes('\n'))
      throw new Error(`SimNetwork: invalid node id ${JSON.stringify(id)}`);
    let node = this.nodes.get(id);
    if (node === undefined) {
      node = {
        id,
        zone: opts.zone,
        crashed: false,
        transport: null,
        inbox: this.loop.group(),
        receiving: false,
        sent: 0,
        sentBytes: 0,
        recv: 0,
        recvBytes: 0,
        published: 0,
        publishedBytes: 0,
        topicRecv: 0,
        topicRecvBytes: 0,
        dropped: 0,
        up: Number.POSITIVE_INFINITY,
        down: Number.POSITIVE_INFINITY,
        upFreeAt: 0,
        downFreeAt: 0,
      };
      this.nodes.set(id, node);
      this.applyBandwidth(node, opts.bandwidth ?? this.defaultBandwidth);
    } else {
      if (node.crashed) throw new Error(`SimNetwork: node ${id} has crashed; call restart(${id}) first`);
      if (node.transport !== null && !node.transport.stopped)
        throw new Error(`SimNetwork: node ${id} already has a live transport`);
      if (opts.zone !== undefined) node.zone = opts.zone;
      if (opts.bandwidth !== undefined) this.applyBandwidth(node, opts.bandwidth);
    }
    const t = new SimTransport(this, node);
    node.transport = t;
    node.receiving = false; // a new transport starts in state 'new'
    return t;
  }

  /** Ids of every node ever created, in creation order. */
  ids(): PeerId[] {
    return [...this.nodes.keys()];
  }

  setZone(id: PeerId, zone: string): void {
    this.node(id).zone = zone;
  }

  /** Set a host's bandwidth (missing fields: unlimited). Applies to messages sent from now on. */
  setBandwidth(id: PeerId, bw: Bandwidth): void {
    this.applyBandwidth(this.node(id), bw);
  }

  private applyBandwidth(node: SimNode, bw: Bandwidth): void {
    checkBandwidth(bw, node.id);
    if (node.up !== Number.POSITIVE_INFINITY) this.limitedUplinks--;
    node.up = bw.upBytesPerSec === undefined ? Number.POSITIVE_INFINITY : bw.upBytesPerSec / 1000;
    if (node.up !== Number.POSITIVE_INFINITY) this.limitedUplinks++;
    node.down = bw.downBytesPerSec === undefined ? Number.POSITIVE_INFINITY : bw.downBytesPerSec / 1000;
  }

  /**
   * @internal Occupy `from`'s uplink with `copies` × `bytes`: returns when the last bit leaves
   * (now when unlimited).
   */
  uplink(from: PeerId, bytes: number, copies = 1): number {
    const now = this.loop.now;
    if (this.limitedUplinks === 0) return now; // no node has a limited uplink: no lookup
    const n = this.nodes.get(from);
    if (n === undefined || n.up === Number.POSITIVE_INFINITY) return now;
    const done = Math.max(now, n.upFreeAt) + (bytes * copies) / n.up;
    n.upFreeAt = done;
    return done;
  }

  /** @internal Copies of one publish charged to the publisher's uplink. */
  publishCopies(subscribers: number): number {
    return Math.max(1, Math.min(this.publishUplinkCopies, subscribers));
  }

  /** Override the link model from `a` to `b` (and from `b` to `a` unless `oneWay`). */
  setLink(a: PeerId, b: PeerId, model: Partial<LinkModel>, oneWay = false): void {
    this.checkUnfrozen();
    const m = checkLink({ ...this.linkModel(a, b), ...model });
    this.links.set(a + '\n' + b, m);
    if (!oneWay) this.links.set(b + '\n' + a, checkLink({ ...this.linkModel(b, a), ...model }));
  }

  /** Remove per-link overrides. */
  clearLinks(): void {
    this.checkUnfrozen();
    this.links.clear();
  }

  /** Change the default loss probability. */
  setLoss(loss: number): void {
    this.checkUnfrozen();
    this.defaultLink.loss = loss;
    checkLink(this.defaultLink);
  }

  /** Change the default link model (fields not given keep their value): delay spikes of a scenario. */
  setDefaultLink(model: Partial<LinkModel>): void {
    this.checkUnfrozen();
    Object.assign(this.defaultLink, checkLink({ ...this.defaultLink, ...model }));
  }

  /**
   * Refuse later changes of link models (`why` says who needs them fixed): a publish's delivery
   * times are then a pure function of the publish, computable at any later time.
   */
  freezeLinks(why: string): void {
    this.linksFrozen = why;
  }

  private checkUnfrozen(): void {
    if (this.linksFrozen !== undefined)
      throw new Error(`SimNetwork: link models are fixed (${this.linksFrozen})`);
  }

  /** Number the next publish (hashed topics: its deliveries are a function of this number). */
  nextPublishSeq(): number {
    return ++this.publishes;
  }

  /** How many publishes have been numbered so far. */
  get publishCount(): number {
    return this.publishes;
  }

  /**
   * Hashed topics: latency of publish `seq` from `from` to `to` (two hops, as drawn publishes
   * take), or undefined if the link's loss drops it. A pure function of its arguments and the
   * link models.
   */
  publishDelay(from: PeerId, to: PeerId, seq: number): number | undefined {
    const salt = this.topicSalt;
    if (salt === undefined) throw new Error('SimNetwork: publishDelay needs hashedTopics');
    const m = this.linkModel(from, to);
    const h = this.hashed;
    h.key = mix32(mix32(salt ^ Math.imul(seq, 0x9e3779b1)) ^ this.idHash(to));
    h.k = 0;
    if (m.loss > 0 && h.next() < m.loss) return undefined;
    return this.drawWith(m, h.next) + this.drawWith(m, h.next);
  }

  /** Uniforms from a hash (publishDelay): one object, no closure per call. */
  private readonly hashed = {
    key: 0,
    k: 0,
    next: (): number => {
      const h = this.hashed;
      return mix32(h.key + Math.imul(++h.k, 0x85ebca6b)) / 4294967296;
    },
  };

  private readonly idHashes = new Map<PeerId, number>();

  private idHash(id: PeerId): number {
    let h = this.idHashes.get(id);
    if (h === undefined) {
      h = hashString(id);
      this.idHashes.set(id, h);
    }
    return h;
  }

  /** The largest delay `publishDelay` can return (Infinity if a link's tail is unbounded). */
  maxPublishDelay(): number {
    let worst = 0;
    const models = [this.defaultLink, ...this.zoneLinks.values(), ...this.links.values()];
    for (const m of models) {
      const t = m.tail;
      const tail = t === undefined ? 0 : (t.maxMs ?? Number.POSITIVE_INFINITY);
      worst = Math.max(worst, 2 * (m.baseMs + m.jitterMs + tail));
    }
    return worst;
  }

  /** The default link model (a copy). */
  getDefaultLink(): LinkModel {
    return { ...this.defaultLink };
  }

  /**
   * Drop traffic between every node of `groupA` and every node of `groupB` (both ways, or only
   * A→B if `oneWay`). Without `groupB`: between `groupA` and everyone else. Partitions add up;
   * the returned function heals this one; heal() heals all.
   */
  partition(groupA: Iterable<PeerId>, groupB?: Iterable<PeerId>, oneWay = false): () => void {
    this.checkUnfrozen();
    const p: Partition = { a: new Set(groupA), b: groupB === undefined ? null : new Set(groupB), oneWay };
    this.partitions.push(p);
    return () => {
      this.partitions = this.partitions.filter((q) => q !== p);
    };
  }

  heal(): void {
    this.partitions = [];
  }

  /** Whether a message from `a` to `b` would pass the partitions right now. */
  linkOpen(a: PeerId, b: PeerId): boolean {
    for (const p of this.partitions) {
      if (p.a.has(a) && (p.b === null ? !p.a.has(b) : p.b.has(b))) return false;
      if (!p.oneWay && p.a.has(b) && (p.b === null ? !p.a.has(a) : p.b.has(a))) return false;
    }
    return true;
  }

  /**
   * The node crashes: it stops receiving, messages in flight towards it are dropped, its pending
   * requests never settle, and its transport object becomes inert.
   */
  crash(id: PeerId): void {
    const node = this.node(id);
    if (node.crashed) return;
    node.crashed = true;
    node.inbox.cancelAll();
    node.transport?.kill();
    node.transport = null;
    node.receiving = false;
  }

  /** Allow a new transport with this id to be created after a crash. */
  restart(id: PeerId): void {
    this.node(id).crashed = false;
  }

  isUp(id: PeerId): boolean {
    const n = this.nodes.get(id);
    return n !== undefined && !n.crashed && n.transport?.receiving === true;
  }

  stats(id: PeerId): NodeStats {
    return copyStats(this.node(id));
  }

  /** Sum of every node's counters. */
  totalStats(): NodeStats {
    const s = newStats();
    for (const n of this.nodes.values()) {
      const x: NodeStats = n;
      s.sent += x.sent;
      s.sentBytes += x.sentBytes;
      s.recv += x.recv;
      s.recvBytes += x.recvBytes;
      s.published += x.published;
      s.publishedBytes += x.publishedBytes;
      s.topicRecv += x.topicRecv;
      s.topicRecvBytes += x.topicRecvBytes;
      s.dropped += x.dropped;
    }
    return s;
  }

  resetStats(): void {
    for (const n of this.nodes.values()) Object.assign(n, newStats());
  }

  // ---- internals used by SimTransport ----

  /** @internal */
  node(id: PeerId): SimNode {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`SimNetwork: unknown node ${id}`);
    return n;
  }

  /** @internal */
  lookup(id: PeerId): SimNode | undefined {
    return this.nodes.get(id);
  }

  /** @internal */
  subscribe(topic: string, id: PeerId): void {
    let subs = this.topics.get(topic);
    if (subs === undefined) {
      subs = new Set();
      this.topics.set(topic, subs);
    }
    subs.add(id);
  }

  /** @internal */
  unsubscribeAll(id: PeerId, topics: Iterable<string>): void {
    for (const t of topics) this.topics.get(t)?.delete(id);
  }

  private linkModel(a: PeerId, b: PeerId): LinkModel {
    if (this.links.size > 0) {
      const m = this.links.get(a + '\n' + b);
      if (m !== undefined) return m;
    }
    if (this.zoneLinks.size > 0) {
      const za = this.nodes.get(a)?.zone;
      const zb = this.nodes.get(b)?.zone;
      if (za !== undefined && zb !== undefined) {
        const m = this.zoneLinks.get(za + '\n' + zb);
        if (m !== undefined) return m;
      }
    }
    return this.defaultLink;
  }

  /** One latency draw on the link a→b. */
  latency(a: PeerId, b: PeerId): number {
    return this.draw(this.linkModel(a, b));
  }

  /** One latency draw from a link model (uniform draws in a fixed order: jitter, then the tail). */
  private draw(m: LinkModel): number {
    return this.drawWith(m, this.rngNext);
  }

  private readonly rngNext = (): number => this.rng.next();

  private drawWith(m: LinkModel, next: () => number): number {
    let d = m.jitterMs > 0 ? m.baseMs + m.jitterMs * next() : m.baseMs;
    const t = m.tail;
    if (t !== undefined) {
      let x: number;
      if (t.kind === 'lognormal') {
        const u1 = next();
        const u2 = next();
        const z = Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2);
        x = t.medianMs * Math.exp(t.sigma * z);
      } else {
        x = t.scaleMs * ((1 - next()) ** (-1 / t.alpha) - 1);
      }
      d += t.maxMs !== undefined && x > t.maxMs ? t.maxMs : x;
    }
    return d;
  }

  private lost(m: LinkModel): boolean {
    return m.loss > 0 && this.rng.next() < m.loss;
  }

  /** @internal */
  record(kind: TraceKind, from: PeerId, to: PeerId, bytes: number, drop?: DropReason, topic?: string): void {
    if (drop !== undefined) {
      this.totals.dropped++;
      const n = this.nodes.get(to);
      if (n !== undefined) n.dropped++;
    }
    if (this.trace === undefined) return;
    const ev: TraceEvent = { t: this.loop.now, kind, from, to, bytes };
    if (drop !== undefined) ev.drop = drop;
    if (topic !== undefined) ev.topic = topic;
    this.trace(ev);
  }

  /**
   * @internal Carry one message from → to. Draws loss and latency, checks partitions at send and at
   * arrival, and calls `deliver(target)` as a loop event in the receiver's inbox if it arrives.
   * Returns false if the message was dropped at send time.
   */
  transmit(
    kind: TraceKind,
    from: PeerId,
    to: PeerId,
    bytes: number,
    deliver: Deliver,
    hops = 1,
    topic?: string,
    departAt?: number,
    publishSeq?: number,
    payload?: unknown,
    toHint = -1,
    fromHint = -1,
  ): boolean {
    const target = toHint >= 0 ? this.nodeByHint(to, toHint) : this.nodes.get(to);
    if (target === undefined || target.crashed || !target.receiving) {
      this.record(kind, from, to, bytes, 'down', topic);
      return false;
    }
    const m = this.linkModel(from, to);
    const hashed = publishSeq === undefined ? undefined : this.publishDelay(from, to, publishSeq);
    if (publishSeq === undefined ? this.lost(m) : hashed === undefined) {
      this.record(kind, from, to, bytes, 'loss', topic);
      return false;
    }
    if (this.partitions.length > 0 && !this.linkOpen(from, to)) {
      this.record(kind, from, to, bytes, 'partition', topic);
      return false;
    }
    let delay = hashed ?? 0;
    if (hashed === undefined) for (let h = 0; h < hops; h++) delay += this.draw(m);
    let at = (departAt ?? this.uplink(from, bytes)) + delay;
    if (target.down !== Number.POSITIVE_INFINITY) {
      at = Math.max(at, target.downFreeAt) + bytes / target.down;
      target.downFreeAt = at;
    }
    if (this.fifo) {
      const key = from + '\n' + to;
      const last = this.fifoLast.get(key);
      if (last !== undefined && last > at) at = last;
      this.fifoLast.set(key, at);
    }
    let d = this.freeDeliveries.pop();
    if (d === undefined) {
      d = new Delivery(kind, from, to, bytes, topic, target, target.transport, deliver, payload, fromHint);
    } else {
      d.kind = kind;
      d.from = from;
      d.to = to;
      d.bytes = bytes;
      d.topic = topic;
      d.target = target;
      d.transport = target.transport;
      d.deliver = deliver;
      d.payload = payload;
      d.fromHint = fromHint;
    }
    this.loop.post(at, this.arrive, d, target.inbox);
    return true;
  }

  /**
   * Node `to`, found through `hint` (a sender's number for it, Transport.sendValue's `toHint`)
   * when the node last found under that hint is `to`; else by id, remembered under the hint.
   */
  private nodeByHint(to: PeerId, hint: number): SimNode | undefined {
    const known = this.byHint[hint];
    if (known !== undefined && known.id === to) return known;
    const n = this.nodes.get(to);
    if (n !== undefined) {
      const byHint = this.byHint;
      while (byHint.length < hint) byHint.push(undefined); // dense: no holes
      byHint[hint] = n;
    }
    return n;
  }

  /** Nodes by the hints senders gave for them (nodeByHint). */
  private readonly byHint: (SimNode | undefined)[] = [];

  /** Arrived deliveries, for reuse (nothing keeps a Delivery once it has arrived). */
  private readonly freeDeliveries: Delivery[] = [];

  /** A message reaches its receiver's inbox (a loop event; `d` is its Delivery). */
  private readonly arrive = (d: Delivery): void => {
    const { kind, from, to, bytes, topic, deliver, payload, fromHint } = d;
    const transport = d.transport!;
    const target = d.target!;
    d.target = null;
    d.transport = null;
    d.deliver = noDeliver;
    d.payload = undefined;
    if (this.freeDeliveries.length < 4096) this.freeDeliveries.push(d);
    if (transport !== target.transport || !transport.receiving) {
      this.record(kind, from, to, bytes, 'stopped', topic);
      return;
    }
    if (this.partitions.length > 0 && !this.linkOpen(from, to)) {
      this.record(kind, from, to, bytes, 'partition', topic);
      return;
    }
    this.totals.delivered++;
    this.totals.bytes += bytes;
    const s: NodeStats = target;
    if (kind === 'topic') {
      s.topicRecv++;
      s.topicRecvBytes += bytes;
    } else {
      s.recv++;
      s.recvBytes += bytes;
    }
    this.record(kind, from, to, bytes, undefined, topic);
    deliver(transport, payload, from, fromHint);
  };

  /**
   * @internal Copy message bytes. Small messages are carved out of 64 KiB slabs (like Node's Buffer
   * pool): one Uint8Array view per message instead of one ArrayBuffer, which keeps the GC quiet at
   * hundreds of thousands of messages per second. Each copy has its own bytes, so mutating one
   * never affects another; but `copy.buffer` is the shared slab, so code must honour byteOffset
   * and byteLength (as it must for any Node Buffer).
   */
  copy(src: Uint8Array): Uint8Array {
    const n = src.length;
    if (n > SLAB_MAX_COPY) return src.slice();
    if (this.slabOff + n > SLAB_BYTES) {
      this.slab = new Uint8Array(SLAB_BYTES);
      this.slabOff = 0;
    }
    const out = this.slab.subarray(this.slabOff, this.slabOff + n);
    out.set(src);
    this.slabOff += (n + 7) & ~7;
    return out;
  }

  /** @internal Subscribers of a topic (live Set; callers must not mutate it). */
  subscribers(topic: string): Set<PeerId> | undefined {
    return this.topics.get(topic);
  }
}

function checkLink(m: LinkModel): LinkModel {
  if (!(m.baseMs >= 0) || !(m.jitterMs >= 0) || !Number.isFinite(m.baseMs + m.jitterMs))
    throw new RangeError(`SimNetwork: bad latency ${m.baseMs}+${m.jitterMs}ms`);
  if (!(m.loss >= 0 && m.loss <= 1))
    throw new RangeError(`SimNetwork: loss must be in [0, 1], got ${m.loss}`);
  const t = m.tail;
  if (t !== undefined) {
    if (t.kind === 'lognormal') {
      if (!(t.medianMs >= 0 && Number.isFinite(t.medianMs)))
        throw new RangeError(`SimNetwork: tail.medianMs must be a finite number ≥ 0, got ${t.medianMs}`);
      if (!(t.sigma >= 0 && Number.isFinite(t.sigma)))
        throw new RangeError(`SimNetwork: tail.sigma must be a finite number ≥ 0, got ${t.sigma}`);
    } else if (t.kind === 'pareto') {
      if (!(t.scaleMs >= 0 && Number.isFinite(t.scaleMs)))
        throw new RangeError(`SimNetwork: tail.scaleMs must be a finite number ≥ 0, got ${t.scaleMs}`);
      if (!(t.alpha > 0 && Number.isFinite(t.alpha)))
        throw new RangeError(`SimNetwork: tail.alpha must be a finite number > 0, got ${t.alpha}`);
    } else {
      throw new RangeError(
        `SimNetwork: tail.kind must be 'lognormal' or 'pareto', got ${JSON.stringify((t as { kind: unknown }).kind)}`,
      );
    }
    if (t.maxMs !== undefined && !(t.maxMs >= 0))
      throw new RangeError(`SimNetwork: tail.maxMs must be ≥ 0, got ${t.maxMs}`);
  }
  return m;
}

function checkBandwidth(bw: Bandwidth, id?: string): Bandwidth {
  for (const k of ['upBytesPerSec', 'downBytesPerSec'] as const) {
    const v = bw[k];
    if (v !== undefined && !(v > 0))
      throw new RangeError(`SimNetwork: bandwidth.${k}${id ? ` of ${id}` : ''} must be > 0, got ${v}`);
  }
  return bw;
}

interface PendingRequest {
  peer: PeerId;
  resolve: (data: unknown) => void;
  reject: (err: TransportError) => void;
  cancelTimeout: () => void;
}

export class SimTransport implements Transport {
  readonly id: PeerId;
  private handlers: TransportHandlers | null = null;
  /** handlers.onValue, kept here: one object less to reach per delivered value. */
  private onValue: TransportHandlers['onValue'] = undefined;
  private state: 'new' | 'started' | 'stopped' | 'dead' = 'new';
  private readonly pending = new Map<number, PendingRequest>();
  private nextReq = 0;
  private readonly subscribed = new Set<string>();
  /** Peers taught via addPeer/dial (bookkeeping only: the sim routes by id). */
  readonly knownPeers = new Set<PeerId>();

  constructor(
    /** @internal */
    readonly net: SimNetwork,
    private readonly node: SimNode,
  ) {
    this.id = node.id;
  }

  private setState(state: typeof this.state): void {
    this.state = state;
    if (this.node.transport === this) this.node.receiving = state === 'started';
  }

  /** Started, not stopped, not crashed. */
  get receiving(): boolean {
    return this.state === 'started';
  }

  get stopped(): boolean {
    return this.state === 'stopped' || this.state === 'dead';
  }

  async start(handlers: TransportHandlers): Promise<void> {
    if (this.state !== 'new')
      throw new TransportError(
        'stopped',
        undefined,
        `transport ${this.id} cannot start in state ${this.state}`,
      );
    this.handlers = handlers;
    this.onValue = handlers.onValue;
    this.setState('started');
  }

  async stop(): Promise<void> {
    if (this.state !== 'started' && this.state !== 'new') return;
    this.setState('stopped');
    this.net.unsubscribeAll(this.id, this.subscribed);
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      p.cancelTimeout();
      p.reject(new TransportError('stopped', undefined, `transport ${this.id} stopped`));
    }
  }

  /** @internal Crash: no more traffic in or out, pending requests never settle. */
  kill(): void {
    if (this.state === 'started' || this.state === 'new') this.net.unsubscribeAll(this.id, this.subscribed);
    this.setState('dead');
    this.pending.clear();
  }

  addrs(): string[] {
    return [ADDR_PREFIX + this.id];
  }

  send(to: PeerId, data: Uint8Array): void {
    if (this.state !== 'started' || to === this.id) return;
    const net = this.net;
    if (data.length > net.maxMessageBytes) {
      net.record('send', this.id, to, data.length, 'too-large');
      return;
    }
    if (!this.knows(to)) {
      net.record('send', this.id, to, data.length, 'unknown');
      return;
    }
    const copy = this.net.copy(data);
    this.countSent(copy.length);
    net.transmit(
      'send',
      this.id,
      to,
      copy.length,
      SimTransport.deliverBytes,
      1,
      undefined,
      undefined,
      undefined,
      copy,
    );
  }

  /**
   * `send` without bytes: the receiver's `onValue` gets `value` itself (immutable, shared), and
   * the network charges `bytes` — the same latency, loss, bandwidth, counters and trace events as
   * a `send` of that many bytes, so a run is the same either way.
   */
  sendValue(to: PeerId, value: object, bytes: number, toHint = -1, fromHint = -1): void {
    if (this.state !== 'started' || to === this.id) return;
    const net = this.net;
    if (net.freezeValues) deepFreeze(value);
    if (bytes > net.maxMessageBytes) {
      net.record('send', this.id, to, bytes, 'too-large');
      return;
    }
    if (!this.knows(to)) {
      net.record('send', this.id, to, bytes, 'unknown');
      return;
    }
    this.countSent(bytes);
    net.transmit(
      'send',
      this.id,
      to,
      bytes,
      SimTransport.deliverValue,
      1,
      undefined,
      undefined,
      undefined,
      value,
      toHint,
      fromHint,
    );
  }

  /** Arrival of a send (transmit's `deliver`, shared: no closure per message). */
  private static deliverBytes(t: SimTransport, copy: unknown, from: PeerId): void {
    t.learn(from);
    t.handlers!.onMessage(from, copy as Uint8Array);
  }

  /** Arrival of a sendValue. */
  private static deliverValue(t: SimTransport, value: unknown, from: PeerId, fromHint: number): void {
    t.learn(from);
    const onValue = t.onValue;
    if (onValue === undefined) throw new Error(`SimTransport ${t.id}: sendValue without an onValue handler`);
    onValue.call(t.handlers, from, value as object, fromHint);
  }

  /** Whether this transport can address `peer` (see SimNetworkOptions.routeById). */
  knows(peer: PeerId): boolean {
    return this.net.routeById || this.knownPeers.has(peer);
  }

  /** @internal An inbound connection from `peer`: it can be answered from now on. */
  learn(peer: PeerId): void {
    if (!this.net.routeById) this.knownPeers.add(peer);
  }

  request(to: PeerId, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.state === 'started' && data.length <= this.net.maxMessageBytes && to !== this.id)
      return this.call(to, this.net.copy(data), data.length, timeoutMs, false) as Promise<Uint8Array>;
    return this.call(to, data, data.length, timeoutMs, false) as Promise<Uint8Array>;
  }

  /**
   * `request` without bytes (simulator only): the peer's `onRequestValue` gets `value` itself and
   * answers `{ value, bytes }`; both legs are charged their `bytes` — same latency, loss, errors,
   * counters and trace events as a `request` of those sizes.
   */
  requestValue(to: PeerId, value: object, bytes: number, timeoutMs: number): Promise<object> {
    if (this.net.freezeValues) deepFreeze(value);
    return this.call(to, value, bytes, timeoutMs, true) as Promise<object>;
  }

  private call(
    to: PeerId,
    payload: Uint8Array | object,
    size: number,
    timeoutMs: number,
    asValue: boolean,
  ): Promise<unknown> {
    if (this.state === 'dead') return new Promise<never>(() => {});
    if (this.state !== 'started')
      return Promise.reject(new TransportError('stopped', to, `transport ${this.id} is not started`));
    if (size > this.net.maxMessageBytes)
      return Promise.reject(
        new TransportError('too-large', to, `request of ${size} bytes exceeds ${this.net.maxMessageBytes}`),
      );
    if (to === this.id) return Promise.reject(new TransportError('unreachable', to, 'request to self'));
    const reqId = this.nextReq++;
    const from = this.id;
    const net = this.net;
    const loop = net.loop;
    const inbox = this.node.inbox;
    return new Promise<unknown>((resolve, reject) => {
      const timer = loop.after(
        timeoutMs,
        () => {
          if (this.pending.delete(reqId))
            reject(new TransportError('timeout', to, `request to ${to} timed out after ${timeoutMs} ms`));
        },
        inbox,
      );
      this.pending.set(reqId, { peer: to, resolve, reject, cancelTimeout: () => timer.cancel() });
      if (!this.knows(to)) {
        // No address known for the peer: fails at once (still asynchronously, as a loop event).
        net.record('req', from, to, size, 'unknown');
        loop.after(
          0,
          () => this.settle(reqId, undefined, 'unreachable', `no known address for peer ${to}`),
          inbox,
        );
        return;
      }
      this.countSent(size);
      const dest = net.lookup(to);
      if (dest === undefined || dest.crashed || dest.transport === null || !dest.transport.receiving) {
        // Connection refused: fails after about one leg's latency.
        const delay = dest === undefined ? net.latency(from, from) : net.latency(from, to);
        loop.after(
          delay,
          () => this.settle(reqId, undefined, 'unreachable', `peer ${to} is unreachable`),
          inbox,
        );
        net.record('req', from, to, size, 'down');
        return;
      }
      net.transmit('req', from, to, size, (target) => {
        target.learn(from);
        target.serve(this, reqId, payload, asValue);
      });
    });
  }

  /**
   * @internal Run onRequest (onRequestValue for a value) for an arrived request and send the
   * answer back to the very transport instance that asked (a restarted caller with the same id
   * never gets an answer meant for its previous incarnation).
   */
  serve(caller: SimTransport, reqId: number, data: Uint8Array | object, asValue = false): void {
    const from = caller.id;
    const max = this.net.maxMessageBytes;
    const reply = (res: unknown, err: string | undefined) => {
      if (this.state !== 'started') return;
      let code: 'remote' | 'too-large' | undefined;
      let bytes = 0;
      let payload: unknown;
      if (err !== undefined) {
        code = 'remote';
        bytes = err.length;
      } else if (asValue) {
        const r = res as { value?: unknown; bytes?: unknown } | undefined;
        if (typeof r?.value !== 'object' || r.value === null || typeof r.bytes !== 'number') {
          code = 'remote';
          err = 'handler returned no { value, bytes } response';
          bytes = err.length;
        } else if (r.bytes > max) {
          code = 'too-large';
          err = `response of ${r.bytes} bytes exceeds ${max}`;
          bytes = err.length;
        } else {
          payload = r.value;
          bytes = r.bytes;
        }
      } else if (!(res instanceof Uint8Array)) {
        code = 'remote';
        err = 'handler returned a non-Uint8Array response';
        bytes = err.length;
      } else if (res.length > max) {
        code = 'too-large';
        err = `response of ${res.length} bytes exceeds ${max}`;
        bytes = err.length;
      } else {
        payload = this.net.copy(res);
        bytes = res.length;
      }
      this.countSent(bytes);
      const me = this.id;
      this.net.transmit('res', me, from, bytes, (t) => {
        if (t === caller) caller.settle(reqId, payload, code, err);
      });
    };
    let result: unknown;
    try {
      const h = this.handlers!;
      if (asValue) {
        if (h.onRequestValue === undefined)
          throw new Error(`transport ${this.id} takes no value requests (no onRequestValue handler)`);
        result = h.onRequestValue(from, data as object);
        if (this.net.freezeValues) deepFreeze(result);
      } else {
        result = h.onRequest(from, data as Uint8Array);
      }
    } catch (e) {
      reply(undefined, errorMessage(e));
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (res) => reply(res, undefined),
        (e: unknown) => reply(undefined, errorMessage(e)),
      );
    } else {
      reply(result, undefined);
    }
  }

  /** @internal Settle a pending request (response arrived, or connection refused). */
  settle(
    reqId: number,
    data: unknown,
    code: 'remote' | 'too-large' | 'unreachable' | undefined,
    err: string | undefined,
  ): void {
    const p = this.pending.get(reqId);
    if (p === undefined) return;
    this.pending.delete(reqId);
    p.cancelTimeout();
    if (code !== undefined) p.reject(new TransportError(code, p.peer, err ?? code));
    else p.resolve(data!);
  }

  subscribe(topic: string): void {
    if (this.state === 'dead' || this.state === 'stopped') return;
    this.subscribed.add(topic);
    this.net.subscribe(topic, this.id);
  }

  publish(topic: string, data: Uint8Array): void {
    if (this.state !== 'started') return;
    if (data.length > this.net.maxMessageBytes) {
      this.net.record('topic', this.id, this.id, data.length, 'too-large', topic);
      return;
    }
    const subs = this.net.subscribers(topic);
    const s: NodeStats = this.node;
    s.published++;
    s.publishedBytes += data.length;
    const seq = this.net.nextPublishSeq();
    if (subs === undefined || subs.size === 0) return;
    const snapshot = this.net.copy(data);
    const from = this.id;
    const departAt = this.net.uplink(
      from,
      snapshot.length,
      this.net.publishCopies(subs.has(from) ? subs.size - 1 : subs.size),
    );
    // Set iteration = subscription order: deterministic.
    for (const to of subs) {
      if (to === from) continue;
      this.net.transmit(
        'topic',
        from,
        to,
        snapshot.length,
        (t) => {
          if (t.subscribed.has(topic))
            t.handlers!.onTopic(topic, from, t.net.shareTopicBytes ? snapshot : t.net.copy(snapshot));
        },
        2,
        topic,
        departAt,
        this.net.topicSalt === undefined ? undefined : seq,
      );
    }
  }

  /** Bookkeeping only: the sim routes by id; this makes `peer` addressable from this node. */
  addPeer(peer: PeerId, _addrs: readonly string[]): void {
    if (peer !== this.id) this.learn(peer);
  }

  dial(addr: string): Promise<PeerId> {
    if (this.state === 'dead') return new Promise<PeerId>(() => {});
    if (this.state !== 'started')
      return Promise.reject(new TransportError('stopped', undefined, `transport ${this.id} is not started`));
    if (!addr.startsWith(ADDR_PREFIX) || addr.length === ADDR_PREFIX.length)
      return Promise.reject(new TransportError('unreachable', undefined, `not a sim address: ${addr}`));
    const to = addr.slice(ADDR_PREFIX.length);
    const net = this.net;
    const inbox = this.node.inbox;
    return new Promise<PeerId>((resolve, reject) => {
      const dest = net.lookup(to);
      const up = dest !== undefined && !dest.crashed && dest.transport?.receiving;
      if (!up || to === this.id) {
        const rtt = dest === undefined ? 2 * net.latency(this.id, this.id) : 2 * net.latency(this.id, to);
        net.loop.after(
          rtt,
          () => reject(new TransportError('unreachable', to, `cannot dial ${addr}`)),
          inbox,
        );
        return;
      }
      if (!net.linkOpen(this.id, to) || !net.linkOpen(to, this.id)) {
        net.loop.after(
          net.dialTimeoutMs,
          () => reject(new TransportError('timeout', to, `dial ${addr} timed out`)),
          inbox,
        );
        return;
      }
      const rtt = net.latency(this.id, to) + net.latency(to, this.id);
      net.loop.after(
        rtt,
        () => {
          this.learn(to);
          const remote = net.lookup(to)?.transport;
          if (remote?.receiving) remote.learn(this.id);
          resolve(to);
        },
        inbox,
      );
    });
  }

  private countSent(bytes: number): void {
    const s: NodeStats = this.node;
    s.sent++;
    s.sentBytes += bytes;
  }
}

/** MurmurHash3's 32-bit finaliser. */
function mix32(x: number): number {
  let h = x >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Freeze `v` and everything reachable from it (SimNetworkOptions.freezeValues). */
export function deepFreeze(v: unknown): void {
  if (v === null || typeof v !== 'object') return;
  Object.freeze(v);
  for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
}
