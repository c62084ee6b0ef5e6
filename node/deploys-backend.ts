import { randomBytes } from 'node:crypto';
import type { DeployIntent, Json, JsonObject, WorkloadRecord } from '../crdt/types.ts';

function runtime(w: WorkloadRecord): Partial<ReplicaView> {
  const v: Partial<ReplicaView> = { status: w.status, exitCode: w.exitCode, health: w.health };
  if (w.version) v.runs = w.version;
  if (w.startedAt !== null) v.startedAt = w.startedAt;
  if (w.restarts) v.restarts = w.restarts;
  if (w.error) v.error = w.error;
  return v;
}

/** User specs may not carry the keys the cluster writes. */
function rejectSystemKeys(id: string, spec: JsonObject): void {
  for (const k of SYSTEM_KEYS) {
    if (spec[k] !== undefined)
      throw new IntentSpecError(id, `spec.${k}`, 'written by the cluster; not settable');
  }
}

import type { Membership } from './core/membership.ts';
import type { Placement } from './core/placement.ts';
import { workloadId } from './core/placement.ts';
import { IntentSpecError, placementSpec } from './core/placement-adapter.ts';
import {
  historyOf,
  instanceKey,
  rollbackTarget,
  rolloutOf,
  SYSTEM_KEYS,
  TEMPLATE_KEYS,
  templateHash,
  templateOf,
  withSystemKeys,
} from './core/rollout.ts';
import type { StateSync } from './core/state-sync.ts';
import type { DeploysBackend, DeployView, JobView, ReplicaView } from './deploys-api.ts';
import { validateIntent } from './spec/intent.ts';

