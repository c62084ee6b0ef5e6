import { bucketOf, sha256, XorSet } from '../crdt/hash.ts';
import { HostTable, hostEntryHash, type MergeResult } from '../crdt/hosts.ts';
import { compareStamps, IntentTable } from '../crdt/intents.ts';
import { type ApplyResult, ClusterState, type StateDelta } from '../crdt/state.ts';
import type {
  DeployIntent,
  HostEntry,
  HostRecord,
  IntentFields,
  IntentWire,
  Stamp,
  WorkloadRecord,
} from '../crdt/types.ts';
import {
  type ClaimsView,
  type CoordinatorView,
  claimsByDeploy,
  coordinatorAmong,
  fnv1a,
  weight,
} from '../node/core/claims.ts';
import type { Membership } from '../node/core/membership.ts';
import type { PlacementShared } from '../node/core/placement.ts';
import type { StateChange, StateSyncShared } from '../node/core/state-sync.ts';
import type { EventLoop } from './clock.ts';
import type { SimNetwork } from './network.ts';

/**
 * The shared-state stand-in (docs/simulator.md, "Shared state"): one copy of the cluster state for
 * every simulated agent, with *lazy visibility* instead of one delivery event per agent and publish.
 *
 * A publish (a host record version, an intent delta) is recorded once with its time and its publish
 * number. It reaches agent i at `t + net.publishDelay(origin, i, seq)` — the hashed delay the real
 * publish path takes with `hashedTopics` — if i subscribed before it; the origin sees it at once.
 * Agent i's view of the state at time T is computed on read from what reached it by T: the
 * highest host-record version, the merge of the intent deltas. Nobody gets an event for a publish,
 * except the agents it may concern, which get one at the instant it reaches them (their StateSync
 * emits the change, their placement decides as it would on a delivery): the coordinators of the
 * deploys whose claims or intent changed, as far as anyone's view can tell (see
 * `SharedCoordination`), the hosts that hold replicas of them, and for host records the
 * coordinators of per-host deploys. So the decisions are those of the real path with the same
 * hashed delays and no anti-entropy (test/sim-shared-state.test.ts: same seed → same placement
 * trace), at O(agents it concerns) per publish instead of O(agents).
 *
 * The envelope: lossless publishes, no partitions, no per-host bandwidth, no FIFO links, link models
 * fixed while running, bounded latency tails; no anti-entropy (nothing to repair in that envelope)
 * and no restarts (the tables are not persisted). SimCluster refuses what it does not model.
 */

interface HostVersion {
  entry: HostEntry;
  t: number;
  from: number;
  seq: number;
  /** Deploys whose claims (replica, gen, status) this version changed, or all its deploys. */
  deploys: Set<string>;
}

interface IntentDelta {
  w: IntentWire;
  t: number;
  from: number;
  seq: number;
}

interface IntentHistory {
  deltas: IntentDelta[];
  /** Materialised tables by visible-delta mask (shared by every agent with that view). */
  tables: Map<string, IntentTable>;
}

interface Publish {
  seq: number;
  t: number;
  from: number;
  hosts: HostEntry[];
  intents: IntentWire[];
  /** Deploys the publish may change for some agent. */
  deploys: Set<string>;
  /** Agents that get an arrival event. */
  targets: Set<number>;
}

interface Slot {
  id: string;
  up: boolean;
  /** Publishes numbered up to this were made before the agent subscribed. */
  subSeq: number;
  sync: AgentSyncLink;
  membership: Membership | undefined;
}

export class SharedState {
  readonly coordination: SharedCoordination;
  readonly maxDelay: number;
  private readonly index = new Map<string, number>();
  private readonly slots: Slot[];
  private readonly hosts = new Map<string, HostVersion[]>();
  private hostIds: string[] | undefined;
  /** Host versions so far that added a host, removed one or flipped its draining flag; the last one's time. */
  private structureEpoch = 0;
  private structureAt = Number.NEGATIVE_INFINITY;
  private readonly intents = new Map<string, IntentHistory>();
  private intentIds: string[] | undefined;
  /** Every intent delta's largest stamp, in publish order (HLC of local writes). */
  private readonly stamps: { stamp: Stamp; t: number; from: number; seq: number }[] = [];
  /** Running maximum of `stamps`. */
  private readonly stampMax: Stamp[] = [];
  /** Hosts whose record claimed each deploy in some version (a superset of current claimers). */
  private readonly claimers = new Map<string, Set<string>>();
  private readonly holders = new Map<string, Set<number>>();
  /** Deploys some delta gave a per-host strategy (each, fill). */
  private readonly perHost = new Set<string>();
  /** Publishes still in flight to someone (t + maxDelay ≥ now), oldest first. */
  private recent: Publish[] = [];
  private lastSubscribeSeq = 0;
  readonly counters = { publishes: 0, arrivals: 0, candidateListsBuilt: 0, candidateListsShared: 0 };

