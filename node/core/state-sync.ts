import {
  decodeMessage,
  encodeMessage,
  MESSAGE_LIMITS,
  SNAPSHOT_LIMITS,
  type StateMessage,
  StateMessageError,
} from '../../crdt/codec.ts';
import { DIGEST_BUCKETS } from '../../crdt/hash.ts';
import { nextVersion } from '../../crdt/hosts.ts';
import { applyHostPatch, diffHostRecord } from '../../crdt/patch.ts';
import { ClusterState, type StateDelta } from '../../crdt/state.ts';
import type {
  Capacity,
  HostEntry,
  HostPatch,
  HostRecord,
  IntentFields,
  IntentWire,
  Resources,
  WorkloadRecord,
} from '../../crdt/types.ts';
import type { Transport } from '../../gossip/transport.ts';
import type { HostFacts } from '../host.ts';
import type { SubProtocol } from './agent.ts';
import type { Clock, Logger, Random, Store, Timer } from './io.ts';
import { StoreCorruptError } from './io.ts';
import type { Membership } from './membership.ts';
import { frame, TAG_STATE, WireError } from './wire.ts';

/**
 * Cluster-state dissemination: this host's own record (single writer, versioned) is published on
 * the state topic whenever it changes; remote deltas are merged (CRDT: order and duplicates do not
 * matter). Gossip may lose messages, so every `antiEntropyIntervalMs` the agent runs a push-pull
 * exchange with one random live member:
 *
 *   A ──request(digest)──▶ B      B merges nothing yet; answers [delta A lacks] + [want: ids B lacks]
 *   A ◀──response───────── B      A applies the delta, then
 *   A ──send(delta)───────▶ B      pushes what B wanted.
 *
 * After one exchange without loss A and B hold the same hash. Repeated with random peers this is
 * an epidemic: convergence in O(log N) rounds after a partition heals.
 */

export const STATE_TOPIC = 'shoal/state/1';
/** The base snapshot; changes since it are in the log `STORE_LOG_KEY` (docs/state.md, "Persistence"). */
export const STORE_STATE_KEY = 'state.snapshot';
/** The append-only log of changes since the base (Store.append): records `[u32 BE seq][delta message]`. */
export const STORE_LOG_KEY = 'state.log';
/** Older builds wrote one file per change, `state.log.<seq>`: still replayed, then replaced by a base. */
export const LEGACY_LOG_PREFIX = 'state.log.';
const STORE_SELF_KEY = 'self.json';
/** Bytes a log record costs besides its payload (DiskStore: u32 length + u32 checksum). */
const LOG_RECORD_OVERHEAD = 8;
/**
 * self.json holds an upper bound of the versions this host has used, not the last one: a new bound
 * (version + VERSION_BLOCK) is written only when a version passes the stored one, so a burst of
 * record changes costs no disk write, and after a restart the host starts above every version it
 * ever published.
 */
const VERSION_BLOCK = 1024;
/** A base snapshot with a sequence number: [BASE_MAGIC][u32 BE seq of the last record it covers][snapshot]. */
const BASE_MAGIC = 0x00;
/** Compact (write a new base, remove the log) when the log holds more bytes than max(this, the last base's size). */
const MIN_LOG_BYTES = 256 * 1024;
/** Second byte of a state request that is a hash probe (a crdt-codec JSON message never starts with 0x00). */
const HASH_PROBE = 0x00;
const HASH_DIFFERS = 0x01;

/**
 * Records rebuilt from a patch, by patch object: in the simulator every agent decodes a publish
 * once (decodeCache) and holds the same base record object, so they share the rebuilt record
 * too (one copy per version, as with full records). A real agent decodes each message itself.
 */
const rebuilt = new WeakMap<HostPatch, { base: HostRecord; rec: HostRecord }>();
/** At most one request for a host's full record per this interval (the reply is on its way). */
const WANT_INTERVAL_MS = 250;

export interface StateSyncConfig {
  antiEntropyIntervalMs: number;
  requestTimeoutMs: number;
  /** Group-commit window of flush(). */
  groupCommitMs: number;
  /** Changes of this host's workloads within this window are published as one record version. */
  coalesceMs: number;
  /**
   * Publish a new version of this host's record as a patch of the previous one (crdt/patch.ts)
   * when that is smaller; false: always whole. Receivers take both either way.
   */
  patches: boolean;
  /**
   * Publish pacing: at most one state publish per this window. The first change after a quiet
   * spell goes out at once; changes made while a publish is waiting go out together in the next
   * one (each intent whole, this host's record as one patch since the version last published).
   * An intent that waits is sent at once to its coordinator (`urgentPeer`), so placement does not
   * wait for the window. 0: every change is published at once, alone (the simulator's default).
   */
  publishGapMs: number;
  /**
   * Other hosts' records are a cache (every peer holds them; anti-entropy refills them after a
   * restart): the periodic `persist()` logs them at most once per this interval, and at stop.
   * Intents and this host's version bound are persisted as before. 0: at every persist.
   */
  hostPersistIntervalMs: number;
  /**
   * Deleted deploys and removed hosts (tombstones) are forgotten this long after the delete
   * (ClusterState.gc, every `gcIntervalMs`). It must exceed any partition or downtime after which
   * an agent may come back with its old state: such an agent could hold, as live, entries the
   * others deleted and forgot. So an agent whose stored state was last kept up longer ago than
   * this refuses to start (StaleStateError) instead of bringing them back. 0: never collect.
   */
  tombstoneTtlMs: number;
  gcIntervalMs: number;
}

/** Why an agent will not start from its stored cluster state (see StateSyncConfig.tombstoneTtlMs). */
export class StaleStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StaleStateError';
  }
}

export const defaultStateSyncConfig: StateSyncConfig = {
  antiEntropyIntervalMs: 1000,
  requestTimeoutMs: 3000,
  groupCommitMs: 5,
  coalesceMs: 10,
  patches: true,
  publishGapMs: 0,
  hostPersistIntervalMs: 0,
  tombstoneTtlMs: 7 * 24 * 3_600_000,
  gcIntervalMs: 60_000,
};

