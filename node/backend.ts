import type { ApiBackend, NodeInfo, SelfPatch } from './api.ts';
import type { Agent } from './core/agent.ts';
import type { Clock } from './core/io.ts';
import type { Placement } from './core/placement.ts';
import type { Reconciler } from './core/reconcile.ts';
import type { StateSync } from './core/state-sync.ts';
import { checkLabelMap, type HostFacts, parseBytes, parseCpu, parseGpus } from './host.ts';
import type { MetricsSnapshot } from './metrics.ts';

/**
 * Apply an API patch to host facts, validated with the same parsers as the flags; throws
 * HostConfigError naming the field. Labels given replace the whole label set.
 */
export function patchHost(h: HostFacts, p: SelfPatch): HostFacts {
  const next: HostFacts = { ...h, labels: { ...h.labels }, gpus: h.gpus.slice() };
  if (p.labels) next.labels = checkLabelMap(p.labels, 'labels');
  if (p.cpu !== undefined) Object.assign(next, parseCpu(p.cpu, 'cpu'));
  if (p.memory !== undefined) next.memoryBytes = parseBytes(p.memory, 'memory');
  if (p.disk !== undefined) next.diskBytes = parseBytes(p.disk, 'disk');
  if (p.gpu !== undefined) next.gpus = parseGpus(p.gpu, 'gpu');
  return next;
}

/** The API's view of an agent: membership (who is alive) joined with host records (what they offer). */
export function agentBackend(
  agent: Agent,
  sync: StateSync,
  clock: Clock,
  startedAt: number,
  extra: {
    placement?: Placement;
    reconciler?: Reconciler;
    transport?: { readonly stats: NonNullable<MetricsSnapshot['transport']> };
  } = {},
): ApiBackend {
  const nodes = (): NodeInfo[] => {
    const now = clock.now();
    return agent.nodes().map((m) => {
      const rec = sync.state.hosts.live(m.id);
      return {
        id: m.id,
        status: m.status,
        incarnation: m.incarnation,
        addrs: m.addrs.length > 0 ? m.addrs : (rec?.addrs ?? []),
        capacity: rec?.capacity ?? null,
        allocated: rec?.allocated ?? null,
        labels: rec?.capacity.labels ?? {},
        statusAgeMs: Math.max(0, now - m.since),
        self: m.self,
        draining: rec?.draining ?? false,
        drained: (rec?.draining ?? false) && (rec?.workloads.length ?? 0) === 0,
      };
    });
  };
  return {
    id: () => agent.id,
    nodes,
    patchSelf: (p) => {
      sync.setHost(patchHost(sync.hostFacts(), p));
      return nodes().find((n) => n.self)!;
    },
    state: () => {
      const s = sync.state.summary();
      const members = agent.nodes();
      const count = (st: string) => members.filter((m) => m.status === st).length;
      return {
        ...s,
        members: {
          total: members.length,
          alive: count('alive'),
          suspect: count('suspect'),
          dead: count('dead'),
          left: count('left'),
        },
        sync: { ...sync.counters },
        badMessages: agent.counters.badMessages,
      };
    },
    metrics: (): MetricsSnapshot => {
      const members = { alive: 0, suspect: 0, dead: 0, left: 0 };
      for (const m of agent.nodes()) members[m.status]++;
      const facts = sync.hostFacts();
      const allocated = sync.self()?.allocated;
      return {
        id: agent.id,
        incarnation: agent.membership.incarnation,
        uptimeSeconds: Math.max(0, clock.now() - startedAt) / 1000,
        members,
        hosts: { known: sync.state.hosts.size, live: sync.state.hosts.liveSize },
        sync: { ...sync.counters },
        agent: { ...agent.counters },
        capacity: {
          cpuMilli: facts.cpuMilli,
          cores: facts.cores,
          memoryBytes: facts.memoryBytes,
          diskBytes: facts.diskBytes,
          gpus: facts.gpus.length,
        },
        allocated: allocated
          ? { cpuMilli: allocated.cpuMilli, memoryBytes: allocated.memory, diskBytes: allocated.disk }
          : null,
        ...(extra.placement
          ? {
              placement: {
                ...extra.placement.counters,
                pendingDeploys: extra.placement.pending().length,
                workloads: extra.placement.workloads().length,
              },
            }
          : {}),
        ...(extra.reconciler ? { reconcile: { ...extra.reconciler.counters } } : {}),
        ...(extra.transport ? { transport: { ...extra.transport.stats } } : {}),
      };
    },
    health: () => ({
      status: 'ok',
      incarnation: agent.membership.incarnation,
      uptimeMs: clock.now() - startedAt,
      members: agent.membership.aliveIds().length + 1,
    }),
  };
}
