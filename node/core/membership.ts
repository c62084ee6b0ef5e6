import type { Clock, Logger, Random, Timer } from './io.ts';
import {
  IntFifo,
  M_ALIVE,
  M_DEAD,
  M_SUSPECT,
  MemberIds,
  MemberTable,
  mix32,
  Permutation,
  Q_NONE,
  ST_ALIVE,
  ST_DEAD,
  ST_LEFT,
  ST_SUSPECT,
  ST_UNKNOWN,
} from './member-table.ts';

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
  /** Shared and frozen when it comes from a Membership (do not mutate). */
  addrs: readonly string[];
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
  /**
   * Digest of the sender's whole view (MemberTable.digest). A request may carry only the digest
   * (empty `members`): the answer is then empty when the views are equal, the full list otherwise.
   * Absent in messages of agents that predate it (they always send full lists).
   */
  digest?: number;
  members: MemberState[];
}

/** How membership reaches the network; the agent encodes and routes these. */
export interface MemberNet {
  /**
   * `toNum`, `fromNum`: the member numbers of the receiver and of us in our id table, for a
   * transport that can use them (the simulator's, when its agents share one table); any other
   * transport ignores them. `to` alone names the receiver.
   */
  send(to: string, msg: MembershipMessage, toNum?: number, fromNum?: number): void;
  pushPull(to: string, msg: PushPull, timeoutMs: number): Promise<PushPull>;
  /** Resolve a join address to a peer id (libp2p dial). */
  dial(addr: string): Promise<string>;
  /** Teach the transport a member's addresses. */
  learn(id: string, addrs: readonly string[]): void;
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
/**
 * `count` members, each unknown before and alive now, were learned at once (a formed start:
 * Membership.assumeFormed): one call instead of `count` calls of the MemberChange listener.
 */
export type MembersLearned = (count: number) => void;

const NAMES: readonly (MemberStatus | undefined)[] = [undefined, 'alive', 'suspect', 'dead', 'left'];
/** ST_* code of a status name (by its first letter: a, s, d, l). */
function code(status: MemberStatus): number {
  switch (status.charCodeAt(0)) {
    case 97:
      return ST_ALIVE;
    case 115:
      return ST_SUSPECT;
    case 100:
      return ST_DEAD;
    default:
      return ST_LEFT;
  }
}
/** An empty piggyback (shared: messages are never mutated). */
const NOTHING: readonly MemberState[] = Object.freeze([]);
/** Queue marker: picked by the piggyback being built (its transmit count is updated at the end). */
const Q_PICKED = 0xfe;

/** `supersedes` on status codes (ST_*): rank = code − 1, so the order of codes is the order of ranks. */
function supersedesCode(uInc: number, uSt: number, curInc: number, curSt: number): boolean {
  if (uSt === ST_ALIVE) return uInc > curInc;
  if (uInc !== curInc) return uInc > curInc;
  return uSt > curSt;
}

interface PendingProbe {
  target: number;
  seq: number;
  timer: Timer | undefined;
}

interface Relay {
  origin: string;
  originSeq: number;
  timer: Timer;
}

/** Up to k distinct indices of [0, n), uniformly (partial Fisher–Yates with the swaps in a map). */
function sampleIndices(rng: Random, n: number, k: number): number[] {
  const out: number[] = [];
  if (n <= 0) return out;
  const moved = new Map<number, number>();
  const at = (i: number) => moved.get(i) ?? i;
  const m = Math.min(k, n);
  for (let i = 0; i < m; i++) {
    const j = i + rng.int(n - i);
    const t = at(i);
    const picked = at(j);
    moved.set(j, t);
    moved.set(i, picked);
    out.push(picked);
  }
  return out;
}

export class Membership {
  readonly cfg: MembershipConfig;
  /** Interned ids and address lists (this agent's own, or shared by a simulation). */
  readonly ids: MemberIds;
  private readonly tab: MemberTable;
  private readonly me: number;
  /** Cached ids of alive members (self excluded), sorted; invalidated when the alive set changes. */
  private aliveCache: string[] | undefined;
  /** Queued updates by transmit count: bucket t holds members whose update was sent t times (FIFO). */
  private readonly buckets: IntFifo[] = [];
  /** Members with a queued update. */
  private queued = 0;
  /** Scratch of piggyback(): (member, transmit count) pairs picked. */
  private readonly picked: number[] = [];
  /** Members that became dead, in that order (gossip targets while dead < gossipToTheDeadMs). */
  private recentDead: number[] = [];
  private readonly suspicionTimers = new Map<number, Timer>();
  private readonly relays = new Map<number, Relay>();
  /** This round's probe order: a random permutation of the alive and suspect members in id order. */
  private readonly round = new Permutation();
  private roundIndex = 0;
  private probe: PendingProbe | undefined;
  private seq = 0;
  /** The pending timer of each on-demand periodic task (gossip, reconnect), by task name. */
  private readonly periodic = new Map<string, Timer>();
  /** The pending timer of each always-on periodic task (every(): probe, push-pull), by slot. */
  private readonly tasks: Timer[] = [];
  private running = false;
  private seeds: string[] = [];
  private joinBackoffMs = 0;
  private joinTimer: Timer | undefined;
  private listeners: MemberChange[] = [];
  /** Each listener's handler of members learned at once (onChange's second argument). */
  private learnedListeners: (MembersLearned | undefined)[] = [];
  /** While assumeFormed learns: (member number, previous status code) pairs, announced after it. */
  private quiet: number[] | undefined;
  /** Unknown senders we are already syncing with (so a burst of their messages triggers one push-pull). */
  private readonly syncingWith = new Set<string>();
  /** Counters for tests and benchmarks. */
  readonly counters = { pushPullsFull: 0, pushPullsDigestOnly: 0, gossipTicks: 0, learnedQuietly: 0 };
  /** Bumped by every change of the view (persisting callers compare it instead of listening). */
  private changes = 0;
  /** When assumeFormed ran (NaN: never). */
  private formedAt = Number.NaN;
  /** Members kept as join candidates (see joinCandidates). */
  private remembered: number[] = [];