export interface StateSyncDeps {
  transport: Transport;
  clock: Clock;
  random: Random;
  store: Store;
  log: Logger;
  membership: Membership;
  /**
   * Simulator only: topic messages decoded by any agent sharing this cache, keyed by the delivered
   * bytes object (SimNetwork `shareTopicBytes` hands every subscriber the same one). A publish is
   * then decoded and validated once, and every agent merges the same immutable records. Unset in
   * a real agent (each message arrives in its own buffer).
   */
  decodeCache?: WeakMap<Uint8Array, StateMessage>;
  /**
   * Simulator only: the shared-state stand-in (sim/shared-state.ts) replaces the state topic and
   * this agent's tables — local writes go into it, reads see what has reached this agent, and it
   * tells the agent (`arrived`) when something that may concern it arrives. No anti-entropy and no
   * persistence of the tables (the stand-in models lossless dissemination and no restarts).
   */
  shared?: StateSyncShared;
}

/** What changed in this agent's copy of the state (`onChange`). */
export interface StateChange {
  hosts: string[];
  intents: string[];
  /** The live records of `hosts` before the change, when the sender knows them. */
  prev?: (HostRecord | undefined)[];
}

export interface StateSyncShared {
  /** This agent's copy of the cluster state (local writes are published by it). */
  readonly state: ClusterState;
  /** This agent receives publishes from now on (the state topic's subscribe). */
  subscribe(): void;
  /** Set by StateSync: a change reached this agent. */
  arrived?: (change: StateChange) => void;
}

export function zeroResources(): Resources {
  return { cpuMilli: 0, cores: [], memory: 0, disk: 0, gpus: [] };
}

export function capacityOf(h: HostFacts): Capacity {
  return {
    cpuMilli: h.cpuMilli,
    cores: h.cores,
    memory: h.memoryBytes,
    disk: h.diskBytes,
    gpus: h.gpus.map((g) => ({ index: g.index, model: g.model, memory: g.memoryBytes })),
    labels: { ...h.labels },
    oversell: { cpu: 1, memory: 1, disk: 1, gpu: 1 },
  };
}

export class StateSync implements SubProtocol {
  readonly tag = TAG_STATE;
  readonly cfg: StateSyncConfig;
  state: ClusterState;
  private host: HostFacts;
  private ownVersion = 0;
  /** Workloads set by the placement layer, applied at the next writeSelf. */
  private pendingWorkloads: { workloads: WorkloadRecord[]; allocated: Resources } | undefined;
  private flushWaiters: (() => void)[] = [];
  private flushTimer: Timer | undefined;
  private selfTimer: Timer | undefined;
  /** Entries changed since they were last written to the store. */
  private readonly dirtyHosts = new Set<string>();
  private readonly dirtyIntents = new Set<string>();
  /** Versions up to this are covered by self.json. */
  private versionBound = 0;
  /** When self.json last recorded that this agent was up (its `aliveAt`). */
  private aliveWrittenAt = Number.NEGATIVE_INFINITY;
  private gcTimer: Timer | undefined;
  /** The store's log: sequence number of the last record, bytes since the base. */
  private logSeq = 0;
  private logBytes = 0;
  private baseBytes = 0;
  /** Log files of older builds (`state.log.<seq>`) replayed at load: removed once a base covers them. */
  private legacyLogKeys: string[] = [];
  /** Write a full base next time (no base yet, or a write failed: what is on disk is unknown). */
  private needBase = true;
  /**
   * Write a base even if nothing is dirty: a base write failed after everything was marked clean,
   * or files of an older build are to be replaced.
   */
  private baseLost = false;
  /** The chain of async state writes (see persistChanges). */
  private writing: Promise<void> = Promise.resolve();
  private timer: Timer | undefined;
  private running = false;
  readonly counters = {
    published: 0,
    exchanges: 0,
    exchangesEqual: 0,
    /** Digest buckets found different by exchanges (each exchange digests only those). */
    bucketsDiffering: 0,
    /** Tombstones (deleted deploys, removed hosts) forgotten after the TTL. */
    tombstonesCollected: 0,
    exchangeFailures: 0,
    applied: 0,
    rejected: 0,
    /** Own-record versions published as patches (the rest went whole). */
    patchesPublished: 0,
    /** Patches received whose base this agent did not hold (the full record was asked for). */
    patchGaps: 0,
    /** Async state writes that failed (retried: the next write is a full base). */
    persistFailures: 0,
    /** Changes that waited for the publish window (publishGapMs) and went out with others. */
    publishDeferred: 0,
    /** Waiting intents sent at once to their coordinator. */
    urgentSends: 0,
  };
  /**
   * The peer that must see a change of this intent without waiting for the publish window (its
   * coordinator); set by the agent's wiring. Undefined, or this agent: nobody.
   */
  urgentPeer: ((deployId: string) => string | undefined) | undefined;
  /** Publish pacing (publishGapMs): when the last publish left, what waits for the next one. */
  private lastPublishAt = Number.NEGATIVE_INFINITY;
  /** When persist() last logged the host records (hostPersistIntervalMs). */
  private hostsPersistedAt = Number.NEGATIVE_INFINITY;
  private outTimer: Timer | undefined;
  private readonly outIntents = new Set<string>();
  private outSelf: 'no' | 'patch' | 'whole' = 'no';
  /** The last version of this host's record that was published (base of the next patch). */
  private publishedSelf: HostRecord | undefined;
  /** When this agent last asked each host for its full record (after a patch it could not use). */
  private readonly wanted = new Map<string, number>();
  /**
   * Per host, the newest patch that arrived before its base (gossip can reorder): applied as soon
   * as the base arrives, dropped once superseded.
   */
  private readonly earlyPatches = new Map<string, { patch: HostPatch; from: string }>();
  /** Called after any change that altered local state (for metrics, tests and the bidding layer). */
  onChange: ((changed: StateChange) => void) | undefined;

