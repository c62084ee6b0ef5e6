import type { ApiBackend, NodeInfo } from './api.ts';
import type { Agent } from './core/agent.ts';
import type { Clock } from './core/io.ts';
import type { StateSync } from './core/state-sync.ts';

/** The API's view of an agent: membership (who is alive) joined with host records (what they offer). */
export function agentBackend(agent: Agent, sync: StateSync, clock: Clock, startedAt: number): ApiBackend {
  return {
    id: () => agent.id,
    nodes: (): NodeInfo[] => {
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
        };
      });
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
    health: () => ({
      status: 'ok',
      incarnation: agent.membership.incarnation,
      uptimeMs: clock.now() - startedAt,
      members: agent.membership.aliveIds().length + 1,
    }),
  };
}
