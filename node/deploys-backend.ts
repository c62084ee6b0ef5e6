import { randomBytes } from 'node:crypto';
import type { DeployIntent, WorkloadRecord } from '../crdt/types.ts';

function runtime(w: WorkloadRecord): { status: string; exitCode: number | null; health: string | null } {
  return { status: w.status, exitCode: w.exitCode, health: w.health };
}

import type { Membership } from './core/membership.ts';
import type { Placement } from './core/placement.ts';
import { workloadId } from './core/placement.ts';
import { placementSpec } from './core/placement-adapter.ts';
import type { StateSync } from './core/state-sync.ts';
import type { DeploysBackend, DeployView, ReplicaView } from './deploys-api.ts';

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
    return out;
  };
  return {
    submit: (id, fields) => placement.submit(id, fields),
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