  constructor(
    private readonly loop: EventLoop,
    private readonly net: SimNetwork,
    readonly ids: readonly string[],
  ) {
    this.maxDelay = net.maxPublishDelay();
    if (!Number.isFinite(this.maxDelay))
      throw new Error('shared state: latency tails must be bounded (maxMs) — a publish must reach everyone');
    net.freezeLinks('the shared-state stand-in computes delivery times from them');
    ids.forEach((id, i) => {
      this.index.set(id, i);
    });
    this.slots = ids.map((id, i) => ({
      id,
      up: false,
      subSeq: Number.POSITIVE_INFINITY,
      sync: new AgentSyncLink(this, i),
      membership: undefined,
    }));
    this.coordination = new SharedCoordination(
      ids,
      (agent, deploy) => this.recheck(agent, (p) => this.touches(p, deploy)),
      (agent) => this.recheck(agent, () => true),
    );
  }

  // ───────────────────────────── wiring (SimCluster) ─────────────────────────────

  /** StateSync's side of agent `i`. */
  syncLink(i: number): StateSyncShared {
    return this.slots[i]!.sync;
  }

  /** Placement's side of agent `i`. */
  placementLink(i: number): PlacementShared {
    return {
      claims: new SharedClaims(this),
      coordinators: new SharedCoordinatorView(this, i),
      held: (deployId, on) => this.setHolder(i, deployId, on),
    };
  }

  /** Follow agent `i`'s membership view (who it believes alive): call before it starts. */
  attach(i: number, membership: Membership): void {
    const slot = this.slots[i]!;
    slot.membership = membership;
    this.coordination.attach(i, membership);
  }

  /** Stop following membership changes until `recountBeliefs()` (a wholesale change of views). */
  pauseBeliefs(): void {
    this.coordination.paused = true;
  }

  recountBeliefs(): void {
    this.coordination.recount();
  }

  /** Agent `i` crashed: it reads nothing any more and no longer counts in anyone's view. */
  crash(i: number): void {
    const slot = this.slots[i]!;
    if (!slot.up) return;
    slot.up = false;
    this.coordination.crashed(i);
  }

  subscribe(i: number): void {
    const slot = this.slots[i]!;
    if (slot.up) return;
    slot.up = true;
    slot.subSeq = this.net.publishCount; // the next publish is the first it receives
    this.lastSubscribeSeq = Math.max(this.lastSubscribeSeq, slot.subSeq);
    this.coordination.started(i);
  }

  // ───────────────────────────── publishing ─────────────────────────────

  /** A local write of agent `from`: numbered like a topic publish, visible to it at once. */
  publish(from: number, delta: StateDelta): void {
    const seq = this.net.nextPublishSeq();
    const t = this.loop.now;
    this.counters.publishes++;
    const p: Publish = {
      seq,
      t,
      from,
      hosts: delta.hosts,
      intents: delta.intents,
      deploys: new Set(),
      targets: new Set(),
    };
    this.prune(t);
    for (const e of delta.hosts) this.addHost(p, e);
    for (const w of delta.intents) this.addIntent(p, w);
    this.recent.push(p);
    // Who may be concerned: the coordinators (as far as any view can tell) and holders of the
    // deploys it changes; for host records also the coordinators of per-host deploys.
    const targets = new Set<number>();
    for (const d of p.deploys) this.concerned(d, targets);
    if (p.hosts.length > 0) for (const d of this.perHost) this.concerned(d, targets);
    for (const i of targets) this.target(p, i);
  }

  private addHost(p: Publish, e: HostEntry): void {
    let hist = this.hosts.get(e.id);
    if (!hist) {
      hist = [];
      this.hosts.set(e.id, hist);
      this.hostIds = undefined;
    }
    const prev = hist[hist.length - 1];
    // Which hosts are live and not draining, in anyone's view, can change with this version.
    if (
      prev === undefined ||
      prev.entry.deleted !== e.deleted ||
      (!e.deleted && !prev.entry.deleted && (prev.entry.draining === true) !== (e.draining === true))
    ) {
      this.structureEpoch++;
      this.structureAt = p.t;
    }
    const deploys = changedDeploys(prev?.entry, e);
    // An agent that subscribed after a version kept here was published may hold an older
    // version (or none) when this one reaches it: it may see any of their deploys change.
    if (hist.length === 0 || hist[0]!.seq <= this.lastSubscribeSeq) {
      for (const v of hist) for (const d of liveDeploys(v.entry)) deploys.add(d);
      for (const d of liveDeploys(e)) deploys.add(d);
    }
    hist.push({ entry: e, t: p.t, from: p.from, seq: p.seq, deploys });
    // Drop versions every agent's view has moved past: the newest one visible to everyone by now
    // dominates those before it (an agent that subscribed after it never sees them either).
    while (hist.length > 1 && hist[1]!.t + this.maxDelay < p.t) hist.shift();
    // What an agent's view of this host can change by when this version reaches it: the changes
    // of every version still in flight to someone.
    for (const v of hist) {
      if (v.t + this.maxDelay < p.t && v !== hist[hist.length - 1]) continue;
      for (const d of v.deploys) p.deploys.add(d);
    }
    if (!e.deleted) {
      for (const d of claimsByDeploy(e).keys()) {
        const set = this.claimers.get(d);
        if (set) set.add(e.id);
        else this.claimers.set(d, new Set([e.id]));
      }
    }
  }

