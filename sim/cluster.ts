import { createHash } from 'node:crypto';
import type { StateMessage } from '../crdt/codec.ts';
import { SimEngine, SimMachine, type SimMachineOptions } from '../engines/sim.ts';
import { Agent } from '../node/core/agent.ts';
import { HealthMonitor } from '../node/core/health.ts';
import type { Logger } from '../node/core/io.ts';
import { MemberIds } from '../node/core/member-table.ts';
import type { MembershipConfig } from '../node/core/membership.ts';
import { Placement, type PlacementConfig } from '../node/core/placement.ts';
import { Prng } from '../node/core/random.ts';
import { Reconciler } from '../node/core/reconcile.ts';
import { Rollouts } from '../node/core/rollout.ts';
import { StateSync, type StateSyncConfig } from '../node/core/state-sync.ts';
import type { HostFacts } from '../node/host.ts';
import { EventLoop, VirtualClock } from './clock.ts';
import { type Bandwidth, type LinkModel, SimNetwork, type SimNetworkOptions } from './network.ts';
import { SimProber } from './prober.ts';
import { SharedState } from './shared-state.ts';
import { MemoryStore } from './store.ts';

/**
 * Many real agents (node/core Agent + StateSync — the same classes `shoal agent` runs) in one
 * process on a simulated network and a virtual clock. Deterministic: everything random is drawn
 * from Prngs forked from the seed, and all scheduling goes through one EventLoop.
 */

export interface SimClusterOptions {
  seed: number;
  size: number;
  /** Default link model. */
  link?: Partial<LinkModel>;
  network?: Omit<SimNetworkOptions, 'link' | 'trace'>;
  membership?: Partial<MembershipConfig>;
  sync?: Partial<StateSyncConfig>;
  placement?: Partial<PlacementConfig>;
  /** Run workloads on a simulated engine per host (machines survive agent crashes). */
  engine?: Omit<SimMachineOptions, 'clock' | 'random'>;
  /** Host facts for agent i (default: 8 cores, 32 GiB, zone a/b/c round robin). */
  host?: (i: number) => HostFacts;
  /** Record a trace of every log line and network event (for determinism checks). */
  trace?: boolean;
  /** Index of the seed agent the others join through (default 0). */
  seedIndex?: number;
  /** Bandwidth of host i (default: `network.bandwidth`, else unlimited). */
  bandwidth?: (i: number) => Bandwidth | undefined;
  /** How often each agent persists dirty state to its store (Agent default 1000 ms). */
  persistIntervalMs?: number;
  /**
   * Decode each published state message once for all agents and let them merge the same
   * immutable records (sets the network's `shareTopicBytes`; StateSync `decodeCache`), and pass
   * membership messages as values (Agent `directValues`). Same decisions, same trace
   * (test/sim-scale-cluster.test.ts); far less CPU and memory with many agents.
   */
  shareDecoded?: boolean;
  /** Placement scans every intent and record each time (the reference of the indexed scan; tests). */
  referenceScan?: boolean;
  /**
   * Topic deliveries take hashed delays (SimNetwork `hashedTopics`, salt from the seed): the
   * delivery times of a publish are a pure function of it. Implied by `sharedState`.
   */
  hashedTopics?: boolean;
  /**
   * After every agent has started, each publishes its record again, whole (not as a patch), so
   * that every agent holds every record without anti-entropy (agents that started later missed
   * the first publishes, so they hold no base a patch could apply to).
   * Implied by `sharedState`.
   */
  republishAfterStart?: boolean;
  /**
   * Start as a cluster that formed before time 0: right after start, every agent knows every
   * other alive at its current incarnation (Membership.assumeFormed) and nothing is left to join
   * or gossip — the view a real join reaches once its gossip has drained, without the join storm
   * (at 10,000 agents ≈ 160 CPU-s for the join and ≈ 145 for the drain). Tested against a real
   * join in test/sim-formed.test.ts.
   */
  formed?: boolean;
  /**
   * With `formed`: agents after the first copy its view (MemberTable.adoptFrom, O(N) each)
   * instead of learning N members one by one (default true). Same views, counters and trace
   * either way (test/sim-formed.test.ts); false is for that comparison.
   */
  formedCopy?: boolean;
  /**
   * The shared-state stand-in (sim/shared-state.ts): one copy of the cluster state for all
   * agents, lazy visibility, events only for the agents a change concerns. Same decisions as the
   * real path with `hashedTopics` and no anti-entropy (test/sim-shared-state.test.ts). Refuses
   * what it does not model: loss, bandwidth limits, FIFO links, unbounded tails, restarts (and
   * partitions and link changes, which throw).
   */
  sharedState?: boolean;
}

