import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { simProgram } from '../engines/sim.ts';
import { registerDeployRoutes } from '../node/deploys-api.ts';
import { deploysBackend } from '../node/deploys-backend.ts';
import { SimCluster } from '../sim/cluster.ts';

/**
 * The deploy routes over a real agent core (one sim agent with the sim engine): Compose bodies,
 * validation errors naming the field, create vs update, rollback, jobs with wait.
 */

describe('deploy routes', () => {
  let c: SimCluster;
  const app = Fastify();

  /** Serve a request while virtual time runs (flush() waits for the agent's group commit). */
  async function call(method: 'GET' | 'POST' | 'PATCH', url: string, body?: unknown, yaml = false) {
    const p = app.inject({
      method,
      url,
      ...(body === undefined
        ? {}
        : yaml
          ? { payload: body as string, headers: { 'content-type': 'application/yaml' } }
          : { payload: body as object }),
    });
    let done = false;
    void p.finally(() => {
      done = true;
    });
    while (!done) await c.run(10);
    const r = await p;
    return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : undefined };
  }

  beforeAll(async () => {
    c = new SimCluster({ seed: 7, size: 2, engine: { startDelayMs: [10, 20] } });
    await c.start();
    await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000);
    const a = c.get(0);
    registerDeployRoutes(app, deploysBackend(a.sync, a.placement, a.agent.membership));
    await app.ready();
  });
  afterAll(() => app.close());

  const compose = (memory: string) => `
name: shop
services:
  web:
    image: shoal/busybox:latest
    command: ${JSON.stringify(simProgram({}).join(' '))}
    deploy:
      replicas: 2
      resources:
        limits: { cpus: "0.5", memory: ${memory} }
  worker:
    image: shoal/busybox:latest
    entrypoint: ${JSON.stringify(simProgram({}))}
    deploy:
      resources:
        reservations: { cpus: "0.25", memory: 64M }
`;

  it('a Compose body creates one deploy per service (201), and the same file again is an update (200)', async () => {
    const r = await call('POST', '/v1/deploys?file=shop.yaml', compose('128M'), true);
    expect(r.status).toBe(201);
    expect(r.body.deploys.map((d: { id: string }) => d.id)).toEqual(['shop-web', 'shop-worker']);
    expect(r.body.deploys[0].replicas).toBe(2);
    expect(r.body.deploys[0].spec.resources).toMatchObject({
      cpu: { milli: 500 },
      memoryBytes: 128 * 2 ** 20,
    });
    const again = await call('POST', '/v1/deploys?file=shop.yaml', compose('128M'), true);
    expect(again.status).toBe(200);
    expect(again.body.deploys[0].version).toBe(1); // nothing changed: no new version
  });

  it('an invalid Compose file is a 400 naming the file, the service and the field', async () => {
    const r = await call('POST', '/v1/deploys?file=shop.yaml', compose('lots'), true);
    expect(r.status).toBe(400);
    expect(r.body.message).toMatch(/^shop\.yaml: services\.web\.deploy\.resources\.limits\.memory: /);
    expect(r.body.issues[0]).toMatchObject({ file: 'shop.yaml', service: 'web' });
  });

  it('JSON bodies are validated by the spec schema; system keys are refused', async () => {
    const base = { name: 'j', spec: { resources: { cpu: { milli: 100 }, memoryBytes: 1024 } } };
    const bad = await call('POST', '/v1/deploys', { ...base, spec: { ...base.spec, imgae: 'x' } });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/^spec(\.imgae)?: /);
    expect(bad.body.message).toMatch(/imgae/);
    const sys = await call('POST', '/v1/deploys', { ...base, spec: { ...base.spec, rollout: {} } });
    expect(sys.status).toBe(400);
    expect(sys.body.message).toBe('spec.rollout: written by the cluster; not settable');
    const ok = await call('POST', '/v1/deploys', base);
    expect(ok.status).toBe(201);
    expect(ok.body.id).toBe('j'); // the id is the name
  });

  it('rollback with nothing to roll back to is a 409; PATCH spec validates the merged spec', async () => {
    const r = await call('POST', '/v1/deploys/shop-web/rollback');
    expect(r.status).toBe(409);
    const bad = await call('PATCH', '/v1/deploys/shop-web', { spec: { healthcheck: { type: 'nope' } } });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/^spec\.healthcheck\.type: /);
    const ok = await call('PATCH', '/v1/deploys/shop-web', { spec: { env: { MODE: 'blue' } } });
    expect(ok.status).toBe(200);
    expect(ok.body.spec.env).toEqual({ MODE: 'blue' });
    expect(ok.body.spec.image).toBe('shoal/busybox:latest');
  });

  it('jobs: a unique id per run; wait returns the exit code', async () => {
    const job = {
      name: 'once',
      spec: {
        resources: { cpu: { milli: 100 }, memoryBytes: 1024 },
        image: 'shoal/busybox:latest',
        command: simProgram({ runMs: 200, exitCode: 3 }),
      },
    };
    const a = await call('POST', '/v1/jobs', job);
    const b = await call('POST', '/v1/jobs', job);
    expect(a.status).toBe(201);
    expect(a.body.id).toMatch(/^once-[0-9a-f]{6}$/);
    expect(b.body.id).not.toBe(a.body.id);
    expect(a.body.spec.job).toEqual({ retries: 0, backoffMs: 1000 });
    const w = await call('GET', `/v1/jobs/${a.body.id}/wait?timeoutMs=20000`);
    expect(w.status).toBe(200);
    expect(w.body).toMatchObject({ status: 'failed', exitCode: 3, attempts: 1 });
  });
});
