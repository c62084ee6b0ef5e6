import { isPort, portKey } from '../../allocator/ports.ts';
import type { Allocation } from '../../allocator/types.ts';
import type { Json, JsonObject } from '../../crdt/types.ts';
import type { Engine, Mount, PublishedPort, WorkloadInfo, WorkloadSpec } from '../../engines/engine.ts';
import type { SubProtocol } from './agent.ts';
import { type HealthCheck, type HealthMonitor, parseHealthcheck } from './health.ts';
import { type Hooks, parseHooks, runHook } from './hooks.ts';
import type { Clock, Logger, Timer } from './io.ts';
import type { LocalWorkload, Placement, WorkloadStatusView } from './placement.ts';
import { sameStatusView, workloadId } from './placement.ts';
import { specFor, specTemplateHash } from './rollout.ts';
import type { StateSync } from './state-sync.ts';

/**
 * The host's reconcile loop: desired (the replicas this host committed — its awards) against
 * actual (what its engine runs) → actions. `diff` is a pure function; `Reconciler` executes its
 * actions through the Engine, one at a time per workload, and re-runs on a timer, on engine
 * events and on state changes. The engine is the truth: at start the reconciler adopts what the
 * engine runs (labels carry deploy, replica, generation and the exact allocation), so an agent
 * restart neither duplicates workloads nor loses their resources from the books.
 */

export type RestartPolicy = 'no' | 'on-failure' | 'always';

export interface DesiredWorkload {
  id: string;
  deployId: string;
  replica: number;
  gen: number;
  spec: WorkloadSpec;
  /** Hash of what defines the workload (image, command, env, limits): a change means replace. */
  hash: string;
  restart: RestartPolicy;
  /** Restarts allowed (restartPolicy.maxAttempts, job.retries); absent = unlimited. */
  maxRestarts?: number;
  /** First restart delay (restartPolicy.delayMs, job.backoffMs); doubles per restart. */
  backoffMs?: number;
  /** Run to completion (spec.job): exit 0 is final. */
  job?: boolean;
  /** Grace between SIGTERM and SIGKILL (spec.stopTimeoutMs; default: the reconciler's). */
  stopTimeoutMs?: number;
  /** Health check and hooks (not part of the hash: editing them never replaces the workload). */
  healthcheck?: HealthCheck;
  hooks?: Hooks;
  /**
   * Ports the spec publishes that this replica's allocation does not hold (e.g. a port edit the
   * host could not reserve: another workload holds it). The Reconciler never (re)creates or starts
   * such a workload — it would fight for the port; what runs keeps running, with the reason in its
   * status.
   */
  unreserved?: string[];
}

export type Action =
  | { kind: 'create'; want: DesiredWorkload }
  | { kind: 'start'; id: string; want: DesiredWorkload }
  | { kind: 'restart'; id: string; want: DesiredWorkload }
  | { kind: 'replace'; id: string; want: DesiredWorkload }
  | { kind: 'update'; id: string; want: DesiredWorkload }
  | { kind: 'remove'; id: string; reason: string };

export interface RestartBook {
  /** Restarts so far and the earliest next attempt (exponential backoff). */
  get(id: string): { count: number; notBefore: number } | undefined;
}

export const LABEL_REPLICA = 'shoal.replica';
export const LABEL_GEN = 'shoal.gen';
export const LABEL_HASH = 'shoal.spec-hash';
export const LABEL_ALLOC = 'shoal.alloc';

/**
 * Desired vs actual → actions. Pure: same inputs, same actions, in workload-id order.
 * - desired, absent from the engine → create (and start)
 * - present with another spec hash (image, command, env) or generation → replace
 * - present with other resources (a realloc) → update in place (live, e.g. docker update)
 * - created but not started → start
 * - exited: `always` → restart; `on-failure` with a non-zero code → restart; after backoff
 *   (a restart is a fresh instance: engines do not start an exited workload again)
 * - in the engine but not desired → remove (stop first)
 */