/**
 * Options for runs of thousands of agents (see docs/simulator.md, Performance): route by id (no
 * per-node known-peer sets), persist every 10 s instead of every second, decode each published
 * state message once for all agents. Spread it into the
 * options: `new SimCluster({ ...LARGE_SCALE, seed, size })`.
 */
export const LARGE_SCALE: Readonly<
  Pick<SimClusterOptions, 'network' | 'persistIntervalMs' | 'shareDecoded'>
> = {
  network: { routeById: true },
  persistIntervalMs: 10_000,
  shareDecoded: true,
};

export interface SimAgent {
  id: string;
  index: number;
  agent: Agent;
  sync: StateSync;
  placement: Placement;
  reconciler: Reconciler | undefined;
  engine: SimEngine | undefined;
  clock: VirtualClock;
  store: MemoryStore;
  up: boolean;
}

export function defaultHost(i: number): HostFacts {
  return {
    cores: 8,
    cpuMilli: 8000,
    memoryBytes: 32 * 2 ** 30,
    diskBytes: 500 * 2 ** 30,
    gpus: [],
    labels: { zone: ['a', 'b', 'c'][i % 3]! },
  };
}

/** A Logger that appends deterministic lines to a trace (virtual time, agent, level, message, fields). */
export class TraceLogger implements Logger {
  constructor(
    private readonly sink: string[] | undefined,
    private readonly now: () => number,
    private readonly bindings: Record<string, unknown> = {},
  ) {}
  private line(level: string, obj: object, msg?: string): void {
    if (!this.sink) return;
    this.sink.push(`${this.now()} ${level} ${msg ?? ''} ${JSON.stringify({ ...this.bindings, ...obj })}`);
  }
  debug(obj: object, msg?: string): void {
    this.line('debug', obj, msg);
  }
  info(obj: object, msg?: string): void {
    this.line('info', obj, msg);
  }
  warn(obj: object, msg?: string): void {
    this.line('warn', obj, msg);
  }
  error(obj: object, msg?: string): void {
    this.line('error', obj, msg);
  }
  child(bindings: Record<string, unknown>): Logger {
    return new TraceLogger(this.sink, this.now, { ...this.bindings, ...bindings });
  }
}

export class SimCluster {
  readonly loop = new EventLoop();
  readonly net: SimNetwork;
  readonly agents: SimAgent[] = [];
  readonly trace: string[] | undefined;
  private readonly rng: Prng;
  /** Shared by every agent's StateSync when `shareDecoded` (one decode per publish). */
  private readonly decodeCache: WeakMap<Uint8Array, StateMessage> | undefined;
  /** The shared-state stand-in (`sharedState`). */
  readonly shared: SharedState | undefined;
  /** One simulated machine per host index (outlives the agent process on it). */
  readonly machines: SimMachine[] = [];
  /** Scriptable health probers, one per host index (tests script outcomes per workload). */
  readonly probers: SimProber[] = [];
  /** Member ids interned once for all agents (decisions do not depend on it: test/membership-scale). */
  readonly memberIds = new MemberIds();