  private addIntent(p: Publish, w: IntentWire): void {
    let hist = this.intents.get(w.id);
    if (!hist) {
      hist = { deltas: [], tables: new Map() };
      this.intents.set(w.id, hist);
      this.intentIds = undefined;
      this.coordination.addDeploy(w.id);
    }
    hist.deltas.push({ w, t: p.t, from: p.from, seq: p.seq });
    hist.tables.clear();
    let top: Stamp | null = w.deleted;
    for (const r of w.fields) {
      if (top === null || compareStamps(r[1], top) > 0) top = r[1];
      if (r[0] === 'strategy' && r.length === 3 && (r[2] === 'each' || r[2] === 'fill')) {
        if (!this.perHost.has(w.id)) {
          this.perHost.add(w.id);
          // Its coordinators now care about every host record, those in flight included.
          for (const i of this.coordination.candidates(w.id))
            this.recheck(i, (q) => q.hosts.length > 0 && q !== p);
        }
      }
    }
    if (top !== null) {
      const prev = this.stampMax[this.stampMax.length - 1];
      this.stamps.push({ stamp: top, t: p.t, from: p.from, seq: p.seq });
      this.stampMax.push(prev !== undefined && compareStamps(prev, top) > 0 ? prev : top);
    }
    p.deploys.add(w.id);
  }

  private concerned(deployId: string, out: Set<number>): void {
    for (const i of this.coordination.candidates(deployId)) out.add(i);
    for (const i of this.holders.get(deployId) ?? []) out.add(i);
  }

  /** Schedule the arrival of `p` at agent `i` (if it receives it and does not have it yet). */
  private target(p: Publish, i: number): boolean {
    const slot = this.slots[i]!;
    if (i === p.from || !slot.up || p.seq <= slot.subSeq || p.targets.has(i)) return false;
    const d = this.net.publishDelay(this.ids[p.from]!, slot.id, p.seq);
    if (d === undefined) return false;
    const at = p.t + d;
    if (at <= this.loop.now && p.t !== this.loop.now) return false; // arrived while of no concern
    p.targets.add(i);
    this.loop.schedule(at, () => this.arrive(i, p));
    return true;
  }

  /** `p` reaches agent `i` now: tell it what changed in its view. */
  private arrive(i: number, p: Publish): void {
    const slot = this.slots[i]!;
    if (!slot.up) return;
    const now = this.loop.now;
    const hosts: string[] = [];
    const prev: (HostRecord | undefined)[] = [];
    for (const e of p.hosts) {
      const before = this.hostAt(e.id, i, now, true);
      const after = this.hostAt(e.id, i, now, false);
      if (before === after) continue; // a newer version reached it first
      hosts.push(e.id);
      prev.push(before && !before.deleted ? before : undefined);
    }
    const intents: string[] = [];
    for (const w of p.intents) {
      const t = this.buildIntentTable(w.id, i, now, true);
      if (t.merge(w)) intents.push(w.id);
    }
    if (hosts.length === 0 && intents.length === 0) return;
    this.counters.arrivals++;
    slot.sync.arrived?.({ hosts, intents, prev });
  }

  /** Agent `i` became concerned with some publishes: those still on their way to it arrive as events. */
  private recheck(i: number, touches: (p: Publish) => boolean): void {
    if (!this.slots[i]!.up) return;
    this.prune(this.loop.now);
    for (const p of this.recent) if (touches(p)) this.target(p, i);
  }

  private touches(p: Publish, deployId: string): boolean {
    return p.deploys.has(deployId) || (p.hosts.length > 0 && this.perHost.has(deployId));
  }

  private setHolder(i: number, deployId: string, on: boolean): void {
    let set = this.holders.get(deployId);
    if (on) {
      if (!set) {
        set = new Set();
        this.holders.set(deployId, set);
      }
      set.add(i);
      this.recheck(i, (p) => p.deploys.has(deployId));
    } else {
      set?.delete(i);
      if (set?.size === 0) this.holders.delete(deployId);
    }
  }

  private prune(now: number): void {
    let k = 0;
    while (k < this.recent.length && this.recent[k]!.t + this.maxDelay < now) k++;
    if (k > 0) this.recent = this.recent.slice(k);
  }

  // ───────────────────────────── reads: one agent's view ─────────────────────────────