export function diff(
  desired: readonly DesiredWorkload[],
  actual: readonly WorkloadInfo[],
  restarts: RestartBook,
  now: number,
  unhealthy: (id: string) => boolean = () => false,
): Action[] {
  const out: Action[] = [];
  const byId = new Map(actual.map((a) => [a.id, a]));
  for (const want of [...desired].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
    const a = byId.get(want.id);
    byId.delete(want.id);
    if (!a) {
      // A create that failed waits out its backoff like a restart (no tight retry loops).
      const r = restarts.get(want.id);
      if (!r || r.notBefore <= now) out.push({ kind: 'create', want });
      continue;
    }
    if (a.labels[LABEL_HASH] !== want.hash || a.labels[LABEL_GEN] !== String(want.gen)) {
      out.push({ kind: 'replace', id: a.id, want });
      continue;
    }
    if (a.state !== 'exited' && !sameResources(a.spec.resources, want.spec.resources)) {
      out.push({ kind: 'update', id: a.id, want });
      continue;
    }
    if (a.state === 'running' && unhealthy(a.id) && want.restart !== 'no') {
      // Failed its health check `retries` times: restart it (policy permitting), after backoff.
      const r = restarts.get(a.id);
      if (!r || r.notBefore <= now) out.push({ kind: 'restart', id: a.id, want });
      continue;
    }
    if (a.state === 'created') out.push({ kind: 'start', id: a.id, want });
    else if (a.state === 'exited') {
      const failed = (a.exitCode ?? 0) !== 0 || a.oomKilled === true || a.lost === true;
      const again = want.restart === 'always' || (want.restart === 'on-failure' && failed);
      const r = restarts.get(a.id);
      const exhausted = want.maxRestarts !== undefined && (r?.count ?? 0) >= want.maxRestarts;
      if (again && !exhausted && (!r || r.notBefore <= now)) out.push({ kind: 'restart', id: a.id, want });
    }
  }
  for (const a of [...byId.values()].sort((x, y) => (x.id < y.id ? -1 : 1))) {
    out.push({ kind: 'remove', id: a.id, reason: 'not awarded to this host' });
  }
  return out;
}

function sameResources(a: WorkloadSpec['resources'], b: WorkloadSpec['resources']): boolean {
  const cs = (x: number[] | undefined) => (x && x.length > 0 ? x.join(',') : '');
  return (
    (a?.cpuMilli ?? 0) === (b?.cpuMilli ?? 0) &&
    (a?.memoryBytes ?? 0) === (b?.memoryBytes ?? 0) &&
    cs(a?.cpuset) === cs(b?.cpuset)
  );
}

function str(v: Json | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function strList(v: Json | undefined): string[] | undefined {
  return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
}

function strMap(v: Json | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) if (typeof x === 'string') out[k] = x;
  }
  return out;
}

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function num(v: Json | undefined): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
}

/**
 * The engine spec of a committed replica, from the spec it must run (`specFor`: its deploy's
 * spec, with the rollout's stable template unless this replica was updated). The spec-hash label
 * is the template hash (node/core/rollout.ts), which the host publishes as the replica's version.
 */