  constructor(readonly opts: SimClusterOptions) {
    this.rng = new Prng(opts.seed);
    this.trace = opts.trace ? [] : undefined;
    this.decodeCache = opts.shareDecoded ? new WeakMap() : undefined;
    const trace = this.trace;
    const hashed = opts.hashedTopics || opts.sharedState;
    this.net = new SimNetwork(this.loop, this.rng.fork('network'), {
      ...opts.network,
      shareTopicBytes: opts.network?.shareTopicBytes ?? opts.shareDecoded,
      ...(hashed ? { hashedTopics: { salt: (opts.seed * 0x9e3779b1) ^ 0x5ca1ab1e } } : {}),
      link: opts.link,
      trace: trace
        ? (ev) => {
            trace.push(`${this.loop.now} net ${JSON.stringify(ev)}`);
          }
        : undefined,
    });
    if (opts.sharedState) {
      const n = opts.network ?? {};
      const losses = [
        opts.link?.loss ?? 0,
        ...Object.values(n.zoneLinks ?? {}).flatMap((r) => Object.values(r).map((m) => m.loss ?? 0)),
      ];
      const why = losses.some((l) => l > 0)
        ? 'message loss'
        : n.bandwidth || opts.bandwidth
          ? 'bandwidth limits'
          : n.fifo
            ? 'FIFO links'
            : undefined;
      if (why) throw new Error(`SimCluster: the shared-state stand-in does not model ${why}`);
      this.shared = new SharedState(
        this.loop,
        this.net,
        Array.from({ length: opts.size }, (_, i) => SimCluster.idOf(i)),
      );
    }
  }

  static idOf(i: number): string {
    return `n${String(i).padStart(5, '0')}`;
  }

  /** Create and start every agent; all join through the seed agent. */
  async start(): Promise<void> {
    for (let i = 0; i < this.opts.size; i++) this.memberIds.intern(SimCluster.idOf(i));
    for (let i = 0; i < this.opts.size; i++) {
      this.agents.push(this.makeAgent(i, new MemoryStore()));
    }
    for (const a of this.agents) await a.agent.start();
    if (this.opts.formed) {
      const states = this.agents.map((a) => a.agent.membership.selfState());
      // The stand-in's coordination follows N² learns at once by one recount, not N² events.
      this.shared?.pauseBeliefs();
      for (const a of this.agents)
        a.agent.membership.assumeFormed(
          states,
          this.opts.formedCopy === false ? undefined : this.agents[0]!.agent.membership,
        );
      this.shared?.recountBeliefs();
    }
    if (this.opts.republishAfterStart || this.opts.sharedState) {
      for (const a of this.agents) a.sync.republishWhole();
    }
  }