  /** Has publish (t, from, seq) reached agent i by `now` (strict: before `now`)? */
  private sees(t: number, from: number, seq: number, i: number, now: number, strict: boolean): boolean {
    if (from === i) return strict ? t < now : t <= now;
    const slot = this.slots[i]!;
    if (seq <= slot.subSeq) return false;
    if (t + this.maxDelay < now) return true; // reached everyone by now: no delay to compute
    const d = this.net.publishDelay(this.ids[from]!, slot.id, seq);
    if (d === undefined) return false;
    return strict ? t + d < now : t + d <= now;
  }

  /** Host `id`'s entry in agent i's view at `now` (strict: what it held just before `now`). */
  hostAt(id: string, i: number, now: number, strict = false): HostEntry | undefined {
    const hist = this.hosts.get(id);
    if (!hist) return undefined;
    for (let k = hist.length - 1; k >= 0; k--) {
      const v = hist[k]!;
      if (this.sees(v.t, v.from, v.seq, i, now, strict)) return v.entry;
    }
    return undefined;
  }

  /**
   * A token, the same for every agent, unchanged while the set of hosts live and
   * not draining stands still, and the same in every view. Undefined while the last such change
   * may still be on its way to someone (its visibility is settled maxDelay after it: delays are a
   * hash of the publish).
   */
  structureToken(now: number): string | undefined {
    if (this.structureAt + this.maxDelay >= now) return undefined;
    // Everyone sees the same hosts once every host has a version published after the last
    // subscription that has reached everyone (delays are bounded, the envelope is lossless).
    const key = `${this.structureEpoch}:${this.lastSubscribeSeq}`;
    if (this.settledKey !== key) {
      const after = this.lastSubscribeSeq;
      for (const hist of this.hosts.values())
        if (!hist.some((v) => v.seq > after && v.t + this.maxDelay < now)) return undefined;
      this.settledKey = key;
    }
    return key;
  }

  /** The structure key structureToken last found settled for everyone. */
  private settledKey: string | undefined;

  /** HostTable.candidates for every agent: lists by (structure token, view), the last 16 kept. */
  candidates(key: string, build: () => readonly string[]): readonly string[] {
    let ids = this.candidateLists.get(key);
    if (ids === undefined) {
      if (this.candidateLists.size >= 16) this.candidateLists.clear();
      ids = build();
      this.candidateLists.set(key, ids);
      this.counters.candidateListsBuilt++;
    } else this.counters.candidateListsShared++;
    return ids;
  }

  private readonly candidateLists = new Map<string, readonly string[]>();

  sortedHostIds(): string[] {
    this.hostIds ??= [...this.hosts.keys()].sort();
    return this.hostIds;
  }

  sortedIntentIds(): string[] {
    this.intentIds ??= [...this.intents.keys()].sort();
    return this.intentIds;
  }

  /** Deploy `id` as merged from the deltas that reached agent i (cached per set of deltas). */
  intentTable(id: string, i: number, now: number): IntentTable | undefined {
    const hist = this.intents.get(id);
    if (!hist) return undefined;
    let key = '';
    for (const d of hist.deltas) key += this.sees(d.t, d.from, d.seq, i, now, false) ? '1' : '0';
    if (!key.includes('1')) return undefined;
    let t = hist.tables.get(key);
    if (!t) {
      t = new IntentTable('shared-view');
      hist.deltas.forEach((d, k) => {
        if (key[k] === '1') t!.merge(d.w);
      });
      hist.tables.set(key, t);
    }
    return t;
  }

  /** A fresh table of deploy `id` in agent i's view (strict: before `now`), for merging into. */
  private buildIntentTable(id: string, i: number, now: number, strict: boolean): IntentTable {
    const t = new IntentTable(this.ids[i]!);
    for (const d of this.intents.get(id)?.deltas ?? []) {
      if (this.sees(d.t, d.from, d.seq, i, now, strict)) t.merge(d.w);
    }
    return t;
  }

  /** A table to make agent i's local write to deploy `id` on: its view of it and its HLC. */
  writeTable(id: string, i: number, now: number): IntentTable {
    const t = this.buildIntentTable(id, i, now, false);
    // The HLC has observed every stamp that reached it: the largest of those. Stamps that reached
    // everyone (published more than maxDelay ago) come from a running maximum.
    const st = this.stamps;
    const subSeq = this.slots[i]!.subSeq;
    let old = 0; // stamps [0, old) reached everyone subscribed before them
    let hi = st.length;
    while (old < hi) {
      const mid = (old + hi) >>> 1;
      if (st[mid]!.t + this.maxDelay < now) old = mid + 1;
      else hi = mid;
    }
    let top: Stamp | undefined;
    let k = 0;
    if (old > 0 && st[0]!.seq > subSeq) {
      top = this.stampMax[old - 1];
      k = old;
    }
    for (; k < st.length; k++) {
      const s = st[k]!;
      if (!this.sees(s.t, s.from, s.seq, i, now, false)) continue;
      if (top === undefined || compareStamps(s.stamp, top) > 0) top = s.stamp;
    }
    if (top) t.clock.observe(top);
    return t;
  }