export function desiredOf(hostId: string, w: LocalWorkload, spec: JsonObject): DesiredWorkload {
  const id = workloadId(w.deployId, w.replica);
  const image = str(spec.image);
  const command = strList(spec.command);
  const args = strList(spec.args);
  const env = strMap(spec.env);
  const workdir = str(spec.workdir);
  const user = str(spec.user);
  const mounts: Mount[] = [];
  if (Array.isArray(spec.volumes)) {
    for (const v of spec.volumes) {
      if (!isObject(v) || typeof v.target !== 'string') continue;
      const type = v.type === 'bind' || v.type === 'volume' || v.type === 'tmpfs' ? v.type : undefined;
      if (!type) continue;
      mounts.push({
        type,
        target: v.target,
        ...(typeof v.source === 'string' ? { source: v.source } : {}),
        ...(v.readOnly === true ? { readOnly: true } : {}),
        ...(typeof v.sizeBytes === 'number' && type === 'tmpfs' ? { sizeBytes: v.sizeBytes } : {}),
      });
    }
  }
  const userLabels = strMap(spec.labels);
  const a: Allocation = w.allocation;
  const ports = publishedPorts(spec.ports);
  const held = new Set((a.ports ?? []).map(portKey));
  const unreserved = ports.map(portKey).filter((k) => !held.has(k));
  const cpuset = a.cpu.cores.map((c) => c.index);
  const ws: WorkloadSpec = {
    id,
    deployId: w.deployId,
    hostId,
    ...(image ? { image } : {}),
    ...(command ? { command } : {}),
    ...(args ? { args } : {}),
    ...(workdir ? { workdir } : {}),
    ...(user ? { user } : {}),
    ...(mounts.length > 0 ? { mounts } : {}),
    ...(ports.length > 0 ? { ports } : {}),
    env,
    resources: {
      cpuMilli: a.limits.cpuMilli,
      memoryBytes: a.limits.memoryBytes,
      ...(cpuset.length > 0 ? { cpuset } : {}),
      // The GPU shares placement granted (whole devices are bound; fractions share a device).
      ...(a.gpus.length > 0
        ? { gpus: a.gpus.map((g) => ({ device: String(g.index), milli: g.milli })) }
        : {}),
    },
  };
  const hash = specTemplateHash(spec);
  ws.labels = {
    ...Object.fromEntries(Object.entries(userLabels).filter(([k]) => !k.startsWith('shoal.'))),
    [LABEL_REPLICA]: String(w.replica),
    [LABEL_GEN]: String(w.gen),
    [LABEL_HASH]: hash,
    [LABEL_ALLOC]: JSON.stringify(a),
  };
  let healthcheck: HealthCheck | undefined;
  let hooks: Hooks | undefined;
  try {
    healthcheck = parseHealthcheck(spec);
    hooks = parseHooks(spec);
  } catch {
    // validated when the deploy was accepted; an invalid edit from a peer just disables them
  }
  const job = spec.job !== undefined && spec.job !== null;
  const jobCfg = isObject(spec.job) ? spec.job : {};
  const policy = isObject(spec.restartPolicy) ? spec.restartPolicy : {};
  const restartRaw = str(spec.restart);
  const restart: RestartPolicy = job
    ? 'on-failure'
    : restartRaw === 'no' || restartRaw === 'on-failure'
      ? restartRaw
      : 'always';
  const maxRestarts = job ? (num(jobCfg.retries) ?? 0) : num(policy.maxAttempts);
  const backoffMs = job ? num(jobCfg.backoffMs) : num(policy.delayMs);
  const stopTimeoutMs = num(spec.stopTimeoutMs);
  return {
    ...(unreserved.length > 0 ? { unreserved } : {}),
    ...(stopTimeoutMs !== undefined ? { stopTimeoutMs } : {}),
    ...(healthcheck ? { healthcheck } : {}),
    ...(hooks ? { hooks } : {}),
    ...(maxRestarts !== undefined ? { maxRestarts } : {}),
    ...(backoffMs !== undefined ? { backoffMs } : {}),
    ...(job ? { job } : {}),
    id,
    deployId: w.deployId,
    replica: w.replica,
    gen: w.gen,
    spec: ws,
    hash,
    restart,
  };
}

/**
 * The host ports a spec's `ports` publish (`target`: with host networking the workload listens on
 * it). Lenient (the spec was validated when accepted): malformed entries are skipped, duplicates
 * dropped.
 */
export function publishedPorts(v: Json | undefined): PublishedPort[] {
  const out: PublishedPort[] = [];
  const seen = new Set<string>();
  if (!Array.isArray(v)) return out;
  for (const p of v) {
    if (!isObject(p) || typeof p.target !== 'number') continue;
    const port = { port: p.target, protocol: p.protocol === 'udp' ? ('udp' as const) : ('tcp' as const) };
    if (!isPort(port) || seen.has(portKey(port))) continue;
    seen.add(portKey(port));
    out.push(port);
  }
  return out;
}

/**
 * A committed replica recovered from an engine workload's labels (adoption after restart). The
 * allocation label carries the exact grant, host ports included, so the restarted agent's books
 * hold the ports its adopted workloads publish (invariant 5). The ports the engine reports as
 * published (`spec.ports`: docker only with host networking) are held too, should the label lack
 * them.
 */
