import { createHash } from 'node:crypto';
import { canonicalJson } from '../../crdt/hash.ts';
import type { DeployIntent, HostRecord, Json, JsonObject, WorkloadRecord } from '../../crdt/types.ts';
import type { SubProtocol } from './agent.ts';
import type { Clock, Logger, Timer } from './io.ts';
import type { Membership } from './membership.ts';
import { isPerHost } from './placement-adapter.ts';
import type { StateSync } from './state-sync.ts';

/**
 * Rolling updates, rollbacks and deploy history — leaderless, like placement.
 *
 * A deploy's *template* is the part of its spec that defines what runs (image, command, env, ...;
 * TEMPLATE_KEYS); changing it means replacing the replica. Users edit the template like any other
 * spec key (LWW registers, so concurrent edits merge field by field). What each replica runs is
 * decided by the system-written register `spec.rollout`:
 *   - `stable`: the template every replica runs unless marked updated (the last fully rolled-out one);
 *   - `target`: the template hash being rolled out; `updated`: the instances (replica index, or
 *     `host/k` for per-host strategies) that run the current template.
 * A replica runs the current template iff `target` equals the current template's hash and it is in
 * `updated` (or no rollout record exists yet: a fresh deploy); otherwise it runs `stable`.
 *
 * The deploy's coordinator (the same rendezvous rule as placement) drives the rollout: it adds
 * `update.parallelism` instances at a time to `updated`, waits until each runs the new template,
 * is healthy (or has no check) and has stayed so for `update.monitorMs`, waits `update.delayMs`,
 * and continues. A failure (create/start failed, exited, unhealthy, restarted, or no progress
 * within the deadline) triggers `update.failureAction`: `rollback` writes the stable template back
 * into the spec (so the spec users read is the one that runs) and every replica returns to it;
 * `pause` stops the rollout until the next edit; `continue` ignores it. The rollout's state lives in
 * the intent, so a new coordinator (the old one died) continues where it stopped. `spec.history`
 * keeps the last HISTORY_MAX versions; `rollbackTarget` gives what `shoal rollback` restores.
 */

export const TEMPLATE_KEYS = [
  'image',
  'command',
  'args',
  'env',
  'workdir',
  'user',
  'labels',
  'ports',
  'volumes',
  'engine',
] as const;

/** System-written spec keys (users cannot set them). */
export const SYSTEM_KEYS = ['rollout', 'history'] as const;

export const HISTORY_MAX = 10;

/** How long a start-first new copy must stay unplaceable before the instance goes stop-first. */
export const START_FIRST_GRACE_MS = 2_000;

export type RolloutPhase = 'rolling' | 'done' | 'rolled-back' | 'paused';

export interface RolloutRecord {
  /** Increases with every new target. */
  version: number;
  target: string;
  stable: { hash: string; version: number; template: JsonObject };
  updated: string[];
  state: RolloutPhase;
  reason?: string;
  /** Coordinator clock when this version's rollout started / last batch was started. */
  startedAt: number;
  batchAt: number;
  /**
   * `update.order: start-first`: instance → generation of the copy being replaced. A copy at or
   * below that generation keeps running the stable template; the slot is placed anew (gen + 1, on
   * another host) with the new one, and the old copy stops once the new one runs (make before
   * break). Cleared when the next rollout starts.
   */
  handoff?: Record<string, number>;
  /** What the rollout did differently than asked (e.g. start-first not possible), for users. */
  notes?: string[];
}

export interface HistoryEntry {
  version: number;
  hash: string;
  template: JsonObject;
  at: number;
  state: RolloutPhase;
  reason?: string;
}

export interface UpdateConfig {
  parallelism: number;
  delayMs: number;
  failureAction: 'rollback' | 'pause' | 'continue';
  monitorMs: number;
  maxFailureRatio: number;
  /** A batch that shows no progress for this long fails. */
  deadlineMs: number;
  /** stop-first: a replica's new copy starts after the old one stopped; start-first: before. */
  order: 'stop-first' | 'start-first';
}

