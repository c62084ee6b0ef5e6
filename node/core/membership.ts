import type { Clock, Logger, Random, Timer } from './io.ts';
import { sample, shuffle } from './random.ts';

/**
 * SWIM-style membership with memberlist's refinements (piggybacked and periodic gossip with a
 * bounded retransmit queue, push-pull full sync, reconnect to the dead), written sans-IO: it sees
 * only a Clock, a Random and a `MemberNet` to send messages through. Same inputs → same decisions.
 *
 * Member state is a join-semilattice: an update (incarnation, status) replaces the known one when
 * it is greater in the order (incarnation, rank(status)) — with the SWIM rule that `alive` needs a
 * strictly greater incarnation. Only the member itself raises its incarnation (to refute a
 * suspicion or to come back after a restart), so every agent that has seen the same updates holds
 * the same view. Local timers (suspicion timeout) only ever move a member up the order.
 */

export type MemberStatus = 'alive' | 'suspect' | 'dead' | 'left';

export interface MemberState {
  id: string;
  addrs: string[];
  incarnation: number;
  status: MemberStatus;
}

export interface Member extends MemberState {
  /** Local clock time of the last status change (not gossiped). */
  changedAt: number;
}

export type MembershipMessage =
  | { t: 'ping'; seq: number; upd: MemberState[] }
  | { t: 'ack'; seq: number; upd: MemberState[] }
  | { t: 'ping-req'; seq: number; target: string; upd: MemberState[] }
  | { t: 'gossip'; upd: MemberState[] };

export interface PushPull {
  t: 'push-pull';
  join: boolean;
  members: MemberState[];
}

/** How membership reaches the network; the agent encodes and routes these. */
export interface MemberNet {
  send(to: string, msg: MembershipMessage): void;
  pushPull(to: string, msg: PushPull, timeoutMs: number): Promise<PushPull>;
  /** Resolve a join address to a peer id (libp2p dial). */
  dial(addr: string): Promise<string>;
  /** Teach the transport a member's addresses. */
  learn(id: string, addrs: string[]): void;
}

export interface MembershipConfig {
  /** One probe of one member per interval. */
  probeIntervalMs: number;
  /** Wait for a direct ack before asking others to probe indirectly. */
  probeTimeoutMs: number;
  /** How many members are asked to probe indirectly. */
  indirectChecks: number;
  /** Suspicion timeout = max(suspicionMinMs, suspicionMult × log10(n+1) × probeIntervalMs). */
  suspicionMult: number;
  suspicionMinMs: number;
  /** Gossip queued updates every interval to `gossipFanout` random members. */
  gossipIntervalMs: number;
  gossipFanout: number;
  /** An update is sent retransmitMult × ceil(log10(n+1)) times. */
  retransmitMult: number;
  /** Updates piggybacked on one message at most (streams over TCP: no datagram size to respect). */
  maxPiggyback: number;
  /** Full state exchange with one random member (scaled up past 32 members). */
  pushPullIntervalMs: number;
  /** Try to reach one dead member (it may have restarted). */
  reconnectIntervalMs: number;
  /** Keep gossiping to members this long after they died (so a falsely-dead member can refute). */
  gossipToTheDeadMs: number;
  /** Join retry backoff. */
  joinRetryMinMs: number;
  joinRetryMaxMs: number;
  requestTimeoutMs: number;
}

export const defaultMembershipConfig: MembershipConfig = {
  probeIntervalMs: 500,
  probeTimeoutMs: 250,
  indirectChecks: 3,
  suspicionMult: 4,
  suspicionMinMs: 1500,
  gossipIntervalMs: 200,
  gossipFanout: 3,
  retransmitMult: 4,
  maxPiggyback: 64,
  pushPullIntervalMs: 2_000,
  reconnectIntervalMs: 2_000,
  gossipToTheDeadMs: 30_000,
  joinRetryMinMs: 250,
  joinRetryMaxMs: 5_000,
  requestTimeoutMs: 2_000,
};

const RANK: Record<MemberStatus, number> = { alive: 0, suspect: 1, dead: 2, left: 3 };

