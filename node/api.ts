import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { z } from 'zod';
import { registerAuth } from './auth.ts';
import { type DeploysBackend, registerDeployRoutes } from './deploys-api.ts';
import { HostConfigError } from './host.ts';
import { type AgentMetrics, createAgentMetrics, type MetricsSnapshot } from './metrics.ts';
import {
  ApiErrorSchema,
  checkResponses,
  openApiDocument,
  type RouteTable,
  route,
  trackRoutes,
} from './openapi.ts';

/**
 * The HTTP API every agent serves under /v1/. It talks to the agent through this narrow facade so
 * it can be tested without a network. Routes are registered with `route()` (node/openapi.ts) so
 * that GET /v1/openapi.json describes them; every route needs the agent's bearer token
 * (node/auth.ts) unless registered `public`.
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
  /** Drain requested (the host takes no new work; its replicas move off). */
  draining?: boolean;
  /** Draining and no replicas left. */
  drained?: boolean;
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
  /** More routes (e.g. the workload routes, node/workloads-api.ts), registered before listening. */
  routes?: ((app: FastifyInstance, table: RouteTable) => void)[];
  /**
   * Bearer token required on every non-public route (node/auth.ts). The agent always sets it;
   * absent = no auth, for in-process tests only.
   */
  token?: string;
  /** Require the token on GET /metrics too (`shoal agent --metrics-auth`). */
  metricsAuth?: boolean;
  /** Validate every JSON answer against its documented schema (tests; see node/openapi.ts). */
  checkResponses?: boolean;
}