export function adoptable(info: WorkloadInfo): LocalWorkload | undefined {
  const replica = Number(info.labels[LABEL_REPLICA]);
  const gen = Number(info.labels[LABEL_GEN]);
  const raw = info.labels[LABEL_ALLOC];
  if (!Number.isInteger(replica) || !Number.isInteger(gen) || !raw) return undefined;
  try {
    const allocation = JSON.parse(raw) as Allocation;
    if (typeof allocation?.memoryBytes !== 'number' || !allocation.cpu || !allocation.limits)
      return undefined;
    const ports = new Map<string, PublishedPort>();
    for (const p of [
      ...(Array.isArray(allocation.ports) ? allocation.ports : []),
      ...(info.spec.ports ?? []),
    ]) {
      if (!isPort(p)) return undefined; // a grant we cannot read: not ours to guess
      ports.set(portKey(p), { port: p.port, protocol: p.protocol });
    }
    if (ports.size > 0) allocation.ports = [...ports.values()];
    else delete allocation.ports;
    return { deployId: info.deployId, replica, gen, allocation, createdAt: info.createdAt };
  } catch {
    return undefined;
  }
}

export interface ReconcilerConfig {
  intervalMs: number;
  stopTimeoutMs: number;
  restartBackoffMinMs: number;
  restartBackoffMaxMs: number;
}

export const defaultReconcilerConfig: ReconcilerConfig = {
  intervalMs: 2000,
  stopTimeoutMs: 10_000,
  restartBackoffMinMs: 1000,
  restartBackoffMaxMs: 60_000,
};

/** Executes `diff` against an Engine. Registered as a sub-protocol for its lifecycle only. */
export class Reconciler implements SubProtocol {
  readonly tag = 0xff; // no wire traffic
  readonly cfg: ReconcilerConfig;
  private readonly restarts = new Map<string, { count: number; notBefore: number }>();
  private timer: Timer | undefined;
  private running = false;
  private busy = false;
  private again = false;
  private unsubscribe: (() => void) | undefined;
  readonly counters = {
    created: 0,
    started: 0,
    restarted: 0,
    updated: 0,
    replaced: 0,
    removed: 0,
    errors: 0,
    adopted: 0,
    hookFailures: 0,
  };
  /** Hooks of the workloads last desired (kept so `beforeStop` runs even after a deploy is deleted). */
  private readonly hooks = new Map<string, Hooks>();
  /** Engine state per workload id, for the host record and the API. */
  readonly actual = new Map<string, WorkloadInfo>();
  /** The last failed create/start/replace per workload (cleared by a success), for the record. */
  private readonly failures = new Map<string, { hash: string; error: string }>();
  /** Desired workloads of the last pass (their backoff and template hash). */
  private readonly wanted = new Map<string, DesiredWorkload>();
  /**
   * Workloads left as they are because their spec publishes ports their allocation does not hold
   * (`DesiredWorkload.unreserved`), with the reason shown in their status.
   */
  private readonly blocked = new Map<string, { hash: string; error: string }>();
  /**
   * `desiredOf` of each local replica, kept while its inputs are the same objects: the workload,
   * its allocation (realloc replaces it), its generation and the spec it runs. A pass asks for
   * every local replica, and building each anew (spec parsing, labels, the allocation's JSON, the
   * template hash) was ≈ 12% of a 10-agent simulation's CPU. Desired workloads are never modified.
   */
  private readonly desiredCache = new Map<
    string,
    { w: LocalWorkload; allocation: Allocation; gen: number; spec: JsonObject; d: DesiredWorkload }
  >();

  /** What `statuses()` returned last (its views are reused while unchanged). */
  private lastStatuses = new Map<string, WorkloadStatusView>();

  constructor(
    private readonly deps: {
      engine: Engine;
      clock: Clock;
      log: Logger;
      placement: Placement;
      sync: StateSync;
      /** Runs the workloads' health checks (absent: checks are not run). */
      health?: HealthMonitor;
    },
    cfg: Partial<ReconcilerConfig> = {},
  ) {
    this.cfg = { ...defaultReconcilerConfig, ...cfg };
  }

