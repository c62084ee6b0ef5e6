import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { type DeploysBackend, registerDeployRoutes } from './deploys-api.ts';
import { HostConfigError } from './host.ts';
import { type AgentMetrics, createAgentMetrics, type MetricsSnapshot } from './metrics.ts';

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
  /** Read at each scrape of GET /metrics. */
  metrics(): MetricsSnapshot;
}

export interface ApiOptions {
  /** The agent's metrics; default: built over `backend.metrics()` with a registry of its own. */
  metrics?: AgentMetrics;
  /** Deploy routes (/v1/deploys…), when the agent runs placement. */
  deploys?: DeploysBackend;
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

const SELF_FIELDS = ['labels', 'cpu', 'memory', 'disk', 'gpu'] as const;

function badRequest(reply: FastifyReply, message: string): FastifyReply {
  return reply.code(400).send({ error: 'bad-request', message });
}

/** Validate a PATCH /v1/node body; returns the patch or an error message naming the field. */
export function readSelfPatch(body: unknown): SelfPatch | string {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'body: expected a JSON object';
  const o = body as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!(SELF_FIELDS as readonly string[]).includes(k)) {
      return `${k}: unknown field (expected ${SELF_FIELDS.join(', ')})`;
    }
  }
  const patch: SelfPatch = {};
  if (o.labels !== undefined) {
    if (typeof o.labels !== 'object' || o.labels === null || Array.isArray(o.labels)) {
      return 'labels: expected an object of strings, e.g. {"zone":"a"}';
    }
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(o.labels)) {
      if (typeof v !== 'string') return `labels.${k}: expected a string, got ${jsonType(v)}`;
      labels[k] = v;
    }
    patch.labels = labels;
  }
  for (const k of ['cpu', 'memory', 'disk', 'gpu'] as const) {
    const v = o[k];
    if (v === undefined) continue;
    if (typeof v === 'number' && Number.isFinite(v)) patch[k] = String(v);
    else if (typeof v === 'string') patch[k] = v;
    else return `${k}: expected a string like "4", "8GiB" or "2xA100:80GiB", got ${jsonType(v)}`;
  }
  return patch;
}

function jsonType(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

export function buildApi(backend: ApiBackend, opts: ApiOptions = {}): FastifyInstance {
  const app = Fastify({ logger: false });
  const metrics = opts.metrics ?? createAgentMetrics(() => backend.metrics());
  app.get('/v1/health', async () => ({ ok: true, id: backend.id(), ...backend.health() }));
  if (opts.deploys) registerDeployRoutes(app, opts.deploys);
  app.get('/v1/nodes', async () => backend.nodes());
  app.get<{ Params: { id: string } }>('/v1/nodes/:id', async (req, reply) => {
    const n = backend.nodes().find((x) => x.id === req.params.id);
    if (!n) return reply.code(404).send({ error: 'not-found', message: `no node ${req.params.id}` });
    return n;
  });
  app.get('/v1/state', async () => backend.state());
  app.patch<{ Body: unknown }>('/v1/node', async (req, reply) => {
    const patch = readSelfPatch(req.body);
    if (typeof patch === 'string') return badRequest(reply, patch);
    try {
      return backend.patchSelf(patch);
    } catch (err) {
      // Bad values are the caller's fault (400, naming the field); anything else is ours (500).
      if (err instanceof HostConfigError) return badRequest(reply, err.message);
      throw err;
    }
  });
  // Prometheus scrape endpoint: no /v1 prefix (scrapers expect /metrics), no auth.
  app.get('/metrics', async (_req, reply) => {
    const text = await metrics.render();
    return reply.header('content-type', metrics.contentType).send(text);
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

export async function startApi(
  backend: ApiBackend,
  listen: string,
  opts: ApiOptions = {},
): Promise<ApiServer> {
  const { host, port } = parseHostPort(listen);
  const app = buildApi(backend, opts);
  await app.listen({ host, port });
  const addr = app.server.address();
  const boundPort = typeof addr === 'object' && addr ? addr.port : port;
  const shownHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return { url: `http://${shownHost}:${boundPort}`, port: boundPort, close: () => app.close(), app };
}
