import { allocate, feasibility } from '../../allocator/feasibility.ts';
import { bid as allocatorBid, select } from '../../allocator/index.ts';
import { checkNoOvercommit, fits, ledgerFrom, reserve } from '../../allocator/ledger.ts';
import { portKey } from '../../allocator/ports.ts';
import { compareRanked, score } from '../../allocator/strategies.ts';
import type {
  Allocation,
  Bid,
  ExistingPlacement,
  Host,
  HostCapacity,
  PlacementContext,
  PlacementRequest,
  PortRequest,
  Strategy,
} from '../../allocator/types.ts';
import type { DeployIntent, HostRecord, WorkloadRecord } from '../../crdt/types.ts';
import type { Transport } from '../../gossip/transport.ts';
import type { SubProtocol } from './agent.ts';
import {
  ClaimIndex,
  type ClaimsView,
  CoordinatorIndex,
  type CoordinatorView,
  claimBeats,
  claimsByDeploy,
  coordinatorAmong,
  fnv1a,
  rendezvous,
} from './claims.ts';
import { parseHealthcheck, SpecFieldError } from './health.ts';
import { parseHooks } from './hooks.ts';
import type { Clock, Logger, Store, Timer } from './io.ts';
import type { Membership } from './membership.ts';
import {
  hostCapacity,
  hostFromRecord,
  IntentSpecError,
  isPerHost,
  placementSpec,
  resourcesOf,
  sumResources,
} from './placement-adapter.ts';
import { decodePlacement, encodePlacement, type PlacementMessage, TAG_PLACE } from './placement-wire.ts';
import { Prng, sample } from './random.ts';
import { rolloutOf, SYSTEM_KEYS, specTemplateHash, withSystemKeys } from './rollout.ts';
import type { StateChange, StateSync } from './state-sync.ts';
import { jsonFrameLength, ProtocolValue, WireError } from './wire.ts';

/**
 * Deterministic leaderless placement (docs/placement.md, "Bidding protocol").
 *
 * Every deploy has one coordinator at a time: the live member with the highest rendezvous hash of
 * (deployId, memberId) in the coordinator's own view. The coordinator finds the deploy's replica
 * slots that no live host claims, asks candidate hosts for bids (batched: one message per host for
 * all deploys of a round), and picks winners with `allocator.select` — a pure function of the
 * intent and the bids. Each winner is sent an award; the host alone commits it to its own books
 * (so nothing can overcommit it) and publishes its claim in its host record. A refused, lost or
 * timed-out award leaves the slot unclaimed, so the next round re-auctions it. Two live claims on
 * one slot (coordinator change, partition, late award) resolve by (higher generation, lower host
 * id); the loser drops its copy, so at rest every replica runs exactly once.
 */

export interface PlacementConfig {
  /** Coordinator scan period. */
  intervalMs: number;
  /** After a state change, scan again this soon (debounce). */
  reactMs: number;
  bidTimeoutMs: number;
  awardTimeoutMs: number;
  /** How long a bid's reservation holds resources on the bidding host. */
  reservationTtlMs: number;
  /** Candidates asked per deploy: all feasible when at most this many, else the best this many. */
  maxCandidates: number;
  /**
   * Above this many live hosts, a round ranks a deterministic sample of them per deploy (power of
   * d choices: `sampleSize`, at least 4 per pending replica, drawn from the deploy id and the
   * round) instead of every live host. Per-host strategies always look at every host.
   */
  sampleAbove: number;
  sampleSize: number;
  /**
   * Unplaced replicas are retried after this, then with exponential backoff up to `maxBackoffMs`.
   * Short: a round that lost against concurrent auctions' reservations usually succeeds at once.
   */
  minBackoffMs: number;
  /** Unplaceable deploys are retried with exponential backoff up to this. */
  maxBackoffMs: number;
  /**
   * Claims of a host declared dead less than this long ago still count: an agent that crashed and
   * restarts quickly (its containers kept running) finds its replicas where it left them instead
   * of re-placed elsewhere and stopped. Self-healing re-places after this grace.
   */
  reassignGraceMs: number;
  /** A draining host keeps a moved replica until its new copy runs, at most this long. */
  drainHandoffMs: number;
  /** How long an acknowledged award counts as a claim while its record is on the way. */
  ackMemoryMs: number;
  /** Changes of this host's books are written to the store at most this often. */
  persistDelayMs: number;
  /**
   * Direct awards (docs/placement.md, "Direct awards"): a request whose allocation does not depend
   * on which cores, GPUs or volume pools a host has free (no bound cores, GPU or volumes) is
   * priced by the coordinator from the gossiped view, with the same `allocator.bid`, and awarded
   * without a bid exchange; the host still commits only what fits its exact books. A refused
   * direct award sends the deploy's next round through the full auction. false: always auction.
   */
  directAward: boolean;
}

/**
 * Can a coordinator price this request from a gossiped view? Only when the allocation is amounts
 * (shared CPU, memory, disk, host ports): which bound cores, GPU or volume pool a host grants
 * depends on its exact books, which only the host has.
 */
export function priceableFromView(r: PlacementRequest): boolean {
  const res = r.resources;
  return !res.cpu.bind && res.gpu === undefined && (res.volumes === undefined || res.volumes.length === 0);
}

export const defaultPlacementConfig: PlacementConfig = {
  intervalMs: 1000,
  reactMs: 10,
  bidTimeoutMs: 1000,
  awardTimeoutMs: 1000,
  reservationTtlMs: 3000,
  maxCandidates: 4,
  sampleAbove: 256,
  sampleSize: 64,
  directAward: true,
  minBackoffMs: 100,
  maxBackoffMs: 30_000,
  reassignGraceMs: 5_000,
  drainHandoffMs: 30_000,
  ackMemoryMs: 5_000,
  persistDelayMs: 200,
};

export interface PlacementDeps {
  transport: Transport;
  clock: Clock;
  store: Store;
  log: Logger;
  membership: Membership;
  sync: StateSync;
  /**
   * Scan every intent against claims rebuilt from every host record, as before the claims and
   * coordinator indexes (docs/placement.md, "Scans"). Kept only as the reference the indexed scan
   * is tested against (same seed → same trace); O(hosts + claims) per scan.
   */
  referenceScan?: boolean;
  /**
   * Simulator only (sim/shared-state.ts): indexes shared by every simulated agent instead of one
   * per agent — hosts that may claim each deploy, and coordinators computed from this agent's
   * view — and where this agent says which deploys it holds replicas of (so that the stand-in
   * wakes it for changes that concern them).
   */
  shared?: PlacementShared;
  /**
   * Simulator: send placement messages as values (ProtocolValue through Transport.sendValue,
   * charged their encoded length) instead of JSON bytes, when the transport can. The receiver gets
   * the sender's objects: neither side mutates a message. Same decisions, same trace (tested).
   */
  directValues?: boolean;
}

export interface PlacementShared {
  claims: ClaimsView;
  coordinators: CoordinatorView;
  /** This host holds replicas of `deployId` (on) or no longer (off). */
  held(deployId: string, on: boolean): void;
}

/** One committed replica on this host (the exact books). */
export interface LocalWorkload {
  deployId: string;
  replica: number;
  gen: number;
  allocation: Allocation;
  createdAt: number;
}

interface Reservation {
  deployId: string;
  allocations: Allocation[];
  expiresAt: number;
}

/** Why replicas of a deploy are not placed (coordinator's view). */
export interface PendingInfo {
  deployId: string;
  pending: number;
  reasons: string[];
  retryAt: number;
}

const STORE_WORKLOADS_KEY = 'workloads.json';

export function workloadId(deployId: string, replica: number): string {
  return `${deployId}.${replica}`;
}

export { claimBeats, rendezvous };