/** Does `u` supersede `cur` (the SWIM precedence rules as one order)? */
export function supersedes(
  u: Pick<MemberState, 'incarnation' | 'status'>,
  cur: Pick<MemberState, 'incarnation' | 'status'>,
): boolean {
  if (u.status === 'alive') return u.incarnation > cur.incarnation;
  if (u.incarnation !== cur.incarnation) return u.incarnation > cur.incarnation;
  return RANK[u.status] > RANK[cur.status];
}

export type MemberChange = (member: Member, previous: MemberStatus | undefined) => void;

interface PendingProbe {
  target: string;
  seq: number;
  acked: boolean;
  timers: Timer[];
}

interface Relay {
  origin: string;
  originSeq: number;
  timer: Timer;
}

export class Membership {
  readonly cfg: MembershipConfig;
  private readonly members = new Map<string, Member>();
  /** The same members sorted by id (kept sorted on insert: list() is hot, sorting it was not cheap). */
  private readonly sorted: Member[] = [];
  /** Cached ids of alive members (self excluded); invalidated by any status change or new member. */
  private aliveCache: string[] | undefined;
  /** Members other than self not `left`, sorted, and how many of them are dead (gossip targets). */
  private gossipCache: { members: Member[]; dead: number } | undefined;
  /** Latest update per member still to be retransmitted, with its transmit count. */
  private readonly queue = new Map<string, { upd: MemberState; transmits: number }>();
  private readonly suspicionTimers = new Map<string, Timer>();
  private readonly relays = new Map<number, Relay>();
  private probeOrder: string[] = [];
  private probeIndex = 0;
  private probe: PendingProbe | undefined;
  private seq = 0;
  /** The pending timer of each periodic task, by task name. */
  private readonly periodic = new Map<string, Timer>();
  private running = false;
  private seeds: string[] = [];
  private joinBackoffMs = 0;
  private joinTimer: Timer | undefined;
  private listeners: MemberChange[] = [];
  /** Unknown senders we are already syncing with (so a burst of their messages triggers one push-pull). */
  private readonly syncingWith = new Set<string>();

  constructor(
    private readonly self: { id: string; addrs: () => string[]; incarnation: number },
    private readonly clock: Clock,
    private readonly random: Random,
    private readonly net: MemberNet,
    private readonly log: Logger,
    cfg: Partial<MembershipConfig> = {},
  ) {
    this.cfg = { ...defaultMembershipConfig, ...cfg };
    this.insert({
      id: self.id,
      addrs: self.addrs(),
      incarnation: self.incarnation,
      status: 'alive',
      changedAt: clock.now(),
    });
  }

  // ───────────────────────────── public API ─────────────────────────────

  onChange(fn: MemberChange): void {
    this.listeners.push(fn);
  }

  get id(): string {
    return this.self.id;
  }

  get incarnation(): number {
    return this.members.get(this.self.id)!.incarnation;
  }

  /** All known members (self included), sorted by id. The array is a copy; the members are live objects. */
  list(): Member[] {
    return this.sorted.slice();
  }

  /** Number of known members (self included). */
  get size(): number {
    return this.sorted.length;
  }

  get(id: string): Member | undefined {
    return this.members.get(id);
  }

  /** Ids of members currently believed alive (self excluded), sorted. */
  aliveIds(): string[] {
    this.aliveCache ??= this.sorted
      .filter((m) => m.id !== this.self.id && m.status === 'alive')
      .map((m) => m.id);
    return this.aliveCache;
  }

  /** Start probing and gossiping; join through `seeds` (addresses) in the background. */
  start(seeds: string[], known: MemberState[] = []): void {
    this.running = true;
    // Members remembered from a previous run: try them as seeds too (they may be alive).
    for (const m of known) {
      if (m.id === this.self.id || this.members.has(m.id)) continue;
      this.insert({ ...m, addrs: m.addrs.slice(), status: 'dead', changedAt: this.clock.now() });
      this.net.learn(m.id, m.addrs);
    }
    // Announce our (new) incarnation.
    this.enqueue(this.selfState());
    this.seeds = seeds.slice();
    this.every(
      'probe',
      () => this.cfg.probeIntervalMs,
      () => this.probeTick(),
    );
    this.every(
      'gossip',
      () => this.cfg.gossipIntervalMs,
      () => this.gossipTick(),
    );
    this.every(
      'push-pull',
      () => this.pushPullInterval(),
      () => this.pushPullTick(),
    );
    this.every(
      'reconnect',
      () => this.cfg.reconnectIntervalMs,
      () => this.reconnectTick(),
    );
    this.joinBackoffMs = this.cfg.joinRetryMinMs;
    if (this.seeds.length > 0 || known.length > 0) this.scheduleJoin(0);
  }