  constructor(
    private readonly deps: StateSyncDeps,
    host: HostFacts,
    cfg: Partial<StateSyncConfig> = {},
  ) {
    this.cfg = { ...defaultStateSyncConfig, ...cfg };
    this.host = host;
    this.state = deps.shared?.state ?? new ClusterState(deps.transport.id);
  }

  get id(): string {
    return this.deps.transport.id;
  }

  // ───────────────────────────── lifecycle ─────────────────────────────

  start(): void {
    this.running = true;
    this.load();
    const shared = this.deps.shared;
    if (shared) {
      shared.arrived = (c) => this.arrived(c);
      shared.subscribe();
    } else this.deps.transport.subscribe(STATE_TOPIC);
    this.writeSelf();
    const first = this.deps.random.int(this.cfg.antiEntropyIntervalMs) + 1;
    if (!shared) this.timer = this.deps.clock.setTimer(first, () => this.antiEntropyLoop());
    if (!shared && this.cfg.tombstoneTtlMs > 0) this.gcLoop();
  }

  /** Forget tombstones older than the TTL, every gcIntervalMs. */
  private gcLoop(): void {
    this.gcTimer = this.deps.clock.setTimer(this.cfg.gcIntervalMs, () => {
      if (!this.running) return;
      this.collectTombstones();
      this.gcLoop();
    });
  }

  /** Forget tombstones older than the TTL now; returns how many. */
  collectTombstones(): number {
    const before = this.deps.clock.now() - this.cfg.tombstoneTtlMs;
    const r = this.state.gc(before);
    const n = r.hosts + r.intents;
    if (n === 0) return 0;
    this.counters.tombstonesCollected += n;
    this.deps.log.info({ hosts: r.hosts, intents: r.intents, olderThan: before }, 'tombstones collected');
    // The stored base still holds them: rewrite it once a sizeable part of the state went.
    const left = this.state.hosts.size + this.state.intents.size;
    if (n >= Math.max(64, left / 20)) {
      this.needBase = true;
      this.baseLost = true;
    }
    return n;
  }

  /** Stop timers; resolves once the state writes in flight have landed (the agent then persists the rest). */
  stop(): Promise<void> {
    // What waits for the publish window goes out now (anti-entropy would bring it later anyway).
    if (this.outTimer) {
      this.outTimer.cancel();
      this.outTimer = undefined;
      this.flushOut();
    }
    this.running = false;
    this.timer?.cancel();
    this.gcTimer?.cancel();
    this.selfTimer?.cancel();
    this.selfTimer = undefined;
    return this.writing;
  }

  /** The host's facts changed (capacity override, labels): write and publish a new version. */
  setHost(host: HostFacts): void {
    this.host = host;
    this.writeSelf();
  }

  /**
   * Publish this host's record again, whole (a new version with the same content): for agents that
   * missed its earlier versions and so could not use a patch (the simulator's `republishAfterStart`).
   */
  republishWhole(): void {
    this.writeSelf(true);
  }

  /** Replace this host's workloads (its claims) and usage, publish a new version of its record. */
  setWorkloads(workloads: WorkloadRecord[], allocated: Resources): void {
    this.pendingWorkloads = { workloads, allocated };
    // Coalesce: a burst of awards and status changes becomes one new version of the record (one
    // publish, one decode and merge on every agent) instead of one per change. Coordinators
    // count an acknowledged award as a claim until it shows here (Placement's ack memory).
    if (this.cfg.coalesceMs <= 0) {
      this.writeSelf();
      return;
    }
    this.selfTimer ??= this.deps.clock.setTimer(this.cfg.coalesceMs, () => {
      this.selfTimer = undefined;
      if (this.running) this.writeSelf();
    });
  }

  /**
   * Drain this host (or undo): it stops bidding, and coordinators move its replicas elsewhere
   * (docs/placement.md "Draining"). Kept in the host record, so it survives restarts.
   */
  setDraining(on: boolean): void {
    if ((this.self()?.draining ?? false) === on && this.drainingFlag === on) return;
    this.drainingFlag = on;
    this.writeSelf();
  }

  /** Create or replace a deploy intent locally and gossip it. Returns false if the id was deleted. */
  putIntent(id: string, fields: IntentFields): boolean {
    return this.gossipIntent(this.state.intents.put(id, fields, this.deps.clock.now()));
  }

  /** Change fields of an existing intent. Returns false if unknown or deleted. */
  updateIntent(id: string, patch: Partial<IntentFields>): boolean {
    return this.gossipIntent(this.state.intents.update(id, patch, this.deps.clock.now()));
  }

  /** Delete a deploy intent (final for its id). */
  removeIntent(id: string): void {
    this.gossipIntent(this.state.intents.remove(id, this.deps.clock.now()));
  }

  private gossipIntent(w: IntentWire | undefined): boolean {
    if (!w) return false;
    this.dirtyIntents.add(w.id);
    if (this.paced()) {
      this.outIntents.add(w.id);
      if (this.schedulePublish()) this.sendUrgent(w.id);
    } else this.publish({ hosts: [], intents: [w] });
    this.onChange?.({ hosts: [], intents: [w.id] });
    return true;
  }

  private drainingFlag: boolean | undefined;

  /** Capacity plus the labels every host carries: `shoal.id` (and `shoal.hostname` when known). */
  private capacityWithSystemLabels(): Capacity {
    const c = capacityOf(this.host);
    c.labels['shoal.id'] = this.id;
    if (this.host.hostname) c.labels['shoal.hostname'] = this.host.hostname;
    return c;
  }

  /** The facts this host currently advertises. */
  hostFacts(): HostFacts {
    return this.host;
  }

  /** This host's current record. */
  self(): HostRecord | undefined {
    return this.state.hosts.live(this.id);
  }

  // ───────────────────────────── own record ─────────────────────────────