  constructor(
    private readonly self: { id: string; addrs: () => string[]; incarnation: number },
    private readonly clock: Clock,
    private readonly random: Random,
    private readonly net: MemberNet,
    private readonly log: Logger,
    cfg: Partial<MembershipConfig> = {},
    /** Interned ids; pass one shared instance to many agents of one simulation (saves memory). */
    ids: MemberIds = new MemberIds(),
  ) {
    this.cfg = { ...defaultMembershipConfig, ...cfg };
    this.ids = ids;
    this.tab = new MemberTable(ids, clock.now());
    this.me = ids.intern(self.id);
    this.tab.self = this.me;
    this.tab.set(this.me, self.incarnation, ST_ALIVE, ids.addrsNum(self.addrs()), clock.now());
  }

  // ───────────────────────────── public API ─────────────────────────────

  /**
   * Call `fn` on every change of a member's state. `learned`: called instead, once, when many
   * members are learned at once, each previously unknown and now alive (a formed start); without
   * it, `fn` is called for each of them.
   */
  onChange(fn: MemberChange, learned?: MembersLearned): void {
    this.listeners.push(fn);
    this.learnedListeners.push(learned);
  }

  get id(): string {
    return this.self.id;
  }

  get incarnation(): number {
    return this.tab.incarnation(this.me);
  }

  /** All known members (self included), sorted by id; each one a fresh snapshot. */
  list(): Member[] {
    const out: Member[] = [];
    for (const num of this.tab.numsSorted()) out.push(this.member(num));
    return out;
  }

  /** Number of known members (self included). */
  get size(): number {
    return this.tab.known;
  }

  /** A snapshot of one member (a fresh object: cheap, but prefer status() in loops). */
  get(id: string): Member | undefined {
    const num = this.ids.lookup(id);
    if (num === undefined || this.tab.statusOf(num) === ST_UNKNOWN) return undefined;
    return this.member(num);
  }

  /** The status of a member, without building a snapshot. */
  status(id: string): MemberStatus | undefined {
    const num = this.ids.lookup(id);
    return num === undefined ? undefined : NAMES[this.tab.statusOf(num)];
  }

  /** Local clock time of a member's last status change. */
  changedAt(id: string): number | undefined {
    const num = this.ids.lookup(id);
    return num === undefined || this.tab.statusOf(num) === ST_UNKNOWN ? undefined : this.tab.changedAt(num);
  }

  /** Members other than self per status. */
  counts(): Record<MemberStatus, number> {
    const c = this.tab.counts;
    return { alive: c[ST_ALIVE]!, suspect: c[ST_SUSPECT]!, dead: c[ST_DEAD]!, left: c[ST_LEFT]! };
  }

  /** Number of members believed alive (self excluded) = aliveIds().length, without building it. */
  get aliveCount(): number {
    return this.tab.counts[ST_ALIVE]!;
  }

  /** The k-th alive member in id order (self excluded) = aliveIds()[k], without building the list. */
  aliveAt(k: number): string | undefined {
    const num = this.tab.kth(M_ALIVE, k);
    return num < 0 ? undefined : this.ids.id(num);
  }

  /** Changes of the view so far (any member, self included): unchanged number, unchanged view. */
  get version(): number {
    return this.changes;
  }

