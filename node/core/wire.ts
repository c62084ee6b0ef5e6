import { STATE_IDS, type TaggedState } from './member-table.ts';
import type { MemberState, MemberStatus, MembershipMessage, PushPull } from './membership.ts';

/**
 * Wire format of the agent's own messages. A frame is one tag byte followed by the payload:
 *   0x01 membership (JSON)       — ping / ack / ping-req / gossip (Transport.send)
 *   0x02 push-pull (JSON)        — membership full sync (Transport.request, both ways)
 *   0x03 state (crdt codec)      — cluster-state deltas and anti-entropy (topic + request)
 *   0x04 app (JSON)              — higher protocols (bidding, API forwarding) registered by name
 * Everything inbound is untrusted: decoders validate fully and throw WireError naming the peer
 * and the field path; they never return a half-checked value.
 */

export const TAG_MEMBERSHIP = 0x01;
export const TAG_PUSH_PULL = 0x02;
export const TAG_STATE = 0x03;
export const TAG_APP = 0x04;

/** Bounds on what a peer may send us. */
export const LIMITS = {
  maxUpdates: 4096,
  maxAddrs: 32,
  maxAddrLength: 512,
  maxIdLength: 128,
  maxIncarnation: Number.MAX_SAFE_INTEGER,
} as const;