  private writeSelf(whole = false): void {
    this.selfTimer?.cancel();
    this.selfTimer = undefined;
    const seen = this.state.hosts.versionOf(this.id);
    const prev = this.self();
    this.ownVersion = nextVersion(this.ownVersion, seen);
    const rec: HostRecord = {
      id: this.id,
      version: this.ownVersion,
      deleted: false,
      addrs: this.deps.transport.addrs(),
      capacity: this.capacityWithSystemLabels(),
      allocated: this.pendingWorkloads?.allocated ?? prev?.allocated ?? zeroResources(),
      workloads: this.pendingWorkloads?.workloads ?? prev?.workloads ?? [],
      draining: this.drainingFlag ?? prev?.draining ?? false,
      updatedAt: this.deps.clock.now(),
    };
    this.state.apply({ hosts: [rec], intents: [] });
    this.dirtyHosts.add(this.id);
    if (this.ownVersion > this.versionBound) this.persistSelf();
    // Only what changed since the previous version, when that is much smaller (crdt/patch.ts).
    if (this.paced()) {
      if (whole) this.outSelf = 'whole';
      else if (this.outSelf === 'no') this.outSelf = 'patch';
      this.schedulePublish();
    } else {
      const patch = prev === undefined || whole || !this.cfg.patches ? undefined : diffHostRecord(prev, rec);
      if (patch) this.counters.patchesPublished++;
      this.publish(patch ? { hosts: [], intents: [], patches: [patch] } : { hosts: [rec], intents: [] });
    }
    this.onChange?.({ hosts: [this.id], intents: [] });
  }

  // ───────────────────────────── publish pacing ─────────────────────────────

  private paced(): boolean {
    return this.cfg.publishGapMs > 0 && !this.deps.shared;
  }

  /** Publish what waits now if the window allows, else once it does. True when it has to wait. */
  private schedulePublish(): boolean {
    if (this.outTimer) {
      this.counters.publishDeferred++;
      return true;
    }
    const wait = this.lastPublishAt + this.cfg.publishGapMs - this.deps.clock.now();
    if (wait <= 0) {
      this.flushOut();
      return false;
    }
    this.counters.publishDeferred++;
    this.outTimer = this.deps.clock.setTimer(wait, () => {
      this.outTimer = undefined;
      if (this.running) this.flushOut();
    });
    return true;
  }

  /** One publish of every waiting intent (whole) and of this host's record since the last one published. */
  private flushOut(): void {
    this.lastPublishAt = this.deps.clock.now();
    const intents: IntentWire[] = [];
    for (const id of this.outIntents) {
      const w = this.state.intents.wire(id);
      if (w) intents.push(w);
    }
    this.outIntents.clear();
    const hosts: HostRecord[] = [];
    const patches: HostPatch[] = [];
    const rec = this.outSelf === 'no' ? undefined : this.self();
    if (rec) {
      const base = this.publishedSelf;
      const patch =
        base === undefined || this.outSelf === 'whole' || !this.cfg.patches
          ? undefined
          : diffHostRecord(base, rec);
      if (patch) {
        this.counters.patchesPublished++;
        patches.push(patch);
      } else hosts.push(rec);
      this.publishedSelf = rec;
    }
    this.outSelf = 'no';
    this.publish(patches.length ? { hosts, intents, patches } : { hosts, intents });
  }

  /** The coordinator of a waiting intent gets it now, whole, in a message of its own. */
  private sendUrgent(deployId: string): void {
    const to = this.urgentPeer?.(deployId);
    if (to === undefined || to === this.id) return;
    const w = this.state.intents.wire(deployId);
    if (!w) return;
    this.counters.urgentSends++;
    this.deps.transport.send(to, this.encode({ t: 'delta', hosts: [], intents: [w] }));
  }

  /** Broadcast a delta on the state topic (shared state: the local write published it already). */
  publish(delta: StateDelta & { patches?: HostPatch[] }): void {
    if (delta.hosts.length === 0 && delta.intents.length === 0 && !delta.patches?.length) return;
    this.counters.published++;
    if (this.deps.shared) return;
    this.deps.transport.publish(STATE_TOPIC, this.encode({ t: 'delta', ...delta }));
  }

  /** Shared state: changes reached this agent. */
  private arrived(c: StateChange): void {
    if (!this.running) return;
    this.counters.applied += c.hosts.length + c.intents.length;
    this.onChange?.(c);
  }

  // ───────────────────────────── inbound ─────────────────────────────

  onTopic(_topic: string, from: string, data: Uint8Array): void {
    const cache = this.deps.decodeCache;
    if (cache === undefined) {
      this.handle(from, this.decode(from, data));
      return;
    }
    let msg = cache.get(data);
    if (msg === undefined) {
      msg = this.decode(from, data);
      cache.set(data, msg);
    }
    this.handle(from, msg);
  }

  onMessage(from: string, data: Uint8Array): void {
    const msg = this.decode(from, data);
    const replies = this.handle(from, msg);
    // A peer that could not use a patch of our record asks for it whole (see `handle`).
    if (msg.t === 'want') for (const r of replies) this.deps.transport.send(from, this.encode(r));
  }

  onRequest(from: string, data: Uint8Array): Uint8Array {
    // Hash probe: [TAG_STATE, 0x00, hash…] → [TAG_STATE] when equal, [TAG_STATE, 0x01] when not.
    // When they differ, the answer carries this agent's digest-bucket tags (u32 BE, hosts then
    // intents), so the caller sends a digest of the differing buckets only; callers of older builds
    // read any answer longer than [TAG_STATE] as "differs".
    if (data[1] === HASH_PROBE) {
      const theirs = new TextDecoder().decode(data.subarray(2));
      if (theirs === this.state.hash()) return Uint8Array.of(TAG_STATE);
      const tags = this.state.bucketTags();
      const out = new Uint8Array(2 + 4 * tags.length);
      out[0] = TAG_STATE;
      out[1] = HASH_DIFFERS;
      const view = new DataView(out.buffer);
      for (let i = 0; i < tags.length; i++) view.setUint32(2 + 4 * i, tags[i]!);
      return out;
    }
    const msg = this.decode(from, data);
    if (msg.t !== 'digest') throw new WireError(from, 't', `expected a digest request, got ${msg.t}`);
    const replies = this.state.handle(msg, from);
    return this.encodeMany(replies);
  }