export class Placement implements SubProtocol {
  readonly tag = TAG_PLACE;
  readonly cfg: PlacementConfig;
  /** This host's committed replicas by workload id — the only writer of this host's books. */
  private readonly local = new Map<string, LocalWorkload>();
  private readonly reservations = new Map<string, Reservation>();
  private readonly inflight = new Map<string, Set<number>>();
  /** Per-host deploys with a round in flight (their slots are per host, so the deploy is the unit). */
  private readonly perHostBusy = new Set<string>();
  private readonly coordinatorCache = new Map<string, string>();
  /**
   * Awards hosts acknowledged, by deploy → slot key → claim, until the claim shows in the host's
   * gossiped record (or `ackMemoryMs` passes). Between the ack and the record reaching us the slot
   * would otherwise look unclaimed and be auctioned twice.
   */
  /** Draining: when this host first saw each of its replicas superseded (make before break). */
  private readonly handoff = new Map<string, number>();
  private readonly acked = new Map<
    string,
    Map<string, { host: string; gen: number; replica: number; until: number }>
  >();
  private coordinatorCacheKey: readonly string[] | undefined;
  /** Hosts claiming each deploy (this agent's view), kept from record changes. */
  private readonly claimIndex: ClaimsView;
  /** Coordinator of every live deploy in this agent's view, kept from intent and member changes. */
  private coordinators: CoordinatorView | undefined;
  /** Replies awaited from hosts (bids, award acks), by `round\0type\0host`. */
  private readonly awaiting = new Map<string, (reply: PlacementMessage | undefined) => void>();
  private readonly backoff = new Map<
    string,
    { until: number; delay: number; transient: boolean; info: PendingInfo }
  >();
  private roundSeq = 0;
  private timer: Timer | undefined;
  private soon: Timer | undefined;
  /** Times (clock ms) at which something expires (a backoff, an ack memory, a grace): scan then. */
  private readonly wakes: number[] = [];
  private wakeTimer: Timer | undefined;
  private wakeTimerAt = Number.POSITIVE_INFINITY;
  /** Deploys with replicas on this host, and how many. */
  private readonly held = new Map<string, number>();
  /**
   * Host-side reconcile looks at the replicas of these deploys only (their intent, or another
   * host's claims on them, changed; or the replica is new), or at all of them (`reconcileAll`:
   * this host's record, a member's status, a wake-up).
   */
  private readonly reconcileDirty = new Set<string>();
  private reconcileAll = true;
  private persistTimer: Timer | undefined;
  private running = false;
  private dirty = false;
  readonly counters = {
    rounds: 0,
    bidsAsked: 0,
    directAwards: 0,
    awardsAccepted: 0,
    awardsRefused: 0,
    dropped: 0,
    decided: 0,
  };
  /** Called when this host's committed replicas change (the reconcile loop listens). */
  onLocalChange: (() => void) | undefined;
  /** Engine kind reported in this host's workload records. */
  engineKind: 'docker' | 'process' | 'sim' = 'sim';
  /** Deploys whose direct award a host refused: their next round is a full auction. */
  private readonly auctionNext = new Set<string>();
  /** Realloc requests this host could not satisfy, by workload id, with the allocator's reason. */
  private readonly reallocRefused = new Map<string, string>();
  private statuses = new Map<string, WorkloadStatusView>();
  /** Observers (tests, metrics): called when this coordinator decides replicas of a deploy. */
  onDecided: ((deployId: string, replicas: number[], at: number) => void) | undefined;

  constructor(
    private readonly deps: PlacementDeps,
    cfg: Partial<PlacementConfig> = {},
  ) {
    this.cfg = { ...defaultPlacementConfig, ...cfg };
    this.claimIndex = deps.shared?.claims ?? new ClaimIndex();
  }

  get id(): string {
    return this.deps.transport.id;
  }

  // ───────────────────────────── lifecycle ─────────────────────────────

  start(): void {
    this.running = true;
    this.load();
    this.publishSelf();
    // Index what the store restored (later changes come through onChange).
    this.coordinators = this.deps.shared?.coordinators ?? new CoordinatorIndex(this.id);
    const state = this.deps.sync.state;
    if (!this.claimIndex.external)
      for (const rec of state.hosts.allLive()) this.claimIndex.update(rec.id, rec);
    const alive = this.deps.membership.aliveIds();
    for (const intent of state.intents.all()) this.coordinators.add(intent.id, alive);
    const prev = this.deps.sync.onChange;
    this.deps.sync.onChange = (c) => {
      prev?.(c);
      // Scan only for changes that concern what this agent coordinates or holds.
      if (this.indexChanges(c)) this.changed();
    };
    // Scans depend on members' status only (not on every gossiped refresh of a member).
    this.deps.membership.onChange(
      (m, prev) => {
        if (m.status === prev) return;
        if (m.id !== this.id && (m.status === 'alive') !== (prev === 'alive')) {
          if (m.status === 'alive') this.coordinators?.memberUp(m.id);
          else this.coordinators?.memberDown(m.id, this.deps.membership.aliveIds());
        }
        // A dead host's claims stop counting after the grace: look again then.
        if (m.status === 'dead' && m.id !== this.id) this.wakeAt(m.changedAt + this.cfg.reassignGraceMs);
        this.reconcileAll = true;
        this.changed();
      },
      // Many members learned alive at once (a formed start): memberUp is a no-op for members up
      // already, so every alive member is told; the coordinator of a deploy is the same whatever
      // order members come up in (highest weight, ties by id).
      () => {
        const coordinators = this.coordinators;
        if (coordinators?.tracksMembers !== false)
          this.deps.membership.forEachAlive((id) => coordinators?.memberUp(id));
        this.reconcileAll = true;
        this.changed();
      },
    );
    this.timer = this.deps.clock.setTimer(this.cfg.intervalMs, () => this.tick());
  }

  stop(): void {
    this.running = false;
    this.timer?.cancel();
    this.soon?.cancel();
    this.wakeTimer?.cancel();
    this.wakeTimer = undefined;
  }

  persist(): void {
    if (!this.dirty) return;
    const list = [...this.local.values()].sort((a, b) =>
      workloadId(a.deployId, a.replica) < workloadId(b.deployId, b.replica) ? -1 : 1,
    );
    const bytes = new TextEncoder().encode(JSON.stringify(list));
    // While running, off the event loop when the store can (the real disk); at stop, in place.
    const pending = this.running ? this.deps.store.writeAsync?.(STORE_WORKLOADS_KEY, bytes) : undefined;
    if (pending === undefined) this.deps.store.write(STORE_WORKLOADS_KEY, bytes);
    this.dirty = false;
    pending?.catch((err: unknown) => {
      this.dirty = true;
      this.deps.log.error({ err: String(err) }, 'placement: could not persist workloads; will retry');
    });
  }

  /** Submit (create or replace) a deploy intent at this agent. Validates the placement part. */
  submit(id: string, intent: Omit<DeployIntent, 'id' | 'revision'>): void {
    placementSpec({ ...intent, id, revision: [0, 0, this.id] });
    try {
      parseHealthcheck(intent.spec);
      parseHooks(intent.spec);
    } catch (err) {
      if (err instanceof SpecFieldError) throw new IntentSpecError(id, err.field, err.problem);
      throw err;
    }
    // A spec without the cluster's keys (an internal submitter: the simulator, tests) gets them here
    // as the API's gets them (node/deploys-backend.ts): a new deploy its rollout record of version
    // 1 in the same change — else its coordinator writes it as a second change, sent to every
    // agent — and a changed template the next rollout version.
    const spec = SYSTEM_KEYS.some((k) => intent.spec[k] !== undefined)
      ? intent.spec
      : withSystemKeys(this.deps.sync.state.intents.get(id)?.spec, intent.spec, this.deps.clock.now());
    if (!this.deps.sync.putIntent(id, { ...intent, spec })) {
      throw new IntentSpecError(id, 'id', 'this deploy id was deleted; deploy ids are not reused');
    }
  }

  /** Replicas this host runs (committed), sorted. */
  workloads(): LocalWorkload[] {
    return [...this.local.values()].sort((a, b) =>
      a.deployId === b.deployId ? a.replica - b.replica : a.deployId < b.deployId ? -1 : 1,
    );
  }

  /** Capacity of this host as the allocator sees it. */
  capacity(): HostCapacity {
    return hostCapacity(this.deps.sync.self()!.capacity);
  }

  /** Overcommit violations of this host's exact books (always empty — checked by the simulator). */
  violations(): string[] {
    const cap = this.capacity();
    const ledger = ledgerFrom(cap, [...this.allocations(true)]);
    return checkNoOvercommit(cap, ledger).map((v) => v.message);
  }

  /** Deploys this agent coordinates that have unplaced replicas, with reasons. */
  pending(): PendingInfo[] {
    return [...this.backoff.values()]
      .filter((b) => !b.transient)
      .map((b) => b.info)
      .sort((a, b) => (a.deployId < b.deployId ? -1 : 1));
  }

  // ───────────────────────────── host side: books ─────────────────────────────

  private *allocations(withReservations: boolean): Iterable<Allocation> {
    for (const w of this.local.values()) yield w.allocation;
    if (!withReservations) return;
    const now = this.deps.clock.now();
    for (const [id, r] of this.reservations) {
      if (r.expiresAt <= now) {
        this.reservations.delete(id);
        continue;
      }
      yield* r.allocations;
    }
  }

  private selfHost(): Host {
    const rec = this.deps.sync.self()!;
    const capacity = hostCapacity(rec.capacity);
    return {
      id: this.id,
      labels: rec.capacity.labels,
      capacity,
      ledger: ledgerFrom(capacity, [...this.allocations(true)]),
    };
  }

