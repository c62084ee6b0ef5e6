import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  HTTPMethods,
  RouteGenericInterface,
  RouteOptions,
} from 'fastify';
import { z } from 'zod';

/**
 * Route documentation that cannot drift: a route declares its schemas where it is registered, the
 * OpenAPI 3.1 document (GET /v1/openapi.json) is generated from what was registered, and a test
 * asserts that every registered /v1/ route is in it.
 *
 * Register a route with its documentation:
 *
 *   route(app, {
 *     method: 'GET', url: '/v1/deploys/:id', summary: 'One deploy',
 *     response: { 200: DeployView, 404: ApiError },
 *   }, async (req, reply) => { … });
 *
 * `params` are derived from the URL (`:id` → a string) unless given; `body` is a zod schema
 * (application/json) or a map content type → schema (e.g. `{'application/yaml': z.string()}`);
 * `response` maps status codes to a zod schema, `null` (no body) or `{contentType, schema?,
 * description?}` for non-JSON answers (ndjson streams, Prometheus text). `public: true` opens the
 * route to callers without a token (node/auth.ts). The schemas are documentation and a test-time
 * check (`checkResponses`), not request validation: handlers keep their own validation, whose
 * messages name the offending field.
 *
 * Routes registered elsewhere with plain `app.get(…)` can be documented with
 * `RouteTable.describe(method, url, doc)` until they move to `route()`.
 */

export interface ResponseDoc {
  contentType: string;
  schema?: z.ZodType;
  description?: string;
}

export interface RouteDoc {
  summary: string;
  description?: string;
  tags?: string[];
  /** Path parameters; default: every `:name` of the URL as a string. */
  params?: z.ZodObject;
  query?: z.ZodObject;
  /** Request body: JSON schema, or content type → schema. */
  body?: z.ZodType | Record<string, z.ZodType>;
  response: Record<number, z.ZodType | ResponseDoc | null>;
  /** No token needed (see node/auth.ts). */
  public?: boolean;
}

export interface RouteDef extends RouteDoc {
  method: HTTPMethods;
  url: string;
}

/** Route config as route() sets it (read by the auth hook, the route table and the response check). */
export interface DocumentedRouteConfig {
  public?: boolean;
  openapi?: RouteDoc;
}

/** Register a documented route (see the module comment). */
export function route<G extends RouteGenericInterface = RouteGenericInterface>(
  app: FastifyInstance,
  def: RouteDef,
  handler: (req: FastifyRequest<G>, reply: FastifyReply) => unknown,
): void {
  const { method, url, ...doc } = def;
  app.route({
    method,
    url,
    config: { public: doc.public === true, openapi: doc } as DocumentedRouteConfig,
    handler: handler as unknown as RouteOptions['handler'],
  });
}

export interface RegisteredRoute {
  method: string;
  url: string;
  doc?: RouteDoc;
}

/**
 * Every route registered on an app after `trackRoutes(app)` (fastify onRoute hook), with its
 * documentation. Call it right after creating the app, before any route is registered.
 */
export class RouteTable {
  readonly routes: RegisteredRoute[] = [];
  private readonly described = new Map<string, RouteDoc>();

  /** Document a route registered without route(). */
  describe(method: string, url: string, doc: RouteDoc): void {
    this.described.set(`${method.toUpperCase()} ${url}`, doc);
  }

  /** The documentation of a registered route, wherever it was declared. */
  docOf(method: string, url: string): RouteDoc | undefined {
    const r = this.routes.find((x) => x.method === method.toUpperCase() && x.url === url);
    return r?.doc ?? this.described.get(`${method.toUpperCase()} ${url}`);
  }

  /** Registered /v1/ routes (and /metrics) that have no documentation: must be empty. */
  undocumented(): string[] {
    return this.routes
      .filter((r) => r.method !== 'HEAD' && (r.url.startsWith('/v1/') || r.url === '/metrics'))
      .filter((r) => !this.docOf(r.method, r.url))
      .map((r) => `${r.method} ${r.url}`);
  }
}

export function trackRoutes(app: FastifyInstance): RouteTable {
  const table = new RouteTable();
  app.addHook('onRoute', (opts) => {
    const methods = Array.isArray(opts.method) ? opts.method : [opts.method];
    const doc = (opts.config as DocumentedRouteConfig | undefined)?.openapi;
    for (const m of methods) table.routes.push({ method: String(m).toUpperCase(), url: opts.url, doc });
  });
  return table;
}

/** The error body every route answers on failure. */
export const ApiErrorSchema = z
  .object({
    error: z.string().meta({ description: 'machine-readable kind: bad-request, not-found, unauthorized, …' }),
    message: z.string().meta({ description: 'what went wrong, naming the offending field or peer' }),
  })
  .meta({ description: 'Error' });

type JsonSchema = Record<string, unknown>;

function jsonSchema(schema: z.ZodType): JsonSchema {
  const s = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  delete s.$schema;
  return s;
}

function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function pathParamNames(url: string): string[] {
  return [...url.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!);
}