  stop(): void {
    this.running = false;
    for (const t of this.periodic.values()) t.cancel();
    this.periodic.clear();
    for (const t of this.suspicionTimers.values()) t.cancel();
    this.suspicionTimers.clear();
    for (const r of this.relays.values()) r.timer.cancel();
    this.relays.clear();
    if (this.probe) for (const t of this.probe.timers) t.cancel();
    this.probe = undefined;
    this.joinTimer?.cancel();
  }

  /** Graceful leave: mark self `left` and push it directly to up to `fanout` members. */
  leave(fanout = 8): void {
    const me = this.members.get(this.self.id)!;
    this.setState(me, { ...this.selfState(), status: 'left' });
    const upd = [this.selfState()];
    for (const id of sample(this.random, this.aliveIds(), fanout)) this.net.send(id, { t: 'gossip', upd });
  }

  /** Our addresses changed (e.g. listener bound): re-announce with a new incarnation. */
  refreshSelf(): void {
    const me = this.members.get(this.self.id)!;
    me.addrs = this.self.addrs();
    me.incarnation += 1;
    this.enqueue(this.selfState());
  }

  /** A transport hint (connection to `id` dropped): probe it now rather than at its turn. */
  hintDisconnected(id: string): void {
    const m = this.members.get(id);
    if (!this.running || !m || m.status !== 'alive' || this.probe) return;
    this.probeMember(id);
  }

  /** Ask a member to probe right now (used by tests and the API). */
  probeNow(): void {
    if (!this.probe) this.probeTick();
  }

  // ───────────────────────────── inbound ─────────────────────────────

  handleMessage(from: string, msg: MembershipMessage): void {
    if (!this.running) return;
    this.applyUpdates(msg.upd, from);
    // A member that knows us but that we never heard of (gossip budgets ran out before reaching
    // us): learn everything it knows at once rather than waiting for the next push-pull round.
    if (!this.members.has(from) && !this.syncingWith.has(from) && this.syncingWith.size < 8) {
      this.syncingWith.add(from);
      void this.pushPullWith(from, false).finally(() => this.syncingWith.delete(from));
    }
    switch (msg.t) {
      case 'ping':
        this.net.send(from, { t: 'ack', seq: msg.seq, upd: this.piggyback(from) });
        break;
      case 'ack': {
        const p = this.probe;
        if (p && p.seq === msg.seq) {
          p.acked = true;
          for (const t of p.timers) t.cancel();
          this.probe = undefined;
          return;
        }
        const relay = this.relays.get(msg.seq);
        if (relay) {
          relay.timer.cancel();
          this.relays.delete(msg.seq);
          this.net.send(relay.origin, { t: 'ack', seq: relay.originSeq, upd: this.piggyback(relay.origin) });
        }
        break;
      }
      case 'ping-req': {
        const seq = this.nextSeq();
        const timer = this.clock.setTimer(this.cfg.probeIntervalMs, () => this.relays.delete(seq));
        this.relays.set(seq, { origin: from, originSeq: msg.seq, timer });
        this.net.send(msg.target, { t: 'ping', seq, upd: this.piggyback(msg.target) });
        break;
      }
      case 'gossip':
        break;
    }
  }

  handlePushPull(from: string, msg: PushPull): PushPull {
    if (msg.join) this.log.debug({ peer: from }, 'join request');
    const reply: PushPull = { t: 'push-pull', join: false, members: this.states() };
    this.applyUpdates(msg.members, from);
    return reply;
  }