  /** Publish this host's claims (its committed replicas) in its record. */
  private publishSelf(): void {
    const workloads: WorkloadRecord[] = this.workloads().map((w) => {
      const st = this.statuses.get(workloadId(w.deployId, w.replica));
      const rec: WorkloadRecord = {
        id: workloadId(w.deployId, w.replica),
        deployId: w.deployId,
        replica: w.replica,
        gen: w.gen,
        resources: resourcesOf(w.allocation),
        status: st?.status ?? 'pending',
        engine: this.engineKind,
        startedAt: st?.startedAt ?? null,
        exitCode: st?.exitCode ?? null,
        health: st?.health ?? null,
      };
      if (st?.version) rec.version = st.version;
      if (st?.restarts) rec.restarts = st.restarts;
      if (st?.error) rec.error = st.error;
      return rec;
    });
    this.deps.sync.setWorkloads(workloads, sumResources(workloads.map((w) => w.resources)));
    this.dirty = true;
    this.onLocalChange?.();
    // Written coalesced (one write per `persistDelayMs`, not per award). A crash before that loses
    // no workload: the engine's labels carry each replica's claim and allocation and the restarted
    // agent adopts them; an award not yet started anywhere drops out of this host's record and is
    // re-auctioned like a lost award.
    this.persistTimer ??= this.deps.clock.setTimer(this.cfg.persistDelayMs, () => {
      this.persistTimer = undefined;
      try {
        this.persist();
      } catch (err) {
        this.deps.log.error({ err: String(err) }, 'placement: could not persist workloads; will retry');
      }
    });
  }

  /**
   * Adopt replicas the engine runs but the books lack (the engine is the truth: a restart after a
   * lost or stale workloads file must not leak their resources). Returns how many were adopted.
   */
  adopt(found: readonly LocalWorkload[]): number {
    let n = 0;
    for (const w of found) {
      const key = workloadId(w.deployId, w.replica);
      const have = this.local.get(key);
      if (have && have.gen >= w.gen) continue;
      this.setLocal(key, w);
      n++;
    }
    if (n > 0) this.publishSelf();
    return n;
  }

  /** Engine-observed status per workload id (from the reconcile loop); republished when changed. */
  setStatuses(next: Map<string, WorkloadStatusView>): void {
    if (next === this.statuses || sameStatuses(next, this.statuses)) return;
    this.statuses = next;
    this.publishSelf();
  }

  private load(): void {
    try {
      const raw = this.deps.store.read(STORE_WORKLOADS_KEY);
      if (!raw) return;
      const list = JSON.parse(new TextDecoder().decode(raw)) as LocalWorkload[];
      if (!Array.isArray(list)) throw new Error('expected a list');
      for (const w of list) this.setLocal(workloadId(w.deployId, w.replica), w);
      this.deps.log.info({ workloads: this.local.size }, 'placement: workloads restored');
    } catch (err) {
      this.deps.log.error(
        { key: STORE_WORKLOADS_KEY, err: String(err) },
        'placement: stored workloads unreadable; starting empty',
      );
    }
  }

  private setLocal(key: string, w: LocalWorkload): void {
    this.reconcileDirty.add(w.deployId);
    if (!this.local.has(key)) {
      const n = (this.held.get(w.deployId) ?? 0) + 1;
      this.held.set(w.deployId, n);
      if (n === 1) this.deps.shared?.held(w.deployId, true);
    }
    this.local.set(key, w);
  }

  private deleteLocal(key: string): void {
    const w = this.local.get(key);
    if (!w) return;
    this.local.delete(key);
    const n = (this.held.get(w.deployId) ?? 0) - 1;
    if (n > 0) this.held.set(w.deployId, n);
    else {
      this.held.delete(w.deployId);
      this.deps.shared?.held(w.deployId, false);
    }
  }

  /** Answer a batch of bid requests from this host's exact books; reserve what is offered. */
  private answerBids(msg: Extract<PlacementMessage, { t: 'bid' }>): Extract<PlacementMessage, { t: 'bids' }> {
    const now = this.deps.clock.now();
    if (this.deps.sync.self()?.draining) {
      const items = msg.items.map((it) => ({
        deployId: it.request.deployId,
        ok: false as const,
        reason: 'host is draining',
      }));
      return { t: 'bids', round: msg.round, items };
    }
    const items = msg.items.map((it) => {
      const host = this.selfHost();
      const ctx: PlacementContext = { strategy: it.strategy, existing: it.existing };
      const b = allocatorBid(host, it.request, ctx, it.count);
      if (!b.ok) {
        // Room held only by other auctions' reservations is busy, not full: they end within ms.
        const committed = { ...host, ledger: ledgerFrom(host.capacity, [...this.allocations(false)]) };
        if (allocatorBid(committed, it.request, ctx, it.count).ok)
          return {
            deployId: it.request.deployId,
            ok: false as const,
            reason: `busy: ${b.reason}`,
            busy: true as const,
          };
        return { deployId: it.request.deployId, ok: false as const, reason: b.reason };
      }
      const resv = `${msg.round}/${it.request.deployId}`;
      this.reservations.set(resv, {
        deployId: it.request.deployId,
        allocations: b.allocations,
        expiresAt: now + this.cfg.reservationTtlMs,
      });
      const ok = {
        deployId: it.request.deployId,
        ok: true as const,
        score: b.score,
        allocations: b.allocations,
      };
      return b.short === undefined ? ok : { ...ok, short: b.short };
    });
    return { t: 'bids', round: msg.round, items };
  }

  /** Commit an award to this host's books if it still fits; the host is the only writer here. */
  private acceptAward(
    msg: Extract<PlacementMessage, { t: 'award' }>,
  ): Extract<PlacementMessage, { t: 'award-ack' }> {
    const now = this.deps.clock.now();
    const out: Extract<PlacementMessage, { t: 'award-ack' }> = {
      t: 'award-ack',
      round: msg.round,
      items: [],
    };
    let changed = false;
    for (const it of msg.items) {
      // The reservation made for this bid is consumed by the award (or released when unused).
      this.reservations.delete(`${msg.round}/${it.deployId}`);
      const accepted: number[] = [];
      const committed: number[] = [];
      const refused: { replica: number; reason: string }[] = [];
      for (const slot of it.slots) {
        const key = workloadId(it.deployId, slot.replica);
        const have = this.local.get(key);
        if (have && have.gen >= slot.gen) {
          accepted.push(slot.replica); // duplicate or older award: already ours
          continue;
        }
        const cap = this.capacity();
        const others = [...this.allocations(true)].filter((a) => a !== have?.allocation);
        const ledger = ledgerFrom(cap, others);
        if (!fits(cap, ledger, slot.allocation)) {
          refused.push({
            replica: slot.replica,
            reason: 'room gone: the host no longer fits this allocation',
          });
          continue;
        }
        this.setLocal(key, {
          deployId: it.deployId,
          replica: slot.replica,
          gen: slot.gen,
          allocation: slot.allocation,
          createdAt: now,
        });
        accepted.push(slot.replica);
        committed.push(slot.replica);
        changed = true;
      }
      out.items.push({ deployId: it.deployId, accepted, refused });
      if (committed.length > 0)
        this.deps.log.info(
          { round: msg.round, deploy: it.deployId, replicas: committed },
          'placement: award accepted',
        );
      this.counters.awardsAccepted += accepted.length;
      this.counters.awardsRefused += refused.length;
    }
    if (changed) this.publishSelf();
    return out;
  }

  /**
   * Host-side reconcile of claims: drop replicas that lost a conflict (a better live claim on the
   * same slot), that were scaled away, or whose deploy was deleted.
   */
  private reconcileClaims(): void {
    const state = this.deps.sync.state;
    let changed = false;
    const all = this.reconcileAll || this.deps.referenceScan === true;
    const dirty = this.reconcileDirty;
    this.reconcileAll = false;
    const look = (deployId: string) => all || dirty.has(deployId);
    for (const [key, w] of this.local) {
      if (!look(w.deployId)) continue;
      let drop: string | undefined;
      if (state.intents.isDeleted(w.deployId)) drop = 'deploy deleted';
      else {
        const intent = state.intents.get(w.deployId);
        if (intent && w.replica >= intent.replicas) drop = `scaled to ${intent.replicas}`;
        else if (intent && isPerHost(intent.strategy) && this.deps.sync.self()?.draining) {
          drop = 'host draining';
        } else if (intent && isPerHost(intent.strategy)) {
          // Slots are (host, k): no other host can hold ours. Only a host limit can be exceeded
          // (two coordinators, a healed partition): the lowest host ids keep the deploy.
          const limit = typeof intent.spec.hostLimit === 'number' ? intent.spec.hostLimit : undefined;
          if (limit !== undefined) {
            const holders = this.claimingFor(w.deployId)
              .filter((r) => (r.id === this.id ? true : r.workloads.some((x) => x.deployId === w.deployId)))
              .map((r) => r.id)
              .sort();
            if (!holders.slice(0, limit).includes(this.id)) drop = `host limit ${limit} exceeded`;
          }
        } else {
          for (const rec of this.liveClaimants(w.deployId)) {
            if (rec.id === this.id) continue;
            const c = rec.workloads.find((x) => x.deployId === w.deployId && x.replica === w.replica);
            if (c && claimBeats({ gen: c.gen, host: rec.id }, { gen: w.gen, host: this.id })) {
              // Draining, or replaced start-first: make before break — keep serving until the new
              // copy runs (start-first: and is healthy when it has a check), bounded.
              const old = startFirstOld(intent, w.replica);
              const startFirst = old !== undefined && w.gen <= old && c.gen > old;
              const ready =
                c.status === 'running' && (!startFirst || c.health === null || c.health === 'healthy');
              if ((this.deps.sync.self()?.draining || startFirst) && !ready) {
                let since = this.handoff.get(key);
                if (since === undefined) {
                  since = this.deps.clock.now();
                  this.wakeAt(since + this.cfg.drainHandoffMs);
                }
                this.handoff.set(key, since);
                if (this.deps.clock.now() - since < this.cfg.drainHandoffMs) break;
              }
              drop = `superseded by ${rec.id} (gen ${c.gen})`;
              break;
            }
          }
        }
      }
      if (drop) {
        this.handoff.delete(key);
        this.deleteLocal(key);
        this.counters.dropped++;
        changed = true;
        this.deps.log.info(
          { deploy: w.deployId, replica: w.replica, gen: w.gen, why: drop },
          'placement: replica dropped',
        );
      }
    }
    if (this.reallocate(look) || changed) this.publishSelf();
    dirty.clear();
  }