  async start(): Promise<void> {
    this.running = true;
    const list = await this.deps.engine.list();
    const adopted = this.deps.placement.adopt(list.map(adoptable).filter((w): w is LocalWorkload => !!w));
    this.counters.adopted += adopted;
    if (adopted > 0) this.deps.log.info({ adopted }, 'reconcile: adopted running workloads');
    const offEngine = this.deps.engine.subscribe(() => this.kick());
    const offHealth = this.deps.health?.onChange((id, status, err) => {
      this.deps.log.info({ workload: id, health: status, err }, 'reconcile: health changed');
      this.kick();
    });
    this.unsubscribe = () => {
      offEngine();
      offHealth?.();
    };
    this.deps.placement.onLocalChange = () => this.kick();
    this.kick();
  }

  stop(): void {
    this.running = false;
    this.timer?.cancel();
    this.unsubscribe?.();
    this.deps.health?.close();
  }

  /** Run a pass now (or right after the current one). */
  kick(): void {
    if (!this.running) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    void this.pass();
  }

  private async pass(): Promise<void> {
    this.busy = true;
    this.timer?.cancel();
    try {
      do {
        this.again = false;
        await this.once();
      } while (this.again && this.running);
    } catch (err) {
      this.counters.errors++;
      this.deps.log.error({ err: String((err as Error)?.stack ?? err) }, 'reconcile pass failed');
    } finally {
      this.busy = false;
      if (this.running) this.timer = this.deps.clock.setTimer(this.cfg.intervalMs, () => this.kick());
    }
  }

  private async once(): Promise<void> {
    const { engine, placement, sync, log, clock } = this.deps;
    const actual = await engine.list();
    this.actual.clear();
    for (const a of actual) this.actual.set(a.id, a);
    const desired: DesiredWorkload[] = [];
    const unknown = new Set<string>();
    for (const w of placement.workloads()) {
      const intent = sync.state.intents.get(w.deployId);
      if (intent) desired.push(this.desiredFor(w, specFor(intent, engine.hostId, w.replica, w.gen)));
      // A committed replica whose deploy this agent does not know (yet): leave what runs alone —
      // removal is for deleted, scaled-away or superseded replicas (Placement drops those).
      else if (!sync.state.intents.isDeleted(w.deployId)) unknown.add(workloadId(w.deployId, w.replica));
    }
    for (const d of desired) {
      if (d.hooks) this.hooks.set(d.id, d.hooks);
      this.wanted.set(d.id, d);
    }
    if (this.wanted.size > desired.length || this.desiredCache.size > desired.length) {
      const ids = new Set(desired.map((d) => d.id));
      for (const id of this.wanted.keys()) if (!ids.has(id)) this.wanted.delete(id);
      for (const id of this.desiredCache.keys()) if (!ids.has(id)) this.desiredCache.delete(id);
    }
    // A spec publishing a port this replica's allocation does not hold (the host refused it:
    // another workload holds it) is never (re)created or started here: it would fight for the port.
    // What runs keeps running; the status says why (and a rollout waiting for it fails with that).
    const blockedNow = new Set<string>();
    for (const d of desired) {
      if (d.unreserved === undefined) continue;
      blockedNow.add(d.id);
      const refused = placement.reallocRefusals().get(d.id);
      const error =
        `port ${d.unreserved.join(', ')} not reserved for this replica on this host` +
        `${refused ? ` (${refused})` : ''}: left as it is`;
      if (this.blocked.get(d.id)?.error !== error) log.warn({ workload: d.id, error }, 'reconcile: blocked');
      this.blocked.set(d.id, { hash: d.hash, error });
    }
    for (const id of this.blocked.keys()) if (!blockedNow.has(id)) this.blocked.delete(id);
    const health = this.deps.health;
    const actions = diff(
      desired,
      actual,
      this.restarts,
      clock.now(),
      (id) => health?.status(id)?.status === 'unhealthy',
    ).filter(
      (a) =>
        !(a.kind === 'remove' ? unknown.has(a.id) : blockedNow.has(a.kind === 'create' ? a.want.id : a.id)),
    );
    for (const act of actions) {
      if (!this.running) return;
      try {
        await this.apply(act);
        this.failures.delete(act.kind === 'create' ? act.want.id : act.id);
      } catch (err) {
        this.counters.errors++;
        const id = act.kind === 'create' ? act.want.id : act.id;
        log.warn({ workload: id, action: act.kind, err: (err as Error).message }, 'reconcile: action failed');
        if (act.kind !== 'remove') {
          this.failures.set(id, { hash: act.want.hash, error: (err as Error).message.slice(0, 300) });
        }
        this.backoff(id);
      }
    }
    if (actions.length > 0) {
      this.actual.clear();
      for (const a of await engine.list()) this.actual.set(a.id, a);
    }
    // Health checks: every desired workload with a check that runs this spec.
    if (health) {
      const monitored = [];
      for (const d of desired) {
        const a = this.actual.get(d.id);
        if (d.healthcheck && a?.state === 'running' && a.labels[LABEL_HASH] === d.hash) {
          monitored.push({ id: d.id, check: d.healthcheck, startedAt: a.startedAt ?? a.createdAt });
        }
      }
      health.set(monitored);
    }
    placement.setStatuses(this.statuses());
  }