  private handle(from: string, msg: StateMessage): StateMessage[] {
    let replies: StateMessage[];
    if (msg.t === 'delta' || msg.t === 'snapshot') {
      const before = this.ownRecordVersion();
      const delta =
        msg.t === 'delta' && msg.patches?.length
          ? { hosts: [...msg.hosts, ...this.unpatch(from, msg.patches)], intents: msg.intents }
          : msg;
      const changed = this.state.apply(delta, from);
      replies = [];
      // A want is answered once the host's record arrives: the next gap may ask again at once.
      if (this.wanted.size > 0) for (const h of changed.hosts) this.wanted.delete(h.id);
      if (changed.hosts.length > 0 && this.earlyPatches.size > 0) this.applyEarlyPatches(changed.hosts);
      if (changed.hosts.length || changed.intents.length) {
        for (const h of changed.hosts) this.dirtyHosts.add(h.id);
        for (const w of changed.intents) this.dirtyIntents.add(w.id);
        this.counters.applied += changed.hosts.length + changed.intents.length;
        for (const h of changed.hosts)
          this.deps.log.debug({ host: h.id, version: h.version, from }, 'host record applied');
        // Someone holds a version of our own record above ours (we lost our disk): rise above it.
        if (this.ownRecordVersion() !== before && changed.hosts.some((h) => h.id === this.id))
          this.writeSelf();
        this.onChange?.({ hosts: changed.hosts.map((h) => h.id), intents: changed.intents.map((w) => w.id) });
      }
    } else {
      replies = this.state.handle(msg, from);
    }
    return replies;
  }

  /**
   * Full records from patches, for those whose base this agent holds. Validates them all before
   * anything is applied (an inconsistent patch rejects the message, naming the peer and field).
   * A patch whose base is missing (lost or reordered gossip, a new agent) asks the host for its
   * full record, at most once per WANT_INTERVAL_MS per host while unanswered (a record of that host
   * arriving ends the wait); anti-entropy would bring it too.
   */
  private unpatch(from: string, patches: readonly HostPatch[]): HostRecord[] {
    const out: HostRecord[] = [];
    patches.forEach((p, i) => {
      const cur = this.state.hosts.get(p.id);
      if (cur !== undefined && cur.version >= p.version) return; // already there (or newer)
      if (cur === undefined || cur.deleted || cur.version !== p.base) {
        this.counters.patchGaps++;
        const early = this.earlyPatches.get(p.id);
        if (
          cur !== undefined &&
          !cur.deleted &&
          cur.version < p.base &&
          (!early || early.patch.version < p.version)
        )
          this.earlyPatches.set(p.id, { patch: p, from });
        this.askFull(p.id);
        return;
      }
      const hit = rebuilt.get(p);
      if (hit !== undefined && hit.base === cur) {
        out.push(hit.rec);
        return;
      }
      try {
        const rec = applyHostPatch(cur, p, from, `patches[${i}]`, MESSAGE_LIMITS.maxWorkloadsPerHost);
        rebuilt.set(p, { base: cur, rec });
        out.push(rec);
      } catch (err) {
        // Inconsistent with our copy of the base: reject it and fetch the record whole.
        this.askFull(p.id);
        if (err instanceof StateMessageError) throw new WireError(from, err.path, err.reason);
        throw err;
      }
    });
    return out;
  }

  /** Patches that waited for a version just applied. */
  private applyEarlyPatches(changed: readonly HostEntry[]): void {
    for (const h of changed) {
      const early = this.earlyPatches.get(h.id);
      if (early === undefined) continue;
      if (early.patch.version <= h.version || h.deleted) this.earlyPatches.delete(h.id);
      else if (early.patch.base === h.version) {
        this.earlyPatches.delete(h.id);
        try {
          this.handle(early.from, { t: 'delta', hosts: [], intents: [], patches: [early.patch] });
        } catch (err) {
          this.counters.rejected++;
          this.deps.log.warn({ peer: early.from, err: (err as Error).message }, 'rejected a waiting patch');
        }
      }
    }
  }

  private askFull(host: string): void {
    if (host === this.id) return;
    const now = this.deps.clock.now();
    if ((this.wanted.get(host) ?? Number.NEGATIVE_INFINITY) > now - WANT_INTERVAL_MS) return;
    if (this.wanted.size > 10_000) this.wanted.clear();
    this.wanted.set(host, now);
    this.deps.transport.send(host, this.encode({ t: 'want', hosts: [host], intents: [] }));
  }

  private ownRecordVersion(): number | undefined {
    return this.state.hosts.versionOf(this.id);
  }

  // ───────────────────────────── anti-entropy ─────────────────────────────

  private antiEntropyLoop(): void {
    if (!this.running) return;
    this.timer = this.deps.clock.setTimer(this.cfg.antiEntropyIntervalMs, () => this.antiEntropyLoop());
    const alive = this.deps.membership.aliveIds();
    if (alive.length === 0) return;
    void this.exchange(alive[this.deps.random.int(alive.length)]!);
  }

