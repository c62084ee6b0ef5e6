import { decodeMessage, encodeMessage, type StateMessage, StateMessageError } from '../../crdt/codec.ts';
import { nextVersion } from '../../crdt/hosts.ts';
import { ClusterState, type StateDelta } from '../../crdt/state.ts';
import type {
  Capacity,
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
export const STORE_STATE_KEY = 'state.snapshot';
const STORE_SELF_KEY = 'self.json';
/** Second byte of a state request that is a hash probe (a crdt-codec JSON message never starts with 0x00). */
const HASH_PROBE = 0x00;
const HASH_DIFFERS = 0x01;

export interface StateSyncConfig {
  antiEntropyIntervalMs: number;
  requestTimeoutMs: number;
  /** Group-commit window of flush(). */
  groupCommitMs: number;
}

export const defaultStateSyncConfig: StateSyncConfig = {
  antiEntropyIntervalMs: 1000,
  requestTimeoutMs: 3000,
  groupCommitMs: 5,
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
  private dirty = false;
  private timer: Timer | undefined;
  private running = false;
  readonly counters = {
    published: 0,
    exchanges: 0,
    exchangesEqual: 0,
    exchangeFailures: 0,
    applied: 0,
    rejected: 0,
  };
  /** Called after any change that altered local state (for metrics, tests and the bidding layer). */
  onChange: ((changed: { hosts: string[]; intents: string[] }) => void) | undefined;

  constructor(
    private readonly deps: StateSyncDeps,
    host: HostFacts,
    cfg: Partial<StateSyncConfig> = {},
  ) {
    this.cfg = { ...defaultStateSyncConfig, ...cfg };
    this.host = host;
    this.state = new ClusterState(deps.transport.id);
  }

  get id(): string {
    return this.deps.transport.id;
  }

  // ───────────────────────────── lifecycle ─────────────────────────────

  start(): void {
    this.running = true;
    this.load();
    this.deps.transport.subscribe(STATE_TOPIC);
    this.writeSelf();
    const first = this.deps.random.int(this.cfg.antiEntropyIntervalMs) + 1;
    this.timer = this.deps.clock.setTimer(first, () => this.antiEntropyLoop());
  }

  stop(): void {
    this.running = false;
    this.timer?.cancel();
  }

  /** The host's facts changed (capacity override, labels): write and publish a new version. */
  setHost(host: HostFacts): void {
    this.host = host;
    this.writeSelf();
  }

  /** Replace this host's workloads (its claims) and usage, publish a new version of its record. */
  setWorkloads(workloads: WorkloadRecord[], allocated: Resources): void {
    this.pendingWorkloads = { workloads, allocated };
    this.writeSelf();
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
    this.dirty = true;
    this.publish({ hosts: [], intents: [w] });
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

  private writeSelf(): void {
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
    this.dirty = true;
    this.persistSelf();
    this.publish({ hosts: [rec], intents: [] });
    this.onChange?.({ hosts: [this.id], intents: [] });
  }

  /** Broadcast a delta on the state topic. */
  publish(delta: StateDelta): void {
    if (delta.hosts.length === 0 && delta.intents.length === 0) return;
    this.counters.published++;
    this.deps.transport.publish(STATE_TOPIC, this.encode({ t: 'delta', ...delta }));
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
    this.handle(from, this.decode(from, data));
  }

  onRequest(from: string, data: Uint8Array): Uint8Array {
    // Hash probe: [TAG_STATE, 0x00, hash…] → [TAG_STATE] when equal, [TAG_STATE, 0x01] when not.
    if (data[1] === HASH_PROBE) {
      const theirs = new TextDecoder().decode(data.subarray(2));
      return Uint8Array.of(TAG_STATE, ...(theirs === this.state.hash() ? [] : [HASH_DIFFERS]));
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
      const changed = this.state.apply(msg, from);
      replies = [];
      if (changed.hosts.length || changed.intents.length) {
        this.dirty = true;
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
      const res = await this.deps.transport.request(
        peer,
        this.encode({ t: 'digest', ...this.state.digest() }),
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
    try {
      const selfRaw = store.read(STORE_SELF_KEY);
      if (selfRaw) {
        const v = (JSON.parse(new TextDecoder().decode(selfRaw)) as { version?: unknown }).version;
        if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) this.ownVersion = v;
      }
    } catch (err) {
      log.error(
        { key: STORE_SELF_KEY, err: String(err) },
        'own record version unreadable; peers will tell us ours',
      );
    }
    try {
      const snap = store.read(STORE_STATE_KEY);
      if (snap) {
        this.state = ClusterState.decodeSnapshot(snap, this.id, `${STORE_STATE_KEY} in the data dir`);
        log.info({ hosts: this.state.hosts.size, hash: this.state.hash() }, 'state restored from disk');
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
  }

  private persistSelf(): void {
    try {
      this.deps.store.write(
        STORE_SELF_KEY,
        new TextEncoder().encode(JSON.stringify({ version: this.ownVersion })),
      );
    } catch (err) {
      this.deps.log.error(
        { key: STORE_SELF_KEY, err: String(err) },
        'could not persist own version; will retry',
      );
      this.dirty = true;
    }
  }

  /**
   * Resolve once everything changed so far is on disk — group commit: a burst of writers waits
   * for one snapshot write (within `groupCommitMs`) instead of one fsync'd write each. Callers that
   * acknowledge a user (the deploy API) await this, so an accepted deploy survives a crash. A
   * failing disk is logged and retried by the persist loop; the waiters are released anyway (the
   * change is already gossiped to peers).
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
    try {
      this.persist();
    } catch (err) {
      this.deps.log.error({ err: String(err) }, 'could not persist cluster state; will retry');
    }
    for (const w of waiters) w();
  }

  persist(): void {
    if (!this.dirty) return;
    this.persistSelf();
    this.deps.store.write(STORE_STATE_KEY, this.state.encodeSnapshot());
    this.dirty = false;
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