  /** Why a replica on this host still has its old resources after its deploy's were changed. */
  reallocRefusals(): Map<string, string> {
    return new Map(this.reallocRefused);
  }

  /**
   * Realloc: when a deploy's resources change, each host re-allocates its replicas in place on its
   * own books (the reconcile loop then applies the new limits live). A replica that no longer fits
   * keeps its old allocation and the refusal is kept with the allocator's reason. Returns whether
   * any allocation changed.
   */
  private reallocate(look: (deployId: string) => boolean): boolean {
    const state = this.deps.sync.state;
    let changed = false;
    for (const [key, w] of this.local) {
      if (!look(w.deployId)) continue;
      const intent = state.intents.get(w.deployId);
      if (!intent) continue;
      let spec: ReturnType<typeof placementSpec>;
      try {
        spec = placementSpec(intent);
      } catch {
        continue; // invalid spec: the coordinator reports it; keep what runs
      }
      if (allocationMatches(w.allocation, spec.request)) {
        this.reallocRefused.delete(key);
        continue;
      }
      const cap = this.capacity();
      const others = [...this.allocations(true)].filter((a) => a !== w.allocation);
      const r = allocate(cap, ledgerFrom(cap, others), spec.request.resources, spec.request.limits);
      if (r.ok) {
        this.deps.log.info(
          { workload: key, from: summary(w.allocation), to: summary(r.allocation) },
          'placement: reallocated',
        );
        w.allocation = r.allocation;
        this.reallocRefused.delete(key);
        changed = true;
      } else {
        const reason = r.failures.map((f) => f.message).join('; ');
        if (this.reallocRefused.get(key) !== reason) {
          this.deps.log.warn(
            { workload: key, reason },
            'placement: realloc refused (keeping the old allocation)',
          );
        }
        this.reallocRefused.set(key, reason);
      }
    }
    return changed;
  }

  // ───────────────────────────── inbound ─────────────────────────────

  onRequest(from: string, data: Uint8Array): Uint8Array {
    const msg = decodePlacement(from, data);
    if (msg.t === 'bid') return encodePlacement(this.answerBids(msg));
    if (msg.t === 'award') return encodePlacement(this.acceptAward(msg));
    throw new WireError(from, 't', `unexpected request ${msg.t}`);
  }

  onMessage(from: string, data: Uint8Array): void {
    this.handle(from, decodePlacement(from, data));
  }

  /** A message from the same code on another simulated agent, as a value (directValues). */
  onValue(from: string, msg: object): void {
    this.handle(from, msg as PlacementMessage);
  }

  private handle(from: string, msg: PlacementMessage): void {
    switch (msg.t) {
      case 'release':
        for (const d of msg.deployIds) this.reservations.delete(`${msg.round}/${d}`);
        return;
      case 'bid':
        this.send(from, this.answerBids(msg));
        return;
      case 'award':
        this.send(from, this.acceptAward(msg));
        return;
      default:
        // A reply to one of our asks (the sender is the transport's authenticated peer id); a late
        // or unsolicited one finds nothing waiting and is ignored.
        this.awaiting.get(`${msg.round}\0${msg.t}\0${from}`)?.(msg);
    }
  }

  /**
   * Ask `host` (bid or award) and wait for its reply, or undefined after `timeoutMs`. One-way
   * messages both ways: they ride the transport's long-lived stream to that peer, batched with
   * whatever else goes there, where a request would open (and negotiate) a new stream each time.
   */
  private ask(
    host: string,
    msg: Extract<PlacementMessage, { t: 'bid' | 'award' }>,
    timeoutMs: number,
  ): Promise<PlacementMessage | undefined> {
    const key = `${msg.round}\0${msg.t === 'bid' ? 'bids' : 'award-ack'}\0${host}`;
    return new Promise((resolve) => {
      const timer = this.deps.clock.setTimer(timeoutMs, () => settle(undefined));
      const settle = (reply: PlacementMessage | undefined) => {
        timer.cancel();
        this.awaiting.delete(key);
        resolve(reply);
      };
      this.awaiting.set(key, settle);
      this.send(host, msg);
    });
  }

  /** One-way to `to`: JSON bytes, or (directValues, the simulator) the message itself, charged its length. */
  private send(to: string, msg: PlacementMessage): void {
    const t = this.deps.transport;
    if (this.deps.directValues && t.sendValue)
      t.sendValue(to, new ProtocolValue(TAG_PLACE, msg), jsonFrameLength(msg));
    else t.send(to, encodePlacement(msg));
  }

  // ───────────────────────────── coordinator ─────────────────────────────

  private changed(): void {
    if (!this.running || this.soon) return;
    this.soon = this.deps.clock.setTimer(this.cfg.reactMs, () => {
      this.soon = undefined;
      this.scan();
    });
  }

  private tick(): void {
    this.timer = undefined;
    if (!this.running) return;
    this.armTick();
    this.scan();
  }

  /**
   * The periodic scan is a safety net (changes and wake-ups drive scans): it runs while there is
   * something a scan could act on — replicas held, deploys coordinated, rounds, backoffs, ack
   * memories. An idle agent (most of them, in a large cluster) has no timer.
   */
  private armTick(): void {
    if (this.timer || !this.running || !this.watching()) return;
    this.timer = this.deps.clock.setTimer(this.cfg.intervalMs, () => this.tick());
  }

  private watching(): boolean {
    if (this.local.size > 0 || this.backoff.size > 0 || this.acked.size > 0) return true;
    if (this.inflight.size > 0 || this.perHostBusy.size > 0) return true;
    for (const _ of this.coordinators?.coordinatedBy(this.id) ?? []) return true;
    return false;
  }

  /** Host records of members not known dead or left (self included), sorted by id. */
  private liveRecords(): HostRecord[] {
    const m = this.deps.membership;
    return this.deps.sync.state.hosts.allLive().filter((r) => {
      if (r.id === this.id) return true;
      const st = m.status(r.id);
      return st === 'alive' || st === 'suspect';
    });
  }

  /** Records whose claims count: live hosts, and hosts dead for less than the reassign grace. */
  private claimingRecords(): HostRecord[] {
    const m = this.deps.membership;
    const now = this.deps.clock.now();
    return this.deps.sync.state.hosts.allLive().filter((r) => {
      if (r.id === this.id) return true;
      const st = m.status(r.id);
      if (st === 'alive' || st === 'suspect') return true;
      return st === 'dead' && now - m.changedAt(r.id)! < this.cfg.reassignGraceMs;
    });
  }

  /** Is `host` alive or suspect in this view (or this agent)? Such hosts' records are "live". */
  private isLive(host: string): boolean {
    if (host === this.id) return true;
    const st = this.deps.membership.status(host);
    return st === 'alive' || st === 'suspect';
  }

  /** Do `host`'s claims count: live, or declared dead less than the reassign grace ago? */
  private isClaiming(host: string, now: number): boolean {
    if (host === this.id) return true;
    const m = this.deps.membership;
    const st = m.status(host);
    if (st === 'alive' || st === 'suspect') return true;
    return st === 'dead' && now - m.changedAt(host)! < this.cfg.reassignGraceMs;
  }

  /** Live records that may claim `deployId` (a superset of those that do), sorted by id. */
  private liveClaimants(deployId: string): HostRecord[] {
    if (this.deps.referenceScan) return this.liveRecords();
    const hosts = this.deps.sync.state.hosts;
    const out: HostRecord[] = [];
    for (const h of this.claimIndex.hostsOf(deployId)) {
      const rec = h === this.id || this.isLive(h) ? hosts.live(h) : undefined;
      if (rec) out.push(rec);
    }
    return out;
  }

  /**
   * Records whose claims count (`claimingRecords`) that may claim `deployId`, this host's own
   * always included, sorted by id.
   */
  private claimingFor(deployId: string): HostRecord[] {
    if (this.deps.referenceScan) return this.claimingRecords();
    const hosts = this.deps.sync.state.hosts;
    const now = this.deps.clock.now();
    const ids = this.claimIndex.hostsOf(deployId);
    if (!ids.includes(this.id)) {
      ids.push(this.id);
      ids.sort();
    }
    const out: HostRecord[] = [];
    for (const h of ids) {
      const rec = this.isClaiming(h, now) ? hosts.live(h) : undefined;
      if (rec) out.push(rec);
    }
    return out;
  }