  /** One push-pull exchange with `peer`. Resolves true when it completed. */
  async exchange(peer: string): Promise<boolean> {
    this.counters.exchanges++;
    try {
      // Cheap first: compare hashes (a few bytes). Only when they differ exchange digests.
      const probe = await this.deps.transport.request(
        peer,
        frame(TAG_STATE, new Uint8Array([HASH_PROBE, ...new TextEncoder().encode(this.state.hash())])),
        this.cfg.requestTimeoutMs,
      );
      if (!this.running) return false;
      if (probe.length === 1) {
        this.counters.exchangesEqual++;
        return true;
      }
      // The peer's bucket tags (a peer of an older build sends none): digest only the buckets
      // that differ — O(what differs) instead of O(state) while changes are in flight.
      let buckets: number[] | undefined;
      if (probe.length === 2 + 8 * DIGEST_BUCKETS && probe[1] === HASH_DIFFERS) {
        const view = new DataView(probe.buffer, probe.byteOffset, probe.byteLength);
        const theirs = new Uint32Array(2 * DIGEST_BUCKETS);
        for (let i = 0; i < theirs.length; i++) theirs[i] = view.getUint32(2 + 4 * i);
        buckets = this.state.differingBuckets(theirs);
        // Equal buckets with different hashes (a 32-bit collision): the whole digest.
        if (buckets.length === 0) buckets = undefined;
        else this.counters.bucketsDiffering += buckets.length;
      }
      const res = await this.deps.transport.request(
        peer,
        this.encode({ t: 'digest', ...this.state.digest(buckets) }),
        this.cfg.requestTimeoutMs,
      );
      if (!this.running) return false;
      for (const msg of this.decodeMany(peer, res)) {
        for (const reply of this.handle(peer, msg)) this.deps.transport.send(peer, this.encode(reply));
      }
      return true;
    } catch (err) {
      this.counters.exchangeFailures++;
      if (err instanceof WireError || err instanceof StateMessageError) {
        this.counters.rejected++;
        this.deps.log.warn({ peer, err: err.message }, 'anti-entropy: rejected reply');
      } else {
        this.deps.log.debug({ peer, err: String(err) }, 'anti-entropy exchange failed');
      }
      return false;
    }
  }

  // ───────────────────────────── persistence ─────────────────────────────

