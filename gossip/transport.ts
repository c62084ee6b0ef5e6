/**
 * The network as the agent core sees it. Two implementations: the libp2p transport
 * (gossip/libp2p.ts, real TCP) and the simulated network (sim/network.ts, virtual time).
 * Both pass the one conformance suite in test/conformance/transport.ts.
 *
 * Semantics every implementation keeps:
 * - `send` and `publish` are best effort: a message may be lost, delayed or reordered, never
 *   duplicated by the transport itself, never corrupted (corruption = loss), never echoed to self.
 * - `request` resolves with the peer's answer, or rejects with a TransportError (timeout,
 *   unreachable, peer error). It never hangs past its timeout while this node runs (a crashed
 *   node's own pending requests simply never settle, as in a dead process).
 * - A peer is reachable once this node dialed it, learned its addresses (`addPeer`) or heard from it.
 * - Oversize payloads (> MAX_MESSAGE_BYTES): `request` rejects with 'too-large'; `send` and
 *   `publish` drop them (counted), never throw.
 * - Handlers are called asynchronously (never re-entrantly from inside send/publish/request).
 * - Peer ids are opaque strings (a libp2p PeerId in base58 for the real transport).
 */
export type PeerId = string;

export interface TransportHandlers {
  /** A direct one-way message (`send`) from `from`. */
  onMessage(from: PeerId, data: Uint8Array): void;
  /**
   * A message published on a subscribed topic. `from` is the peer that delivered it (a relay in
   * a gossip mesh), not necessarily the author: authorship must come from the payload.
   */
  onTopic(topic: string, from: PeerId, data: Uint8Array): void;
  /** A request (`request`) from `from`; the returned bytes are the response. A throw rejects the caller. */
  onRequest(from: PeerId, data: Uint8Array): Uint8Array | Promise<Uint8Array>;
  /** Optional hint: the transport lost its connection to `peer` (e.g. TCP reset). Not a verdict. */
  onPeerDisconnected?(peer: PeerId): void;
  /** A message sent with `sendValue` (simulator only; see Transport.sendValue). */
  onValue?(from: PeerId, value: object, fromHint?: number): void;
  /** A request sent with `requestValue` (simulator only): the answer and its encoded size. */
  onRequestValue?(
    from: PeerId,
    value: object,
  ): { value: object; bytes: number } | Promise<{ value: object; bytes: number }>;
}

export type TransportErrorCode = 'timeout' | 'unreachable' | 'remote' | 'stopped' | 'too-large';

export class TransportError extends Error {
  constructor(
    readonly code: TransportErrorCode,
    readonly peer: PeerId | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'TransportError';
  }
}

export interface Transport {
  /** This node's id. Stable across restarts when the identity is persisted. */
  readonly id: PeerId;
  /** Start listening and deliver inbound traffic to `handlers`. */
  start(handlers: TransportHandlers): Promise<void>;
  /** Stop; later sends are dropped and pending requests reject with code 'stopped'. */
  stop(): Promise<void>;
  /** Addresses other nodes can reach this node at (multiaddr strings for libp2p). */
  addrs(): string[];
  /** One-way best-effort message to one peer. Never throws for network reasons. */
  send(to: PeerId, data: Uint8Array): void;
  /**
   * Optional, simulator only: like `send`, but carries an already-decoded, immutable value instead
   * of its encoding (the receiver's `onValue` gets the same object), charged as `bytes` bytes. Saves
   * the encode/decode of every message when thousands of agents share one process; a user must
   * give the same decisions either way (tested per use). `toHint`, `fromHint` (optional, ≥ 0): the
   * sender's numbers for the receiver and for itself in an id space its peers may share; the
   * transport may use `toHint` to find the receiver without a lookup by id (it must still reach
   * `to`) and hands `fromHint` to the receiver's `onValue`, which must check it names `from`.
   */
  sendValue?(to: PeerId, value: object, bytes: number, toHint?: number, fromHint?: number): void;
  /** Optional, simulator only: `request` with values (see sendValue); resolves with the answer's value. */
  requestValue?(to: PeerId, value: object, bytes: number, timeoutMs: number): Promise<object>;
  /** Request/response with one peer. */
  request(to: PeerId, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /** Receive messages published on `topic`. */
  subscribe(topic: string): void;
  /** Best-effort broadcast to every subscriber of `topic` (not to self). Never throws for lack of peers. */
  publish(topic: string, data: Uint8Array): void;
  /** Teach the transport where `peer` can be reached (addresses learned from membership gossip). */
  addPeer(peer: PeerId, addrs: readonly string[]): void;
  /** Contact an address (a join seed); resolves with the id of the peer reached there. */
  dial(addr: string): Promise<PeerId>;
}

/** Largest message any transport must carry (bigger ones fail with 'too-large'). */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
