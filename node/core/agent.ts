import type { Transport, TransportHandlers } from '../../gossip/transport.ts';
import type { HostFacts } from '../host.ts';
import type { Clock, Logger, Random, Store, Timer } from './io.ts';
import { StoreCorruptError } from './io.ts';
import type { MemberIds } from './member-table.ts';
import {
  type Member,
  type MemberNet,
  type MemberState,
  type MemberStatus,
  Membership,
  type MembershipConfig,
  type MembershipMessage,
  type PushPull,
} from './membership.ts';
import {
  decodeMembership,
  decodePushPull,
  encodeMembership,
  encodePushPull,
  membershipByteLength,
  ProtocolValue,
  pushPullByteLength,
  TAG_APP,
  TAG_MEMBERSHIP,
  TAG_PUSH_PULL,
  TAG_STATE,
  tagOf,
  WireError,
} from './wire.ts';

/**
 * The agent core: a sans-IO composition of membership, cluster-state sync and (later) bidding and
 * reconciliation. It is driven only by transport callbacks and Clock timers and touches the world
 * only through its deps — so the simulator runs exactly this class for thousands of agents.
 */

export interface AgentDeps {
  transport: Transport;
  clock: Clock;
  random: Random;
  store: Store;
  log: Logger;
}

export interface AgentConfig {
  /** Join addresses (multiaddrs for libp2p, sim://id in the simulator). */
  seeds: string[];
  host: HostFacts;
  membership?: Partial<MembershipConfig>;
  /** Persist dirty state at most this often. */
  persistIntervalMs?: number;
  /**
   * Interned member ids for the membership tables (default: this agent's own). A simulation may
   * pass one instance to all its agents: same decisions, one copy of every id.
   */
  memberIds?: MemberIds;
  /**
   * Simulator: send membership messages and push-pulls as values (Transport.sendValue and
   * requestValue, charged their encoded length) instead of JSON bytes, when the transport can.
   * Same decisions, same trace (tested).
   */
  directValues?: boolean;
}

export interface NodeView {
  id: string;
  status: MemberStatus;
  incarnation: number;
  addrs: string[];
  /** Local clock time the status last changed. */
  since: number;
  self: boolean;
}

/** Keys in the agent's Store. */
export const STORE_KEYS = { agent: 'agent.json', members: 'members.json' } as const;
/** Below this many stored join candidates, a newly learned member is written promptly… */
const FEW_CANDIDATES = 3;
/** …within this many ms (changes meanwhile go together), not at the next persist tick. */
const EARLY_MEMBERS_MS = 50;

/**
 * A sub-protocol the agent routes messages to (state sync, bidding, …). Each owns a tag and
 * handles its own decoding (and validation) of untrusted bytes.
 */
export interface SubProtocol {
  readonly tag: number;
  onMessage?(from: string, data: Uint8Array): void;
  onTopic?(topic: string, from: string, data: Uint8Array): void;
  onRequest?(from: string, data: Uint8Array): Uint8Array | Promise<Uint8Array>;
  /** A message of this protocol sent as a value by the same code on another agent (ProtocolValue). */
  onValue?(from: string, msg: object): void;
  start?(): void | Promise<void>;
  stop?(): void | Promise<void>;
  /** Persist durable state; called on the persist interval and at stop. */
  persist?(): void;
}

export class Agent {
  readonly membership: Membership;
  private readonly protocols = new Map<number, SubProtocol>();
  private persistTimer: Timer | undefined;
  /** Membership.version last persisted (-1: never). */
  private membersWritten = -1;
  /** Join candidates in the members.json last written (or loaded). */
  private candidatesWritten = 0;
  /** A prompt write of members.json, pending (see start). */
  private earlyMembers: Timer | undefined;
  /** What this agent last wrote per store key (JSON text). */
  private readonly written = new Map<string, string>();
  private started = false;
  private stopped = false;
  /** Counters for metrics and tests. */
  readonly counters = { badMessages: 0, persistErrors: 0 };
  private readonly previousIncarnation: number;