  /**
   * Apply updates from a peer. Returns how many changed our view. When the peer told us something
   * our view strictly supersedes (e.g. `dead` at an incarnation its subject already refuted), we
   * answer it directly with what we know: epidemic gossip has a bounded retransmit budget and may
   * miss an agent, and without this correction that agent would keep a false `dead` until the
   * next push-pull.
   */
  applyUpdates(updates: readonly MemberState[], from: string): number {
    let changed = 0;
    const corrections: MemberState[] = [];
    for (const u of updates) {
      if (this.applyUpdate(u, from)) {
        changed++;
        continue;
      }
      const cur = this.members.get(u.id);
      if (cur && from !== this.self.id && u.status !== 'alive' && supersedes(cur, u)) {
        corrections.push(this.stateOf(cur));
      }
    }
    if (corrections.length > 0 && this.running) {
      this.net.send(from, { t: 'gossip', upd: corrections.slice(0, this.cfg.maxPiggyback) });
    }
    return changed;
  }

  // ───────────────────────────── state transitions ─────────────────────────────

  private applyUpdate(u: MemberState, from: string): boolean {
    if (u.id === this.self.id) return this.aboutSelf(u, from);
    const cur = this.members.get(u.id);
    if (cur && !supersedes(u, cur)) {
      // Same incarnation, same status but new addresses can't happen (addresses change only with
      // a new incarnation), so nothing to do.
      return false;
    }
    if (!cur) {
      const m: Member = { ...u, addrs: u.addrs.slice(), changedAt: this.clock.now() };
      this.insert(m);
      this.net.learn(u.id, u.addrs);
      this.enqueue(u);
      this.afterChange(m, undefined);
      return true;
    }
    this.setState(cur, u);
    return true;
  }

  /** Someone says something about us: refute suspicion/death by raising our incarnation. */
  private aboutSelf(u: MemberState, from: string): boolean {
    const me = this.members.get(this.self.id)!;
    if (me.status === 'left') return false;
    if (u.status === 'alive' || u.incarnation < me.incarnation) return false;
    // suspect/dead/left about us at our incarnation or above: we are alive — say so, louder.
    me.incarnation = u.incarnation + 1;
    this.log.info({ peer: from, said: u.status, incarnation: me.incarnation }, 'refuting');
    this.enqueue(this.selfState());
    for (const l of this.listeners) l(me, 'alive');
    return true;
  }

  private setState(m: Member, u: MemberState): void {
    const prev = m.status;
    m.incarnation = u.incarnation;
    if (u.addrs.length > 0 && u.addrs.join() !== m.addrs.join()) {
      m.addrs = u.addrs.slice();
      this.net.learn(m.id, m.addrs);
    }
    if (u.status !== prev) {
      m.status = u.status;
      m.changedAt = this.clock.now();
      this.aliveCache = undefined;
      this.gossipCache = undefined;
    }
    this.enqueue(this.stateOf(m));
    this.afterChange(m, prev);
  }

  private afterChange(m: Member, prev: MemberStatus | undefined): void {
    if (m.id !== this.self.id) {
      const st = this.suspicionTimers.get(m.id);
      if (st && m.status !== 'suspect') {
        st.cancel();
        this.suspicionTimers.delete(m.id);
      }
      if (m.status === 'suspect' && !this.suspicionTimers.has(m.id)) this.startSuspicion(m);
    }
    if (prev !== m.status) {
      this.log.info({ member: m.id, status: m.status, incarnation: m.incarnation, was: prev }, 'member');
    }
    for (const l of this.listeners) l(m, prev);
  }

  private startSuspicion(m: Member): void {
    const n = this.members.size;
    const timeout = Math.max(
      this.cfg.suspicionMinMs,
      Math.round(this.cfg.suspicionMult * Math.log10(n + 1) * this.cfg.probeIntervalMs),
    );
    const inc = m.incarnation;
    const timer = this.clock.setTimer(timeout, () => {
      this.suspicionTimers.delete(m.id);
      const cur = this.members.get(m.id);
      if (cur && cur.status === 'suspect' && cur.incarnation === inc) {
        this.setState(cur, { ...this.stateOf(cur), status: 'dead' });
      }
    });
    this.suspicionTimers.set(m.id, timer);
  }

  private suspect(id: string): void {
    const m = this.members.get(id);
    if (!m || m.status !== 'alive') return;
    this.setState(m, { ...this.stateOf(m), status: 'suspect' });
  }

  // ───────────────────────────── probing ─────────────────────────────

  private probeTick(): void {
    if (this.probe) return; // previous probe still running (its timers end it)
    const target = this.nextProbeTarget();
    if (target) this.probeMember(target);
  }