  /**
   * Keep the claims and coordinator indexes current (called on every state change) and tell
   * whether the change concerns this agent — a scan would act on it: its own record; a deploy it
   * coordinates or holds replicas of (its intent, or its workloads in a record, including
   * their status, or a record's draining flag); any host record while it coordinates a per-host
   * deploy (every host may be a new slot). Other changes cannot make a scan act before its next
   * relevant change, its next wake-up or its next periodic tick.
   */
  private indexChanges(c: StateChange): boolean {
    const state = this.deps.sync.state;
    let relevant = false;
    const coords = this.coordinators;
    if (coords) {
      for (const id of c.intents) {
        if (state.intents.get(id)) coords.add(id, this.deps.membership.aliveIds());
        else {
          coords.remove(id);
          this.auctionNext.delete(id);
        }
        if (this.held.has(id)) this.reconcileDirty.add(id);
        if (!relevant && this.concerns(id)) relevant = true;
      }
    }
    let perHost: boolean | undefined;
    for (const [i, h] of c.hosts.entries()) {
      const prev = c.prev ? c.prev[i] : this.claimIndex.recordOf(h);
      const next = state.hosts.live(h);
      this.claimIndex.update(h, next);
      if (h === this.id) {
        // This host's own record: what the host-side reconcile reads of it is the draining flag
        // and the capacity (realloc); its claims change with the books, whose changes mark their
        // deploys already. Only those deploys, unless the flag or the capacity changed — and the
        // replicas whose realloc was refused for room, which a change of the books may have freed.
        if (!prev || !next || prev.draining !== next.draining || !sameCapacity(prev.capacity, next.capacity))
          this.reconcileAll = true;
        else {
          this.markHeldChanges(prev, next);
          for (const key of this.reallocRefused.keys()) {
            const w = this.local.get(key);
            if (w) this.reconcileDirty.add(w.deployId);
          }
        }
      } else if (this.held.size > 0) this.markHeldChanges(prev, next);
      if (relevant) continue;
      if (h === this.id) relevant = true;
      else {
        perHost ??= this.coordinatesPerHost();
        if (perHost || this.claimsChanged(prev, next)) relevant = true;
      }
    }
    return relevant;
  }

  /** Deploys held here whose workloads changed in another host's record: reconcile them. */
  private markHeldChanges(prev: HostRecord | undefined, next: HostRecord | undefined): void {
    const a = prev ? claimsByDeploy(prev) : undefined;
    const b = next ? claimsByDeploy(next) : undefined;
    const drain = (prev?.draining ?? false) !== (next?.draining ?? false);
    for (const [d, ws] of b ?? []) {
      if (this.held.has(d) && (drain || !sameClaims(ws, a?.get(d)))) this.reconcileDirty.add(d);
    }
    for (const d of a?.keys() ?? []) if (!b?.has(d) && this.held.has(d)) this.reconcileDirty.add(d);
  }

  /** Does this agent coordinate `deployId`, or hold replicas of it? */
  private concerns(deployId: string): boolean {
    return this.held.has(deployId) || this.coordinators?.of(deployId) === this.id;
  }

  private coordinatesPerHost(): boolean {
    const intents = this.deps.sync.state.intents;
    for (const d of this.coordinators?.coordinatedBy(this.id) ?? []) {
      const intent = intents.get(d);
      if (intent && isPerHost(intent.strategy)) return true;
    }
    return false;
  }

  /** Did a deploy this agent is concerned with get other workloads (replica, gen, status) in a record? */
  private claimsChanged(prev: HostRecord | undefined, next: HostRecord | undefined): boolean {
    const a = prev ? claimsByDeploy(prev) : undefined;
    const b = next ? claimsByDeploy(next) : undefined;
    const drain = (prev?.draining ?? false) !== (next?.draining ?? false);
    for (const [d, ws] of b ?? []) {
      if ((drain || !sameClaims(ws, a?.get(d))) && this.concerns(d)) return true;
    }
    for (const d of a?.keys() ?? []) if (!b?.has(d) && this.concerns(d)) return true;
    return false;
  }

  /** Scan at `at` (clock ms): something expires then. */
  private wakeAt(at: number): void {
    if (!this.running) return;
    let i = this.wakes.length;
    while (i > 0 && this.wakes[i - 1]! > at) i--;
    if (this.wakes[i - 1] === at) return;
    this.wakes.splice(i, 0, at);
    if (at < this.wakeTimerAt) this.armWake();
  }

  private armWake(): void {
    this.wakeTimer?.cancel();
    this.wakeTimer = undefined;
    this.wakeTimerAt = Number.POSITIVE_INFINITY;
    const at = this.wakes[0];
    if (at === undefined || !this.running) return;
    this.wakeTimerAt = at;
    this.wakeTimer = this.deps.clock.setTimer(Math.max(0, at - this.deps.clock.now()), () => {
      this.wakeTimer = undefined;
      const now = this.deps.clock.now();
      while (this.wakes.length > 0 && this.wakes[0]! <= now) this.wakes.shift();
      this.armWake();
      this.reconcileAll = true;
      this.changed();
    });
  }

  /** The live deploys this agent coordinates (undefined with the reference scan: ask of each). */
  coordinated(): Iterable<string> | undefined {
    if (this.deps.referenceScan || !this.coordinators) return undefined;
    return this.coordinators.coordinatedBy(this.id);
  }

  /** The coordinator of `deployId` in this agent's view. */
  coordinatorOf(deployId: string): string {
    if (!this.deps.referenceScan) {
      const c = this.coordinators?.of(deployId);
      if (c !== undefined) return c;
    }
    // Not a live deploy here (or the reference scan): computed, cached until membership changes.
    const alive = this.deps.membership.aliveIds(); // same array object until a status changes
    if (alive !== this.coordinatorCacheKey) {
      this.coordinatorCache.clear();
      this.coordinatorCacheKey = alive;
    }
    const hit = this.coordinatorCache.get(deployId);
    if (hit !== undefined) return hit;
    const c = coordinatorAmong(fnv1a(deployId), this.id, alive);
    this.coordinatorCache.set(deployId, c);
    return c;
  }

  /**
   * Deploys a scan looks at: those this agent coordinates and those with a backoff entry (which
   * a scan clears when the deploy is no longer this agent's or fully claimed), sorted by id.
   * Any other deploy would be skipped by the scan without effect.
   */
  private scanCandidates(): DeployIntent[] {
    const intents = this.deps.sync.state.intents;
    if (this.deps.referenceScan || !this.coordinators) return intents.all();
    const ids = new Set(this.coordinators.coordinatedBy(this.id));
    for (const id of this.backoff.keys()) ids.add(id);
    const out: DeployIntent[] = [];
    for (const id of [...ids].sort()) {
      const intent = intents.get(id);
      if (intent) out.push(intent);
    }
    return out;
  }

  /** Winning claim per replica of `deployId` among claiming hosts, and the highest gen per replica. */
  private claimsOf(
    deployId: string,
    now: number,
  ): { per: Map<number, { gen: number; host: string }>; maxGen: Map<number, number> } {
    const per = new Map<number, { gen: number; host: string }>();
    const maxGen = new Map<number, number>();
    const hosts = this.deps.sync.state.hosts;
    for (const h of this.claimIndex.hostsOf(deployId)) {
      const rec = hosts.live(h);
      const ws = rec ? claimsByDeploy(rec).get(deployId) : undefined;
      if (!ws) continue;
      const claiming = this.isClaiming(h, now);
      for (const w of ws) {
        maxGen.set(w.replica, Math.max(maxGen.get(w.replica) ?? 0, w.gen));
        if (!claiming) continue;
        const cur = per.get(w.replica);
        const c = { gen: w.gen, host: h };
        if (!cur || claimBeats(c, cur)) per.set(w.replica, c);
      }
    }
    for (const a of this.acked.get(deployId)?.values() ?? []) {
      const cur = per.get(a.replica);
      if (!cur || a.gen > cur.gen) per.set(a.replica, { gen: a.gen, host: a.host });
    }
    return { per, maxGen };
  }