  constructor(
    readonly deps: AgentDeps,
    readonly cfg: AgentConfig,
  ) {
    const { transport, clock, random, log } = deps;
    this.previousIncarnation = this.loadIncarnation();
    this.membership = new Membership(
      { id: transport.id, addrs: () => transport.addrs(), incarnation: this.previousIncarnation + 1 },
      clock,
      random,
      cfg.directValues && transport.sendValue && transport.requestValue
        ? new ValueNet(transport)
        : {
            send: (to, msg) => transport.send(to, encodeMembership(msg)),
            pushPull: async (to, msg, timeoutMs) =>
              decodePushPull(to, await transport.request(to, encodePushPull(msg), timeoutMs)),
            dial: (addr) => transport.dial(addr),
            learn: (id, addrs) => transport.addPeer(id, addrs),
          },
      log.child({ mod: 'membership' }),
      cfg.membership,
      cfg.memberIds,
    );
  }

  get id(): string {
    return this.deps.transport.id;
  }

  get log(): Logger {
    return this.deps.log;
  }

  /** Register a sub-protocol before start(). */
  use(p: SubProtocol): void {
    if (this.protocols.has(p.tag)) throw new Error(`protocol tag ${p.tag} registered twice`);
    this.protocols.set(p.tag, p);
  }

  async start(): Promise<void> {
    if (this.started) throw new Error('agent already started');
    this.started = true;
    const { transport, log } = this.deps;
    await transport.start(this.handlers());
    // Addresses are known only once listening: announce them with our new incarnation.
    this.membership.refreshSelf();
    this.saveIncarnation();
    for (const p of this.protocols.values()) await p.start?.();
    const remembered = this.loadMembers();
    this.candidatesWritten = remembered.length;
    // While the stored join candidates are few (a seed started without --join remembers nobody),
    // a newly learned member is written within EARLY_MEMBERS_MS, not at the next persist tick: an
    // agent killed in between would restart remembering nobody and, on a new port, never rejoin.
    // A formed start (learned in bulk) and status flaps write nothing early.
    this.membership.onChange(
      (m, previous) => {
        if (previous !== undefined || m.status !== 'alive' || m.id === this.id) return;
        if (this.stopped || this.candidatesWritten >= FEW_CANDIDATES || this.earlyMembers) return;
        this.earlyMembers = this.deps.clock.setTimer(EARLY_MEMBERS_MS, () => {
          this.earlyMembers = undefined;
          if (!this.stopped) this.persistMembers();
        });
      },
      () => {},
    );
    this.membership.start(this.cfg.seeds, remembered);
    this.schedulePersist();
    log.info(
      {
        id: this.id,
        addrs: transport.addrs(),
        incarnation: this.membership.incarnation,
        seeds: this.cfg.seeds,
      },
      'agent started',
    );
  }

  /** Stop. With `leave`, tell the cluster first (status `left`) instead of letting it detect death. */
  async stop(opts: { leave?: boolean; leaveGraceMs?: number } = {}): Promise<void> {
    if (this.stopped || !this.started) return;
    this.stopped = true;
    if (opts.leave) {
      this.membership.leave();
      await new Promise<void>((resolve) => this.deps.clock.setTimer(opts.leaveGraceMs ?? 200, resolve));
    }
    this.membership.stop();
    this.persistTimer?.cancel();
    this.earlyMembers?.cancel();
    for (const p of this.protocols.values()) await p.stop?.();
    this.persistNow();
    await this.deps.transport.stop();
    this.deps.log.info({ id: this.id, left: !!opts.leave }, 'agent stopped');
  }

  nodes(): NodeView[] {
    return this.membership.list().map((m: Member) => ({
      id: m.id,
      status: m.status,
      incarnation: m.incarnation,
      addrs: [...m.addrs],
      since: m.changedAt,
      self: m.id === this.id,
    }));
  }