export interface ApiServer {
  url: string;
  port: number;
  close(): Promise<void>;
  app: FastifyInstance;
  routes: RouteTable;
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

// ───────────────────────────── schemas (documentation + test-time response check) ─────────────────────────────

const Labels = z.record(z.string(), z.string()).meta({ description: 'host labels, e.g. {"zone":"a"}' });

export const NodeInfoSchema = z.object({
  id: z.string().meta({ description: 'peer id' }),
  status: z.enum(['alive', 'suspect', 'dead', 'left']),
  incarnation: z.number().int(),
  addrs: z.array(z.string()).meta({ description: 'libp2p multiaddrs' }),
  capacity: z.unknown().meta({
    description: 'what the host offers (cpuMilli, cores, memory, disk, gpus, labels, …); null if unknown',
  }),
  allocated: z.unknown().meta({ description: 'what its workloads use; null if unknown' }),
  labels: Labels,
  draining: z.boolean().optional().meta({ description: 'takes no new work; its replicas move off' }),
  drained: z.boolean().optional().meta({ description: 'draining and no replicas left' }),
  statusAgeMs: z
    .number()
    .meta({ description: 'ms since the status last changed, as the answering agent sees it' }),
  self: z.boolean().meta({ description: 'true for the answering agent' }),
});

export const SelfPatchSchema = z
  .object({
    labels: Labels.optional().meta({ description: 'replaces the whole label set' }),
    cpu: z.union([z.string(), z.number()]).optional().meta({ description: 'cores, e.g. "4" or 2.5' }),
    memory: z.union([z.string(), z.number()]).optional().meta({ description: 'e.g. "8GiB"' }),
    disk: z.union([z.string(), z.number()]).optional().meta({ description: 'e.g. "500GiB"' }),
    gpu: z.union([z.string(), z.number()]).optional().meta({ description: 'none | 2xA100:80GiB,T4:16GiB' }),
  })
  .strict();

const HealthSchema = z.looseObject({ ok: z.literal(true), id: z.string() });
const StateSchema = z.looseObject({ hash: z.string().meta({ description: 'hash of the cluster state' }) });

export const ReplicaViewSchema = z.looseObject({
  replica: z.number().int(),
  host: z.string().nullable().meta({ description: 'peer id of the host running it; null while unplaced' }),
  gen: z.number().int().nullable(),
  status: z.string().optional().meta({ description: 'pending, starting, running, exited, failed' }),
  exitCode: z.number().int().nullable().optional(),
  health: z
    .string()
    .nullable()
    .optional()
    .meta({ description: 'starting, healthy, unhealthy; null without a check' }),
  reallocRefused: z.string().optional(),
  runs: z.string().optional().meta({ description: 'hash of the template the replica runs' }),
  version: z.number().int().optional().meta({ description: 'history version of that template' }),
  updated: z.boolean().optional().meta({ description: 'runs the deploy’s current template' }),
  restarts: z.number().int().optional(),
  error: z.string().optional().meta({ description: 'why it is not running (e.g. image not found)' }),
  startedAt: z.number().optional(),
});

const JobViewSchema = z.object({
  status: z.enum(['pending', 'running', 'succeeded', 'failed']),
  exitCode: z.number().int().nullable(),
  succeeded: z.number().int(),
  failed: z.number().int(),
  attempts: z.number().int(),
});

export const DeployViewSchema = z.looseObject({
  id: z.string(),
  name: z.string(),
  replicas: z.number().int(),
  strategy: z.string(),
  spec: z.record(z.string(), z.unknown()),
  placed: z.number().int(),
  instances: z.array(ReplicaViewSchema),
  coordinator: z.string().meta({ description: 'the agent coordinating this deploy' }),
  pending: z
    .object({ pending: z.number().int(), reasons: z.array(z.string()), retryAt: z.number() })
    .optional(),
  version: z.number().int().optional().meta({ description: 'template version replicas converge to' }),
  rollout: z
    .looseObject({
      version: z.number().int(),
      state: z.enum(['rolling', 'done', 'rolled-back', 'paused']),
      target: z.string(),
      stable: z.string(),
      updated: z.number().int(),
      total: z.number().int(),
      reason: z.string().optional(),
      notes: z
        .array(z.string())
        .optional()
        .meta({ description: 'what the rollout did differently than asked (e.g. start-first not possible)' }),
    })
    .optional(),
  history: z
    .array(
      z.looseObject({
        version: z.number().int(),
        hash: z.string(),
        at: z.number(),
        state: z.string(),
        reason: z.string().optional(),
        image: z.string().optional(),
      }),
    )
    .optional(),
  job: JobViewSchema.optional(),
});

const JobStatusSchema = JobViewSchema.extend({
  id: z.string(),
  host: z.string().nullable(),
  instances: z.array(ReplicaViewSchema),
});

const ComposeAnswerSchema = z.object({
  deploys: z.array(DeployViewSchema),
  warnings: z.array(z.string()),
});

const DeployBodySchema = z.object({
  id: z.string().optional().meta({ description: 'default: the name (jobs: <name>-<6 hex>)' }),
  name: z.string(),
  replicas: z.number().int().min(0).max(10_000).optional(),
  strategy: z.string().optional(),
  spec: z.record(z.string(), z.unknown()).meta({ description: 'intent spec (resources, image, …)' }),
});

const DeployPatchSchema = z.object({
  replicas: z.number().int().min(0).max(10_000).optional(),
  resources: z.record(z.string(), z.unknown()).optional(),
  spec: z
    .record(z.string(), z.unknown())
    .optional()
    .meta({ description: 'spec keys to change (null removes one); template changes roll out' }),
});

/** Docs of the deploy routes (node/deploys-api.ts registers them with plain app.get/post/…). */
function describeDeployRoutes(table: RouteTable): void {
  const tags = ['deploys'];
  table.describe('POST', '/v1/deploys', {
    summary:
      'Create (201) or replace (200, rolled out) a deploy; or a Compose file (application/yaml, query file, project) → {deploys, warnings}',
    tags,
    body: DeployBodySchema,
    response: {
      200: z.union([DeployViewSchema, ComposeAnswerSchema]),
      201: z.union([DeployViewSchema, ComposeAnswerSchema]),
      400: ApiErrorSchema,
    },
  });
  table.describe('POST', '/v1/deploys/:id/rollback', {
    summary: 'Roll back to the previous template (rolled out like an edit)',
    tags,
    response: { 200: DeployViewSchema, 404: ApiErrorSchema, 409: ApiErrorSchema },
  });
  const jobs = ['jobs'];
  table.describe('POST', '/v1/jobs', {
    summary: 'Run a job to completion (a deploy with spec.job; id <name>-<6 hex>); JSON or Compose',
    tags: jobs,
    body: DeployBodySchema,
    response: {
      201: z.union([DeployViewSchema, ComposeAnswerSchema]),
      400: ApiErrorSchema,
      409: ApiErrorSchema,
    },
  });
  table.describe('GET', '/v1/jobs/:id', {
    summary: 'A job’s status, exit code and attempts',
    tags: jobs,
    response: { 200: JobStatusSchema, 404: ApiErrorSchema },
  });
  table.describe('GET', '/v1/jobs/:id/wait', {
    summary: 'Long-poll until the job ends (or timeoutMs, default 30000)',
    tags: jobs,
    response: { 200: JobStatusSchema, 400: ApiErrorSchema, 404: ApiErrorSchema },
  });
  table.describe('GET', '/v1/deploys', {
    summary: 'Every deploy with its replicas',
    tags,
    response: { 200: z.array(DeployViewSchema) },
  });
  table.describe('GET', '/v1/deploys/:id', {
    summary: 'One deploy',
    tags,
    response: { 200: DeployViewSchema, 404: ApiErrorSchema },
  });
  table.describe('PATCH', '/v1/deploys/:id', {
    summary: 'Scale a deploy, change its resources (realloc) or spec keys (rolling update)',
    tags,
    body: DeployPatchSchema,
    response: { 200: DeployViewSchema, 400: ApiErrorSchema, 404: ApiErrorSchema },
  });
  table.describe('DELETE', '/v1/deploys/:id', {
    summary: 'Remove a deploy (its replicas stop)',
    tags,
    response: { 204: null, 404: ApiErrorSchema },
  });
}

const WorkloadSchema = z.looseObject({
  id: z.string(),
  deployId: z.string(),
  replica: z.number().int(),
  gen: z.number().int(),
  host: z.string(),
  status: z.string(),
  exitCode: z.number().int().nullable(),
  health: z.string().nullable(),
  startedAt: z.number().nullable(),
});

/** Docs of the workload routes (node/workloads-api.ts; forwarded to the workload's host). */
export function describeWorkloadRoutes(table: RouteTable): void {
  const tags = ['workloads'];
  const gone = { 404: ApiErrorSchema, 502: ApiErrorSchema, 504: ApiErrorSchema };
  table.describe('GET', '/v1/workloads', {
    summary: 'Every replica cluster-wide (query deploy, host)',
    tags,
    response: { 200: z.array(WorkloadSchema), 400: ApiErrorSchema },
  });
  table.describe('GET', '/v1/workloads/:wid', {
    summary: 'One replica',
    tags,
    response: { 200: WorkloadSchema, 404: ApiErrorSchema },
  });
  table.describe('GET', '/v1/workloads/:wid/logs', {
    summary:
      'Logs as application/x-ndjson lines {stream, line, ts} (query follow=1, tail, since); streamed from the host',
    tags,
    response: { 200: z.string(), 400: ApiErrorSchema, ...gone },
  });
  table.describe('POST', '/v1/workloads/:wid/exec', {
    summary: 'Run a command in a replica ({command: string[], timeoutMs?}) → {exitCode, stdout, stderr}',
    tags,
    body: z.object({ command: z.array(z.string()), timeoutMs: z.number().int().optional() }),
    response: {
      200: z.object({ exitCode: z.number().int(), stdout: z.string(), stderr: z.string() }),
      400: ApiErrorSchema,
      409: ApiErrorSchema,
      ...gone,
    },
  });
}

/** Docs of POST /v1/nodes/:id/drain (node/drain-api.ts). */
export function describeDrainRoutes(table: RouteTable): void {
  table.describe('POST', '/v1/nodes/:id/drain', {
    summary: 'Drain a node ({drain: true}) or undo it ({drain: false}); forwarded to that node',
    tags: ['nodes'],
    body: z.object({ drain: z.boolean() }),
    response: {
      200: z.object({ id: z.string(), draining: z.boolean(), workloads: z.number().int() }),
      400: ApiErrorSchema,
      404: ApiErrorSchema,
      502: ApiErrorSchema,
      504: ApiErrorSchema,
    },
  });
}

export interface BuiltApi {
  app: FastifyInstance;
  routes: RouteTable;
}

export function buildApi(backend: ApiBackend, opts: ApiOptions = {}): FastifyInstance {
  return buildApiWithRoutes(backend, opts).app;
}

/** The API app and the table of its routes (for the OpenAPI document and its tests). */
export function buildApiWithRoutes(backend: ApiBackend, opts: ApiOptions = {}): BuiltApi {
  const app = Fastify({ logger: false });
  const routes = trackRoutes(app);
  if (opts.token !== undefined) registerAuth(app, { token: opts.token });
  if (opts.checkResponses) checkResponses(app, routes);
  // Compose files arrive as YAML text (POST /v1/deploys, /v1/jobs); handlers parse them.
  app.addContentTypeParser(
    ['application/yaml', 'application/x-yaml', 'text/yaml'],
    { parseAs: 'string' },
    (_req, body, done) => done(null, body),
  );
  const metrics = opts.metrics ?? createAgentMetrics(() => backend.metrics());
  const system = ['system'];
  route(
    app,
    {
      method: 'GET',
      url: '/v1/health',
      summary: 'Liveness of the answering agent (no token needed)',
      tags: system,
      public: true,
      response: { 200: HealthSchema },
    },
    async () => ({ ok: true, id: backend.id(), ...backend.health() }),
  );
  route(
    app,
    {
      method: 'GET',
      url: '/v1/openapi.json',
      summary: 'This document (OpenAPI 3.1; no token needed)',
      tags: system,
      public: true,
      response: { 200: z.record(z.string(), z.unknown()) },
    },
    async () => openApiDocument(routes, API_INFO),
  );
  if (opts.deploys) {
    registerDeployRoutes(app, opts.deploys);
    describeDeployRoutes(routes);
  }
  const nodes = ['nodes'];
  route(
    app,
    {
      method: 'GET',
      url: '/v1/nodes',
      summary: 'Cluster members as the answering agent sees them',
      tags: nodes,
      response: { 200: z.array(NodeInfoSchema) },
    },
    async () => backend.nodes(),
  );
  route<{ Params: { id: string } }>(
    app,
    {
      method: 'GET',
      url: '/v1/nodes/:id',
      summary: 'One member',
      tags: nodes,
      response: { 200: NodeInfoSchema, 404: ApiErrorSchema },
    },
    async (req, reply) => {
      const n = backend.nodes().find((x) => x.id === req.params.id);
      if (!n) return reply.code(404).send({ error: 'not-found', message: `no node ${req.params.id}` });
      return n;
    },
  );
  route(
    app,
    {
      method: 'GET',
      url: '/v1/state',
      summary: 'Cluster state summary and hash',
      tags: system,
      response: { 200: StateSchema },
    },
    async () => backend.state(),
  );
  route<{ Body: unknown }>(
    app,
    {
      method: 'PATCH',
      url: '/v1/node',
      summary: 'Change what the answering agent advertises for its host',
      tags: nodes,
      body: SelfPatchSchema,
      response: { 200: NodeInfoSchema, 400: ApiErrorSchema },
    },
    async (req, reply) => {
      const patch = readSelfPatch(req.body);
      if (typeof patch === 'string') return badRequest(reply, patch);
      try {
        return backend.patchSelf(patch);
      } catch (err) {
        // Bad values are the caller's fault (400, naming the field); anything else is ours (500).
        if (err instanceof HostConfigError) return badRequest(reply, err.message);
        throw err;
      }
    },
  );
  // Prometheus scrape endpoint: no /v1 prefix (scrapers expect /metrics); open unless metricsAuth.
  route(
    app,
    {
      method: 'GET',
      url: '/metrics',
      summary: 'Prometheus metrics (no token needed unless the agent runs with --metrics-auth)',
      tags: system,
      public: !opts.metricsAuth,
      response: { 200: { contentType: 'text/plain', description: 'Prometheus text exposition 0.0.4' } },
    },
    async (_req, reply) => {
      const text = await metrics.render();
      return reply.header('content-type', metrics.contentType).send(text);
    },
  );
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({ error: 'not-found', message: `no route ${req.method} ${req.url}` });
  });
  app.setErrorHandler((err: { statusCode?: number; message?: string }, _req, reply) => {
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 ? err.statusCode : 500;
    reply
      .code(status)
      .send({ error: status >= 500 ? 'internal' : 'bad-request', message: String(err.message) });
  });
  for (const add of opts.routes ?? []) add(app, routes);
  return { app, routes };
}

const API_INFO = {
  title: 'shoal agent API',
  version: '1',
  description:
    'Every agent serves this API; call any of them. Send `Authorization: Bearer <token>` on every route except those marked with an empty security list.',
};

export async function startApi(
  backend: ApiBackend,
  listen: string,
  opts: ApiOptions = {},
): Promise<ApiServer> {
  const { host, port } = parseHostPort(listen);
  const { app, routes } = buildApiWithRoutes(backend, opts);
  await app.listen({ host, port });
  const addr = app.server.address();
  const boundPort = typeof addr === 'object' && addr ? addr.port : port;
  const shownHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return {
    url: `http://${shownHost}:${boundPort}`,
    port: boundPort,
    close: () => app.close(),
    app,
    routes,
  };
}