  /**
   * Up to `max` members worth remembering on disk as join candidates (self and left members
   * excluded), sorted by id: those remembered last time, while not left, topped up with alive
   * members at positions drawn from a hash of our id (each agent remembers its own few, not all N:
   * O(max) per call, and a member file of O(max) whatever the cluster size).
   */
  joinCandidates(max = 64): { id: string; addrs: readonly string[] }[] {
    const keep: number[] = [];
    const seen = new Set<number>();
    for (const num of this.remembered) {
      const st = this.tab.statusOf(num);
      if (st !== ST_UNKNOWN && st !== ST_LEFT && !seen.has(num) && keep.length < max) {
        keep.push(num);
        seen.add(num);
      }
    }
    const alive = this.tab.counts[ST_ALIVE]!;
    const h = this.ids.hash1(this.me);
    const room = max - keep.length;
    for (let i = 0; keep.length < max && i < (alive <= room ? alive : 4 * max); i++) {
      const k = alive <= room ? i : mix32((h + Math.imul(i, 0x9e3779b9)) >>> 0) % alive;
      const num = this.tab.kth(M_ALIVE, k);
      if (num >= 0 && !seen.has(num)) {
        keep.push(num);
        seen.add(num);
      }
    }
    this.remembered = keep;
    return keep
      .map((num) => ({ id: this.ids.id(num), addrs: this.ids.addrs(this.tab.addrOf(num)) }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Updates waiting in the retransmit queue. */
  get queueLength(): number {
    return this.queued;
  }

  /** Digest of this agent's view (equal views, equal digests). */
  get digest(): number {
    return this.tab.digest();
  }

  /**
   * Ids of members currently believed alive (self excluded), sorted. The same array object until
   * the alive set changes (callers may use it as a cache key). O(N) memory while held: prefer
   * aliveCount/aliveAt.
   */
  aliveIds(): string[] {
    if (this.aliveCache === undefined) {
      const out: string[] = [];
      for (const num of this.tab.numsSorted())
        if (num !== this.me && this.tab.statusOf(num) === ST_ALIVE) out.push(this.ids.id(num));
      this.aliveCache = out;
    }
    return this.aliveCache;
  }

  /** Calls `fn` with each member believed alive (self excluded), in id order; builds nothing. */
  forEachAlive(fn: (id: string) => void): void {
    if (this.aliveCache !== undefined) {
      for (const id of this.aliveCache) fn(id);
      return;
    }
    for (const num of this.tab.numsSorted())
      if (num !== this.me && this.tab.statusOf(num) === ST_ALIVE) fn(this.ids.id(num));
  }

  /** Start probing and gossiping; join through `seeds` (addresses) in the background. */
  start(seeds: string[], known: MemberState[] = []): void {
    this.running = true;
    // Members remembered from a previous run: try them as seeds too (they may be alive).
    const now = this.clock.now();
    for (const m of known) {
      const num = this.ids.intern(m.id);
      if (num === this.me || this.tab.statusOf(num) !== ST_UNKNOWN) continue;
      this.tab.set(num, m.incarnation, ST_DEAD, this.ids.addrsNum(m.addrs), now);
      this.changes++;
      this.remembered.push(num);
      this.aliveCache = undefined;
      this.recentDead.push(num);
      this.net.learn(m.id, m.addrs);
    }
    // Announce our (new) incarnation.
    this.enqueue(this.me);
    this.seeds = seeds.slice();
    this.every(
      () => this.cfg.probeIntervalMs, // probe
      () => this.probeTick(),
    );
    this.every(
      () => this.pushPullInterval(), // push-pull
      () => this.pushPullTick(),
    );
    this.wakeReconnect();
    this.joinBackoffMs = this.cfg.joinRetryMinMs;
    if (this.seeds.length > 0 || known.length > 0) this.scheduleJoin(0);
  }

  /** Our own current state, as gossiped (an immutable shared object: do not mutate). */
  selfState(): MemberState {
    return this.stateOf(this.me);
  }

  /**
   * Simulator (a cluster that formed before time 0): learn `members` — every member's current
   * state — as from a push-pull list, quietly (not queued for gossip), and drop our own
   * announcement and the join: everyone knows us already. The view is the one a real join reaches
   * once its gossip has drained (test/sim-formed.test.ts); from here on everything runs as usual.
   * Call right after start(), before any time passes.
   */
  assumeFormed(members: readonly MemberState[], like?: Membership): void {
    this.joinTimer?.cancel();
    this.joinTimer = undefined;
    const queuedSelf = this.tab.q(this.me) !== Q_NONE;
    this.formedAt = this.clock.now();
    // Learned members are logged and announced once, after (announceLearned), not one by one:
    // N agents learning N members each would be N² log lines and listener calls.
    const learned: number[] = [];
    this.quiet = learned;
    try {
      if (like !== undefined && this.canCopyFormed(like, members)) {
        // The view `like` reached from the same members, copied in O(N) (every agent's formed view
        // is the same); then what learning each member quietly does besides the table, in order.
        this.tab.adoptFrom(like.tab);
        this.aliveCache = undefined;
        // (afterChange, for members this agent did not know: only suspicion timers and `quiet`.)
        for (const u of members) {
          const num = this.ids.numOf(u) ?? this.ids.intern(u.id);
          if (num === this.me) continue;
          this.net.learn(u.id, this.ids.addrs(this.tab.addrOf(num)));
          if (this.tab.statusOf(num) === ST_SUSPECT) this.startSuspicion(num);
          learned.push(num, ST_UNKNOWN);
        }
        this.changes += learned.length / 2;
        this.counters.learnedQuietly += learned.length / 2;
      } else {
        this.applyUpdates(members, '', true);
      }
    } finally {
      this.quiet = undefined;
    }
    if (queuedSelf) {
      this.tab.setQ(this.me, Q_NONE);
      this.queued--;
    }
    this.announceLearned(learned);
  }

  /**
   * One log line for the members assumeFormed learned, and the listeners told: at once (their
   * `learned` handler) when every one was unknown and is alive, else one call per member.
   */
  private announceLearned(learned: readonly number[]): void {
    if (learned.length === 0) return;
    let fresh = 0;
    for (let i = 0; i < learned.length; i += 2) {
      if (learned[i + 1] === ST_UNKNOWN && this.tab.statusOf(learned[i]!) === ST_ALIVE) fresh++;
    }
    const count = learned.length / 2;
    this.log.info({ members: count, alive: this.tab.counts[ST_ALIVE]! }, 'formed: members learned');
    for (let l = 0; l < this.listeners.length; l++) {
      const bulk = this.learnedListeners[l];
      if (bulk !== undefined && fresh === count) {
        bulk(count);
        continue;
      }
      const fn = this.listeners[l]!;
      for (let i = 0; i < learned.length; i += 2) {
        const num = learned[i]!;
        if (num === this.me) continue;
        fn(this.member(num), NAMES[learned[i + 1]!]);
      }
    }
  }

  /**
   * Whether assumeFormed(members) would leave exactly `like`'s table: `like` assumed the same
   * members (same ids, same table base) with nothing queued, this agent knows only itself, and
   * `like`'s entry for it is its own.
   */
  private canCopyFormed(like: Membership, members: readonly MemberState[]): boolean {
    const a = like.tab;
    const b = this.tab;
    const me = this.me;
    return (
      like !== this &&
      like.ids === this.ids &&
      a.baseTime === b.baseTime &&
      like.queued === 0 &&
      like.formedAt === this.clock.now() &&
      a.changedAt(like.me) === like.formedAt &&
      b.known === 1 &&
      a.known === members.length &&
      a.statusOf(me) === b.statusOf(me) &&
      a.incarnation(me) === b.incarnation(me) &&
      a.addrOf(me) === b.addrOf(me) &&
      a.changedAt(me) === b.changedAt(me)
    );
  }

  stop(): void {
    this.running = false;
    for (const t of this.periodic.values()) t.cancel();
    this.periodic.clear();
    for (const t of this.tasks) t.cancel();
    this.tasks.length = 0;
    for (const t of this.suspicionTimers.values()) t.cancel();
    this.suspicionTimers.clear();
    for (const r of this.relays.values()) r.timer.cancel();
    this.relays.clear();
    this.probe?.timer?.cancel();
    this.probe = undefined;
    this.joinTimer?.cancel();
  }

  /** Graceful leave: mark self `left` and push it directly to up to `fanout` members. */
  leave(fanout = 8): void {
    this.setState(this.me, this.tab.incarnation(this.me), ST_LEFT, undefined);
    const upd = [this.stateOf(this.me)];
    for (const num of this.pickAlive(fanout, -1))
      this.net.send(this.ids.id(num), { t: 'gossip', upd }, num, this.me);
  }

  /** Our addresses changed (e.g. listener bound): re-announce with a new incarnation. */
  refreshSelf(): void {
    const me = this.me;
    this.tab.set(
      me,
      this.tab.incarnation(me) + 1,
      this.tab.statusOf(me),
      this.ids.addrsNum(this.self.addrs()),
      undefined,
    );
    this.changes++;
    this.enqueue(me);
  }

  /** A transport hint (connection to `id` dropped): probe it now rather than at its turn. */
  hintDisconnected(id: string): void {
    const num = this.ids.lookup(id);
    if (!this.running || num === undefined || this.tab.statusOf(num) !== ST_ALIVE || this.probe) return;
    this.probeMember(num);
  }

  /** Ask a member to probe right now (used by tests and the API). */
  probeNow(): void {
    if (!this.probe) this.probeTick();
  }

  // ───────────────────────────── inbound ─────────────────────────────

  /**
   * A message from `from`. `fromHint`: the sender's member number as the transport has it (the
   * simulator's, from a shared id table), used when it names `from` in our table too — the same
   * number a lookup by id would give, without the lookup.
   */
  handleMessage(from: string, msg: MembershipMessage, fromHint = -1): void {
    if (!this.running) return;
    this.applyUpdates(msg.upd, from);
    // A member that knows us but that we never heard of (gossip budgets ran out before reaching
    // us): learn everything it knows at once rather than waiting for the next push-pull round.
    // Not while our own retransmit queue is busy, though: news is flowing (a join storm), gossip
    // will bring the sender soon, and a full sync with every unknown sender would cost O(N) each.
    const fromNum =
      fromHint >= 0 && fromHint < this.ids.size && this.ids.id(fromHint) === from
        ? fromHint
        : this.ids.lookup(from);
    if (
      (fromNum === undefined || this.tab.statusOf(fromNum) === ST_UNKNOWN) &&
      this.queued === 0 &&
      !this.syncingWith.has(from) &&
      this.syncingWith.size < 8
    ) {
      this.syncingWith.add(from);
      void this.pushPullWith(from, false).finally(() => this.syncingWith.delete(from));
    }
    switch (msg.t) {
      case 'ping':
        this.net.send(from, { t: 'ack', seq: msg.seq, upd: this.piggyback(fromNum ?? -1) }, fromNum, this.me);
        break;
      case 'ack': {
        const p = this.probe;
        if (p && p.seq === msg.seq) {
          p.timer?.cancel();
          this.probe = undefined;
          return;
        }
        const relay = this.relays.get(msg.seq);
        if (relay) {
          relay.timer.cancel();
          this.relays.delete(msg.seq);
          const originNum = this.ids.lookup(relay.origin);
          this.net.send(
            relay.origin,
            { t: 'ack', seq: relay.originSeq, upd: this.piggyback(originNum ?? -1) },
            originNum,
            this.me,
          );
        }
        break;
      }
      case 'ping-req': {
        const seq = this.nextSeq();
        const timer = this.clock.setTimer(this.cfg.probeIntervalMs, () => this.relays.delete(seq));
        this.relays.set(seq, { origin: from, originSeq: msg.seq, timer });
        const targetNum = this.ids.lookup(msg.target);
        this.net.send(
          msg.target,
          { t: 'ping', seq, upd: this.piggyback(targetNum ?? -1) },
          targetNum,
          this.me,
        );
        break;
      }
      case 'gossip':
        break;
    }
  }

  handlePushPull(from: string, msg: PushPull): PushPull {
    if (msg.join) this.log.debug({ peer: from }, 'join request');
    this.applyUpdates(msg.members, from, true);
    const digest = this.tab.digest();
    // Same digest: the views are equal, nothing to send. Old peers send no digest: full answer.
    if (!msg.join && msg.digest === digest) {
      this.counters.pushPullsDigestOnly++;
      return { t: 'push-pull', join: false, digest, members: [] };
    }
    this.counters.pushPullsFull++;
    return { t: 'push-pull', join: false, digest, members: this.states() };
  }

  /**
   * Apply updates from a peer. Returns how many changed our view. When the peer told us something
   * our view strictly supersedes (e.g. `dead` at an incarnation its subject already refuted), we
   * answer it directly with what we know: epidemic gossip has a bounded retransmit budget and may
   * miss an agent, and without this correction that agent would keep a false `dead` until the
   * next push-pull.
   *
   * `bulk` (the lists of a push-pull): a member we did not know at all is learned without being
   * queued for gossip, unless it is the peer itself — its list is no news to the peer, and the
   * member announces itself (see docs/membership.md, "Dissemination"). Any other change is queued.
   */
  applyUpdates(updates: readonly MemberState[], from: string, bulk = false): number {
    let changed = 0;
    let corrections: MemberState[] | undefined;
    for (const u of updates) {
      // A state object built by our own id table (the simulator's shared one) carries its number.
      const num = this.ids.numOf(u) ?? this.ids.intern(u.id);
      if (this.applyUpdate(num, u, from, bulk)) {
        changed++;
        continue;
      }
      const cur = this.tab.statusOf(num);
      if (
        cur !== ST_UNKNOWN &&
        u.status !== 'alive' &&
        from !== this.self.id &&
        supersedesCode(this.tab.incarnation(num), cur, u.incarnation, code(u.status))
      ) {
        if (corrections === undefined) corrections = [];
        corrections.push(this.stateOf(num));
      }
    }
    if (corrections !== undefined && this.running) {
      this.net.send(from, { t: 'gossip', upd: corrections.slice(0, this.cfg.maxPiggyback) });
    }
    return changed;
  }

  // ───────────────────────────── state transitions ─────────────────────────────

  private applyUpdate(num: number, u: MemberState, from: string, bulk: boolean): boolean {
    if (num === this.me) return this.aboutSelf(u, from);
    const cur = this.tab.statusOf(num);
    const st = code(u.status);
    if (cur !== ST_UNKNOWN && !supersedesCode(u.incarnation, st, this.tab.incarnation(num), cur)) {
      // Same incarnation, same status but new addresses can't happen (addresses change only with
      // a new incarnation), so nothing to do.
      return false;
    }
    this.setState(num, u.incarnation, st, u.addrs, !(bulk && cur === ST_UNKNOWN && u.id !== from));
    return true;
  }

  /** Someone says something about us: refute suspicion/death by raising our incarnation. */
  private aboutSelf(u: MemberState, from: string): boolean {
    const me = this.me;
    if (this.tab.statusOf(me) === ST_LEFT) return false;
    const inc = this.tab.incarnation(me);
    if (u.status === 'alive' || u.incarnation < inc) return false;
    // suspect/dead/left about us at our incarnation or above: we are alive — say so, louder.
    this.tab.set(me, u.incarnation + 1, ST_ALIVE, this.tab.addrOf(me), undefined);
    this.changes++;
    this.log.info({ peer: from, said: u.status, incarnation: u.incarnation + 1 }, 'refuting');
    this.enqueue(me);
    this.notify(me, 'alive');
    return true;
  }

  /** Set a member's state (addresses: kept when `addrs` is undefined or empty), queue it, notify. */
  private setState(
    num: number,
    inc: number,
    st: number,
    addrs: readonly string[] | undefined,
    queue = true,
  ): void {
    const prev = this.tab.statusOf(num);
    let addrsNum = prev === ST_UNKNOWN ? 0 : this.tab.addrOf(num);
    let learn = prev === ST_UNKNOWN;
    if (addrs !== undefined && addrs.length > 0 && addrs !== this.ids.addrs(addrsNum)) {
      const a = this.ids.addrsNum(addrs);
      if (a !== addrsNum) {
        addrsNum = a;
        learn = true;
      }
    }
    this.tab.set(num, inc, st, addrsNum, st !== prev ? this.clock.now() : undefined);
    this.changes++;
    if (learn) this.net.learn(this.ids.id(num), this.ids.addrs(addrsNum));
    if (st !== prev) {
      if (prev === ST_ALIVE || st === ST_ALIVE) this.aliveCache = undefined;
      if (st === ST_DEAD) {
        this.recentDead.push(num);
        this.wakeReconnect();
      }
      if (st !== ST_ALIVE && this.tab.counts[ST_ALIVE] === 0) this.wakeReconnect();
    }
    if (queue) this.enqueue(num);
    else this.counters.learnedQuietly++;
    this.afterChange(num, prev === ST_UNKNOWN ? undefined : NAMES[prev]);
  }

  private afterChange(num: number, prev: MemberStatus | undefined): void {
    const st = this.tab.statusOf(num);
    if (num !== this.me) {
      const timer = this.suspicionTimers.get(num);
      if (timer && st !== ST_SUSPECT) {
        timer.cancel();
        this.suspicionTimers.delete(num);
      }
      if (st === ST_SUSPECT && !timer) this.startSuspicion(num);
    }
    if (this.quiet !== undefined) {
      this.quiet.push(num, prev === undefined ? ST_UNKNOWN : code(prev));
      return;
    }
    if (prev !== NAMES[st]) {
      this.log.info(
        { member: this.ids.id(num), status: NAMES[st], incarnation: this.tab.incarnation(num), was: prev },
        'member',
      );
    }
    this.notify(num, prev);
  }

  private notify(num: number, prev: MemberStatus | undefined): void {
    if (this.listeners.length === 0) return;
    const m = this.member(num);
    for (const l of this.listeners) l(m, prev);
  }

  private startSuspicion(num: number): void {
    const n = this.tab.known;
    const timeout = Math.max(
      this.cfg.suspicionMinMs,
      Math.round(this.cfg.suspicionMult * Math.log10(n + 1) * this.cfg.probeIntervalMs),
    );
    const inc = this.tab.incarnation(num);
    const timer = this.clock.setTimer(timeout, () => {
      this.suspicionTimers.delete(num);
      if (this.tab.statusOf(num) === ST_SUSPECT && this.tab.incarnation(num) === inc) {
        this.setState(num, inc, ST_DEAD, undefined);
      }
    });
    this.suspicionTimers.set(num, timer);
  }

  private suspect(num: number): void {
    if (this.tab.statusOf(num) !== ST_ALIVE) return;
    this.setState(num, this.tab.incarnation(num), ST_SUSPECT, undefined);
  }

  // ───────────────────────────── probing ─────────────────────────────

  private probeTick(): void {
    if (this.probe) return; // previous probe still running (its timers end it)
    const target = this.nextProbeTarget();
    if (target >= 0) this.probeMember(target);
  }

  /**
   * Round-robin over a fresh random order each round (SWIM: bounded time to first probe). The
   * order is a random permutation of the indices of the alive and suspect members in id order,
   * drawn in O(1) memory; a member whose index shifts mid-round (others changed status) may be
   * skipped or probed twice in that round.
   */
  private nextProbeTarget(): number {
    const mask = M_ALIVE | M_SUSPECT;
    for (let guard = 0; guard < 2; guard++) {
      while (this.roundIndex < this.round.n) {
        const j = this.round.at(this.roundIndex++);
        if (j < this.tab.count(mask)) return this.tab.kth(mask, j);
      }
      const n = this.tab.count(mask);
      if (n === 0) return -1;
      this.round.reset(n, () => Math.floor(this.random.next() * 4294967296));
      this.roundIndex = 0;
    }
    return -1;
  }

  private probeMember(target: number): void {
    const seq = this.nextSeq();
    const p: PendingProbe = { target, seq, timer: undefined };
    this.probe = p;
    const id = this.ids.id(target);
    this.net.send(id, { t: 'ping', seq, upd: this.piggyback(target) }, target, this.me);
    // One timer at a time: the indirect probes after probeTimeoutMs, the verdict at the end of
    // the probe interval. An ack cancels whichever is pending.
    p.timer = this.clock.setTimer(this.cfg.probeTimeoutMs, () => {
      if (this.probe !== p) return;
      for (const h of this.pickAlive(this.cfg.indirectChecks, target)) {
        this.net.send(this.ids.id(h), { t: 'ping-req', seq, target: id, upd: this.piggyback(h) }, h, this.me);
      }
      p.timer = this.clock.setTimer(this.cfg.probeIntervalMs - this.cfg.probeTimeoutMs, () => {
        if (this.probe !== p) return;
        this.probe = undefined;
        this.suspect(target);
      });
    });
  }

  /** Up to k distinct random alive members other than `exclude` (-1: none excluded). */
  private pickAlive(k: number, exclude: number): number[] {
    const skip = exclude >= 0 && this.tab.statusOf(exclude) === ST_ALIVE ? exclude : -1;
    const n = this.tab.counts[ST_ALIVE]! - (skip >= 0 ? 1 : 0);
    return sampleIndices(this.random, n, k).map((i) => this.tab.kthSkipping(M_ALIVE, i, skip));
  }

  // ───────────────────────────── dissemination ─────────────────────────────

  /** Queue member `num`'s current state for retransmission (transmit count back to 0). */
  private enqueue(num: number): void {
    const tab = this.tab;
    const t = tab.q(num);
    if (t === 0) return; // queued and not sent yet: it will carry the current state
    if (t === Q_NONE) this.queued++;
    tab.setQ(num, 0);
    this.bucket(0).push(num);
    this.wakeGossip();
  }

  private bucket(t: number): IntFifo {
    let b = this.buckets[t];
    if (b === undefined) {
      b = new IntFifo();
      this.buckets[t] = b;
    }
    return b;
  }

  private transmitLimit(): number {
    // memberlist's λ·log(n), with a floor: in small clusters a few random picks can miss a member.
    const n = this.tab.known;
    return Math.min(200, Math.max(6, this.cfg.retransmitMult * Math.ceil(Math.log10(n + 1))));
  }

  /** memberlist's pushPullScale: the full exchange slows down logarithmically past 32 members. */
  private pushPullInterval(): number {
    const n = this.tab.known;
    const mult = n <= 32 ? 1 : Math.ceil(Math.log2(n) - Math.log2(32)) + 1;
    return this.cfg.pushPullIntervalMs * mult;
  }

  /**
   * Up to maxPiggyback queued updates, least-transmitted first (FIFO among equals); the
   * recipient's own state first if we doubt it. Updates about the recipient are skipped.
   */
  private piggyback(to: number): MemberState[] {
    const doubt = to >= 0 && this.tab.statusOf(to) !== ST_ALIVE && this.tab.statusOf(to) !== ST_UNKNOWN;
    if (this.queued === 0 && !doubt) return NOTHING as MemberState[]; // at rest: no allocation
    const out: MemberState[] = doubt ? [this.stateOf(to)] : [];
    if (this.queued === 0) return out;
    const max = this.cfg.maxPiggyback;
    const tab = this.tab;
    const picked = this.picked;
    picked.length = 0;
    for (let t = 0; t < this.buckets.length && out.length < max; t++) {
      const b = this.buckets[t];
      if (b === undefined) continue;
      // Only the entries there now: a skipped recipient goes back to the end.
      for (let i = b.size; i > 0 && out.length < max; i--) {
        const num = b.shift();
        if (tab.q(num) !== t) continue; // stale entry (re-queued since, or already picked)
        if (num === to) {
          b.push(num);
          continue;
        }
        out.push(this.stateOf(num));
        tab.setQ(num, Q_PICKED);
        picked.push(num, t);
      }
    }
    if (picked.length > 0) {
      const limit = this.transmitLimit();
      for (let i = 0; i < picked.length; i += 2) {
        const num = picked[i]!;
        const t = picked[i + 1]! + 1;
        if (t >= limit) {
          tab.setQ(num, Q_NONE);
          this.queued--;
        } else {
          tab.setQ(num, t);
          this.bucket(t).push(num);
        }
      }
    }
    return out;
  }

  /** Gossip runs only while something is queued (no timer at rest); a first update goes out at once. */
  private wakeGossip(): void {
    if (!this.running || this.periodic.has('gossip')) return;
    const loop = () => {
      this.periodic.delete('gossip');
      if (!this.running || this.queued === 0) return;
      this.periodic.set('gossip', this.clock.setTimer(this.cfg.gossipIntervalMs, loop));
      this.gossipTick();
    };
    this.periodic.set('gossip', this.clock.setTimer(0, loop));
  }

  private gossipTick(): void {
    this.counters.gossipTicks++;
    // Targets: alive and suspect members, and those dead for less than gossipToTheDeadMs.
    const now = this.clock.now();
    const recent = this.recentDeadTargets(now);
    const live = this.tab.count(M_ALIVE | M_SUSPECT);
    for (const i of sampleIndices(this.random, live + recent.length, this.cfg.gossipFanout)) {
      const num = i < live ? this.tab.kth(M_ALIVE | M_SUSPECT, i) : recent[i - live]!;
      const upd = this.piggyback(num);
      if (upd.length > 0) this.net.send(this.ids.id(num), { t: 'gossip', upd }, num, this.me);
    }
  }

  /** Members still dead since less than gossipToTheDeadMs (in the order they died); prunes the rest. */
  private recentDeadTargets(now: number): number[] {
    if (this.recentDead.length === 0) return this.recentDead;
    const keep: number[] = [];
    const seen = new Set<number>();
    for (const num of this.recentDead) {
      if (
        this.tab.statusOf(num) === ST_DEAD &&
        now - this.tab.changedAt(num) < this.cfg.gossipToTheDeadMs &&
        !seen.has(num)
      ) {
        seen.add(num);
        keep.push(num);
      }
    }
    this.recentDead = keep;
    return keep;
  }

  private pushPullTick(): void {
    const n = this.tab.counts[ST_ALIVE]!;
    if (n === 0) return;
    void this.pushPullWith(this.ids.id(this.tab.kth(M_ALIVE, this.random.int(n))), false);
  }

  /** Reconnect runs only while some member is dead, or we are alone. */
  private wakeReconnect(): void {
    if (!this.running || this.periodic.has('reconnect')) return;
    const loop = () => {
      this.periodic.delete('reconnect');
      if (!this.running) return;
      const dead = this.tab.counts[ST_DEAD]!;
      const alone = this.tab.counts[ST_ALIVE] === 0;
      if (dead === 0 && !alone) return;
      this.periodic.set('reconnect', this.clock.setTimer(this.cfg.reconnectIntervalMs, loop));
      this.reconnectTick();
    };
    this.periodic.set('reconnect', this.clock.setTimer(this.cfg.reconnectIntervalMs, loop));
  }

  /**
   * Push-pull with one random dead member (it may have restarted, or been declared dead falsely).
   * As Serf: only with probability dead/alive (1 when alone), so the whole cluster tries about
   * one dead member per interval per dead member, whatever its size — not one per agent.
   */
  private reconnectTick(): void {
    const dead = this.tab.counts[ST_DEAD]!;
    const alive = this.tab.counts[ST_ALIVE]!;
    if (dead > 0 && (alive === 0 || this.random.next() < dead / alive)) {
      void this.pushPullWith(this.ids.id(this.tab.kth(M_DEAD, this.random.int(dead))), false);
    }
    // Alone (everyone else dead or none known): keep knocking on the seeds.
    if (alive === 0 && this.seeds.length > 0 && !this.joinTimer) this.scheduleJoin(0);
  }

  /**
   * One push-pull. A join sends the whole view; otherwise only the digest first, and lists travel
   * only when the views differ: the peer answers with its list, and if ours still differs after
   * merging it (we know something it does not), ours follows in a second exchange.
   */
  private async pushPullWith(id: string, join: boolean): Promise<boolean> {
    try {
      const reply = await this.net.pushPull(
        id,
        { t: 'push-pull', join, digest: this.tab.digest(), members: join ? this.states() : [] },
        this.cfg.requestTimeoutMs,
      );
      if (!this.running) return false;
      this.applyUpdates(reply.members, id, true);
      if (
        !join &&
        (reply.digest === undefined || (reply.members.length > 0 && reply.digest !== this.tab.digest()))
      ) {
        const second = await this.net.pushPull(
          id,
          { t: 'push-pull', join: false, digest: this.tab.digest(), members: this.states() },
          this.cfg.requestTimeoutMs,
        );
        if (!this.running) return false;
        this.applyUpdates(second.members, id, true);
      }
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
      const candidates: string[] = [];
      for (const num of this.tab.numsSorted())
        if (num !== this.me && this.tab.statusOf(num) !== ST_LEFT) candidates.push(this.ids.id(num));
      for (const id of candidates) {
        if (await this.pushPullWith(id, true)) {
          ok = true;
          break;
        }
      }
    }
    if (!this.running) return;
    if (ok) {
      this.log.info({ members: this.tab.counts[ST_ALIVE]! + 1 }, 'joined');
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

  private every(interval: () => number, fn: () => void): void {
    // Start each periodic task at a random phase so agents started together do not beat in step.
    // The timer sits in a slot of `tasks` (no map update per tick: this runs for every probe).
    const slot = this.tasks.length;
    const loop = () => {
      if (!this.running) return;
      this.tasks[slot] = this.clock.setTimer(interval(), loop);
      fn();
    };
    this.tasks.push(this.clock.setTimer(this.random.int(interval()) + 1, loop));
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) % 0x7fffffff;
    return this.seq;
  }

  /** The immutable wire state of member `num` (shared objects; see MemberIds.state). */
  private stateOf(num: number): MemberState {
    return this.ids.state(
      num,
      this.tab.incarnation(num),
      NAMES[this.tab.statusOf(num)]!,
      this.tab.addrOf(num),
    ) as MemberState;
  }

  private member(num: number): Member {
    return {
      id: this.ids.id(num),
      addrs: this.ids.addrs(this.tab.addrOf(num)),
      incarnation: this.tab.incarnation(num),
      status: NAMES[this.tab.statusOf(num)]!,
      changedAt: this.tab.changedAt(num),
    };
  }

  private states(): MemberState[] {
    const out: MemberState[] = [];
    const sorted = this.ids.sorted();
    for (let r = 0; r < sorted.length; r++) {
      const num = sorted[r]!;
      if (this.tab.statusOf(num) !== ST_UNKNOWN) out.push(this.stateOf(num));
    }
    return out;
  }
}