  /** Hosts whose record claimed `deployId` in some version, sorted. */
  claimersOf(deployId: string): string[] {
    const set = this.claimers.get(deployId);
    return set ? [...set].sort() : [];
  }

  membershipOf(i: number): Membership | undefined {
    return this.slots[i]!.membership;
  }

  indexOf(id: string): number | undefined {
    return this.index.get(id);
  }

  now(): number {
    return this.loop.now;
  }
}

/** Deploys whose workloads (replica, gen, status) differ between two versions of a record. */
function changedDeploys(a: HostEntry | undefined, b: HostEntry): Set<string> {
  const out = new Set<string>();
  const ra = a && !a.deleted ? a : undefined;
  const rb = !b.deleted ? b : undefined;
  const ma = ra ? claimsByDeploy(ra) : undefined;
  const mb = rb ? claimsByDeploy(rb) : undefined;
  const drain = (ra?.draining ?? false) !== (rb?.draining ?? false);
  for (const [d, ws] of mb ?? []) if (drain || !sameWorkloads(ws, ma?.get(d))) out.add(d);
  for (const d of ma?.keys() ?? []) if (drain || !mb?.has(d)) out.add(d);
  return out;
}

function liveDeploys(e: HostEntry | undefined): Iterable<string> {
  return e && !e.deleted ? claimsByDeploy(e).keys() : [];
}

function sameWorkloads(a: readonly WorkloadRecord[], b: readonly WorkloadRecord[] | undefined): boolean {
  if (b === undefined || a.length !== b.length) return false;
  for (let k = 0; k < a.length; k++) {
    const x = a[k]!;
    const y = b[k]!;
    if (x.replica !== y.replica || x.gen !== y.gen || x.status !== y.status) return false;
  }
  return true;
}

// ───────────────────────────── one agent's tables ─────────────────────────────

class AgentSyncLink implements StateSyncShared {
  readonly state: ClusterState;
  arrived?: (change: StateChange) => void;

  constructor(
    private readonly hub: SharedState,
    private readonly i: number,
  ) {
    this.state = new SharedClusterState(hub, i);
  }

  subscribe(): void {
    this.hub.subscribe(this.i);
  }
}

/** ClusterState over the shared copy: reads compute agent i's view; local writes publish. */
class SharedClusterState extends ClusterState {
  override readonly hosts: HostTable;
  override readonly intents: IntentTable;

  constructor(
    private readonly hub: SharedState,
    private readonly i: number,
  ) {
    super(hub.ids[i]!);
    this.hosts = new SharedHostTable(hub, i);
    this.intents = new SharedIntentTable(hub, i);
  }

  override apply(delta: StateDelta, peer = 'local'): ApplyResult {
    if (peer !== 'local') throw new Error('shared state: only local writes are applied (no anti-entropy)');
    this.hub.publish(this.i, delta);
    return { hosts: [...delta.hosts], intents: [...delta.intents] };
  }

  override gc(): { hosts: number; intents: number } {
    throw new Error('shared state: gc is not modelled');
  }
}

class SharedHostTable extends HostTable {
  constructor(
    private readonly hub: SharedState,
    private readonly i: number,
  ) {
    super();
  }

  override merge(_e: HostEntry): MergeResult {
    throw new Error('shared state: host entries are written through ClusterState.apply');
  }

  override get(id: string): HostEntry | undefined {
    return this.hub.hostAt(id, this.i, this.hub.now());
  }

  override live(id: string): HostRecord | undefined {
    const e = this.get(id);
    return e && !e.deleted ? e : undefined;
  }

  override versionOf(id: string): number | undefined {
    return this.get(id)?.version;
  }

  override candidates(view: string, build: () => readonly string[]): readonly string[] {
    const token = this.hub.structureToken(this.hub.now());
    return token === undefined ? build() : this.hub.candidates(`${token}:${view}`, build);
  }

  override get size(): number {
    return this.all().length;
  }

  override get liveSize(): number {
    return this.allLive().length;
  }

  override all(): HostEntry[] {
    const now = this.hub.now();
    const out: HostEntry[] = [];
    for (const id of this.hub.sortedHostIds()) {
      const e = this.hub.hostAt(id, this.i, now);
      if (e) out.push(e);
    }
    return out;
  }

  override allLive(): HostRecord[] {
    return this.all().filter((e): e is HostRecord => !e.deleted);
  }

  override tombstone(): never {
    throw new Error('shared state: host removal is not modelled');
  }

  override gc(): number {
    throw new Error('shared state: gc is not modelled');
  }