  private scan(): void {
    if (!this.running) return;
    this.reconcileClaims();
    const now = this.deps.clock.now();
    const ref = this.deps.referenceScan === true;
    const hostTable = this.deps.sync.state.hosts;
    // Reference scan: winning claims per deploy and replica over every record, among live hosts.
    const claims = new Map<string, Map<number, { gen: number; host: string }>>();
    const maxGen = new Map<string, number>();
    if (ref) {
      for (const rec of hostTable.allLive()) {
        for (const w of rec.workloads) {
          const k = `${w.deployId}\0${w.replica}`;
          maxGen.set(k, Math.max(maxGen.get(k) ?? 0, w.gen));
        }
      }
      for (const rec of this.claimingRecords()) {
        for (const w of rec.workloads) {
          const per = claims.get(w.deployId) ?? new Map<number, { gen: number; host: string }>();
          claims.set(w.deployId, per);
          const cur = per.get(w.replica);
          const c = { gen: w.gen, host: rec.id };
          if (!cur || claimBeats(c, cur)) per.set(w.replica, c);
        }
      }
    }
    // Acknowledged awards count as claims until the host's record shows them or they expire.
    for (const [deployId, m] of this.acked) {
      for (const [key, a] of m) {
        const rec = hostTable.live(a.host);
        const visible = rec?.workloads.some(
          (w) => w.deployId === deployId && w.replica === a.replica && w.gen >= a.gen,
        );
        if (visible || a.until <= now) {
          m.delete(key);
          continue;
        }
        if (!ref) continue; // merged per deploy by claimsOf
        const per = claims.get(deployId) ?? new Map<number, { gen: number; host: string }>();
        claims.set(deployId, per);
        const cur = per.get(a.replica);
        if (!cur || a.gen > cur.gen) per.set(a.replica, { gen: a.gen, host: a.host });
      }
      if (m.size === 0) this.acked.delete(deployId);
    }
    let records: HostRecord[] | undefined;
    const live = (): HostRecord[] => {
      records ??= this.liveRecords();
      return records;
    };
    const drainingRef = ref
      ? new Set(
          live()
            .filter((r) => r.draining)
            .map((r) => r.id),
        )
      : undefined;
    const draining = (h: string): boolean =>
      drainingRef ? drainingRef.has(h) : this.isLive(h) && hostTable.live(h)?.draining === true;
    const work: RoundItem[] = [];
    for (const intent of this.scanCandidates()) {
      if (isPerHost(intent.strategy)) {
        if (this.coordinatorOf(intent.id) === this.id)
          work.push(
            ...this.perHostWork(
              intent,
              live().filter((r) => !r.draining),
              now,
            ),
          );
        else this.backoff.delete(intent.id);
        continue;
      }
      // Cheap first: most deploys are fully claimed; only then ask who coordinates.
      const own = ref ? undefined : this.claimsOf(intent.id, now);
      const per = own ? own.per : claims.get(intent.id);
      const busy = this.inflight.get(intent.id);
      const moving = startFirstMoves(intent);
      const slots: { replica: number; gen: number }[] = [];
      const exclude = new Set<string>();
      for (let r = 0; r < intent.replicas; r++) {
        if (busy?.has(r)) continue;
        const c = per?.get(r);
        // A replica on a draining host is placed anew elsewhere (gen + 1); the draining host
        // keeps its copy until the new one runs. So is a replica replaced start-first (its new
        // copy runs the new template on another host; the old one stops once the new one runs).
        const move = moving?.get(r);
        const replaced = c !== undefined && move !== undefined && c.gen <= move;
        if (c && !draining(c.host) && !replaced) continue;
        if (c && replaced) exclude.add(c.host);
        const gen = own ? own.maxGen.get(r) : maxGen.get(`${intent.id}\0${r}`);
        slots.push({ replica: r, gen: (gen ?? 0) + 1 });
      }
      if (slots.length === 0 || this.coordinatorOf(intent.id) !== this.id) {
        this.backoff.delete(intent.id);
        continue;
      }
      const b = this.backoff.get(intent.id);
      if (b && b.until > now) continue;
      let spec: ReturnType<typeof placementSpec>;
      try {
        spec = placementSpec(intent);
      } catch (err) {
        this.setBackoff(intent.id, slots.length, [(err as Error).message], now);
        continue;
      }
      const existing: ExistingPlacement[] = [];
      const counts = new Map<string, number>();
      for (const c of per?.values() ?? []) {
        if (!draining(c.host)) counts.set(c.host, (counts.get(c.host) ?? 0) + 1);
      }
      for (const host of [...counts.keys()].sort()) {
        const rec = this.isLive(host) ? hostTable.live(host) : undefined;
        if (rec) existing.push({ hostId: host, count: counts.get(host)!, labels: rec.capacity.labels });
      }
      work.push({
        request: spec.request,
        strategy: spec.strategy,
        slots,
        existing,
        ...(exclude.size > 0 ? { exclude: [...exclude].sort() } : {}),
      });
    }
    if (work.length > 0) void this.round(work, this.candidateIds(live));
    this.armTick();
  }

  /**
   * Ids of the live, not draining hosts (sorted): who can be a candidate. Kept by the host table
   * (HostTable.candidates) for this agent's membership view while the table can tell it holds — at
   * thousands of hosts, rebuilding it for every round was a top cost of large simulations.
   */
  private candidateIds(live: () => HostRecord[]): readonly string[] {
    // Equal membership digests are equal views (MemberTable.digest): the same list for every
    // agent that holds this view — at rest, every agent of a large simulation.
    return this.deps.sync.state.hosts.candidates(String(this.deps.membership.digest), () =>
      live()
        .filter((r) => !r.draining)
        .map((r) => r.id),
    );
  }

  /**
   * Work for a per-host deploy (fill/each): top up the hosts that hold it to N replicas (slots
   * k = 0…N−1 on each), and choose new hosts — up to `hostLimit`, or every eligible live host.
   */
  private perHostWork(intent: DeployIntent, records: HostRecord[], now: number): RoundItem[] {
    if (this.perHostBusy.has(intent.id)) return [];
    const b = this.backoff.get(intent.id);
    if (b && b.until > now) return [];
    let spec: ReturnType<typeof placementSpec>;
    try {
      spec = placementSpec(intent);
    } catch (err) {
      this.setBackoff(intent.id, intent.replicas, [(err as Error).message], now);
      return [];
    }
    const n = intent.replicas;
    const held = new Map<string, Set<number>>();
    for (const rec of this.claimingFor(intent.id)) {
      for (const w of rec.workloads) {
        if (w.deployId !== intent.id || w.replica >= n) continue;
        const set = held.get(rec.id) ?? new Set<number>();
        set.add(w.replica);
        held.set(rec.id, set);
      }
    }
    for (const a of this.acked.get(intent.id)?.values() ?? []) {
      if (a.replica >= n) continue;
      const set = held.get(a.host) ?? new Set<number>();
      set.add(a.replica);
      held.set(a.host, set);
    }
    const items: RoundItem[] = [];
    const liveIds = new Set(records.map((r) => r.id));
    for (const [host, ks] of [...held].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      if (!liveIds.has(host) || ks.size >= n) continue;
      const slots = Array.from({ length: n }, (_, k) => k)
        .filter((k) => !ks.has(k))
        .map((k) => ({ replica: k, gen: 1 }));
      items.push({
        request: spec.request,
        strategy: { kind: 'binpack' },
        slots,
        existing: [{ hostId: host, count: ks.size }],
        hosts: [host],
      });
    }
    const limit =
      spec.strategy.kind === 'fill' || spec.strategy.kind === 'each' ? spec.strategy.hostLimit : undefined;
    const need = limit === undefined ? Number.POSITIVE_INFINITY : limit - held.size;
    // Fresh hosts that could take the deploy by the gossiped view; others say why (not labels:
    // a host whose labels exclude it is simply not eligible).
    const fresh: string[] = [];
    const why: string[] = [];
    const ctx: PlacementContext = { strategy: spec.strategy, existing: [] };
    for (const r of records) {
      if (held.has(r.id)) continue;
      const f = feasibility(r.id === this.id ? this.selfHost() : hostFromRecord(r), spec.request, ctx);
      if (f.ok) fresh.push(r.id);
      else if (!f.failures.every((x) => x.dimension === 'label')) why.push(`${r.id.slice(-8)}: ${f.reason}`);
    }
    if (need > 0 && fresh.length === 0 && why.length > 0 && (limit === undefined || held.size < limit)) {
      this.setBackoff(intent.id, n, why, now);
    }
    if (need > 0 && fresh.length > 0 && n > 0) {
      items.push({
        request: spec.request,
        strategy: {
          kind: spec.strategy.kind as 'fill' | 'each',
          ...(limit === undefined ? {} : { hostLimit: need }),
        },
        slots: Array.from({ length: n }, (_, k) => ({ replica: k, gen: 1 })),
        existing: [],
        hosts: fresh,
        eachWinnerGetsAll: true,
      });
    }
    if (items.length === 0 && why.length === 0) this.backoff.delete(intent.id);
    return items;
  }

  /**
   * Retry unplaced replicas later. `transient`: a candidate would have fit but for concurrent
   * auctions' reservations — retried within `intervalMs` and not reported as pending (the reasons
   * users see are about room, not about who bid a few ms earlier).
   */
  private setBackoff(
    deployId: string,
    pending: number,
    reasons: string[],
    now: number,
    transient = false,
  ): void {
    const prev = this.backoff.get(deployId);
    // Busy: the competing rounds end within a round trip — retry after a few scan debounces.
    const first = transient ? 2 * this.cfg.reactMs : this.cfg.minBackoffMs;
    const grown = Math.min(this.cfg.maxBackoffMs, prev ? prev.delay * 2 : first);
    const delay = transient ? Math.min(grown, this.cfg.intervalMs) : grown;
    // Scans are driven by relevant changes: the retry gets its own wake-up.
    this.wakeAt(now + delay);
    this.backoff.set(deployId, {
      until: now + delay,
      delay,
      transient,
      info: { deployId, pending, reasons: [...new Set(reasons)].sort().slice(0, 16), retryAt: now + delay },
    });
  }

