import type { FastifyInstance } from 'fastify';
import type { DeployIntent, Json, JsonObject } from '../crdt/types.ts';
import { IntentSpecError } from './core/placement-adapter.ts';
import { SYSTEM_KEYS } from './core/rollout.ts';
import { parseCompose, SpecError } from './spec/compose.ts';
import { validateIntent } from './spec/intent.ts';

/**
 * Deploy routes (placement side): create, list, get, scale, delete. Any agent accepts them; the
 * intent is gossiped and the deploy's coordinator places it (docs/placement.md). The full
 * Compose-based workflow (logs, exec, jobs, rolling updates) builds on these.
 */

export interface ReplicaView {
  replica: number;
  host: string | null;
  gen: number | null;
  /** Engine state as its host reports it (pending, starting, running, exited, failed). */
  status?: string;
  exitCode?: number | null;
  /** Health check verdict: starting, healthy, unhealthy; null without a check. */
  health?: string | null;
  /** Why this replica keeps its old resources after a realloc (known on its host's agent). */
  reallocRefused?: string;
  /** Template hash the replica runs, its version number (history), and whether it is current. */
  runs?: string;
  version?: number;
  updated?: boolean;
  startedAt?: number;
  restarts?: number;
  /** Why it is not running (e.g. image not found), when its host knows. */
  error?: string;
}

export interface RolloutView {
  version: number;
  state: string;
  target: string;
  stable: string;
  updated: number;
  total: number;
  reason?: string;
  /** What the rollout did differently than asked (e.g. start-first not possible). */
  notes?: string[];
}

export interface HistoryView {
  version: number;
  hash: string;
  at: number;
  state: string;
  reason?: string;
  image?: string;
}

export interface JobView {
  status: 'pending' | 'running' | 'succeeded' | 'failed';
  exitCode: number | null;
  succeeded: number;
  failed: number;
  attempts: number;
}

export interface DeployView {
  id: string;
  name: string;
  replicas: number;
  strategy: string;
  spec: JsonObject;
  placed: number;
  instances: ReplicaView[];
  /** The agent that coordinates this deploy in the answering agent's view. */
  coordinator: string;
  /** Unplaced replicas and why, when the answering agent is the coordinator. */
  pending?: { pending: number; reasons: string[]; retryAt: number };
  /** Template version (increases with every rolled-out change) and the rollout's progress. */
  version?: number;
  rollout?: RolloutView;
  history?: HistoryView[];
  /** Run-to-completion jobs only. */
  job?: JobView;
}

export interface DeploysBackend {
  /** Create or replace (a rolling update); throws IntentSpecError naming the field on bad input. */
  submit(id: string, fields: Omit<DeployIntent, 'id' | 'revision'>): 'created' | 'updated';
  /** Change spec keys (null removes one); template changes roll out. Throws IntentSpecError. */
  updateSpec(id: string, patch: JsonObject): boolean;
  /** Restore the previous template (rolled out like an edit). */
  rollback(id: string): { version: number; hash: string } | { error: string };
  list(): DeployView[];
  get(id: string): DeployView | undefined;
  scale(id: string, replicas: number): boolean;
  /** Change resources (realloc in place on every host); throws IntentSpecError naming the field. */
  setResources(id: string, resources: JsonObject): boolean;
  remove(id: string): boolean;
  newId(name: string): string;
  /** Resolve once accepted changes are durable (group commit). */
  flush(): Promise<void>;
  /**
   * Unplaced replicas and why, asked of the deploy's coordinator when it is another agent
   * (only the coordinator knows; node/run.ts forwards over libp2p). Absent: not asked.
   */
  pendingAt?(coordinator: string, id: string): Promise<DeployView['pending'] | undefined>;
  /** This agent's id (to tell whether it coordinates a deploy). */
  selfId?: string;
}

const ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const FIELDS = ['id', 'name', 'replicas', 'strategy', 'spec'] as const;