  private makeAgent(i: number, store: MemoryStore): SimAgent {
    const id = SimCluster.idOf(i);
    const seedId = SimCluster.idOf(this.opts.seedIndex ?? 0);
    const transport = this.net.createTransport(id, {
      zone: (this.opts.host ?? defaultHost)(i).labels.zone,
      bandwidth: this.opts.bandwidth?.(i),
    });
    const clock = new VirtualClock(this.loop);
    const random = this.rng.fork(`agent-${id}-${this.loop.now}`);
    const log = new TraceLogger(this.trace, () => this.loop.now, { agent: id });
    const host = (this.opts.host ?? defaultHost)(i);
    const agent = new Agent(
      { transport, clock, random, store, log },
      {
        seeds: id === seedId ? [] : [`sim://${seedId}`],
        host,
        membership: this.opts.membership,
        persistIntervalMs: this.opts.persistIntervalMs,
        memberIds: this.memberIds,
        directValues: this.opts.shareDecoded,
      },
    );
    const sync = new StateSync(
      {
        transport,
        clock,
        random,
        store,
        log: log.child({ mod: 'state' }),
        membership: agent.membership,
        decodeCache: this.decodeCache,
        shared: this.shared?.syncLink(i),
      },
      host,
      this.opts.sync,
    );
    agent.use(sync);
    const placement = new Placement(
      {
        transport,
        clock,
        store,
        log: log.child({ mod: 'placement' }),
        membership: agent.membership,
        sync,
        referenceScan: this.opts.referenceScan,
        shared: this.shared?.placementLink(i),
        directValues: this.opts.shareDecoded,
      },
      this.opts.placement,
    );
    agent.use(placement);
    // As the real agent (node/run.ts): a paced intent goes at once to its coordinator.
    sync.urgentPeer = (deployId) => placement.coordinatorOf(deployId);
    this.shared?.attach(i, agent.membership);
    let engine: SimEngine | undefined;
    let reconciler: Reconciler | undefined;
    if (this.opts.engine) {
      this.machines[i] ??= new SimMachine({
        ...this.opts.engine,
        clock: new VirtualClock(this.loop),
        random: this.rng.fork(`machine-${id}`),
      });
      engine = new SimEngine({ hostId: id, machine: this.machines[i]! });
      this.probers[i] ??= new SimProber(new VirtualClock(this.loop));
      const health = new HealthMonitor({
        clock,
        prober: this.probers[i]!,
        log: log.child({ mod: 'health' }),
      });
      reconciler = new Reconciler({
        engine,
        clock,
        log: log.child({ mod: 'reconcile' }),
        placement,
        sync,
        health,
      });
      agent.use(reconciler);
      agent.use(
        new Rollouts({
          id,
          clock,
          log: log.child({ mod: 'rollout' }),
          sync,
          membership: agent.membership,
          coordinatorOf: (d) => placement.coordinatorOf(d),
          coordinated: () => placement.coordinated(),
          pendingOf: (d) => placement.pending().find((p) => p.deployId === d),
        }),
      );
    }
    return { id, index: i, agent, sync, placement, reconciler, engine, clock, store, up: true };
  }

  get(i: number): SimAgent {
    return this.agents[i]!;
  }

  /** Advance virtual time by `ms`, letting promise continuations run between events. */
  async run(ms: number): Promise<void> {
    await this.loop.runForAsync(ms);
  }

  /** Run until `pred` holds (checked every `stepMs`) or `maxMs` passes; returns elapsed virtual ms or -1. */
  async runUntil(pred: () => boolean, maxMs: number, stepMs = 50): Promise<number> {
    const start = this.loop.now;
    while (this.loop.now - start <= maxMs) {
      if (pred()) return this.loop.now - start;
      await this.run(stepMs);
    }
    return pred() ? this.loop.now - start : -1;
  }

  /** Crash agent i (kill -9): no goodbye, timers and in-flight messages vanish; its store survives. */
  crash(i: number): void {
    const a = this.get(i);
    a.clock.kill();
    a.engine?.kill();
    this.net.crash(a.id);
    this.shared?.crash(i);
    a.up = false;
  }

  /** Restart a crashed agent from its surviving store (same id). */
  async restart(i: number): Promise<SimAgent> {
    const old = this.get(i);
    if (this.shared) throw new Error('SimCluster: the shared-state stand-in does not model restarts');
    this.net.restart(old.id);
    const fresh = this.makeAgent(i, old.store);
    this.agents[i] = fresh;
    await fresh.agent.start();
    return fresh;
  }

  upAgents(): SimAgent[] {
    return this.agents.filter((a) => a.up);
  }

  /** Distinct state hashes among live agents. */
  hashes(): Set<string> {
    return new Set(this.upAgents().map((a) => a.sync.state.hash()));
  }

  converged(): boolean {
    return this.hashes().size === 1;
  }

  /** How agent `observer` sees agent `target`. */
  statusOf(observer: number, target: number): string | undefined {
    return this.get(observer).agent.membership.get(this.get(target).id)?.status;
  }