export const defaultUpdateConfig: UpdateConfig = {
  parallelism: 1,
  delayMs: 0,
  failureAction: 'rollback',
  monitorMs: 5000,
  maxFailureRatio: 0,
  deadlineMs: 120_000,
  order: 'stop-first',
};

function isObj(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function templateOf(spec: JsonObject): JsonObject {
  const t: JsonObject = {};
  for (const k of TEMPLATE_KEYS) if (spec[k] !== undefined) t[k] = spec[k];
  return t;
}

export function templateHash(t: JsonObject): string {
  return createHash('sha256').update(canonicalJson(t)).digest('hex').slice(0, 16);
}

const specHashes = new WeakMap<JsonObject, string>();

/**
 * `templateHash(templateOf(spec))`, remembered per spec object. An intent's spec as the state
 * hands it out (`IntentTable.get`) is a new object after every change and never modified, and the
 * reconcile loop asks for the hash of every local replica on every pass: one SHA-256 per replica
 * per pass was ≈ 7% of a 10-agent simulation's CPU.
 */
export function specTemplateHash(spec: JsonObject): string {
  let h = specHashes.get(spec);
  if (h === undefined) {
    h = templateHash(templateOf(spec));
    specHashes.set(spec, h);
  }
  return h;
}

export function updateConfigOf(spec: JsonObject): UpdateConfig {
  const u = spec.update;
  const c = { ...defaultUpdateConfig };
  if (!isObj(u)) return c;
  if (typeof u.parallelism === 'number' && u.parallelism >= 0) c.parallelism = Math.floor(u.parallelism);
  if (typeof u.delayMs === 'number' && u.delayMs >= 0) c.delayMs = u.delayMs;
  if (u.failureAction === 'pause' || u.failureAction === 'continue' || u.failureAction === 'rollback')
    c.failureAction = u.failureAction;
  if (typeof u.monitorMs === 'number' && u.monitorMs >= 0) c.monitorMs = u.monitorMs;
  if (typeof u.maxFailureRatio === 'number' && u.maxFailureRatio >= 0 && u.maxFailureRatio <= 1)
    c.maxFailureRatio = u.maxFailureRatio;
  if (typeof u.deadlineMs === 'number' && u.deadlineMs > 0) c.deadlineMs = u.deadlineMs;
  if (u.order === 'start-first') c.order = 'start-first';
  return c;
}

/** The rollout record of a spec, or undefined when absent or malformed (treated as a fresh deploy). */
export function rolloutOf(spec: JsonObject): RolloutRecord | undefined {
  const r = spec.rollout;
  if (!isObj(r)) return undefined;
  const st = r.stable;
  if (
    typeof r.version !== 'number' ||
    typeof r.target !== 'string' ||
    !isObj(st) ||
    typeof st.hash !== 'string' ||
    typeof st.version !== 'number' ||
    !isObj(st.template) ||
    !Array.isArray(r.updated) ||
    !r.updated.every((x) => typeof x === 'string') ||
    (r.state !== 'rolling' && r.state !== 'done' && r.state !== 'rolled-back' && r.state !== 'paused')
  ) {
    return undefined;
  }
  const handoff: Record<string, number> = {};
  if (isObj(r.handoff)) {
    for (const [k, g] of Object.entries(r.handoff)) {
      if (typeof g === 'number' && Number.isSafeInteger(g) && g >= 0) handoff[k] = g;
    }
  }
  const notes = Array.isArray(r.notes) ? r.notes.filter((n): n is string => typeof n === 'string') : [];
  return {
    version: r.version,
    target: r.target,
    stable: { hash: st.hash, version: st.version, template: st.template },
    updated: r.updated as string[],
    state: r.state,
    ...(typeof r.reason === 'string' ? { reason: r.reason } : {}),
    startedAt: typeof r.startedAt === 'number' ? r.startedAt : 0,
    batchAt: typeof r.batchAt === 'number' ? r.batchAt : 0,
    ...(Object.keys(handoff).length > 0 ? { handoff } : {}),
    ...(notes.length > 0 ? { notes } : {}),
  };
}

export function historyOf(spec: JsonObject): HistoryEntry[] {
  const h = spec.history;
  if (!Array.isArray(h)) return [];
  const out: HistoryEntry[] = [];
  for (const e of h) {
    if (!isObj(e) || typeof e.version !== 'number' || typeof e.hash !== 'string' || !isObj(e.template))
      continue;
    out.push({
      version: e.version,
      hash: e.hash,
      template: e.template,
      at: typeof e.at === 'number' ? e.at : 0,
      state: (e.state as RolloutPhase) ?? 'done',
      ...(typeof e.reason === 'string' ? { reason: e.reason } : {}),
    });
  }
  return out;
}

/** The instance key of a replica: its index, or `host/k` for per-host strategies (fill, each). */
export function instanceKey(strategy: string, host: string, replica: number): string {
  return isPerHost(strategy) ? `${host}/${replica}` : String(replica);
}

/**
 * The spec one replica must run (pure): the intent's spec with the template keys taken from the
 * rollout's stable template unless this instance runs the current template. With start-first, a
 * copy of an updated instance at or below its handoff generation (`gen`) is the old copy: it keeps
 * the stable template until the new copy (a higher generation) has replaced it.
 */
export function specFor(intent: DeployIntent, host: string, replica: number, gen?: number): JsonObject {
  const spec = intent.spec;
  const ro = rolloutOf(spec);
  if (!ro) return spec;
  const current = specTemplateHash(spec);
  if (current === ro.stable.hash) return spec;
  const key = instanceKey(intent.strategy, host, replica);
  const old = ro.handoff?.[key];
  const isOldCopy = old !== undefined && gen !== undefined && gen <= old;
  if (ro.target === current && ro.updated.includes(key) && !isOldCopy) return spec;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(spec)) {
    if (!(TEMPLATE_KEYS as readonly string[]).includes(k)) out[k] = v;
  }
  for (const [k, v] of Object.entries(ro.stable.template)) out[k] = v;
  return out;
}