  private desiredFor(w: LocalWorkload, spec: JsonObject): DesiredWorkload {
    const id = workloadId(w.deployId, w.replica);
    const c = this.desiredCache.get(id);
    if (c && c.w === w && c.allocation === w.allocation && c.gen === w.gen && c.spec === spec) return c.d;
    const d = desiredOf(this.deps.engine.hostId, w, spec);
    this.desiredCache.set(id, { w, allocation: w.allocation, gen: w.gen, spec, d });
    return d;
  }

  /** Start, then run the `afterStart` hook; a forced hook failure fails the start (policy decides). */
  private async startWithHooks(id: string): Promise<void> {
    const { engine, log, clock } = this.deps;
    await engine.start(id);
    const hook = this.hooks.get(id)?.afterStart;
    if (!hook) return;
    const r = await runHook(engine, id, hook, clock);
    if (r.ok) return;
    if (r.fatal) {
      log.error(
        { workload: id, exitCode: r.exitCode, error: r.error },
        'reconcile: afterStart hook failed (force): stopping',
      );
      this.counters.hookFailures++;
      await engine.stop(id, { timeoutMs: this.cfg.stopTimeoutMs });
      this.backoff(id);
    } else {
      log.warn({ workload: id, exitCode: r.exitCode, error: r.error }, 'reconcile: afterStart hook failed');
    }
  }

  /** Run the `beforeStop` hook (never vetoes the stop), then stop. */
  private async stopWithHooks(id: string): Promise<void> {
    const { engine, log, clock } = this.deps;
    const hook = this.hooks.get(id)?.beforeStop;
    if (hook && this.actual.get(id)?.state === 'running') {
      const r = await runHook(engine, id, hook, clock);
      if (!r.ok) {
        const line = { workload: id, exitCode: r.exitCode, error: r.error };
        if (r.fatal) log.error(line, 'reconcile: beforeStop hook failed (force); stopping anyway');
        else log.warn(line, 'reconcile: beforeStop hook failed; stopping anyway');
      }
    }
    await engine.stop(id, { timeoutMs: this.wanted.get(id)?.stopTimeoutMs ?? this.cfg.stopTimeoutMs });
  }