  /** One auction round for several deploys: bids (batched per host) → winners → awards. */
  private async round(work: RoundItem[], candidates: readonly string[]): Promise<void> {
    const round = `${this.id}:${++this.roundSeq}`;
    this.counters.rounds++;
    for (const it of work) {
      if (it.hosts) {
        this.perHostBusy.add(it.request.deployId);
        continue;
      }
      const set = this.inflight.get(it.request.deployId) ?? new Set<number>();
      for (const s of it.slots) set.add(s.replica);
      this.inflight.set(it.request.deployId, set);
    }
    try {
      await this.runRound(round, work, candidates);
    } catch (err) {
      this.deps.log.error({ round, err: String((err as Error)?.stack ?? err) }, 'placement round failed');
    } finally {
      for (const it of work) {
        if (it.hosts) {
          this.perHostBusy.delete(it.request.deployId);
          continue;
        }
        const set = this.inflight.get(it.request.deployId);
        for (const s of it.slots) set?.delete(s.replica);
        if (set?.size === 0) this.inflight.delete(it.request.deployId);
      }
      this.changed();
    }
  }

  /**
   * The hosts a round ranks for a deploy: every live one, or above `sampleAbove` a sample drawn
   * from (deploy id, round) — deterministic, O(sample) views and feasibility checks per deploy.
   */
  private candidatePool(
    ids: readonly string[],
    deployId: string,
    round: string,
    slots: number,
  ): readonly string[] {
    if (ids.length <= this.cfg.sampleAbove) return ids;
    const k = Math.max(this.cfg.sampleSize, 4 * slots);
    if (ids.length <= k) return ids;
    return sample(new Prng(`${deployId}\0${round}`), ids, k).sort();
  }

  private async runRound(round: string, work: RoundItem[], candidates: readonly string[]): Promise<void> {
    const hostTable = this.deps.sync.state.hosts;
    const now = this.deps.clock.now();
    const views = new Map<string, Host>();
    const viewOf = (r: HostRecord): Host => {
      let v = views.get(r.id);
      if (v === undefined) {
        v = r.id === this.id ? this.selfHost() : hostFromRecord(r);
        views.set(r.id, v);
      }
      return v;
    };
    // 1. Candidates per deploy, from the gossiped view (the hosts re-check on their exact books).
    const reasons = new Map<string, string[]>();
    const byHost = new Map<string, BidItem[]>();
    /** Deploys of this round awarded directly: their bids (priced from views) and selection. */
    const direct = new Map<string, { bids: Bid[]; sel: ReturnType<typeof select> }>();
    let ranked = 0;
    for (const it of work) {
      const ctx: PlacementContext = { strategy: it.strategy, existing: it.existing };
      const feasible: { hostId: string; score: number }[] = [];
      const why: string[] = [];
      const pool = it.hosts
        ? candidates.filter((id) => it.hosts!.includes(id))
        : this.candidatePool(
            it.exclude ? candidates.filter((id) => !it.exclude!.includes(id)) : candidates,
            it.request.deployId,
            round,
            it.slots.length,
          );
      ranked += pool.length;
      for (const id of pool) {
        // Records as they are now (scan time: this part runs before the first await).
        const r = hostTable.live(id);
        if (r === undefined) continue;
        const h = viewOf(r);
        const f = feasibility(h, it.request, ctx);
        if (f.ok) feasible.push({ hostId: h.id, score: score(h, it.request, ctx) });
        else why.push(`${h.id.slice(-8)}: ${f.reason}`);
      }
      feasible.sort((a, b) => compareRanked(it.request.deployId, a, b));
      reasons.set(it.request.deployId, why);
      const want = it.hosts ? feasible.length : Math.max(this.cfg.maxCandidates, 2 * it.slots.length);
      const id = it.request.deployId;
      if (this.cfg.directAward && !it.hosts && priceableFromView(it.request) && !this.auctionNext.has(id)) {
        // Direct award: the bids priced from the view (the host re-checks its exact books at the
        // award). What this round gives a host counts in its view for the deploys after this one.
        const list: Bid[] = [];
        for (const c of feasible.slice(0, want)) {
          const v = views.get(c.hostId)!;
          const b = allocatorBid(v, it.request, ctx, it.slots.length);
          if (b.ok) {
            list.push({ ok: true, hostId: c.hostId, score: b.score, allocations: b.allocations });
            if (b.short !== undefined) why.push(`${c.hostId.slice(-8)}: ${b.short}`);
          } else why.push(`${c.hostId.slice(-8)}: ${b.reason}`);
        }
        const sel = select(list, it.request, it.slots.length, it.strategy);
        for (const p of sel.placements) {
          const v = views.get(p.hostId)!;
          views.set(p.hostId, { ...v, ledger: p.allocations.reduce(reserve, v.ledger) });
        }
        direct.set(id, { bids: list, sel });
        this.counters.directAwards++;
        continue;
      }
      this.auctionNext.delete(id);
      for (const c of feasible.slice(0, want)) {
        const list = byHost.get(c.hostId) ?? [];
        list.push({
          request: it.request,
          strategy: it.strategy,
          existing: it.existing,
          count: it.slots.length,
        });
        byHost.set(c.hostId, list);
      }
    }
    // 2. Bids, one batched request per host (self answered locally).
    const bids = new Map<string, Bid[]>();
    for (const [id, d] of direct) bids.set(id, d.bids);
    const hosts = [...byHost.keys()].sort();
    this.counters.bidsAsked += hosts.length;
    const answers = await Promise.all(
      hosts.map(async (h) => {
        const msg = { t: 'bid' as const, round, items: byHost.get(h)! };
        try {
          const res = h === this.id ? this.answerBids(msg) : await this.ask(h, msg, this.cfg.bidTimeoutMs);
          if (!res) this.deps.log.debug({ round, host: h }, 'placement: no bid (timeout)');
          return { h, res };
        } catch (err) {
          this.deps.log.debug({ round, host: h, err: String(err) }, 'placement: no bid');
          return { h, res: undefined };
        }
      }),
    );
    if (!this.running) return;
    const busy = new Set<string>();
    for (const { h, res } of answers) {
      if (!res || res.t !== 'bids') continue;
      for (const b of res.items) {
        if (!b.ok && b.busy) busy.add(b.deployId);
        const list = bids.get(b.deployId) ?? [];
        list.push(
          b.ok
            ? { ok: true, hostId: h, score: b.score, allocations: b.allocations }
            : { ok: false, hostId: h, reason: b.reason, dimension: 'request' },
        );
        bids.set(b.deployId, list);
        if (!b.ok) reasons.get(b.deployId)?.push(`${h.slice(-8)}: ${b.reason}`);
        // Offered fewer than asked (e.g. `port 80/tcp: in use` after one): why, should slots remain.
        else if (b.short !== undefined) reasons.get(b.deployId)?.push(`${h.slice(-8)}: ${b.short}`);
      }
    }
    this.deps.log.debug(
      {
        round,
        deploys: work.map((w) => w.request.deployId),
        views: candidates.length,
        ranked,
        asked: hosts.length,
        answered: answers.filter((a) => a.res).length,
        direct: direct.size,
      },
      'placement: bids collected',
    );
    // 3. Winners: a pure function of (intent, bids). Slots go to placements in host-id order.
    const awards = new Map<string, AwardItem[]>();
    const bidders = new Map<string, Set<string>>();
    // Per deploy over all its items (per-host deploys have one item per host): one item placing
    // everything must not clear the backoff (and pending reason) another item of it just set.
    const unplacedBy = new Map<string, number>();
    for (const it of work) {
      // Per-host items of one deploy have disjoint hosts: attribute bids by host.
      const deployBids = (bids.get(it.request.deployId) ?? []).filter(
        (b) => !it.hosts || it.hosts.includes(b.hostId),
      );
      const okBidders = bidders.get(it.request.deployId) ?? new Set<string>();
      // Direct awards reserved nothing on the hosts: no release to send.
      if (!direct.has(it.request.deployId)) for (const b of deployBids) if (b.ok) okBidders.add(b.hostId);
      bidders.set(it.request.deployId, okBidders);
      const sel =
        direct.get(it.request.deployId)?.sel ?? select(deployBids, it.request, it.slots.length, it.strategy);
      const slots = it.slots.slice().sort((a, b) => a.replica - b.replica);
      let next = 0;
      for (const p of sel.placements) {
        const mine = it.eachWinnerGetsAll ? slots.slice(0, p.count) : slots.slice(next, next + p.count);
        next += p.count;
        const list = awards.get(p.hostId) ?? [];
        list.push({
          deployId: it.request.deployId,
          slots: mine.map((s, i) => ({ replica: s.replica, gen: s.gen, allocation: p.allocations[i]! })),
        });
        awards.set(p.hostId, list);
      }
      // A per-host item whose only host cannot take the deploy places nothing: all its slots are unplaced.
      const unplaced =
        it.eachWinnerGetsAll || it.hosts?.length === 1
          ? sel.placements.length === 0 && it.slots.length > 0 && deployBids.some((b) => !b.ok)
            ? Math.max(sel.unplaced, it.slots.length)
            : sel.unplaced
          : sel.unplaced;
      const id = it.request.deployId;
      unplacedBy.set(id, (unplacedBy.get(id) ?? 0) + unplaced);
    }
    for (const [id, unplaced] of unplacedBy) {
      if (unplaced > 0) {
        const r = reasons.get(id) ?? [];
        this.setBackoff(id, unplaced, r.length > 0 ? r : ['no host answered with a bid'], now, busy.has(id));
      } else this.backoff.delete(id);
    }
    // 4. Awards (batched per host); losers' reservations are released.
    const awardHosts = [...awards.keys()].sort();
    const acks = await Promise.all(
      awardHosts.map(async (h) => {
        const msg = { t: 'award' as const, round, items: awards.get(h)! };
        try {
          const ack = h === this.id ? this.acceptAward(msg) : await this.ask(h, msg, this.cfg.awardTimeoutMs);
          if (!ack) this.deps.log.debug({ round, host: h }, 'placement: award unanswered (timeout)');
          return ack;
        } catch (err) {
          this.deps.log.debug({ round, host: h, err: String(err) }, 'placement: award unanswered');
          return undefined;
        }
      }),
    );
    for (const [deployId, set] of bidders) {
      for (const h of set) {
        if (awards.get(h)?.some((a) => a.deployId === deployId)) continue;
        if (h === this.id) this.reservations.delete(`${round}/${deployId}`);
        else this.send(h, { t: 'release', round, deployIds: [deployId] });
      }
    }
    const at = this.deps.clock.now();
    for (const [i, ack] of acks.entries()) {
      const host = awardHosts[i]!;
      if (!ack) {
        // Unanswered: the host may well have committed (a slow or lost ack). Count the slots as
        // its claims for a short while, so that the next scan does not re-award them at once (a
        // double commit, one copy dropped later); if its record does not show them by then, they
        // are auctioned again.
        for (const a of awards.get(host) ?? []) {
          const m = this.acked.get(a.deployId) ?? new Map();
          for (const sl of a.slots)
            m.set(`${host}/${sl.replica}`, {
              host,
              gen: sl.gen,
              replica: sl.replica,
              until: at + 2 * this.cfg.awardTimeoutMs,
            });
          if (m.size > 0) this.acked.set(a.deployId, m);
        }
        this.wakeAt(at + 2 * this.cfg.awardTimeoutMs);
        continue;
      }
      if (ack.t !== 'award-ack') continue;
      for (const it of ack.items) {
        const sent = awards.get(host)?.find((a) => a.deployId === it.deployId);
        const m = this.acked.get(it.deployId) ?? new Map();
        for (const r of it.accepted) {
          const gen = sent?.slots.find((x) => x.replica === r)?.gen ?? 1;
          m.set(`${host}/${r}`, { host, gen, replica: r, until: at + this.cfg.ackMemoryMs });
          this.wakeAt(at + this.cfg.ackMemoryMs);
        }
        if (m.size > 0) this.acked.set(it.deployId, m);
        // The view was off (a stale record, or awards of other coordinators in flight): the
        // deploy's next round asks the hosts for bids on their exact books.
        if (it.refused.length > 0 && direct.has(it.deployId)) this.auctionNext.add(it.deployId);
        if (it.accepted.length > 0) {
          this.counters.decided += it.accepted.length;
          this.deps.log.info({ round, deploy: it.deployId, replicas: it.accepted, at }, 'placement: decided');
          this.onDecided?.(it.deployId, it.accepted, at);
        }
      }
    }
  }
}