  // ───────────────────────────── transport plumbing ─────────────────────────────

  private handlers(): TransportHandlers {
    // Captured directly (not through `this`): one object less to reach per simulated message.
    const membership = this.membership;
    return {
      onMessage: (from, data) => this.guard(from, () => this.onMessage(from, data)),
      onTopic: (topic, from, data) =>
        this.guard(from, () => {
          const p = this.protocols.get(tagOf(from, data));
          if (!p?.onTopic) throw new WireError(from, '', `unexpected frame tag ${data[0]} on topic ${topic}`);
          p.onTopic(topic, from, data);
        }),
      onRequest: (from, data) => this.onRequest(from, data),
      onPeerDisconnected: (peer) => this.membership.hintDisconnected(peer),
      // Only our own messages travel as values (directValues): membership bare, others tagged.
      onRequestValue: (from, value) => {
        const reply = this.membership.handlePushPull(from, value as PushPull);
        return { value: reply, bytes: pushPullByteLength(reply) };
      },
      onValue: (from, value, fromHint) => {
        try {
          if (value instanceof ProtocolValue) {
            const p = this.protocols.get(value.tag);
            if (!p?.onValue) throw new WireError(from, '', `unknown value tag ${value.tag}`);
            p.onValue(from, value.msg);
          } else membership.handleMessage(from, value as MembershipMessage, fromHint);
        } catch (err) {
          this.noteBad(from, err);
        }
      },
    };
  }

  private onMessage(from: string, data: Uint8Array): void {
    const tag = tagOf(from, data);
    if (tag === TAG_MEMBERSHIP) {
      this.membership.handleMessage(from, decodeMembership(from, data));
      return;
    }
    const p = this.protocols.get(tag);
    if (!p?.onMessage) throw new WireError(from, '', `unknown frame tag ${tag}`);
    p.onMessage(from, data);
  }

  private onRequest(from: string, data: Uint8Array): Uint8Array | Promise<Uint8Array> {
    try {
      const tag = tagOf(from, data);
      if (tag === TAG_PUSH_PULL) {
        const reply: PushPull = this.membership.handlePushPull(from, decodePushPull(from, data));
        return encodePushPull(reply);
      }
      const p = this.protocols.get(tag);
      if (!p?.onRequest) throw new WireError(from, '', `unknown request tag ${tag}`);
      return p.onRequest(from, data);
    } catch (err) {
      this.noteBad(from, err);
      throw err;
    }
  }