  private async apply(act: Action): Promise<void> {
    const { engine, log } = this.deps;
    switch (act.kind) {
      case 'create':
        await engine.create(act.want.spec);
        await this.startWithHooks(act.want.id);
        this.counters.created++;
        log.info({ workload: act.want.id, gen: act.want.gen }, 'reconcile: started');
        return;
      case 'start':
        await this.startWithHooks(act.id);
        this.counters.started++;
        return;
      case 'restart': {
        const prev = this.actual.get(act.id);
        if (prev?.state === 'running') await this.stopWithHooks(act.id); // unhealthy: stop gracefully
        await engine.remove(act.id, { force: true });
        await engine.create(act.want.spec);
        await this.startWithHooks(act.want.id);
        this.counters.restarted++;
        this.backoff(act.id);
        log.info(
          { workload: act.id, exitCode: prev?.exitCode, restarts: this.restarts.get(act.id)?.count },
          'reconcile: restarted',
        );
        return;
      }
      case 'replace':
        await this.stopWithHooks(act.id);
        await engine.remove(act.id, { force: true });
        await engine.create(act.want.spec);
        await this.startWithHooks(act.want.id);
        this.counters.replaced++;
        log.info({ workload: act.id }, 'reconcile: replaced (spec changed)');
        return;
      case 'update':
        try {
          await engine.update(act.id, act.want.spec.resources ?? {});
          this.counters.updated++;
          log.info(
            { workload: act.id, resources: act.want.spec.resources },
            'reconcile: resources updated live',
          );
        } catch (err) {
          // Some changes cannot be applied live (e.g. Docker cannot lift a memory limit): recreate.
          log.warn(
            { workload: act.id, err: (err as Error).message },
            'reconcile: live update failed; replacing',
          );
          await this.stopWithHooks(act.id);
          await engine.remove(act.id, { force: true });
          await engine.create(act.want.spec);
          await this.startWithHooks(act.want.id);
          this.counters.replaced++;
        }
        return;
      case 'remove':
        await this.stopWithHooks(act.id);
        await engine.remove(act.id, { force: true });
        this.restarts.delete(act.id);
        this.hooks.delete(act.id);
        this.counters.removed++;
        log.info({ workload: act.id, why: act.reason }, 'reconcile: removed');
        return;
    }
  }

  private backoff(id: string): void {
    const r = this.restarts.get(id) ?? { count: 0, notBefore: 0 };
    const min = this.wanted.get(id)?.backoffMs ?? this.cfg.restartBackoffMinMs;
    const delay = Math.min(this.cfg.restartBackoffMaxMs, min * 2 ** r.count);
    this.restarts.set(id, { count: r.count + 1, notBefore: this.deps.clock.now() + delay });
  }

  /**
   * Workload status for the host record: the engine's view plus the health verdict. Views that
   * did not change are the objects of the last call, and when none changed the last call's map is
   * returned as it was (the placement then skips its comparison): a pass runs for every replica
   * on the host after each engine event, and only the views that changed survive it.
   * Callers must not modify the map or its views.
   */
  statuses(): Map<string, WorkloadStatusView> {
    const prev = this.lastStatuses;
    const out = new Map<string, WorkloadStatusView>();
    let same = true;
    const put = (
      id: string,
      status: WorkloadStatusView['status'],
      exitCode: number | null,
      startedAt: number | null,
      health: WorkloadStatusView['health'],
      version: string | undefined,
      restarts: number | undefined,
      error: string | undefined,
    ) => {
      const v: WorkloadStatusView = { status, exitCode, startedAt, health };
      if (version !== undefined) v.version = version;
      if (restarts !== undefined) v.restarts = restarts;
      if (error !== undefined) v.error = error;
      const p = prev.get(id);
      if (p !== undefined && sameStatusView(p, v)) out.set(id, p);
      else {
        same = false;
        out.set(id, v);
      }
    };
    for (const [id, b] of this.blocked) {
      // Blocked and not there at all: failed, at the version it cannot run.
      if (this.actual.has(id)) continue;
      put(id, 'failed', null, null, null, b.hash, undefined, b.error);
    }
    for (const [id, f] of this.failures) {
      // Never created (e.g. the image does not exist): failed, at the version it tried to run.
      if (this.actual.has(id)) continue;
      put(id, 'failed', null, null, null, f.hash, this.restarts.get(id)?.count || undefined, f.error);
    }
    for (const [id, a] of this.actual) {
      const code = a.exitCode ?? null;
      const version = a.labels[LABEL_HASH] || undefined;
      const f = this.failures.get(id);
      // If blocked: still running what it ran; why it is not replaced.
      const error = this.blocked.get(id)?.error ?? (f && f.hash === version ? f.error : undefined);
      put(
        id,
        a.state === 'running'
          ? 'running'
          : a.state === 'created'
            ? 'starting'
            : code === 0
              ? 'exited'
              : 'failed',
        code,
        a.startedAt ?? null,
        a.state === 'running' ? (this.deps.health?.status(id)?.status ?? null) : null,
        version,
        this.restarts.get(id)?.count || undefined,
        error,
      );
    }
    if (same && out.size === prev.size) return prev;
    this.lastStatuses = out;
    return out;
  }
}