/**
 * Whether two status maps say the same, field by field and in any key order. (It serialised and
 * sorted both maps on every reconcile pass: ≈ 30% of a 10-agent simulation's CPU with engines.)
 */
export function sameStatuses(
  a: ReadonlyMap<string, WorkloadStatusView>,
  b: ReadonlyMap<string, WorkloadStatusView>,
): boolean {
  if (a.size !== b.size) return false;
  for (const [id, x] of a) {
    const y = b.get(id);
    if (y === undefined || !sameStatusView(x, y)) return false;
  }
  return true;
}

/** Whether two status views say the same (an absent field equals undefined). */
export function sameStatusView(x: WorkloadStatusView, y: WorkloadStatusView): boolean {
  return (
    x.status === y.status &&
    x.exitCode === y.exitCode &&
    x.startedAt === y.startedAt &&
    x.health === y.health &&
    x.version === y.version &&
    x.restarts === y.restarts &&
    x.error === y.error
  );
}

/** What the reconcile loop reports per workload (published in the host record). */
export interface WorkloadStatusView {
  status: WorkloadRecord['status'];
  exitCode: number | null;
  startedAt: number | null;
  health: WorkloadRecord['health'];
  /** Template hash the engine runs (label shoal.spec-hash). */
  version?: string;
  restarts?: number;
  error?: string;
}

export interface RoundItem {
  request: PlacementRequest;
  strategy: Strategy;
  slots: { replica: number; gen: number }[];
  existing: ExistingPlacement[];
  /** Restrict candidates to these hosts (per-host strategies). */
  hosts?: string[];
  /** Every winner gets all `slots` (per-host strategies: slots are k = 0…N−1 on each host). */
  eachWinnerGetsAll?: boolean;
  /** Never these hosts (start-first: the hosts of the copies being replaced). */
  exclude?: string[];
}

/**
 * start-first replacements the deploy's rollout asks for: replica → generation of the copy being
 * replaced (placed anew above it, elsewhere), while the rollout of the current template runs.
 */
function startFirstMoves(intent: DeployIntent): Map<number, number> | undefined {
  const ro = intent.spec.rollout;
  if (typeof ro !== 'object' || ro === null || Array.isArray(ro) || ro.handoff === undefined)
    return undefined;
  const r = rolloutOf(intent.spec);
  if (!r?.handoff || r.state !== 'rolling' || r.target !== specTemplateHash(intent.spec)) return undefined;
  const out = new Map<number, number>();
  for (const [k, gen] of Object.entries(r.handoff)) {
    const replica = Number(k);
    if (Number.isInteger(replica) && r.updated.includes(k)) out.set(replica, gen);
  }
  return out.size > 0 ? out : undefined;
}

/** The generation of the copy a start-first rollout replaces for this replica, if any. */
function startFirstOld(intent: DeployIntent | undefined, replica: number): number | undefined {
  const ro = intent?.spec.rollout;
  if (typeof ro !== 'object' || ro === null || Array.isArray(ro) || ro.handoff === undefined)
    return undefined;
  return rolloutOf(intent!.spec)?.handoff?.[String(replica)];
}

export interface BidItem {
  request: PlacementRequest;
  strategy: Strategy;
  existing: ExistingPlacement[];
  count: number;
}

export interface AwardItem {
  deployId: string;
  slots: { replica: number; gen: number; allocation: Allocation }[];
}

/** Does an allocation already provide what a request asks (so no realloc is needed)? */
export function allocationMatches(a: Allocation, req: PlacementRequest): boolean {
  const r = req.resources;
  const bound = a.cpu.cores.reduce((n, c) => n + c.milli, 0);
  const cpuOk = r.cpu.bind
    ? bound === r.cpu.milli && a.cpu.sharedMilli === 0
    : a.cpu.sharedMilli === r.cpu.milli && bound === 0;
  const gpuMilli = a.gpus.reduce((n, g) => n + g.milli, 0);
  const ports = (xs: readonly PortRequest[] | undefined) => (xs ?? []).map(portKey).sort().join(',');
  const limitsOk =
    a.limits.cpuMilli === (req.limits?.cpuMilli ?? r.cpu.milli) &&
    a.limits.memoryBytes === (req.limits?.memoryBytes ?? r.memoryBytes);
  return (
    cpuOk &&
    limitsOk &&
    a.memoryBytes === r.memoryBytes &&
    a.diskBytes === (r.diskBytes ?? 0) &&
    gpuMilli === (r.gpu?.milli ?? 0) &&
    ports(a.ports) === ports(r.ports)
  );
}

/** Same advertised capacity (labels included)? */
function sameCapacity(a: HostRecord['capacity'], b: HostRecord['capacity']): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/** Same workloads (replica, gen, status) in the same order? */
function sameClaims(a: readonly WorkloadRecord[], b: readonly WorkloadRecord[] | undefined): boolean {
  if (b === undefined || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    // Health too: a start-first old copy waits for its new copy to be healthy (make before break).
    if (x.replica !== y.replica || x.gen !== y.gen || x.status !== y.status || x.health !== y.health)
      return false;
  }
  return true;
}

function summary(a: Allocation): string {
  const bound = a.cpu.cores.reduce((n, c) => n + c.milli, 0);
  return `cpu ${a.cpu.sharedMilli + bound}m mem ${a.memoryBytes}`;
}