  private nextProbeTarget(): string | undefined {
    for (let guard = 0; guard < 2; guard++) {
      while (this.probeIndex < this.probeOrder.length) {
        const id = this.probeOrder[this.probeIndex++]!;
        const m = this.members.get(id);
        if (m && (m.status === 'alive' || m.status === 'suspect')) return id;
      }
      // Round-robin over a fresh random order each round (SWIM: bounded time to first probe).
      this.probeOrder = shuffle(
        this.random,
        this.sorted
          .filter((m) => m.id !== this.self.id && (m.status === 'alive' || m.status === 'suspect'))
          .map((m) => m.id),
      );
      this.probeIndex = 0;
      if (this.probeOrder.length === 0) return undefined;
    }
    return undefined;
  }

  private probeMember(target: string): void {
    const seq = this.nextSeq();
    const p: PendingProbe = { target, seq, acked: false, timers: [] };
    this.probe = p;
    this.net.send(target, { t: 'ping', seq, upd: this.piggyback(target) });
    p.timers.push(
      this.clock.setTimer(this.cfg.probeTimeoutMs, () => {
        if (p.acked || this.probe !== p) return;
        const helpers = sample(
          this.random,
          this.aliveIds().filter((id) => id !== target),
          this.cfg.indirectChecks,
        );
        for (const h of helpers) this.net.send(h, { t: 'ping-req', seq, target, upd: this.piggyback(h) });
      }),
      this.clock.setTimer(this.cfg.probeIntervalMs, () => {
        if (this.probe !== p) return;
        this.probe = undefined;
        if (!p.acked) this.suspect(target);
      }),
    );
  }

  // ───────────────────────────── dissemination ─────────────────────────────

  private enqueue(u: MemberState): void {
    this.queue.set(u.id, { upd: { ...u, addrs: u.addrs.slice() }, transmits: 0 });
  }

  private transmitLimit(): number {
    // memberlist's λ·log(n), with a floor: in small clusters a few random picks can miss a member.
    return Math.max(6, this.cfg.retransmitMult * Math.ceil(Math.log10(this.members.size + 1)));
  }

  /** memberlist's pushPullScale: the full exchange slows down logarithmically past 32 members. */
  private pushPullInterval(): number {
    const n = this.members.size;
    const mult = n <= 32 ? 1 : Math.ceil(Math.log2(n) - Math.log2(32)) + 1;
    return this.cfg.pushPullIntervalMs * mult;
  }

  /** Up to maxPiggyback queued updates, least-transmitted first; the recipient's own state first if we doubt it. */
  private piggyback(to: string): MemberState[] {
    const out: MemberState[] = [];
    const target = this.members.get(to);
    if (target && target.status !== 'alive') out.push(this.stateOf(target));
    if (this.queue.size === 0) return out;
    const limit = this.transmitLimit();
    // Bucket by transmit count (O(queue), no sort); within a bucket, queue (insertion) order.
    const buckets: { upd: MemberState; transmits: number }[][] = [];
    for (const e of this.queue.values()) {
      // A member knows it is alive; telling it so wastes a transmission (doubts were added above).
      if (e.upd.id === to) continue;
      const bucket = buckets[e.transmits];
      if (bucket) bucket.push(e);
      else buckets[e.transmits] = [e];
    }
    for (const bucket of buckets) {
      if (!bucket) continue;
      for (const e of bucket) {
        if (out.length >= this.cfg.maxPiggyback) return out;
        out.push(e.upd);
        e.transmits++;
        if (e.transmits >= limit) this.queue.delete(e.upd.id);
      }
    }
    return out;
  }

  private gossipTick(): void {
    if (this.queue.size === 0) return;
    const now = this.clock.now();
    if (this.gossipCache === undefined) {
      const members = this.sorted.filter((m) => m.id !== this.self.id && m.status !== 'left');
      this.gossipCache = { members, dead: members.filter((m) => m.status === 'dead').length };
    }
    // Alive, suspect, and dead for less than gossipToTheDeadMs (sorted; O(1) when nobody is dead).
    const { members, dead } = this.gossipCache;
    const targets =
      dead === 0
        ? members
        : members.filter((m) => m.status !== 'dead' || now - m.changedAt < this.cfg.gossipToTheDeadMs);
    for (const m of sample(this.random, targets, this.cfg.gossipFanout)) {
      const upd = this.piggyback(m.id);
      if (upd.length > 0) this.net.send(m.id, { t: 'gossip', upd });
    }
  }