/** The template `shoal rollback` restores: the stable one mid-rollout, else the previous version. */
export function rollbackTarget(spec: JsonObject): HistoryEntry | { error: string } {
  const ro = rolloutOf(spec);
  const current = templateHash(templateOf(spec));
  if (ro && ro.stable.hash !== current) {
    return {
      version: ro.stable.version,
      hash: ro.stable.hash,
      template: ro.stable.template,
      at: 0,
      state: 'done',
    };
  }
  const prev = historyOf(spec)
    .filter((h) => h.hash !== current && h.state === 'done')
    .sort((a, b) => b.version - a.version)[0];
  return prev ?? { error: 'no previous version to roll back to' };
}

/** One claimed instance of a deploy as gossip shows it. */
export interface InstanceView {
  key: string;
  host: string;
  w: WorkloadRecord;
}

/** The current claims of a deploy (highest gen per instance, then lower host id), live hosts only. */
export function instancesOf(intent: DeployIntent, records: readonly HostRecord[]): Map<string, InstanceView> {
  const out = new Map<string, InstanceView>();
  for (const rec of records) {
    for (const w of rec.workloads) {
      if (w.deployId !== intent.id || w.replica >= intent.replicas) continue;
      const key = instanceKey(intent.strategy, rec.id, w.replica);
      const cur = out.get(key);
      if (!cur || w.gen > cur.w.gen || (w.gen === cur.w.gen && rec.id < cur.host)) {
        out.set(key, { key, host: rec.id, w });
      }
    }
  }
  return out;
}

type Verdict = { ok: true } | { ok: false; reason: string } | { wait: true };

