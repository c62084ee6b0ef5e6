import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildApiWithRoutes } from '../node/api.ts';
import { ApiErrorSchema, checkResponses, openApiDocument, route, trackRoutes } from '../node/openapi.ts';
import { tinyBackend, tinyDeploys } from './api-fixtures.ts';

type Doc = {
  openapi: string;
  paths: Record<string, Record<string, Record<string, unknown>>>;
  components: { securitySchemes: Record<string, unknown> };
  security: unknown[];
};

describe('GET /v1/openapi.json', () => {
  const deploys = tinyDeploys();
  const { app, routes } = buildApiWithRoutes(tinyBackend(), {
    token: 'openapi-test-token-0123456789',
    deploys,
    checkResponses: true,
  });
  const auth = { authorization: 'Bearer openapi-test-token-0123456789' };
  afterAll(() => app.close());

  it('is served without a token as OpenAPI 3.1', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/openapi.json' });
    expect(res.statusCode).toBe(200);
    const doc = res.json() as Doc;
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.security).toEqual([{ bearer: [] }]);
  });

  it('describes every registered /v1/ route (onRoute), and nothing that is not registered', async () => {
    await app.ready();
    const doc = (await app.inject({ method: 'GET', url: '/v1/openapi.json' })).json() as Doc;
    const registered = routes.routes
      .filter((r) => r.method !== 'HEAD' && (r.url.startsWith('/v1/') || r.url === '/metrics'))
      .map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`)
      .sort();
    const documented = Object.entries(doc.paths)
      .flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`))
      .sort();
    expect(registered.length).toBeGreaterThanOrEqual(12);
    expect(documented).toEqual(registered);
    expect(routes.undocumented()).toEqual([]);
    // The deploy routes (registered by node/deploys-api.ts) are in too.
    expect(documented).toContain('PATCH /v1/deploys/{id}');
  });

  it('every operation has a summary, responses, a path parameter per {name}, and 401 when protected', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/v1/openapi.json' })).json() as Doc;
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const where = `${method} ${path}`;
        expect(op.summary, where).toEqual(expect.any(String));
        const responses = op.responses as Record<string, unknown>;
        expect(Object.keys(responses).length, where).toBeGreaterThan(0);
        const names = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
        const params = ((op.parameters ?? []) as { name: string; in: string }[]).filter(
          (p) => p.in === 'path',
        );
        expect(
          params.map((p) => p.name),
          where,
        ).toEqual(names);
        const open = Array.isArray(op.security) && op.security.length === 0;
        expect(open || '401' in responses, where).toBe(true);
      }
    }
    const open = Object.entries(doc.paths)
      .flatMap(([p, ops]) => Object.entries(ops).map(([m, op]) => [`${m} ${p}`, op] as const))
      .filter(([, op]) => Array.isArray(op.security) && (op.security as unknown[]).length === 0)
      .map(([k]) => k)
      .sort();
    expect(open).toEqual(['get /metrics', 'get /v1/health', 'get /v1/openapi.json']);
  });

  it('carries the request and response schemas (PATCH /v1/node)', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/v1/openapi.json' })).json() as Doc;
    const op = doc.paths['/v1/node']!.patch as {
      requestBody: { content: Record<string, { schema: { properties: Record<string, unknown> } }> };
      responses: Record<
        string,
        { content: Record<string, { schema: { properties: Record<string, unknown> } }> }
      >;
    };
    expect(Object.keys(op.requestBody.content['application/json']!.schema.properties)).toEqual([
      'labels',
      'cpu',
      'memory',
      'disk',
      'gpu',
    ]);
    expect(op.responses['200']!.content['application/json']!.schema.properties).toHaveProperty('statusAgeMs');
    expect(op.responses['400']!.content['application/json']!.schema.properties).toHaveProperty('message');
  });

  it('answers of the documented routes match their schemas (checkResponses is on in this app)', async () => {
    for (const [method, url, payload] of [
      ['GET', '/v1/health'],
      ['GET', '/v1/nodes'],
      ['GET', '/v1/nodes/node-self'],
      ['GET', '/v1/nodes/nobody'],
      ['GET', '/v1/state'],
      ['PATCH', '/v1/node', { labels: { zone: 'b' } }],
      ['PATCH', '/v1/node', { zone: 'b' }],
      ['POST', '/v1/deploys', { id: 'web', name: 'web', replicas: 2, spec: { resources: {} } }],
      ['GET', '/v1/deploys'],
      ['GET', '/v1/deploys/web'],
      ['PATCH', '/v1/deploys/web', { replicas: 3 }],
      ['DELETE', '/v1/deploys/web'],
      ['GET', '/v1/deploys/web'],
    ] as const) {
      const res = await app.inject({ method, url, headers: auth, ...(payload ? { payload } : {}) });
      expect(res.statusCode, `${method} ${url}: ${res.body}`).toBeLessThan(500);
    }
  });

  it('a drifted answer is caught by the response check (500 naming route, status and field)', async () => {
    deploys.views.set('drift', { id: 'drift', name: 'drift', replicas: 'two' } as never);
    const res = await app.inject({ method: 'GET', url: '/v1/deploys/drift', headers: auth });
    deploys.views.delete('drift');
    expect(res.statusCode).toBe(500);
    expect(res.json().message).toMatch(
      /^response check: GET \/v1\/deploys\/:id → 200 does not match its schema at replicas: /,
    );
  });
});

describe('route() and the route table', () => {
  it('an undocumented /v1/ route is reported; a route() one is documented with its query and body', async () => {
    const app = Fastify();
    const table = trackRoutes(app);
    route(
      app,
      {
        method: 'POST',
        url: '/v1/things/:id/poke',
        summary: 'Poke a thing',
        query: z.object({ hard: z.string().optional().meta({ description: '1 = hard' }) }),
        body: { 'application/yaml': z.string() },
        response: { 200: z.object({ poked: z.boolean() }), 404: ApiErrorSchema },
      },
      async () => ({ poked: true }),
    );
    app.get('/v1/sneaky', async () => ({}));
    await app.ready();
    expect(table.undocumented()).toEqual(['GET /v1/sneaky']);
    const doc = openApiDocument(table, { title: 't', version: '1' }) as Doc;
    expect(Object.keys(doc.paths)).toEqual(['/v1/things/{id}/poke']);
    const op = doc.paths['/v1/things/{id}/poke']!.post!;
    expect(op.parameters).toEqual([
      { name: 'id', in: 'path', required: true, schema: { type: 'string' } },
      {
        name: 'hard',
        in: 'query',
        required: false,
        schema: { type: 'string', description: '1 = hard' },
        description: '1 = hard',
      },
    ]);
    expect(op.requestBody).toEqual({
      required: true,
      content: { 'application/yaml': { schema: { type: 'string' } } },
    });
    expect(Object.keys(op.responses as object).sort()).toEqual(['200', '401', '404']);
    await app.close();
  });

  it('checkResponses rejects an undocumented status', async () => {
    const app = Fastify();
    const table = trackRoutes(app);
    checkResponses(app, table);
    route(
      app,
      { method: 'GET', url: '/v1/teapot', summary: 't', response: { 200: z.object({}) } },
      async (_r, reply) => reply.code(418).send({}),
    );
    const res = await app.inject({ method: 'GET', url: '/v1/teapot' });
    expect(res.statusCode).toBe(500);
    expect(res.body).toMatch(/GET \/v1\/teapot → 418 is not a documented status/);
    await app.close();
  });
});