  override missingFrom(digest: readonly { id: string; version: number }[]): string[] {
    return digest
      .filter((d) => (this.versionOf(d.id) ?? -1) < d.version)
      .map((d) => d.id)
      .sort();
  }

  override bucketTags(): never {
    throw new Error('shared state: anti-entropy is not modelled');
  }

  override hash(): string {
    const acc = new XorSet();
    const all = this.all();
    for (const e of all) acc.toggle(hostEntryHash(e));
    return sha256(`hosts\0${all.length}\0${acc.hex()}`).toString('hex');
  }
}

class SharedIntentTable extends IntentTable {
  constructor(
    private readonly hub: SharedState,
    private readonly i: number,
  ) {
    super(hub.ids[i]!);
  }

  private table(id: string): IntentTable | undefined {
    return this.hub.intentTable(id, this.i, this.hub.now());
  }

  override put(id: string, fields: IntentFields, now: number): IntentWire | undefined {
    return this.written(this.hub.writeTable(id, this.i, this.hub.now()).put(id, fields, now));
  }

  override update(id: string, patch: Partial<IntentFields>, now: number): IntentWire | undefined {
    return this.written(this.hub.writeTable(id, this.i, this.hub.now()).update(id, patch, now));
  }

  override remove(id: string, now: number): IntentWire {
    return this.written(this.hub.writeTable(id, this.i, this.hub.now()).remove(id, now))!;
  }

  private written(w: IntentWire | undefined): IntentWire | undefined {
    if (w) this.hub.publish(this.i, { hosts: [], intents: [w] });
    return w;
  }

  override merge(_w: IntentWire): boolean {
    throw new Error('shared state: intent deltas are written through put/update/remove');
  }

  override get(id: string): DeployIntent | undefined {
    return this.table(id)?.get(id);
  }

  override isDeleted(id: string): boolean {
    return this.table(id)?.isDeleted(id) ?? false;
  }

  override ids(): string[] {
    return this.hub.sortedIntentIds().filter((id) => this.table(id) !== undefined);
  }

  protected override sortedIds(): readonly string[] {
    return this.ids();
  }

  protected override idsIn(buckets: ReadonlySet<number> | undefined): readonly string[] {
    const all = this.ids();
    return buckets === undefined ? all : all.filter((id) => buckets.has(bucketOf(id)));
  }

  override get size(): number {
    return this.ids().length;
  }

  override wire(id: string): IntentWire | undefined {
    return this.table(id)?.wire(id);
  }

  override allWire(): IntentWire[] {
    return this.ids().map((id) => this.wire(id)!);
  }

  override bucketTags(): never {
    throw new Error('shared state: anti-entropy is not modelled');
  }

  override hash(): string {
    const t = new IntentTable('hash');
    for (const id of this.ids()) t.merge(this.wire(id)!);
    return t.hash();
  }

  override gc(): number {
    throw new Error('shared state: gc is not modelled');
  }
}

class SharedClaims implements ClaimsView {
  constructor(private readonly hub: SharedState) {}
  readonly external = true;
  update(): void {}
  recordOf(): undefined {
    return undefined;
  }
  hostsOf(deployId: string): string[] {
    return this.hub.claimersOf(deployId);
  }
}

/** Agent i's coordinators, computed from its own membership view and the shared rankings. */
class SharedCoordinatorView implements CoordinatorView {
  constructor(
    private readonly hub: SharedState,
    private readonly i: number,
  ) {}

  of(deployId: string): string | undefined {
    const self = this.hub.ids[this.i]!;
    if (this.hub.intentTable(deployId, this.i, this.hub.now())?.get(deployId) === undefined) return undefined;
    const m = this.hub.membershipOf(this.i);
    const order = this.hub.coordination.ranking(deployId);
    // The first member of the ranking this agent believes alive, or itself.
    const limit = Math.min(order.length, 64);
    for (let k = 0; k < limit; k++) {
      const id = this.hub.ids[order[k]!]!;
      if (id === self || m?.status(id) === 'alive') return id;
    }
    return coordinatorAmong(fnv1a(deployId), self, m?.aliveIds() ?? []);
  }

  coordinatedBy(member: string): string[] {
    const self = this.hub.ids[this.i]!;
    if (member !== self) throw new Error('shared state: only an agent’s own coordinated deploys are known');
    const out: string[] = [];
    for (const d of this.hub.coordination.deploysFor(this.i)) if (this.of(d) === self) out.push(d);
    return out;
  }

  add(): void {}
  remove(): void {}
  memberUp(): void {}
  memberDown(): void {}
  readonly tracksMembers = false;
}

// ───────────────────────────── who may coordinate what ─────────────────────────────

interface Ranked {
  h: number;
  /** Members by rendezvous weight (highest first, ties to the lower id); the top only, until needed. */
  order: number[];
  full: boolean;
  prefix: number[];
}

const TOP = 8;