export interface RolloutDeps {
  id: string;
  clock: Clock;
  log: Logger;
  sync: StateSync;
  membership: Membership;
  coordinatorOf(deployId: string): string;
  /**
   * The live deploys this agent coordinates (a superset will do: each is checked again with
   * coordinatorOf); absent or undefined: every deploy is asked.
   */
  coordinated?(): Iterable<string> | undefined;
  /** Why this coordinator cannot place replicas of a deploy (placement), if it cannot. */
  pendingOf?(deployId: string): { reasons: string[] } | undefined;
}

/** The coordinator side: advances the rollouts of the deploys this agent coordinates. */
export class Rollouts implements SubProtocol {
  readonly tag = 0xfe; // no wire traffic
  private timer: Timer | undefined;
  private running = false;
  /** When this coordinator first saw an updated instance confirmed healthy (instance → ms). */
  private readonly since = new Map<string, number>();
  /** Restart counts of instances when they were added to a batch. */
  private readonly baseline = new Map<string, number>();
  /** start-first: since when each waiting instance's new copy has been unplaceable (deploy/k → ms). */
  private readonly unplaceable = new Map<string, number>();
  readonly counters = { started: 0, completed: 0, rolledBack: 0, paused: 0 };

  constructor(
    private readonly deps: RolloutDeps,
    private readonly intervalMs = 500,
  ) {}

  start(): void {
    this.running = true;
    this.tick();
  }

  stop(): void {
    this.running = false;
    this.timer?.cancel();
  }

  private tick(): void {
    if (!this.running) return;
    this.timer = this.deps.clock.setTimer(this.intervalMs, () => this.tick());
    try {
      this.step();
    } catch (err) {
      this.deps.log.error({ err: String((err as Error)?.stack ?? err) }, 'rollout: step failed');
    }
  }

  private liveRecords(): HostRecord[] {
    const m = this.deps.membership;
    return this.deps.sync.state.hosts.allLive().filter((r) => {
      if (r.id === this.deps.id) return true;
      const st = m.status(r.id);
      return st === 'alive' || st === 'suspect';
    });
  }

  /** One pass over the deploys this agent coordinates. Public for tests. */
  step(): void {
    const now = this.deps.clock.now();
    let records: HostRecord[] | undefined;
    const table = this.deps.sync.state.intents;
    const mine = this.deps.coordinated?.();
    // In id order either way (intents.all() is sorted): O(deploys coordinated), not O(deploys).
    const intents =
      mine === undefined
        ? table.all()
        : [...mine]
            .sort()
            .map((id) => table.get(id))
            .filter((x): x is DeployIntent => x !== undefined);
    for (const intent of intents) {
      if (intent.spec.job !== undefined) continue; // jobs run to completion; they are not rolled
      if (this.deps.coordinatorOf(intent.id) !== this.deps.id) continue;
      records ??= this.liveRecords();
      this.advance(intent, records, now);
    }
  }

  private write(intent: DeployIntent, patch: JsonObject): void {
    this.deps.sync.updateIntent(intent.id, { spec: { ...intent.spec, ...patch } });
  }