  private load(): void {
    const { store, log } = this.deps;
    let aliveAt: number | undefined;
    try {
      const selfRaw = store.read(STORE_SELF_KEY);
      if (selfRaw) {
        const parsed = JSON.parse(new TextDecoder().decode(selfRaw)) as {
          version?: unknown;
          aliveAt?: unknown;
        };
        const v = parsed.version;
        if (typeof parsed.aliveAt === 'number' && Number.isFinite(parsed.aliveAt)) aliveAt = parsed.aliveAt;
        if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) {
          // A bound of every version used before (or, from older builds, the last one used).
          this.ownVersion = v;
          this.versionBound = v;
        }
      }
    } catch (err) {
      log.error(
        { key: STORE_SELF_KEY, err: String(err) },
        'own record version unreadable; peers will tell us ours',
      );
    }
    if (this.deps.shared) return; // the stand-in's tables are not persisted (no restarts)
    let baseSeq = 0;
    try {
      const snap = store.read(STORE_STATE_KEY);
      if (snap) {
        let body = snap;
        if (snap[0] === BASE_MAGIC) {
          if (snap.length < 5) throw new Error('truncated base header');
          baseSeq = new DataView(snap.buffer, snap.byteOffset, snap.byteLength).getUint32(1);
          body = snap.subarray(5);
        }
        this.state = ClusterState.decodeSnapshot(body, this.id, `${STORE_STATE_KEY} in the data dir`);
        this.baseBytes = snap.length;
      }
    } catch (err) {
      const where =
        err instanceof StoreCorruptError && err.keptAt ? `; the file was kept at ${err.keptAt}` : '';
      log.error(
        { key: STORE_STATE_KEY, err: (err as Error).message },
        `stored cluster state is unreadable${where}; starting empty and re-syncing from peers`,
      );
      this.state = new ClusterState(this.id);
    }
    // Replay the log written since the base. Merging is idempotent and order-free (CRDT), so a
    // record the base already covers (a crash between writing a base and removing the log) would
    // do no harm; it is skipped anyway.
    let replayed = 0;
    let logUnreadable = false;
    const replay = (bytes: Uint8Array, where: string): void => {
      const msg = decodeMessage(bytes, `${where} in the data dir`, SNAPSHOT_LIMITS);
      if (msg.t !== 'delta') throw new StateMessageError(where, 't', 'expected a delta');
      this.state.apply(msg, where);
      replayed++;
    };
    // Older builds: one file per change. Replayed, then covered by the next base and removed.
    for (const { key, seq } of this.legacyLogs()) {
      this.logSeq = Math.max(this.logSeq, seq);
      if (seq <= baseSeq) {
        this.removeQuietly(key);
        continue;
      }
      this.legacyLogKeys.push(key);
      try {
        const bytes = store.read(key);
        if (bytes) replay(bytes, key);
      } catch (err) {
        log.error(
          { key, err: (err as Error).message },
          'a stored state change is unreadable; skipping it (peers re-sync what it held)',
        );
      }
    }
    let records: Uint8Array[] = [];
    try {
      const stored = store.readLog(STORE_LOG_KEY);
      if (stored) {
        records = stored.records;
        if (stored.dropped !== undefined) {
          const fields = { key: STORE_LOG_KEY, dropped: stored.dropped, kept: records.length };
          const text =
            `the end of the stored state log "${STORE_LOG_KEY}" is unreadable and was dropped ` +
            `(${stored.dropped}); the ${records.length} record(s) before it are restored; ` +
            'peers re-sync what it held';
          // A torn last record is what a crash mid-append leaves (never acknowledged): a warning.
          if (stored.torn) log.warn(fields, text);
          else log.error(fields, text);
        }
      }
    } catch (err) {
      logUnreadable = true;
      log.error(
        { key: STORE_LOG_KEY, err: (err as Error).message },
        `the stored state log "${STORE_LOG_KEY}" is unreadable; skipping it (peers re-sync what it held)`,
      );
    }
    for (const rec of records) {
      this.logBytes += LOG_RECORD_OVERHEAD + rec.length;
      const seq = rec.length >= 4 ? new DataView(rec.buffer, rec.byteOffset, rec.byteLength).getUint32(0) : 0;
      this.logSeq = Math.max(this.logSeq, seq);
      if (seq !== 0 && seq <= baseSeq) continue;
      const where = `${STORE_LOG_KEY} record ${seq}`;
      try {
        if (rec.length < 4) throw new Error(`record of ${rec.length} bytes has no sequence number`);
        replay(rec.subarray(4), where);
      } catch (err) {
        log.error(
          { key: STORE_LOG_KEY, seq, err: (err as Error).message },
          'a stored state change is unreadable; skipping it (peers re-sync what it held)',
        );
      }
    }
    this.logSeq = Math.max(this.logSeq, baseSeq);
    const now = this.deps.clock.now();
    const ttl = this.cfg.tombstoneTtlMs;
    if (ttl > 0 && aliveAt !== undefined && now - aliveAt > ttl && this.state.intents.size > 0) {
      // Peers forget deletes after the TTL: entries this state holds as live may have been
      // deleted and forgotten meanwhile, and would come back. Nothing is discarded silently.
      const days = (x: number) => `${Math.round((x / 86_400_000) * 10) / 10} d`;
      throw new StaleStateError(
        `the stored cluster state was last kept up ${days(now - aliveAt)} ago, longer than the ` +
          `tombstone TTL (${days(ttl)}): peers may have forgotten deploys deleted since, which this ` +
          'state still holds and would bring back. To re-sync from peers, remove state.snapshot and ' +
          "state.log from the data dir's state/ directory; if the whole cluster was down that long, " +
          'start with a larger --tombstone-ttl to keep this state',
      );
    }
    if (this.state.hosts.size > 0 || this.state.intents.size > 0) {
      log.info(
        { hosts: this.state.hosts.size, logRecords: replayed, hash: this.state.hash() },
        'state restored from disk',
      );
      // Restored: a base exists; new changes go to the log — unless files of an older build (or
      // a log that could not be read) are to be replaced by a base first.
      this.needBase = this.baseBytes === 0 || this.legacyLogKeys.length > 0 || logUnreadable;
    }
    // Files of an older build: replaced by a base at the next persist, even if nothing changes.
    if (this.legacyLogKeys.length > 0) this.baseLost = true;
  }

  /** Log files of older builds in the store (`state.log.<seq>`), by sequence number. */
  private legacyLogs(): { key: string; seq: number }[] {
    const out: { key: string; seq: number }[] = [];
    for (const key of this.deps.store.keys()) {
      if (!key.startsWith(LEGACY_LOG_PREFIX)) continue;
      const seq = Number(key.slice(LEGACY_LOG_PREFIX.length));
      if (Number.isSafeInteger(seq) && seq > 0) out.push({ key, seq });
    }
    return out.sort((a, b) => a.seq - b.seq);
  }

  private removeQuietly(key: string): void {
    try {
      this.deps.store.remove(key);
    } catch (err) {
      this.deps.log.warn({ key, err: String(err) }, 'could not remove an old state log');
    }
  }

  private persistSelf(): void {
    const bound = Math.max(this.versionBound, this.ownVersion + VERSION_BLOCK);
    const now = this.deps.clock.now();
    try {
      // aliveAt: when this agent last kept its state up (see StateSyncConfig.tombstoneTtlMs).
      this.deps.store.write(
        STORE_SELF_KEY,
        new TextEncoder().encode(JSON.stringify({ version: bound, aliveAt: now })),
      );
      this.versionBound = bound;
      this.aliveWrittenAt = now;
    } catch (err) {
      this.deps.log.error(
        { key: STORE_SELF_KEY, err: String(err) },
        'could not persist own version; will retry',
      );
    }
  }

  /** self.json's `aliveAt` is due again: at most hourly, and 4 times within the tombstone TTL. */
  private aliveDue(): boolean {
    const ttl = this.cfg.tombstoneTtlMs;
    if (ttl <= 0 || !this.running) return false;
    return this.deps.clock.now() - this.aliveWrittenAt >= Math.min(3_600_000, ttl / 4);
  }

  /**
   * Resolve once the deploy intents changed so far are on disk — group commit: a burst of writers
   * waits for one small log write (within `groupCommitMs`) instead of one fsync'd write each.
   * Callers that acknowledge a user (the deploy API) await this, so an accepted deploy survives a
   * crash. Host records are written by the periodic `persist()` (they are re-derived from peers
   * and, for this host, from its engine). A failing disk is logged and retried by the persist
   * loop; the waiters are released anyway (the change is already gossiped to peers).
   */
  flush(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.flushWaiters.push(resolve);
      this.flushTimer ??= this.deps.clock.setTimer(this.cfg.groupCommitMs, () => this.doFlush());
    });
  }

  private doFlush(): void {
    this.flushTimer = undefined;
    const waiters = this.flushWaiters;
    this.flushWaiters = [];
    const release = (): void => {
      for (const w of waiters) w();
    };
    let written: Promise<void> | undefined;
    try {
      if (!this.deps.shared) written = this.persistChanges(false);
    } catch (err) {
      this.deps.log.error({ err: String(err) }, 'could not persist cluster state; will retry');
    }
    if (written === undefined) release();
    else void written.then(release);
  }

  /** Write everything changed since the last write (the agent calls this every second and at stop). */
  persist(): void {
    if (this.ownVersion > this.versionBound || this.aliveDue()) this.persistSelf();
    if (this.deps.shared) return;
    const now = this.deps.clock.now();
    const withHosts = !this.running || now - this.hostsPersistedAt >= this.cfg.hostPersistIntervalMs;
    if (withHosts) this.hostsPersistedAt = now;
    this.persistChanges(withHosts);
  }

  /** Resolves once the state writes started so far have landed (or failed). */
  settled(): Promise<void> {
    return this.writing;
  }

  /**
   * Incremental persistence: the entries changed since the last write are appended to the log
   * (`state.log`, one record `[u32 BE seq][delta]`, O(change)); when the log outgrows the base,
   * one full base snapshot replaces both (O(state), amortised) and the log is removed.
   * `withHosts` false writes intents only (group commit).
   *
   * With a store that has `appendAsync`/`writeAsync` (the real disk), writes go off the event
   * loop, one after another (`writing`): a record lands only after the writes before it, so what
   * is on disk after a crash is always a prefix. The bookkeeping is done at once; a failed write
   * re-marks its entries dirty and makes the next write a full base. Returns the pending write.
   */
  private persistChanges(withHosts: boolean): Promise<void> | undefined {
    const hostIds = withHosts ? [...this.dirtyHosts] : [];
    const intentIds = [...this.dirtyIntents];
    if (hostIds.length === 0 && intentIds.length === 0 && !this.baseLost) return undefined;
    const { store } = this.deps;
    // Off the event loop if the store can; then every state write goes through the chain (order).
    const chained = this.running && (store.writeAsync !== undefined || store.appendAsync !== undefined);
    if (this.needBase || this.logBytes > Math.max(MIN_LOG_BYTES, this.baseBytes)) {
      // The whole state, hosts included: everything dirty is covered.
      const seq = this.logSeq;
      const snap = this.state.encodeSnapshot();
      const bytes = new Uint8Array(5 + snap.length);
      bytes[0] = BASE_MAGIC;
      new DataView(bytes.buffer).setUint32(1, seq);
      bytes.set(snap, 5);
      // Covered once the base lands: the log (records up to seq) and files of older builds.
      const covered = [STORE_LOG_KEY, ...this.legacyLogKeys];
      if (!chained) {
        try {
          store.write(STORE_STATE_KEY, bytes);
        } catch (err) {
          this.needBase = true;
          throw err;
        }
      }
      this.needBase = false;
      this.baseLost = false;
      this.baseBytes = bytes.length;
      this.dirtyHosts.clear();
      this.dirtyIntents.clear();
      this.logBytes = 0;
      this.legacyLogKeys = [];
      if (!chained) {
        for (const key of covered) this.removeQuietly(key);
        return undefined;
      }
      return this.enqueueWrite(
        async () => {
          if (store.writeAsync) await store.writeAsync(STORE_STATE_KEY, bytes);
          else store.write(STORE_STATE_KEY, bytes);
          // Harmless if left behind (a crash right here): records up to seq are skipped on load.
          for (const key of covered) await this.removeQuietlyAsync(key);
        },
        () => {
          // Everything was marked clean: write a whole base again next time.
          this.needBase = true;
          this.baseLost = true;
        },
      );
    }
    const hosts: HostEntry[] = [];
    for (const id of hostIds.sort()) {
      const e = this.state.hosts.get(id);
      if (e) hosts.push(e);
    }
    const intents: IntentWire[] = [];
    for (const id of intentIds.sort()) {
      const w = this.state.intents.wire(id);
      if (w) intents.push(w);
    }
    const seq = this.logSeq + 1;
    const delta = encodeMessage({ t: 'delta', hosts, intents });
    const record = new Uint8Array(4 + delta.length);
    new DataView(record.buffer).setUint32(0, seq);
    record.set(delta, 4);
    if (!chained) {
      try {
        store.append(STORE_LOG_KEY, record);
      } catch (err) {
        // The log holds the records before this one (a failed append is cut back), but to be
        // safe the next write is a full base.
        this.needBase = true;
        throw err;
      }
    }
    this.logSeq = seq;
    this.logBytes += LOG_RECORD_OVERHEAD + record.length;
    for (const id of hostIds) this.dirtyHosts.delete(id);
    for (const id of intentIds) this.dirtyIntents.delete(id);
    if (!chained) return undefined;
    return this.enqueueWrite(
      async () => {
        if (store.appendAsync) await store.appendAsync(STORE_LOG_KEY, record);
        else store.append(STORE_LOG_KEY, record);
      },
      () => {
        // Unknown what reached the disk: the next write is a full base; its entries are dirty again.
        this.needBase = true;
        for (const id of hostIds) this.dirtyHosts.add(id);
        for (const id of intentIds) this.dirtyIntents.add(id);
      },
    );
  }

  /** Run `write` after the state writes before it; on failure log, count and call `failed`. */
  private enqueueWrite(write: () => Promise<void>, failed: () => void): Promise<void> {
    const next = this.writing.then(write).catch((err: unknown) => {
      failed();
      this.counters.persistFailures++;
      this.deps.log.error({ err: String(err) }, 'could not persist cluster state; will retry');
    });
    this.writing = next;
    return next;
  }

  private async removeQuietlyAsync(key: string): Promise<void> {
    const { store } = this.deps;
    try {
      if (store.removeAsync) await store.removeAsync(key);
      else store.remove(key);
    } catch (err) {
      this.deps.log.warn({ key, err: String(err) }, 'could not remove an old state log');
    }
  }

  // ───────────────────────────── codec ─────────────────────────────

  private encode(msg: StateMessage): Uint8Array {
    return frame(TAG_STATE, encodeMessage(msg));
  }

  private decode(from: string, data: Uint8Array): StateMessage {
    try {
      return decodeMessage(data.subarray(1), from);
    } catch (err) {
      if (err instanceof StateMessageError) throw new WireError(from, err.path, err.reason);
      throw err;
    }
  }

  /** Several messages in one response: [u32 length][message]… */
  private encodeMany(msgs: StateMessage[]): Uint8Array {
    const parts = msgs.map((m) => encodeMessage(m));
    const total = parts.reduce((n, p) => n + 4 + p.length, 1);
    const out = new Uint8Array(total);
    out[0] = TAG_STATE;
    const view = new DataView(out.buffer);
    let off = 1;
    for (const p of parts) {
      view.setUint32(off, p.length);
      out.set(p, off + 4);
      off += 4 + p.length;
    }
    return out;
  }

  private decodeMany(from: string, data: Uint8Array): StateMessage[] {
    if (data[0] !== TAG_STATE) throw new WireError(from, '', 'expected a state frame');
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const out: StateMessage[] = [];
    let off = 1;
    while (off < data.length) {
      if (off + 4 > data.length) throw new WireError(from, '', 'truncated response');
      const len = view.getUint32(off);
      if (off + 4 + len > data.length) throw new WireError(from, '', 'truncated response');
      try {
        out.push(decodeMessage(data.subarray(off + 4, off + 4 + len), from));
      } catch (err) {
        if (err instanceof StateMessageError)
          throw new WireError(from, `[${out.length}].${err.path}`, err.reason);
        throw err;
      }
      off += 4 + len;
      if (out.length > 8) throw new WireError(from, '', 'too many messages in one response');
    }
    return out;
  }
}