  private pushPullTick(): void {
    const alive = this.aliveIds();
    if (alive.length === 0) return;
    void this.pushPullWith(alive[this.random.int(alive.length)]!, false);
  }

  private reconnectTick(): void {
    const dead = this.sorted.filter((m) => m.status === 'dead');
    if (dead.length > 0) void this.pushPullWith(dead[this.random.int(dead.length)]!.id, false);
    // Alone (everyone else dead or none known): keep knocking on the seeds.
    if (this.aliveIds().length === 0 && this.seeds.length > 0 && !this.joinTimer) this.scheduleJoin(0);
  }

  private async pushPullWith(id: string, join: boolean): Promise<boolean> {
    try {
      const reply = await this.net.pushPull(
        id,
        { t: 'push-pull', join, members: this.states() },
        this.cfg.requestTimeoutMs,
      );
      if (!this.running) return false;
      this.applyUpdates(reply.members, id);
      return true;
    } catch (err) {
      this.log.debug({ peer: id, err: String(err) }, 'push-pull failed');
      return false;
    }
  }

  // ───────────────────────────── joining ─────────────────────────────

  private scheduleJoin(delayMs: number): void {
    this.joinTimer = this.clock.setTimer(delayMs, () => {
      this.joinTimer = undefined;
      void this.tryJoin();
    });
  }

  private async tryJoin(): Promise<void> {
    if (!this.running) return;
    let ok = false;
    let joinedVia: string | undefined;
    for (const addr of this.seeds) {
      try {
        const id = await this.net.dial(addr);
        if (!this.running) return;
        if (id === this.self.id) continue;
        if (await this.pushPullWith(id, true)) {
          ok = true;
          joinedVia ??= id;
        }
      } catch (err) {
        this.log.debug({ addr, err: String(err) }, 'join: seed unreachable');
      }
    }
    // Members remembered from disk are seeds too.
    if (!ok) {
      for (const m of this.list()) {
        if (m.id === this.self.id || m.status === 'left') continue;
        if (await this.pushPullWith(m.id, true)) {
          ok = true;
          break;
        }
      }
    }
    if (!this.running) return;
    if (ok) {
      this.log.info({ members: this.aliveIds().length + 1 }, 'joined');
      this.joinBackoffMs = this.cfg.joinRetryMinMs;
      // Members that joined the seed at about the same time as us were not in its answer yet; a
      // second push-pull with the same seed a moment later fills the gap (join storms: the seed
      // hears every joiner first) without waiting a full push-pull interval.
      const via = joinedVia;
      this.joinTimer = this.clock.setTimer(this.cfg.probeIntervalMs * 2, () => {
        this.joinTimer = undefined;
        if (via) void this.pushPullWith(via, false);
        else this.pushPullTick();
      });
      return;
    }
    const delay = this.joinBackoffMs;
    this.joinBackoffMs = Math.min(this.cfg.joinRetryMaxMs, this.joinBackoffMs * 2);
    this.scheduleJoin(delay);
  }

  // ───────────────────────────── helpers ─────────────────────────────

  private every(name: string, interval: () => number, fn: () => void): void {
    // Start each periodic task at a random phase so agents started together do not beat in step.
    const loop = () => {
      if (!this.running) return;
      this.periodic.set(name, this.clock.setTimer(interval(), loop));
      fn();
    };
    this.periodic.set(name, this.clock.setTimer(this.random.int(interval()) + 1, loop));
  }

  private insert(m: Member): void {
    this.members.set(m.id, m);
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.sorted[mid]!.id < m.id) lo = mid + 1;
      else hi = mid;
    }
    this.sorted.splice(lo, 0, m);
    this.aliveCache = undefined;
    this.gossipCache = undefined;
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) % 0x7fffffff;
    return this.seq;
  }

  private selfState(): MemberState {
    return this.stateOf(this.members.get(this.self.id)!);
  }

  private stateOf(m: Member): MemberState {
    return { id: m.id, addrs: m.addrs.slice(), incarnation: m.incarnation, status: m.status };
  }

  private states(): MemberState[] {
    return this.list().map((m) => this.stateOf(m));
  }
}