function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validate a POST /v1/deploys body; returns the fields or an error naming the field. */
export function readDeployBody(
  body: unknown,
  newId: (name: string) => string,
): { id: string; fields: Omit<DeployIntent, 'id' | 'revision'> } | string {
  if (!isJsonObject(body)) return 'body: expected a JSON object';
  for (const k of Object.keys(body)) {
    if (!(FIELDS as readonly string[]).includes(k))
      return `${k}: unknown field (expected ${FIELDS.join(', ')})`;
  }
  const name = body.name;
  if (typeof name !== 'string' || !ID_RE.test(name)) {
    return 'name: expected 1-63 characters of a-z, 0-9 and -, starting with a letter or digit';
  }
  const id = body.id === undefined ? newId(name) : body.id;
  if (typeof id !== 'string' || !ID_RE.test(id)) return 'id: expected 1-63 characters of a-z, 0-9 and -';
  const replicas = body.replicas ?? 1;
  if (typeof replicas !== 'number' || !Number.isSafeInteger(replicas) || replicas < 0 || replicas > 10_000) {
    return 'replicas: expected an integer from 0 to 10000';
  }
  const strategy = body.strategy ?? 'binpack';
  if (typeof strategy !== 'string') return 'strategy: expected a string';
  const spec = body.spec as Json | undefined;
  if (!isJsonObject(spec)) return 'spec: expected an object (with resources: {cpu: {milli}, memoryBytes})';
  for (const k of SYSTEM_KEYS) {
    if (spec[k] !== undefined) return `spec.${k}: written by the cluster; not settable`;
  }
  const v = validateIntent({ name, replicas, strategy, spec });
  if (!v.ok) return v.issues.map((i) => `${i.path}: ${i.message}`).join('; ');
  return { id, fields: { name, replicas, strategy, spec: v.spec.spec } };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const YAML_TYPES = ['application/yaml', 'application/x-yaml', 'text/yaml', 'text/x-yaml'];

/**
 * A Compose file as the body (`Content-Type: application/yaml`, query `file`, `project`): parsed
 * and validated here, each service submitted as a deploy. Interpolation sees no environment on
 * the server (`${VAR:-default}` defaults apply); the CLI parses files locally with the user's.
 */
async function submitCompose(
  backend: DeploysBackend,
  text: string,
  query: { file?: string; project?: string },
  job: boolean,
): Promise<{ code: number; body: unknown }> {
  let parsed: ReturnType<typeof parseCompose>;
  try {
    parsed = parseCompose(text, {
      file: query.file ?? 'compose.yaml',
      env: {},
      ...(query.project ? { project: query.project } : {}),
    });
  } catch (err) {
    if (err instanceof SpecError) {
      return { code: 400, body: { error: 'bad-request', message: err.message, issues: err.issues } };
    }
    throw err;
  }
  let created = false;
  const ids: string[] = [];
  for (const d of parsed.deploys) {
    const spec = job && d.spec.job === undefined ? { ...d.spec, job: {} } : d.spec;
    const id = job ? backend.newId(d.id) : d.id;
    try {
      if (
        backend.submit(id, { name: d.name, replicas: d.replicas, strategy: d.strategy, spec }) === 'created'
      )
        created = true;
    } catch (err) {
      if (err instanceof IntentSpecError)
        return {
          code: 400,
          body: { error: 'bad-request', message: `${d.id}: ${err.field}: ${err.problem}` },
        };
      throw err;
    }
    ids.push(id);
  }
  await backend.flush();
  return {
    code: created ? 201 : 200,
    body: { deploys: ids.map((id) => backend.get(id) ?? { id }), warnings: parsed.warnings },
  };
}

export function registerDeployRoutes(app: FastifyInstance, backend: DeploysBackend): void {
  if (!app.hasContentTypeParser('application/yaml')) {
    app.addContentTypeParser(YAML_TYPES, { parseAs: 'string', bodyLimit: 1024 * 1024 }, (_req, body, done) =>
      done(null, body),
    );
  }
  // Deploy ids default to the name: submitting one deploy at two agents converges on one deploy
  // (field-wise last-writer-wins), and re-submitting it is an update (rolled out).
  app.post<{ Body: unknown; Querystring: { file?: string; project?: string } }>(
    '/v1/deploys',
    async (req, reply) => {
      if (typeof req.body === 'string') {
        const r = await submitCompose(backend, req.body, req.query, false);
        return reply.code(r.code).send(r.body);
      }
      const r = readDeployBody(req.body, (n) => n);
      if (typeof r === 'string') return reply.code(400).send({ error: 'bad-request', message: r });
      let outcome: 'created' | 'updated';
      try {
        outcome = backend.submit(r.id, r.fields);
      } catch (err) {
        if (err instanceof IntentSpecError) {
          return reply.code(400).send({ error: 'bad-request', message: `${err.field}: ${err.problem}` });
        }
        throw err;
      }
      await backend.flush(); // accepted = durable: a crash after 201 must not lose the deploy
      return reply.code(outcome === 'created' ? 201 : 200).send(backend.get(r.id) ?? { id: r.id });
    },
  );
  app.post<{ Params: { id: string } }>('/v1/deploys/:id/rollback', async (req, reply) => {
    const id = req.params.id;
    if (!backend.get(id)) return reply.code(404).send({ error: 'not-found', message: `no deploy ${id}` });
    const r = backend.rollback(id);
    if ('error' in r) return reply.code(409).send({ error: 'conflict', message: r.error });
    await backend.flush();
    return backend.get(id);
  });
  // Run-to-completion jobs: a deploy whose spec has `job` ({retries?, backoffMs?}); ids are unique
  // per run (like `docker run`).
  app.post<{ Body: unknown; Querystring: { file?: string; project?: string } }>(
    '/v1/jobs',
    async (req, reply) => {
      if (typeof req.body === 'string') {
        const r = await submitCompose(backend, req.body, req.query, true);
        return reply.code(r.code).send(r.body);
      }
      const body = isJsonObject(req.body) ? { ...req.body } : req.body;
      if (isJsonObject(body) && isJsonObject(body.spec) && body.spec.job === undefined) {
        body.spec = { ...body.spec, job: {} };
      }
      const r = readDeployBody(body, (n) => backend.newId(n));
      if (typeof r === 'string') return reply.code(400).send({ error: 'bad-request', message: r });
      if (backend.get(r.id))
        return reply.code(409).send({ error: 'conflict', message: `job ${r.id} exists` });
      try {
        backend.submit(r.id, r.fields);
      } catch (err) {
        if (err instanceof IntentSpecError) {
          return reply.code(400).send({ error: 'bad-request', message: `${err.field}: ${err.problem}` });
        }
        throw err;
      }
      await backend.flush();
      return reply.code(201).send(backend.get(r.id) ?? { id: r.id });
    },
  );
  const jobView = (id: string) => {
    const d = backend.get(id);
    if (!d?.job) return undefined;
    const i = d.instances[0];
    return { id, ...d.job, host: i?.host ?? null, instances: d.instances };
  };
  app.get<{ Params: { id: string } }>('/v1/jobs/:id', async (req, reply) => {
    const j = jobView(req.params.id);
    if (!j) return reply.code(404).send({ error: 'not-found', message: `no job ${req.params.id}` });
    return j;
  });
  app.get<{ Params: { id: string }; Querystring: { timeoutMs?: string } }>(
    '/v1/jobs/:id/wait',
    async (req, reply) => {
      const t = req.query.timeoutMs === undefined ? 30_000 : Number(req.query.timeoutMs);
      if (!Number.isFinite(t) || t < 0 || t > 600_000)
        return reply.code(400).send({ error: 'bad-request', message: 'timeoutMs: expected 0..600000' });
      // A deadline on the monotonic clock: a wall-clock step must not cut the wait short or stretch it.
      const until = performance.now() + t;
      for (;;) {
        const j = jobView(req.params.id);
        if (!j) return reply.code(404).send({ error: 'not-found', message: `no job ${req.params.id}` });
        if (j.status === 'succeeded' || j.status === 'failed' || performance.now() >= until) return j;
        await sleep(Math.min(200, Math.max(1, until - performance.now())));
      }
    },
  );
  app.get('/v1/deploys', async () => backend.list());
  app.get<{ Params: { id: string } }>('/v1/deploys/:id', async (req, reply) => {
    const d = backend.get(req.params.id);
    if (!d) return reply.code(404).send({ error: 'not-found', message: `no deploy ${req.params.id}` });
    const unplaced = () => d.placed < d.replicas || (d.instances ?? []).some((i) => i.host === null);
    if (backend.pendingAt && !d.pending && d.coordinator !== backend.selfId && unplaced()) {
      // Only the coordinator knows why replicas are unplaced: ask it (best effort, bounded).
      const p = await backend.pendingAt(d.coordinator, d.id).catch(() => undefined);
      if (p) d.pending = p;
    }
    return d;
  });
  app.patch<{ Params: { id: string }; Body: unknown }>('/v1/deploys/:id', async (req, reply) => {
    const b = req.body;
    const bad = (message: string) => reply.code(400).send({ error: 'bad-request', message });
    if (!isJsonObject(b))
      return bad('body: expected {"replicas": N}, {"resources": {...}} and/or {"spec": {...}}');
    for (const k of Object.keys(b)) {
      if (k !== 'replicas' && k !== 'resources' && k !== 'spec')
        return bad(`${k}: unknown field (expected replicas, resources, spec)`);
    }
    const id = req.params.id;
    if (!backend.get(id)) return reply.code(404).send({ error: 'not-found', message: `no deploy ${id}` });
    if (b.resources !== undefined) {
      if (!isJsonObject(b.resources))
        return bad('resources: expected an object {cpu: {milli}, memoryBytes, ...}');
      try {
        backend.setResources(id, b.resources);
      } catch (err) {
        if (err instanceof IntentSpecError) return bad(`${err.field}: ${err.problem}`);
        throw err;
      }
    }
    if (b.spec !== undefined) {
      if (!isJsonObject(b.spec))
        return bad('spec: expected an object of spec keys to change (null removes one)');
      try {
        backend.updateSpec(id, b.spec);
      } catch (err) {
        if (err instanceof IntentSpecError) return bad(`${err.field}: ${err.problem}`);
        throw err;
      }
    }
    if (b.replicas !== undefined) {
      const n = b.replicas;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > 10_000) {
        return bad('replicas: expected an integer from 0 to 10000');
      }
      backend.scale(id, n);
    }
    await backend.flush();
    return backend.get(id);
  });
  app.delete<{ Params: { id: string } }>('/v1/deploys/:id', async (req, reply) => {
    if (!backend.remove(req.params.id)) {
      return reply.code(404).send({ error: 'not-found', message: `no deploy ${req.params.id}` });
    }
    await backend.flush();
    return reply.code(204).send();
  });
}