  private advance(intent: DeployIntent, records: HostRecord[], now: number): void {
    const spec = intent.spec;
    const template = templateOf(spec);
    const current = templateHash(template);
    const ro = rolloutOf(spec);
    const history = historyOf(spec);
    if (!ro) {
      // First sight of this deploy: record version 1 as stable.
      const rec: RolloutRecord = {
        version: 1,
        target: current,
        stable: { hash: current, version: 1, template },
        updated: [],
        state: 'done',
        startedAt: now,
        batchAt: now,
      };
      this.write(intent, {
        rollout: rec as unknown as Json,
        history: [{ version: 1, hash: current, template, at: now, state: 'done' }] as unknown as Json,
      });
      return;
    }
    if (ro.target !== current) {
      // A template edited without a new rollout record (e.g. an older agent): start one here.
      const next = nextRollout(ro, history, template, now);
      this.counters.started++;
      this.deps.log.info(
        { deploy: intent.id, version: next.rollout.version, from: ro.stable.hash, to: current },
        'rollout: new version',
      );
      this.write(intent, {
        rollout: next.rollout as unknown as Json,
        history: next.history as unknown as Json,
      });
      return;
    }
    if (ro.state !== 'rolling') return;
    const cfg = updateConfigOf(spec);
    const instances = instancesOf(intent, records);
    if (this.startFirstFallback(intent, ro, instances)) return;
    const updated = new Set(ro.updated);
    const hasCheck = spec.healthcheck !== undefined && spec.healthcheck !== null;
    let confirmed = 0;
    let inFlight = 0;
    const failures: string[] = [];
    for (const key of updated) {
      const inst = instances.get(key);
      if (!inst) continue; // scaled away or being re-placed: not counted
      const v = this.verdict(intent, inst, ro, cfg, hasCheck, now);
      if ('wait' in v) inFlight++;
      else if (v.ok) confirmed++;
      else failures.push(v.reason);
    }
    const total = isPerHost(intent.strategy) ? instances.size : intent.replicas;
    if (failures.length > 0 && failures.length > cfg.maxFailureRatio * Math.max(1, total)) {
      this.fail(intent, ro, history, cfg, failures[0]!, now);
      return;
    }
    const todo = [...instances.keys()].filter((k) => !updated.has(k)).sort(byInstance);
    if (todo.length === 0 && inFlight === 0) {
      // Every instance runs the new template and passed its monitor period.
      const stable = { hash: current, version: ro.version, template };
      const { handoff: _handoff, ...rest } = ro;
      const done: RolloutRecord = { ...rest, stable, updated: [], state: 'done', batchAt: now };
      const h = history.map((e) => (e.version === ro.version ? { ...e, state: 'done' as const } : e));
      this.counters.completed++;
      this.since.clear();
      this.deps.log.info({ deploy: intent.id, version: ro.version, confirmed }, 'rollout: complete');
      this.write(intent, { rollout: done as unknown as Json, history: h as unknown as Json });
      return;
    }
    const width = cfg.parallelism === 0 ? todo.length : cfg.parallelism;
    if (inFlight >= width || todo.length === 0) return;
    if (ro.batchAt > 0 && inFlight === 0 && now < ro.batchAt + cfg.delayMs) return;
    const batch = todo.slice(0, width - inFlight);
    // start-first: each instance of the batch is placed anew (gen + 1, another host) with the new
    // template; its old copy keeps serving until the new one runs. Per-host deploys cannot move.
    const startFirst = cfg.order === 'start-first' && !isPerHost(intent.strategy);
    for (const k of batch)
      this.baseline.set(`${intent.id}/${k}`, startFirst ? 0 : (instances.get(k)?.w.restarts ?? 0));
    const next: RolloutRecord = { ...ro, updated: [...ro.updated, ...batch].sort(byInstance), batchAt: now };
    if (startFirst) {
      next.handoff = { ...ro.handoff };
      for (const k of batch) next.handoff[k] = instances.get(k)!.w.gen;
    } else if (cfg.order === 'start-first') {
      const note = `start-first is not possible for a ${intent.strategy} deploy (its replicas cannot move to another host): replaced stop-first`;
      if (!ro.notes?.includes(note)) next.notes = [...(ro.notes ?? []), note];
    }
    this.deps.log.info({ deploy: intent.id, version: ro.version, batch, startFirst }, 'rollout: next batch');
    this.write(intent, { rollout: next as unknown as Json });
  }