/**
 * Which agents may believe they coordinate a deploy. Agent j coordinates d in its view when no
 * member it believes alive ranks above it in d's rendezvous order. Call a member *universal* when
 * every live, settled agent (other than itself) believes it alive. A settled agent ranked below a
 * universal member cannot coordinate d, so the candidates are the live agents of the ranking's
 * prefix up to the first universal member, plus the unsettled agents (those that believe fewer
 * than half the members alive: just started, or isolated), which are candidates for everything.
 * Kept from every agent's membership changes; a deploy's prefix is recomputed only when one of its
 * members changes status. Exact: any partition into settled and unsettled agents would be; this
 * one keeps both the unsettled set and the prefixes small.
 */
export class SharedCoordination {
  private readonly n: number;
  private readonly up: Uint8Array;
  private readonly unsettled: Uint8Array;
  private readonly viewSize: Int32Array;
  /** Settled live agents (other than m) that believe m alive. */
  private readonly believed: Int32Array;
  private readonly universal: Uint8Array;
  private settledUp = 0;
  private readonly threshold: number;
  private readonly deploys = new Map<string, Ranked>();
  private readonly inPrefix: Set<string>[];
  private readonly unsettledUp = new Set<number>();
  private readonly memberships: (Membership | undefined)[];

  constructor(
    private readonly ids: readonly string[],
    private readonly onCandidate: (agent: number, deploy: string) => void,
    private readonly onUnsettled: (agent: number) => void,
  ) {
    this.n = ids.length;
    this.up = new Uint8Array(this.n);
    this.unsettled = new Uint8Array(this.n).fill(1);
    this.viewSize = new Int32Array(this.n);
    this.believed = new Int32Array(this.n);
    this.universal = new Uint8Array(this.n);
    this.threshold = Math.floor((this.n - 1) / 2);
    this.inPrefix = Array.from({ length: this.n }, () => new Set<string>());
    this.memberships = new Array(this.n).fill(undefined);
  }

  private readonly idx = new Map<string, number>();
  /** Membership changes are not followed (a wholesale change of views: recount() afterwards). */
  paused = false;

  /**
   * Rebuild every belief from the agents' current views: after views changed wholesale while
   * paused (a formed start: N² members learned at once), O(N²) reads instead of N² events.
   */
  recount(): void {
    this.paused = false;
    this.believed.fill(0);
    this.settledUp = 0;
    // A view of n − 1 alive members is every agent but j (views hold agents only): such views are
    // counted at once, O(N) for all of them, instead of each walking its N members.
    const all = new Uint8Array(this.n);
    let alls = 0;
    for (let j = 0; j < this.n; j++) {
      this.viewSize[j] = this.memberships[j]?.aliveCount ?? 0;
      if (!this.up[j]) continue;
      const nowUnsettled = this.viewSize[j]! < this.threshold;
      if (nowUnsettled && !this.unsettled[j]) {
        this.unsettled[j] = 1;
        this.unsettledUp.add(j);
        this.onUnsettled(j);
      } else if (!nowUnsettled) {
        this.unsettled[j] = 0;
        this.unsettledUp.delete(j);
        if (this.viewSize[j] === this.n - 1) {
          all[j] = 1;
          alls++;
          this.settledUp++;
        } else this.settle(j, 1);
      }
    }
    if (alls > 0) for (let k = 0; k < this.n; k++) this.believed[k]! += alls - all[k]!;
    this.refreshAll();
  }

  private indexOf(id: string): number | undefined {
    // SimCluster ids are `n` + the agent's index (SimCluster.idOf): no map lookup for those.
    const k = Number(id.slice(1));
    if (this.ids[k] === id) return k;
    if (this.idx.size === 0) for (const [i, x] of this.ids.entries()) this.idx.set(x, i);
    return this.idx.get(id);
  }

  attach(j: number, membership: Membership): void {
    this.memberships[j] = membership;
    const self = this.ids[j]!;
    membership.onChange(
      (m, prev) => {
        if (this.paused || m.id === self || (m.status === 'alive') === (prev === 'alive')) return;
        const k = this.indexOf(m.id);
        if (k !== undefined) this.belief(j, k, m.status === 'alive');
      },
      () => {
        // Only a formed start learns members in bulk, and it pauses beliefs (recountBeliefs after).
        if (!this.paused)
          throw new Error(`shared state: agent ${self} learned members in bulk while beliefs are live`);
      },
    );
  }

  started(j: number): void {
    this.up[j] = 1;
    const size = this.memberships[j]?.aliveCount ?? 0;
    this.viewSize[j] = size;
    if (size < this.threshold) {
      this.unsettled[j] = 1;
      this.unsettledUp.add(j);
      this.onUnsettled(j);
    } else {
      this.unsettled[j] = 0;
      this.settle(j, 1);
      this.refreshAll();
    }
  }

