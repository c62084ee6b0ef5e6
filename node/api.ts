import Fastify, { type FastifyInstance } from 'fastify';

/**
 * The HTTP API every agent serves under /v1/ (read side for now). It talks to the agent through
 * this narrow facade so it can be tested without a network.
 */

export interface NodeInfo {
  id: string;
  status: 'alive' | 'suspect' | 'dead' | 'left';
  incarnation: number;
  addrs: string[];
  capacity: unknown;
  allocated: unknown;
  labels: Record<string, string>;
  /** ms since the status last changed, as seen by the answering agent. */
  statusAgeMs: number;
  self: boolean;
}

/** A change to this host's advertised facts (labels replace; absent fields stay). */
export interface SelfPatch {
  labels?: Record<string, string>;
  cpu?: string;
  memory?: string;
  disk?: string;
  gpu?: string;
}

export interface ApiBackend {
  id(): string;
  nodes(): NodeInfo[];
  /** Apply a change to this host; throws HostConfigError (→ 400) naming the field on bad input. */
  patchSelf(patch: SelfPatch): NodeInfo;
  state(): Record<string, unknown> & { hash: string };
  health(): Record<string, unknown>;
}

export interface ApiServer {
  url: string;
  port: number;
  close(): Promise<void>;
  app: FastifyInstance;
}

/** Split "host:port" (IPv6 as "[::1]:4700"). */
export function parseHostPort(s: string, field = '--api'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new Error(`${field}: expected host:port, got "${s}"`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

export function buildApi(backend: ApiBackend): FastifyInstance {
  const app = Fastify({ logger: false });
  app.get('/v1/health', async () => ({ ok: true, id: backend.id(), ...backend.health() }));
  app.get('/v1/nodes', async () => backend.nodes());
  app.get<{ Params: { id: string } }>('/v1/nodes/:id', async (req, reply) => {
    const n = backend.nodes().find((x) => x.id === req.params.id);
    if (!n) return reply.code(404).send({ error: 'not-found', message: `no node ${req.params.id}` });
    return n;
  });
  app.get('/v1/state', async () => backend.state());
  app.patch<{ Body: unknown }>('/v1/node', async (req, reply) => {
    const b = req.body;
    if (typeof b !== 'object' || b === null || Array.isArray(b)) {
      return reply.code(400).send({ error: 'bad-request', message: 'body: expected a JSON object' });
    }
    const o = b as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (!['labels', 'cpu', 'memory', 'disk', 'gpu'].includes(k)) {
        return reply
          .code(400)
          .send({ error: 'bad-request', message: `${k}: unknown field (labels, cpu, memory, disk, gpu)` });
      }
    }
    const patch: SelfPatch = {};
    if (o.labels !== undefined) {
      if (typeof o.labels !== 'object' || o.labels === null || Array.isArray(o.labels)) {
        return reply
          .code(400)
          .send({ error: 'bad-request', message: 'labels: expected an object of strings' });
      }
      for (const [k, v] of Object.entries(o.labels)) {
        if (typeof v !== 'string') {
          return reply.code(400).send({ error: 'bad-request', message: `labels.${k}: expected a string` });
        }
      }
      patch.labels = o.labels as Record<string, string>;
    }
    for (const k of ['cpu', 'memory', 'disk', 'gpu'] as const) {
      const v = o[k];
      if (v === undefined) continue;
      if (typeof v !== 'string' && typeof v !== 'number') {
        return reply
          .code(400)
          .send({ error: 'bad-request', message: `${k}: expected a string like "4" or "8GiB"` });
      }
      patch[k] = String(v);
    }
    try {
      return backend.patchSelf(patch);
    } catch (err) {
      return reply.code(400).send({ error: 'bad-request', message: (err as Error).message });
    }
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({ error: 'not-found', message: `no route ${req.method} ${req.url}` });
  });
  app.setErrorHandler((err: { statusCode?: number; message?: string }, _req, reply) => {
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 ? err.statusCode : 500;
    reply
      .code(status)
      .send({ error: status >= 500 ? 'internal' : 'bad-request', message: String(err.message) });
  });
  return app;
}

export async function startApi(backend: ApiBackend, listen: string): Promise<ApiServer> {
  const { host, port } = parseHostPort(listen);
  const app = buildApi(backend);
  await app.listen({ host, port });
  const addr = app.server.address();
  const boundPort = typeof addr === 'object' && addr ? addr.port : port;
  const shownHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return { url: `http://${shownHost}:${boundPort}`, port: boundPort, close: () => app.close(), app };
}