  /**
   * start-first needs another host to take the new copy. When placement cannot place it (the
   * deploy is pending at this coordinator: e.g. every other host lacks room or holds the published
   * port), the instance is replaced stop-first instead, and a note says why. Returns whether the
   * record was rewritten.
   */
  private startFirstFallback(
    intent: DeployIntent,
    ro: RolloutRecord,
    instances: Map<string, InstanceView>,
  ): boolean {
    if (!ro.handoff) return false;
    const waiting = Object.entries(ro.handoff).filter(([k, gen]) => {
      const inst = instances.get(k);
      return inst !== undefined && inst.w.gen <= gen && ro.updated.includes(k);
    });
    if (waiting.length === 0) return false;
    const now = this.deps.clock.now();
    const pending = this.deps.pendingOf?.(intent.id);
    if (!pending || pending.reasons.length === 0) {
      for (const [k] of waiting) this.unplaceable.delete(`${intent.id}/${k}`);
      return false;
    }
    // Gossip may lag (a port freed a moment ago still shows as held): only a placement that stays
    // impossible for START_FIRST_GRACE_MS makes the rollout give up on start-first.
    const due = waiting.filter(([k]) => {
      const key = `${intent.id}/${k}`;
      const since = this.unplaceable.get(key) ?? now;
      this.unplaceable.set(key, since);
      return now - since >= START_FIRST_GRACE_MS;
    });
    if (due.length === 0) return false;
    const handoff = { ...ro.handoff };
    const notes = [...(ro.notes ?? [])];
    for (const [k] of due) {
      this.unplaceable.delete(`${intent.id}/${k}`);
      delete handoff[k];
      notes.push(
        `replica ${k}: start-first not possible (no other host can take a new copy: ${pending.reasons.join('; ')}): replaced stop-first`,
      );
    }
    this.deps.log.warn(
      { deploy: intent.id, replicas: due.map(([k]) => k), reasons: pending.reasons },
      'rollout: start-first not possible; replacing stop-first',
    );
    const { handoff: _h, ...rest } = ro;
    const next: RolloutRecord = {
      ...rest,
      ...(Object.keys(handoff).length > 0 ? { handoff } : {}),
      notes: notes.slice(-HISTORY_MAX),
    };
    this.write(intent, { rollout: next as unknown as Json });
    return true;
  }

  private verdict(
    intent: DeployIntent,
    inst: InstanceView,
    ro: RolloutRecord,
    cfg: UpdateConfig,
    hasCheck: boolean,
    now: number,
  ): Verdict {
    const w = inst.w;
    const key = `${intent.id}/${inst.key}`;
    const where = `replica ${inst.key} on ${inst.host}`;
    if (w.version !== ro.target) {
      // Not yet running the new template. A failed create of the new template shows as status
      // failed with version = target (reconcile reports it), so this is still progress pending.
      if (ro.batchAt > 0 && now - ro.batchAt > cfg.deadlineMs)
        return {
          ok: false,
          reason: `${where}: not updated within ${cfg.deadlineMs} ms${w.error ? ` (${w.error})` : ''}`,
        };
      return { wait: true };
    }
    if (w.status === 'failed' || w.status === 'exited')
      return {
        ok: false,
        reason: `${where}: ${w.status}${w.exitCode !== null ? ` (exit code ${w.exitCode})` : ''}${w.error ? `: ${w.error}` : ''}`,
      };
    if (w.health === 'unhealthy') return { ok: false, reason: `${where}: health check failing` };
    const base = this.baseline.get(key);
    if (base !== undefined && (w.restarts ?? 0) > base)
      return { ok: false, reason: `${where}: restarted ${(w.restarts ?? 0) - base} time(s)` };
    const ready = w.status === 'running' && (!hasCheck || w.health === 'healthy');
    if (!ready) {
      this.since.delete(key);
      if (ro.batchAt > 0 && now - ro.batchAt > cfg.deadlineMs)
        return {
          ok: false,
          reason: `${where}: not ${hasCheck ? 'healthy' : 'running'} within ${cfg.deadlineMs} ms`,
        };
      return { wait: true };
    }
    const first = this.since.get(key) ?? now;
    this.since.set(key, first);
    return now - first >= cfg.monitorMs ? { ok: true } : { wait: true };
  }