/** The deploy routes' view of an agent: intents (CRDT) joined with live claims (host records). */
export function deploysBackend(
  sync: StateSync,
  placement: Placement,
  membership: Membership,
): DeploysBackend {
  const view = (intent: DeployIntent): DeployView => {
    const live = (id: string) => {
      if (id === membership.id) return true;
      const s = membership.get(id)?.status;
      return s === 'alive' || s === 'suspect';
    };
    const best = new Map<number, { host: string; gen: number; w: WorkloadRecord }>();
    for (const rec of sync.state.hosts.allLive()) {
      if (!live(rec.id)) continue;
      for (const w of rec.workloads) {
        if (w.deployId !== intent.id) continue;
        const cur = best.get(w.replica);
        if (!cur || w.gen > cur.gen || (w.gen === cur.gen && rec.id < cur.host)) {
          best.set(w.replica, { host: rec.id, gen: w.gen, w });
        }
      }
    }
    const instances: ReplicaView[] = [];
    const refused = placement.reallocRefusals();
    if (intent.strategy === 'fill' || intent.strategy === 'each') {
      // Per-host: every (host, k) claim is an instance; `replicas` is N per host.
      for (const rec of sync.state.hosts.allLive()) {
        if (!live(rec.id)) continue;
        for (const w of rec.workloads) {
          if (w.deployId === intent.id && w.replica < intent.replicas) {
            instances.push({ replica: w.replica, host: rec.id, gen: w.gen, ...runtime(w) });
          }
        }
      }
    } else
      for (let r = 0; r < intent.replicas; r++) {
        const c = best.get(r);
        const v: ReplicaView = {
          replica: r,
          host: c?.host ?? null,
          gen: c?.gen ?? null,
          ...(c ? runtime(c.w) : {}),
        };
        const why = c?.host === membership.id ? refused.get(workloadId(intent.id, r)) : undefined;
        if (why) v.reallocRefused = why;
        instances.push(v);
      }
    const coordinator = placement.coordinatorOf(intent.id);
    const pend = placement.pending().find((p) => p.deployId === intent.id);
    const out: DeployView = {
      id: intent.id,
      name: intent.name,
      replicas: intent.replicas,
      strategy: intent.strategy,
      spec: intent.spec,
      placed: instances.filter((i) => i.host !== null).length,
      instances,
      coordinator,
    };
    if (pend) out.pending = { pending: pend.pending, reasons: pend.reasons, retryAt: pend.retryAt };
    const ro = rolloutOf(intent.spec);
    const current = templateHash(templateOf(intent.spec));
    if (ro) {
      const versions = new Map(historyOf(intent.spec).map((h) => [h.hash, h.version]));
      versions.set(ro.stable.hash, ro.stable.version);
      const updated = new Set(ro.updated);
      for (const i of instances) {
        if (i.host === null) continue;
        const runsCurrent =
          current === ro.stable.hash ||
          (ro.target === current && updated.has(instanceKey(intent.strategy, i.host, i.replica)));
        i.updated = runsCurrent && i.runs === current;
        const v = i.runs === undefined ? undefined : versions.get(i.runs);
        if (v !== undefined) i.version = v;
      }
      // The version replicas converge to: the target's, or the stable one after a rollback.
      out.version = ro.state === 'rolled-back' ? ro.stable.version : ro.version;
      out.rollout = {
        version: ro.version,
        state: ro.state,
        target: ro.target,
        stable: ro.stable.hash,
        updated: instances.filter((i) => i.updated).length,
        total: instances.length,
        ...(ro.reason ? { reason: ro.reason } : {}),
        ...(ro.notes ? { notes: ro.notes } : {}),
      };
      out.history = historyOf(intent.spec).map((h) => ({
        version: h.version,
        hash: h.hash,
        at: h.at,
        state: h.state,
        ...(h.reason ? { reason: h.reason } : {}),
        ...(typeof h.template.image === 'string' ? { image: h.template.image } : {}),
      }));
    }
    if (intent.spec.job !== undefined) out.job = jobStatus(intent, instances);
    return out;
  };
  const now = () => Date.now();
  return {
    submit: (id, fields) => {
      rejectSystemKeys(id, fields.spec);
      const existing = sync.state.intents.get(id);
      placement.submit(id, { ...fields, spec: withSystemKeys(existing?.spec, fields.spec, now()) });
      return existing ? 'updated' : 'created';
    },
    updateSpec: (id, patch) => {
      const cur = sync.state.intents.get(id);
      if (!cur) return false;
      rejectSystemKeys(id, patch);
      const spec: JsonObject = { ...cur.spec };
      for (const k of SYSTEM_KEYS) delete spec[k];
      for (const [k, v] of Object.entries(patch)) {
        if (v === null) delete spec[k];
        else spec[k] = v as Json;
      }
      const v = validateIntent({ name: cur.name, replicas: cur.replicas, strategy: cur.strategy, spec });
      if (!v.ok) {
        const [first, ...rest] = v.issues;
        const more = rest.map((i) => `; ${i.path}: ${i.message}`).join('');
        throw new IntentSpecError(id, first!.path, `${first!.message}${more}`);
      }
      placement.submit(id, {
        name: cur.name,
        replicas: cur.replicas,
        strategy: cur.strategy,
        spec: withSystemKeys(cur.spec, v.spec.spec, now()),
      });
      return true;
    },
    rollback: (id) => {
      const cur = sync.state.intents.get(id);
      if (!cur) return { error: `no deploy ${id}` };
      const t = rollbackTarget(cur.spec);
      if ('error' in t) return t;
      const spec: JsonObject = { ...cur.spec };
      for (const k of TEMPLATE_KEYS) delete spec[k];
      Object.assign(spec, t.template);
      sync.updateIntent(id, { spec: withSystemKeys(cur.spec, spec, now()) });
      return { version: t.version, hash: t.hash };
    },
    list: () => sync.state.intents.all().map(view),
    get: (id) => {
      const i = sync.state.intents.get(id);
      return i ? view(i) : undefined;
    },
    scale: (id, replicas) => sync.updateIntent(id, { replicas }),
    setResources: (id, resources) => {
      const cur = sync.state.intents.get(id);
      if (!cur) return false;
      const spec = { ...cur.spec, resources };
      placementSpec({ ...cur, spec }); // validate (throws IntentSpecError naming the field)
      return sync.updateIntent(id, { spec });
    },
    remove: (id) => {
      if (!sync.state.intents.get(id)) return false;
      sync.removeIntent(id);
      return true;
    },
    newId: (name) => `${name}-${randomBytes(3).toString('hex')}`,
    flush: () => sync.flush(),
  };
}

/** A job's progress from its instances: succeeded when every replica exited 0. */
export function jobStatus(intent: DeployIntent, instances: readonly ReplicaView[]): JobView {
  const retries =
    typeof intent.spec.job === 'object' && intent.spec.job !== null && !Array.isArray(intent.spec.job)
      ? Number(intent.spec.job.retries ?? 0)
      : 0;
  let succeeded = 0;
  let failed = 0;
  let running = 0;
  let exitCode: number | null = null;
  let attempts = 0;
  for (const i of instances) {
    attempts = Math.max(attempts, 1 + (i.restarts ?? 0));
    if (i.status === 'exited' && i.exitCode === 0) succeeded++;
    else if ((i.status === 'failed' || i.status === 'exited') && (i.restarts ?? 0) >= retries) {
      failed++;
      if (exitCode === null || exitCode === 0) exitCode = i.exitCode ?? null;
    } else if (i.host !== null) running++;
  }
  const total = intent.replicas;
  const status: JobView['status'] =
    failed > 0
      ? 'failed'
      : succeeded === total && total > 0
        ? 'succeeded'
        : running > 0
          ? 'running'
          : 'pending';
  return {
    status,
    exitCode: status === 'succeeded' ? 0 : status === 'failed' ? exitCode : null,
    succeeded,
    failed,
    attempts,
  };
}
