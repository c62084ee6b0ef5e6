import type { ApiBackend, NodeInfo } from '../node/api.ts';
import type { DeploysBackend, DeployView } from '../node/deploys-api.ts';
import type { MetricsSnapshot } from '../node/metrics.ts';

/** Small in-memory backends for the API's auth and OpenAPI tests (no agent, no network). */

export function tinyBackend(): ApiBackend {
  const self: NodeInfo = {
    id: 'node-self',
    status: 'alive',
    incarnation: 1,
    addrs: ['/ip4/127.0.0.1/tcp/4701/p2p/node-self'],
    capacity: { cpuMilli: 4000, memory: 8 * 2 ** 30 },
    allocated: { cpuMilli: 0, memory: 0 },
    labels: { zone: 'a' },
    statusAgeMs: 1000,
    self: true,
  };
  return {
    id: () => 'node-self',
    nodes: () => [self],
    patchSelf: (p) => ({ ...self, labels: p.labels ?? self.labels }),
    state: () => ({ hash: 'ab'.repeat(32) }),
    health: () => ({ status: 'ok' }),
    metrics: (): MetricsSnapshot => ({
      id: 'node-self',
      incarnation: 1,
      uptimeSeconds: 1,
      members: { alive: 1, suspect: 0, dead: 0, left: 0 },
      hosts: { known: 1, live: 1 },
      sync: {
        published: 0,
        exchanges: 0,
        exchangesEqual: 0,
        bucketsDiffering: 0,
        tombstonesCollected: 0,
        exchangeFailures: 0,
        applied: 0,
        rejected: 0,
      },
      agent: { badMessages: 0, persistErrors: 0 },
      capacity: { cpuMilli: 4000, cores: 4, memoryBytes: 8 * 2 ** 30, diskBytes: 0, gpus: 0 },
      allocated: null,
    }),
  };
}

/** Deploys kept in a map; `view` can be replaced to serve a drifted answer. */
export function tinyDeploys(): DeploysBackend & { views: Map<string, DeployView> } {
  const views = new Map<string, DeployView>();
  return {
    views,
    submit: (id, f) => {
      views.set(id, {
        id,
        name: f.name,
        replicas: f.replicas,
        strategy: f.strategy,
        spec: f.spec,
        placed: 0,
        instances: [],
        coordinator: 'node-self',
      });
      return 'created' as const;
    },
    updateSpec: (id, patch) => {
      const v = views.get(id);
      if (v) v.spec = { ...v.spec, ...patch };
      return !!v;
    },
    rollback: () => ({ error: 'no previous version to roll back to' }),
    list: () => [...views.values()],
    get: (id) => views.get(id),
    scale: (id, n) => {
      const v = views.get(id);
      if (v) v.replicas = n;
      return !!v;
    },
    setResources: (id) => views.has(id),
    remove: (id) => views.delete(id),
    newId: (name) => `${name}-1`,
    flush: async () => undefined,
  };
}