  private fail(
    intent: DeployIntent,
    ro: RolloutRecord,
    history: HistoryEntry[],
    cfg: UpdateConfig,
    reason: string,
    now: number,
  ): void {
    if (cfg.failureAction === 'continue') return;
    const state: RolloutPhase = cfg.failureAction === 'rollback' ? 'rolled-back' : 'paused';
    const h = history.map((e) => (e.version === ro.version ? { ...e, state, reason } : e));
    if (state === 'paused') {
      this.counters.paused++;
      this.deps.log.warn({ deploy: intent.id, version: ro.version, reason }, 'rollout: paused');
      this.write(intent, {
        rollout: { ...ro, state, reason } as unknown as Json,
        history: h as unknown as Json,
      });
      return;
    }
    // Roll back: the stable template becomes the spec again; every replica returns to it.
    this.counters.rolledBack++;
    this.since.clear();
    this.deps.log.warn({ deploy: intent.id, version: ro.version, reason }, 'rollout: failed, rolling back');
    const spec: JsonObject = { ...intent.spec };
    for (const k of TEMPLATE_KEYS) delete spec[k];
    Object.assign(spec, ro.stable.template);
    spec.rollout = {
      ...ro,
      target: ro.stable.hash,
      updated: [],
      state,
      reason,
      batchAt: now,
    } as unknown as Json;
    spec.history = h as unknown as Json;
    this.deps.sync.updateIntent(intent.id, { spec });
  }
}

function byInstance(a: string, b: string): number {
  const na = Number(a);
  const nb = Number(b);
  if (Number.isInteger(na) && Number.isInteger(nb)) return na - nb;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * A new rollout towards `template` (an edit, or `shoal rollback`), from the stable template;
 * written together with the template edit by the agent that takes it, so every reader sees the
 * new version at once (the coordinator then drives it).
 */
export function nextRollout(
  ro: RolloutRecord,
  history: HistoryEntry[],
  template: JsonObject,
  now: number,
): { rollout: RolloutRecord; history: HistoryEntry[] } {
  const hash = templateHash(template);
  const version = ro.version + 1;
  const next: RolloutRecord = {
    version,
    target: hash,
    stable: ro.stable,
    updated: [],
    state: hash === ro.stable.hash ? 'done' : 'rolling',
    startedAt: now,
    batchAt: 0,
  };
  if (next.state === 'done') next.stable = { hash, version, template };
  const h = [...history, { version, hash, template, at: now, state: next.state }].slice(-HISTORY_MAX);
  return { rollout: next, history: h };
}

/**
 * The spec to write for a user's create/replace: the user's keys plus the system keys. A new
 * deploy starts at version 1 (stable = its template, written in the same put, so no extra gossip);
 * an existing one keeps its rollout and history, or — its template changed — starts the next
 * version's rollout (nextRollout), which the coordinator then drives.
 */
export function withSystemKeys(existing: JsonObject | undefined, spec: JsonObject, now: number): JsonObject {
  const out: JsonObject = { ...spec };
  for (const k of SYSTEM_KEYS) delete out[k];
  const ro = existing ? rolloutOf(existing) : undefined;
  if (existing && ro) {
    const template = templateOf(out);
    if (templateHash(template) === ro.target) {
      for (const k of SYSTEM_KEYS) if (existing[k] !== undefined) out[k] = existing[k];
      return out;
    }
    const next = nextRollout(ro, historyOf(existing), template, now);
    out.rollout = next.rollout as unknown as Json;
    out.history = next.history as unknown as Json;
    return out;
  }
  const template = templateOf(out);
  const hash = templateHash(template);
  const rec: RolloutRecord = {
    version: 1,
    target: hash,
    stable: { hash, version: 1, template },
    updated: [],
    state: 'done',
    startedAt: now,
    batchAt: now,
  };
  out.rollout = rec as unknown as Json;
  out.history = [{ version: 1, hash, template, at: now, state: 'done' }] as unknown as Json;
  return out;
}