  /**
   * Every live agent sees every live agent alive, and each crashed one as `downStatus`. With
   * `tolerateSuspect`, a live member may be `suspect` (under message loss a large cluster always
   * has a few suspicions in flight that their targets refute; what must never happen is `dead`).
   */
  membershipSettled(downStatus: 'dead' | 'left' = 'dead', tolerateSuspect = false): boolean {
    const up = this.upAgents();
    const down = this.agents.filter((a) => !a.up);
    for (const a of up) {
      // Fast path: as many members alive as there are other live agents, and no down agent among
      // them, means exactly the live agents are alive (O(down) instead of O(agents) per agent).
      const m = a.agent.membership;
      if (m.aliveCount === up.length - 1) {
        if (down.every((b) => m.get(b.id)?.status === downStatus)) continue;
        return false;
      }
      for (const b of this.agents) {
        if (a === b) continue;
        const s = a.agent.membership.get(b.id)?.status;
        if (b.up) {
          if (s !== 'alive' && !(tolerateSuspect && s === 'suspect')) return false;
        } else if (s !== downStatus) return false;
      }
    }
    return true;
  }

  /**
   * Placement invariants over live agents: no host's exact books overcommit (always), and — once
   * quiet — every replica of every live deploy is claimed by exactly one live host, and nothing
   * else is claimed. Returns the violations (empty = holds).
   */
  placementViolations(atRest: boolean): string[] {
    const out: string[] = [];
    for (const a of this.upAgents())
      for (const v of a.placement.violations()) out.push(`${a.id}: overcommit: ${v}`);
    if (!atRest) return out;
    const observer = this.upAgents()[0];
    if (!observer) return out;
    const holders = new Map<string, string[]>();
    for (const a of this.upAgents()) {
      for (const w of a.placement.workloads()) {
        const k = `${w.deployId}.${w.replica}`;
        holders.set(k, [...(holders.get(k) ?? []), a.id]);
      }
    }
    for (const intent of observer.sync.state.intents.all()) {
      if (intent.strategy === 'fill' || intent.strategy === 'each') {
        // Per-host: each holding host runs exactly k = 0…N−1, within the host limit.
        const byHost = new Map<string, number[]>();
        for (const [k, hs] of holders) {
          if (!k.startsWith(`${intent.id}.`)) continue;
          const r = Number(k.slice(intent.id.length + 1));
          for (const h of hs) byHost.set(h, [...(byHost.get(h) ?? []), r]);
          holders.delete(k);
        }
        // A host that cannot fit all N keeps what runs; the deploy must then be pending with a reason.
        const pending = this.upAgents().some((a) =>
          a.placement.pending().some((p) => p.deployId === intent.id),
        );
        for (const [h, ks] of byHost) {
          const sorted = ks.sort((a, b) => a - b);
          if (new Set(sorted).size !== sorted.length || sorted.some((k) => k >= intent.replicas)) {
            out.push(`${intent.id}@${h}: holds [${sorted}] (duplicates or k ≥ ${intent.replicas})`);
          } else if (sorted.length !== intent.replicas && !pending) {
            out.push(`${intent.id}@${h}: holds ${sorted.length} of ${intent.replicas} and nothing says why`);
          }
        }
        const limit = intent.spec.hostLimit;
        if (typeof limit === 'number' && byHost.size > limit)
          out.push(`${intent.id}: ${byHost.size} hosts > limit ${limit}`);
        continue;
      }
      // Unplaced replicas are allowed only while the deploy is pending with a reason (no room).
      const pendingWhy = this.upAgents().some((a) =>
        a.placement.pending().some((p) => p.deployId === intent.id),
      );
      for (let r = 0; r < intent.replicas; r++) {
        const h = holders.get(`${intent.id}.${r}`) ?? [];
        if (h.length > 1 || (h.length === 0 && !pendingWhy)) {
          out.push(`${intent.id}.${r}: held by ${h.length} hosts (${h.join(', ')})`);
        }
        holders.delete(`${intent.id}.${r}`);
      }
    }
    for (const [k, h] of holders) out.push(`${k}: held by ${h.join(', ')} but not wanted`);
    return out;
  }

  traceHash(): string {
    return createHash('sha256')
      .update((this.trace ?? []).join('\n'))
      .digest('hex');
  }

  async stop(): Promise<void> {
    for (const a of this.upAgents()) await a.agent.stop();
  }
}