  /** Run a handler; a malformed message is logged with the peer and dropped — never fatal. */
  private guard(from: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.noteBad(from, err);
    }
  }

  private noteBad(from: string, err: unknown): void {
    if (err instanceof WireError) {
      this.counters.badMessages++;
      this.deps.log.warn({ peer: from, field: err.path, problem: err.problem }, 'rejected message');
    } else {
      this.deps.log.error({ peer: from, err: String((err as Error)?.stack ?? err) }, 'handler failed');
    }
  }

  // ───────────────────────────── persistence ─────────────────────────────

  private loadIncarnation(): number {
    const raw = this.readJson(STORE_KEYS.agent);
    const inc = (raw as { incarnation?: unknown } | undefined)?.incarnation;
    return typeof inc === 'number' && Number.isSafeInteger(inc) && inc >= 0 ? inc : 0;
  }

  private saveIncarnation(): void {
    // At start, durable before the agent announces itself.
    this.writeJson(STORE_KEYS.agent, { incarnation: this.membership.incarnation }, true);
  }

  private loadMembers(): MemberState[] {
    const raw = this.readJson(STORE_KEYS.members);
    if (!Array.isArray(raw)) return [];
    const out: MemberState[] = [];
    for (const m of raw) {
      if (
        m &&
        typeof m.id === 'string' &&
        Array.isArray(m.addrs) &&
        m.addrs.every((a: unknown) => typeof a === 'string') &&
        m.id !== this.id
      ) {
        out.push({ id: m.id, addrs: m.addrs, incarnation: 0, status: 'dead' });
      }
    }
    return out;
  }

  private schedulePersist(): void {
    this.persistTimer = this.deps.clock.setTimer(this.cfg.persistIntervalMs ?? 1000, () => {
      if (this.stopped) return;
      this.persistNow();
      this.schedulePersist();
    });
  }

  /** Write what changed. A failing disk is logged and retried next time — never fatal, nothing dropped. */
  persistNow(): void {
    this.persistMembers();
    for (const p of this.protocols.values()) {
      try {
        p.persist?.();
      } catch (err) {
        this.counters.persistErrors++;
        this.deps.log.error({ err: String(err) }, 'persist failed; will retry');
      }
    }
  }

  /** agent.json and members.json, if membership changed since they were written. */
  private persistMembers(): void {
    const version = this.membership.version;
    if (version === this.membersWritten) return;
    // members.json: a bounded set of join candidates (Membership.joinCandidates), not all N.
    const candidates = this.membership.joinCandidates();
    const ok =
      this.writeJson(STORE_KEYS.agent, { incarnation: this.membership.incarnation }) &&
      this.writeJson(STORE_KEYS.members, candidates);
    if (ok) {
      this.membersWritten = version;
      this.candidatesWritten = candidates.length;
    }
  }

  private readJson(key: string): unknown {
    try {
      const bytes = this.deps.store.read(key);
      if (!bytes) return undefined;
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (err) {
      const where = err instanceof StoreCorruptError && err.keptAt ? ` (kept at ${err.keptAt})` : '';
      this.deps.log.error(
        { key, err: String(err) },
        `stored ${key} is unreadable${where}; starting without it`,
      );
      return undefined;
    }
  }

  private writeJson(key: string, value: unknown, sync = false): boolean {
    const text = JSON.stringify(value);
    // Membership updates mark the list dirty on every refresh; rewrite (fsync) only real changes.
    if (this.written.get(key) === text) return true;
    try {
      const bytes = new TextEncoder().encode(text);
      // While running, off the event loop when the store can (the real disk); at stop, in place.
      const pending = this.stopped || sync ? undefined : this.deps.store.writeAsync?.(key, bytes);
      if (pending === undefined) this.deps.store.write(key, bytes);
      this.written.set(key, text);
      pending?.catch((err: unknown) => {
        if (this.written.get(key) === text) this.written.delete(key);
        this.membersWritten = -1; // rewrite at the next persist
        this.counters.persistErrors++;
        this.deps.log.error({ key, err: String(err) }, 'could not persist; will retry');
      });
      return true;
    } catch (err) {
      this.counters.persistErrors++;
      this.deps.log.error({ key, err: String(err) }, 'could not persist; will retry');
      return false;
    }
  }
}

/**
 * Membership messages as values (AgentConfig.directValues; the simulator's transport): a class
 * rather than closures — the hottest path of a large simulation reaches the transport in one step.
 */
class ValueNet implements MemberNet {
  constructor(private readonly t: Transport) {}

  send(to: string, msg: MembershipMessage, toNum?: number, fromNum?: number): void {
    this.t.sendValue!(to, msg, membershipByteLength(msg), toNum, fromNum);
  }

  async pushPull(to: string, msg: PushPull, timeoutMs: number): Promise<PushPull> {
    return (await this.t.requestValue!(to, msg, pushPullByteLength(msg), timeoutMs)) as PushPull;
  }

  dial(addr: string): Promise<string> {
    return this.t.dial(addr);
  }

  learn(id: string, addrs: readonly string[]): void {
    this.t.addPeer(id, addrs);
  }
}

export { TAG_APP, TAG_STATE };