export class WireError extends Error {
  constructor(
    readonly peer: string,
    readonly path: string,
    readonly problem: string,
  ) {
    super(`bad message from ${peer}: ${path ? `${path}: ` : ''}${problem}`);
    this.name = 'WireError';
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export function frame(tag: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(payload.length + 1);
  out[0] = tag;
  out.set(payload, 1);
  return out;
}

export function frameJson(tag: number, value: unknown): Uint8Array {
  return frame(tag, enc.encode(JSON.stringify(value)));
}

/** The length of `frameJson(tag, value)`, without building it (values in the simulator: Transport.sendValue). */
export function jsonFrameLength(value: unknown): number {
  return 1 + utf8Length(JSON.stringify(value));
}

/**
 * A sub-protocol's message passed as a value (simulator only, AgentConfig.directValues): the
 * agent routes it by `tag` to that protocol's `onValue`, as it routes a frame by its first byte.
 * Membership messages, the hottest, travel bare. Senders and receivers treat `msg` as immutable.
 */
export class ProtocolValue {
  constructor(
    readonly tag: number,
    readonly msg: object,
  ) {}
}

export function tagOf(peer: string, data: Uint8Array): number {
  if (data.length === 0) throw new WireError(peer, '', 'empty frame');
  return data[0]!;
}

export function payloadOf(data: Uint8Array): Uint8Array {
  return data.subarray(1);
}

export function parseJson(peer: string, data: Uint8Array): unknown {
  let text: string;
  try {
    text = dec.decode(data.subarray(1));
  } catch {
    throw new WireError(peer, '', 'payload is not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new WireError(peer, '', `payload is not valid JSON (${(err as Error).message})`);
  }
}

// ───────────────────────────── small validators ─────────────────────────────

export type Obj = Record<string, unknown>;

export function obj(peer: string, v: unknown, path: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new WireError(peer, path, 'expected an object');
  return v as Obj;
}

export function str(peer: string, v: unknown, path: string, max = 4096): string {
  if (typeof v !== 'string') throw new WireError(peer, path, 'expected a string');
  if (v.length > max) throw new WireError(peer, path, `string longer than ${max}`);
  return v;
}

export function nonEmptyStr(peer: string, v: unknown, path: string, max = 4096): string {
  const s = str(peer, v, path, max);
  if (s.length === 0) throw new WireError(peer, path, 'expected a non-empty string');
  return s;
}

export function uint(peer: string, v: unknown, path: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    throw new WireError(peer, path, `expected an integer in [0, ${max}]`);
  }
  return v;
}

export function arr(peer: string, v: unknown, path: string, maxLen: number): unknown[] {
  if (!Array.isArray(v)) throw new WireError(peer, path, 'expected an array');
  if (v.length > maxLen) throw new WireError(peer, path, `more than ${maxLen} items`);
  return v;
}

export function oneOf<T extends string>(peer: string, v: unknown, path: string, values: readonly T[]): T {
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) {
    throw new WireError(peer, path, `expected one of ${values.join(', ')}`);
  }
  return v as T;
}

// ───────────────────────────── membership ─────────────────────────────

const STATUSES: readonly MemberStatus[] = ['alive', 'suspect', 'dead', 'left'];

function memberState(peer: string, v: unknown, path: string): MemberState {
  const o = obj(peer, v, path);
  return {
    id: nonEmptyStr(peer, o.id, `${path}.id`, LIMITS.maxIdLength),
    addrs: arr(peer, o.addrs, `${path}.addrs`, LIMITS.maxAddrs).map((a, i) =>
      str(peer, a, `${path}.addrs[${i}]`, LIMITS.maxAddrLength),
    ),
    incarnation: uint(peer, o.incarnation, `${path}.incarnation`, LIMITS.maxIncarnation),
    status: oneOf(peer, o.status, `${path}.status`, STATUSES),
  };
}

function updates(peer: string, v: unknown, path: string): MemberState[] {
  return arr(peer, v, path, LIMITS.maxUpdates).map((u, i) => memberState(peer, u, `${path}[${i}]`));
}

export function encodeMembership(msg: MembershipMessage): Uint8Array {
  return frameJson(TAG_MEMBERSHIP, msg);
}

/** UTF-8 length of a string. */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

const stateLengths = new WeakMap<MemberState, number>();
const measure = (u: object) => utf8Length(JSON.stringify(u));

function stateLength(u: MemberState): number {
  const ids = (u as TaggedState)[STATE_IDS];
  if (ids !== undefined) {
    const cached = ids.cachedLength(u as TaggedState, measure);
    if (cached !== undefined) return cached;
  }
  let n = stateLengths.get(u);
  if (n === undefined) {
    n = utf8Length(JSON.stringify(u));
    stateLengths.set(u, n);
  }
  return n;
}

/**
 * `encodeMembership(msg).length`, without encoding: the simulator passes membership messages as
 * values (Transport.sendValue) and charges the network what the encoding would have cost. Update
 * lengths are memoised per (immutable) state object. Exact for messages built as Membership does
 * (keys in the order t, seq, target, upd) — tested against the encoder.
 */
/** String(x).length (JSON of a number) without building the string for small whole numbers. */
function numberLength(x: number): number {
  if (!(x >= 0 && x < 1e9 && Number.isInteger(x))) return String(x).length;
  let n = 1;
  while (x >= 10) {
    x = Math.floor(x / 10);
    n++;
  }
  return n;
}

export function membershipByteLength(msg: MembershipMessage): number {
  let n = 1; // tag
  switch (msg.t) {
    case 'gossip':
      n += 21; // {"t":"gossip","upd":[
      break;
    case 'ping':
    case 'ack':
      n += 14 + msg.t.length + numberLength(msg.seq) + 8; // {"t":"ping","seq":  N  ,"upd":[
      break;
    case 'ping-req':
      n += 22 + numberLength(msg.seq) + 10 + utf8Length(JSON.stringify(msg.target)) + 8;
      break;
  }
  const upd = msg.upd;
  for (let i = 0; i < upd.length; i++) n += stateLength(upd[i]!);
  if (upd.length > 1) n += upd.length - 1;
  return n + 2; // ]}
}

export function decodeMembership(peer: string, data: Uint8Array): MembershipMessage {
  const o = obj(peer, parseJson(peer, data), '');
  const t = oneOf(peer, o.t, 't', ['ping', 'ack', 'ping-req', 'gossip'] as const);
  const upd = updates(peer, o.upd, 'upd');
  switch (t) {
    case 'ping':
    case 'ack':
      return { t, seq: uint(peer, o.seq, 'seq'), upd };
    case 'ping-req':
      return {
        t,
        seq: uint(peer, o.seq, 'seq'),
        target: nonEmptyStr(peer, o.target, 'target', LIMITS.maxIdLength),
        upd,
      };
    case 'gossip':
      return { t, upd };
  }
}

export function encodePushPull(msg: PushPull): Uint8Array {
  return frameJson(TAG_PUSH_PULL, msg);
}

/** `encodePushPull(msg).length` without encoding (see membershipByteLength). */
export function pushPullByteLength(msg: PushPull): number {
  // 1 tag + {"t":"push-pull","join":  true|false  [,"digest":N]  ,"members":[ … ]}
  let n = 1 + 24 + (msg.join ? 4 : 5);
  if (msg.digest !== undefined) n += 10 + String(msg.digest).length;
  n += 12;
  const m = msg.members;
  for (let i = 0; i < m.length; i++) n += stateLength(m[i]!);
  if (m.length > 1) n += m.length - 1;
  return n + 2;
}

export function decodePushPull(peer: string, data: Uint8Array): PushPull {
  const o = obj(peer, parseJson(peer, data), '');
  oneOf(peer, o.t, 't', ['push-pull'] as const);
  if (typeof o.join !== 'boolean') throw new WireError(peer, 'join', 'expected a boolean');
  const members = updates(peer, o.members, 'members');
  if (o.digest === undefined) return { t: 'push-pull', join: o.join, members };
  return { t: 'push-pull', join: o.join, digest: uint(peer, o.digest, 'digest'), members };
}