  crashed(j: number): void {
    if (!this.up[j]) return;
    if (!this.unsettled[j]) this.settle(j, -1);
    this.up[j] = 0;
    this.unsettledUp.delete(j);
    this.refreshAll();
  }

  /** Count (+1) or uncount (−1) settled agent j's beliefs. */
  private settle(j: number, sign: 1 | -1): void {
    // Without building (and caching) aliveIds(), an array of N ids per agent.
    this.memberships[j]?.forEachAlive((id) => {
      const k = this.indexOf(id);
      if (k !== undefined) this.believed[k]! += sign;
    });
    this.settledUp += sign;
  }

  private belief(j: number, m: number, alive: boolean): void {
    this.viewSize[j]! += alive ? 1 : -1;
    if (!this.up[j]) return;
    const nowUnsettled = this.viewSize[j]! < this.threshold;
    if (!this.unsettled[j]) {
      this.believed[m]! += alive ? 1 : -1;
      if (nowUnsettled) {
        this.settle(j, -1);
        this.unsettled[j] = 1;
        this.unsettledUp.add(j);
        this.refreshAll();
        this.onUnsettled(j);
      } else this.refresh(m);
    } else if (!nowUnsettled) {
      this.unsettled[j] = 0;
      this.unsettledUp.delete(j);
      this.settle(j, 1);
      this.refreshAll();
    }
  }

  private isUniversal(m: number): boolean {
    const self = this.up[m] && !this.unsettled[m] ? 1 : 0;
    return this.believed[m] === this.settledUp - self;
  }

  private refresh(m: number): void {
    const u = this.isUniversal(m) ? 1 : 0;
    if (u === this.universal[m]) return;
    this.universal[m] = u;
    for (const d of [...this.inPrefix[m]!]) this.reprefix(d);
  }

  private refreshAll(): void {
    for (let m = 0; m < this.n; m++) this.refresh(m);
  }

  addDeploy(deployId: string): void {
    if (this.deploys.has(deployId)) return;
    const r: Ranked = { h: fnv1a(deployId), order: [], full: false, prefix: [] };
    r.order = this.top(r.h, TOP);
    this.deploys.set(deployId, r);
    this.reprefix(deployId);
  }

  private top(h: number, k: number): number[] {
    if (k > 64) {
      // The whole order: sort once (insertion below is for a short top).
      const all = Array.from({ length: this.n }, (_, m) => ({ m, w: weight(h, this.ids[m]!) }));
      all.sort((a, b) => b.w - a.w || (this.ids[a.m]! < this.ids[b.m]! ? -1 : 1));
      return all.slice(0, k).map((x) => x.m);
    }
    const best: { m: number; w: number }[] = [];
    for (let m = 0; m < this.n; m++) {
      const w = weight(h, this.ids[m]!);
      if (best.length === k) {
        const last = best[k - 1]!;
        if (w < last.w || (w === last.w && this.ids[m]! > this.ids[last.m]!)) continue;
        best.pop();
      }
      let at = best.length;
      while (at > 0) {
        const b = best[at - 1]!;
        if (b.w > w || (b.w === w && this.ids[b.m]! < this.ids[m]!)) break;
        at--;
      }
      best.splice(at, 0, { m, w });
    }
    return best.map((b) => b.m);
  }

  /** Deploy d's members by rendezvous weight (complete up to its first universal member at least). */
  ranking(deployId: string): readonly number[] {
    const r = this.deploys.get(deployId);
    if (!r) {
      const h = fnv1a(deployId);
      return this.top(h, this.n);
    }
    return r.order;
  }

  private reprefix(deployId: string): void {
    const r = this.deploys.get(deployId)!;
    const next: number[] = [];
    for (let k = 0; ; k++) {
      if (k === r.order.length) {
        if (r.full) break;
        r.order = this.top(r.h, this.n);
        r.full = true;
      }
      const m = r.order[k]!;
      next.push(m);
      if (this.universal[m]) break;
    }
    const old = new Set(r.prefix);
    r.prefix = next;
    for (const m of old) if (!next.includes(m)) this.inPrefix[m]!.delete(deployId);
    for (const m of next) {
      if (old.has(m)) continue;
      this.inPrefix[m]!.add(deployId);
      if (this.up[m]) this.onCandidate(m, deployId);
    }
  }

  /** Live agents that may believe they coordinate `deployId`. */
  candidates(deployId: string): number[] {
    const r = this.deploys.get(deployId);
    const out: number[] = [];
    if (r) for (const m of r.prefix) if (this.up[m] && !this.unsettled[m]) out.push(m);
    for (const j of this.unsettledUp) out.push(j);
    return out;
  }

  /** Deploys agent j may coordinate (every deploy while it is unsettled). */
  deploysFor(j: number): Iterable<string> {
    return this.unsettled[j] ? this.deploys.keys() : this.inPrefix[j]!;
  }
}