function parametersOf(url: string, doc: RouteDoc): JsonSchema[] {
  const out: JsonSchema[] = [];
  const params = doc.params ? jsonSchema(doc.params) : undefined;
  const pprops = (params?.properties ?? {}) as Record<string, JsonSchema>;
  for (const name of pathParamNames(url)) {
    const p = pprops[name];
    out.push({
      name,
      in: 'path',
      required: true,
      schema: p ?? { type: 'string' },
      ...(p?.description ? { description: p.description } : {}),
    });
  }
  if (doc.query) {
    const q = jsonSchema(doc.query);
    const required = new Set((q.required ?? []) as string[]);
    for (const [name, s] of Object.entries((q.properties ?? {}) as Record<string, JsonSchema>)) {
      out.push({
        name,
        in: 'query',
        required: required.has(name),
        schema: s,
        ...(s.description ? { description: s.description } : {}),
      });
    }
  }
  return out;
}

function isResponseDoc(v: unknown): v is ResponseDoc {
  return typeof v === 'object' && v !== null && typeof (v as ResponseDoc).contentType === 'string';
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  202: 'Accepted',
  204: 'No content',
  400: 'Bad request (the message names the field)',
  401: 'Missing or invalid bearer token',
  404: 'Not found',
  409: 'Conflict',
  415: 'Unsupported content type',
  502: 'The agent that holds the resource cannot be reached',
  504: 'The agent that holds the resource did not answer in time',
};

function operation(method: string, url: string, doc: RouteDoc): JsonSchema {
  const op: JsonSchema = {
    operationId: `${method.toLowerCase()}${openApiPath(url)
      .replace(/^\/v1/, '')
      .replace(/[{}]/g, '')
      .split(/[/._-]+/)
      .filter(Boolean)
      .map((w) => w[0]!.toUpperCase() + w.slice(1))
      .join('')}`,
    summary: doc.summary,
  };
  if (doc.description) op.description = doc.description;
  if (doc.tags) op.tags = doc.tags;
  const parameters = parametersOf(url, doc);
  if (parameters.length > 0) op.parameters = parameters;
  if (doc.body) {
    const content: Record<string, unknown> = {};
    if (doc.body instanceof z.ZodType) content['application/json'] = { schema: jsonSchema(doc.body) };
    else for (const [ct, s] of Object.entries(doc.body)) content[ct] = { schema: jsonSchema(s) };
    op.requestBody = { required: true, content };
  }
  const responses: Record<string, unknown> = {};
  const entries = Object.entries(doc.response);
  if (!doc.public && !doc.response[401]) entries.push(['401', ApiErrorSchema]);
  for (const [code, r] of entries) {
    const description = (isResponseDoc(r) && r.description) || STATUS_TEXT[Number(code)] || 'Answer';
    if (r === null) responses[code] = { description };
    else if (isResponseDoc(r)) {
      responses[code] = {
        description,
        content: { [r.contentType]: r.schema ? { schema: jsonSchema(r.schema) } : {} },
      };
    } else responses[code] = { description, content: { 'application/json': { schema: jsonSchema(r) } } };
  }
  op.responses = responses;
  if (doc.public) op.security = [];
  return op;
}

export interface OpenApiInfo {
  title: string;
  version: string;
  description?: string;
}

/** The OpenAPI 3.1 document of every documented route in `table` (HEAD twins of GET left out). */
export function openApiDocument(table: RouteTable, info: OpenApiInfo): JsonSchema {
  const paths: Record<string, Record<string, unknown>> = {};
  const seen = new Set<string>();
  for (const r of table.routes) {
    if (r.method === 'HEAD') continue;
    const doc = table.docOf(r.method, r.url);
    if (!doc) continue;
    const key = `${r.method} ${r.url}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const p = openApiPath(r.url);
    paths[p] ??= {};
    paths[p][r.method.toLowerCase()] = operation(r.method, r.url, doc);
  }
  const sorted = Object.fromEntries(Object.entries(paths).sort(([a], [b]) => a.localeCompare(b)));
  return {
    openapi: '3.1.0',
    info,
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    servers: [{ url: '/', description: 'any agent of the cluster' }],
    security: [{ bearer: [] }],
    paths: sorted,
    components: {
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description:
            'The agent token: <data-dir>/token on the agent host (made on first start), or the file given with `shoal agent --token-file`.',
        },
      },
    },
  };
}

/**
 * Test-time drift check: validate every JSON answer of a documented route against its declared
 * response schema; a mismatch becomes a 500 naming the route, status and the first issue.
 */
export function checkResponses(app: FastifyInstance, table: RouteTable): void {
  const fail = (reply: FastifyReply, message: string): never => {
    reply.code(500);
    throw Object.assign(new Error(message), { statusCode: 500 });
  };
  app.addHook('onSend', async (req, reply, payload) => {
    const url = req.routeOptions.url;
    // 5xx answers are internal errors (this check's own included), not part of the contract.
    if (!url || req.is404 || reply.statusCode >= 500) return payload;
    const doc = table.docOf(req.method, url);
    if (!doc) return payload;
    const declared = doc.response[reply.statusCode];
    const where = `${req.method} ${url} → ${reply.statusCode}`;
    if (declared === undefined) {
      if (reply.statusCode === 401 && !doc.public) return payload;
      return fail(reply, `response check: ${where} is not a documented status`);
    }
    if (declared === null || isResponseDoc(declared) || typeof payload !== 'string') return payload;
    const parsed = declared.safeParse(JSON.parse(payload));
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      return fail(
        reply,
        `response check: ${where} does not match its schema at ${issue.path.join('.') || '(root)'}: ${issue.message}`,
      );
    }
    return payload;
  });
}
