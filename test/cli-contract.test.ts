import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerAuth } from '../node/auth.ts';
import type { DeployView, RolloutView } from '../node/client.ts';

/**
 * CONTRACT TEST of the user CLI: the real `shoal` binary against a small fastify stub that
 * implements the API contract of docs/api.md for the routes whose server side is not in the agent
 * yet (Compose deploys, rolling updates, rollback, history, workloads, logs, exec, jobs, drain).
 * It checks what the CLI sends and how it presents answers; it says nothing about the agent.
 * The stub requires the bearer token like the agent does (node/auth.ts).
 */

const SHOAL = resolve('node/bin/shoal.js');
const TOKEN = 'contract-test-token-0123456789';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { NO_COLOR: '1' };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SHOAL_')) env[k] = v;
  return env;
}

function withFlags(args: string[], flags: string[]): string[] {
  const i = args.indexOf('--');
  return i < 0 ? [...args, ...flags] : [...args.slice(0, i), ...flags, ...args.slice(i)];
}

interface Seen {
  method: string;
  url: string;
  contentType?: string;
  body: unknown;
}

function view(id: string, running: number, replicas: number, extra: Partial<DeployView> = {}): DeployView {
  return {
    id,
    name: id,
    replicas,
    strategy: 'spread',
    spec: { image: 'nginx:1' },
    placed: replicas,
    instances: Array.from({ length: replicas }, (_, r) => ({
      replica: r,
      host: `12D3KooWhostabcdefg${r}`,
      gen: 1,
      status: r < running ? 'running' : 'starting',
      exitCode: null,
      health: r < running ? 'healthy' : 'starting',
      startedAt: Date.now() - 90_000,
    })),
    coordinator: 'x',
    ...extra,
  };
}

/** The stub: scripted answers per deploy, every request recorded. */
class Stub {
  seen: Seen[] = [];
  /** GET /v1/deploys/:id answers, consumed in order (the last one repeats). */
  script = new Map<string, DeployView[]>();
  jobPolls = 0;
  drainWorkloads = 2;
  logClosed = 0;
  app: FastifyInstance = Fastify();
  addr = '';

  async start(): Promise<void> {
    const app = this.app;
    registerAuth(app, { token: TOKEN });
    app.addContentTypeParser('application/yaml', { parseAs: 'string' }, (_r, b, done) => done(null, b));
    app.addHook('preHandler', async (req) => {
      this.seen.push({
        method: req.method,
        url: req.url,
        contentType: req.headers['content-type'],
        body: req.body,
      });
    });
    const next = (id: string) => {
      const s = this.script.get(id);
      if (!s) return undefined;
      return s.length > 1 ? s.shift() : s[0];
    };
    app.post('/v1/deploys', async (_req, reply) =>
      reply.code(201).send({
        deploys: [view('web', 0, 2)],
        warnings: ['services.web.networks: ignored (shoal has one flat network)'],
      }),
    );
    app.get<{ Params: { id: string } }>('/v1/deploys/:id', async (req, reply) => {
      const v = next(req.params.id);
      return v ?? reply.code(404).send({ error: 'not-found', message: `no deploy ${req.params.id}` });
    });
    app.patch<{ Params: { id: string } }>('/v1/deploys/:id', async (req) => next(req.params.id));
    app.post<{ Params: { id: string } }>('/v1/deploys/:id/rollback', async (req) => next(req.params.id));
    app.get<{ Querystring: { deploy?: string; host?: string } }>('/v1/workloads', async (req) => {
      if (req.query.host) {
        return Array.from({ length: Math.max(0, this.drainWorkloads--) }, (_, i) => ({
          id: `db.${i}`,
          deployId: 'db',
          replica: i,
          host: req.query.host,
          status: 'running',
        }));
      }
      const d = req.query.deploy!;
      const n = d === 'job1' ? 1 : 2;
      return Array.from({ length: n }, (_, r) => ({
        id: `${d}.${r}`,
        deployId: d,
        replica: r,
        host: 'h',
        status: 'running',
        gen: 1,
      }));
    });
    app.get<{ Params: { wid: string }; Querystring: { follow?: string } }>(
      '/v1/workloads/:wid/logs',
      (req, reply) => {
        const r = Number(req.params.wid.split('.')[1]);
        reply.raw.writeHead(200, { 'content-type': 'application/x-ndjson' });
        const base = 1_000_000 + r;
        for (let i = 0; i < 2; i++) {
          reply.raw.write(
            `${JSON.stringify({ stream: i === 1 ? 'stderr' : 'stdout', line: `r${r} line ${i}`, ts: base + i * 10 })}\n`,
          );
        }
        if (req.query.follow !== '1') {
          reply.raw.end();
          return reply;
        }
        const t = setInterval(
          () =>
            reply.raw.write(`${JSON.stringify({ stream: 'stdout', line: `r${r} tick`, ts: Date.now() })}\n`),
          100,
        );
        req.raw.on('close', () => {
          clearInterval(t);
          this.logClosed++;
        });
        return reply;
      },
    );
    app.post('/v1/workloads/:wid/exec', async () => ({
      exitCode: 3,
      stdout: 'out line\n',
      stderr: 'err line\n',
    }));
    app.post('/v1/jobs', async (_req, reply) => reply.code(201).send({ id: 'job1' }));
    app.get('/v1/jobs/:id/wait', async () => {
      this.jobPolls++;
      return this.jobPolls < 2
        ? { id: 'job1', status: 'running', exitCode: null, attempts: 1, host: 'h' }
        : { id: 'job1', status: 'failed', exitCode: 7, attempts: 2, host: 'h' };
    });
    const nodeRow = (draining: boolean) => ({
      id: '12D3KooWnodeAAAAbbbb',
      status: 'alive',
      addrs: [],
      labels: {},
      self: false,
      draining,
    });
    app.get('/v1/nodes', async () => [nodeRow(false), { ...nodeRow(false), id: '12D3KooWotherCCCCdddd' }]);
    app.get('/v1/nodes/:id', async () => nodeRow(true));
    app.post('/v1/nodes/:id/drain', async () => nodeRow(true));
    await app.listen({ host: '127.0.0.1', port: 0 });
    const a = app.server.address();
    this.addr = `127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  }

  shoal(args: string[], timeoutMs = 60_000): Promise<Run> {
    return new Promise((done) => {
      execFile(
        process.execPath,
        // Connection flags go before a `--` (after it everything is the remote command).
        [SHOAL, ...withFlags(args, ['--addr', this.addr, '--token', TOKEN])],
        { timeout: timeoutMs, killSignal: 'SIGKILL', env: cleanEnv() },
        (err, stdout, stderr) =>
          done({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }),
      );
    });
  }

  last(method: string, prefix: string): Seen {
    const s = this.seen.filter((x) => x.method === method && x.url.startsWith(prefix)).at(-1);
    if (!s) throw new Error(`the stub saw no ${method} ${prefix}`);
    return s;
  }
}

describe('CLI contract test (stub server implementing docs/api.md)', { timeout: 120_000 }, () => {
  const stub = new Stub();
  let dir: string;
  beforeAll(async () => {
    await stub.start();
    dir = mkdtempSync(join(tmpdir(), 'shoal-contract-'));
  });
  afterAll(async () => {
    await stub.app.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('deploy parses the Compose file locally (user env), posts each service as a JSON intent, prints warnings, waits for healthy replicas', async () => {
    const file = join(dir, 'stack.yaml');
    writeFileSync(
      file,
      'services:\n  web:\n    image: nginx:${TAG:-1}\n    networks: [front]\n    deploy:\n      resources:\n        limits: {cpus: "0.5", memory: 64M}\n',
    );
    stub.script.set('web', [view('web', 0, 2), view('web', 1, 2), view('web', 2, 2)]);
    const r = await stub.shoal(['deploy', file, '--project', 'shop']);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(0);
    const post = stub.last('POST', '/v1/deploys');
    expect(post.url).toBe('/v1/deploys');
    expect(post.contentType).toBe('application/json');
    expect(post.body).toMatchObject({ id: 'shop-web', name: 'web', spec: { image: 'nginx:1' } });
    const lines = r.stderr.split('\n');
    expect(lines[0]).toMatch(/^warning: stack\.yaml: services\.web\.networks/);
    expect(lines.slice(1)).toEqual([
      'accepted: web',
      'web: 0/2 running',
      'web: 1/2 running',
      'web: 2/2 running',
      '',
    ]);
  });

  it('deploy --detach returns at once; --json prints {deploys, warnings} only', async () => {
    const file = join(dir, 'stack.yaml');
    const r = await stub.shoal(['deploy', file, '--detach', '--json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { deploys: DeployView[]; warnings: string[] };
    expect(out.deploys.map((d) => d.id)).toEqual(['web']);
    expect(out.warnings).toHaveLength(1);
  });

  it('update sends a partial spec, follows the rollout, and exits 1 when it rolled back', async () => {
    const rolling = (updated: number, status: RolloutView['state'], message?: string) =>
      view('web', 2, 2, {
        version: 2,
        rollout: { state: status, updated, total: 2, version: 2, ...(message ? { reason: message } : {}) },
      });
    stub.script.set('web', [
      rolling(0, 'rolling'), // the GET before the PATCH (--env merges into the current env)
      rolling(0, 'rolling'),
      rolling(1, 'rolling'),
      rolling(1, 'rolled-back', 'replica 1 unhealthy'),
    ]);
    const r = await stub.shoal(['update', 'web', '--image', 'nginx:2', '--env', 'A=1', '--env', 'B=x=y']);
    expect(r.code).toBe(1);
    const patch = stub.last('PATCH', '/v1/deploys/web');
    expect(patch.contentType).toBe('application/json');
    expect(patch.body).toEqual({ spec: { image: 'nginx:2', env: { A: '1', B: 'x=y' } } });
    expect(r.stderr).toMatch(/web: 2\/2 running, updating 1\/2\n/);
    expect(r.stderr).toMatch(/shoal: web: rollout rolled-back: replica 1 unhealthy\n$/);
  });

  it('update --file re-submits the deploy’s service from the file; update with nothing or both kinds is a usage error (exit 2)', async () => {
    const file = join(dir, 'web.yaml');
    writeFileSync(file, 'services:\n  web:\n    image: nginx:3\n');
    stub.script.set('web', [
      view('web', 2, 2, { version: 3, rollout: { state: 'done', updated: 2, total: 2, version: 1 } }),
    ]);
    const r = await stub.shoal(['update', 'web', '--file', file]);
    expect(r.code).toBe(0);
    const post = stub.last('POST', '/v1/deploys');
    expect(post).toMatchObject({ url: '/v1/deploys', contentType: 'application/json' });
    expect(post.body).toMatchObject({ id: 'web', spec: { image: 'nginx:3' } });
    expect(await stub.shoal(['update', 'web'])).toMatchObject({
      code: 2,
      stderr: 'shoal: nothing to update: give --image, --env or --file\n',
    });
    expect((await stub.shoal(['update', 'web', '--file', file, '--image', 'x'])).code).toBe(2);
    expect(await stub.shoal(['update', 'web', '--env', 'NOEQUALS'])).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/^shoal: --env: expected KEY=VALUE/),
    });
  });

  it('rollback posts to /rollback and waits; history prints the versions', async () => {
    stub.script.set('web', [
      view('web', 2, 2, { version: 1, rollout: { state: 'done', updated: 2, total: 2, version: 1 } }),
    ]);
    const r = await stub.shoal(['rollback', 'web']);
    expect(r.code).toBe(0);
    expect(stub.last('POST', '/v1/deploys/web/rollback').url).toBe('/v1/deploys/web/rollback');
    const now = Date.now();
    stub.script.set('web', [
      view('web', 2, 2, {
        version: 2,
        history: [
          { version: 1, at: now - 3_600_000, image: 'nginx:1' },
          { version: 2, at: now - 60_000, image: 'nginx:2', reason: 'update' },
        ],
      }),
    ]);
    const h = await stub.shoal(['history', 'web']);
    expect(h.code).toBe(0);
    const lines = h.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^VERSION\s+AGE\s+IMAGE\s+CHANGE$/);
    expect(lines[1]).toMatch(/^1\s+60m\s+nginx:1\s+-$/);
    expect(lines[2]).toMatch(/^2 \*\s+6\ds\s+nginx:2\s+reason=update$/);
  });

  it('ps shows replica, host tail, status, health, gen/version and age', async () => {
    stub.script.set('web', [view('web', 1, 2, { version: 4 })]);
    const r = await stub.shoal(['ps', 'web']);
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split('\n').slice(1)).toEqual([
      expect.stringMatching(/^web\s+0\s+…abcdefg0\s+running\s+healthy\s+1\/v4\s+9\ds$/),
      expect.stringMatching(/^web\s+1\s+…abcdefg1\s+starting\s+starting\s+1\/v4\s+9\ds$/),
    ]);
  });

  it('ps ends with why replicas are pending (the coordinator’s reasons)', async () => {
    const v = view('web', 1, 2, {
      placed: 1,
      pending: {
        pending: 1,
        reasons: ['abcdefg0: port 80/tcp: in use', 'abcdefg9: memory: need 1.0 GiB, free 0 B'],
        retryAt: 0,
      },
    });
    v.instances[1] = { replica: 1, host: null, gen: null };
    stub.script.set('web', [v]);
    const r = await stub.shoal(['ps', 'web']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[2]).toMatch(/^web\s+1\s+-\s+unplaced\s+-\s+-\s+-$/);
    expect(lines[3]).toBe(
      'web: 1 pending: abcdefg0: port 80/tcp: in use; abcdefg9: memory: need 1.0 GiB, free 0 B',
    );
  });

  it('logs merges the replicas by time, prefixed with the replica; stderr lines go to stderr', async () => {
    const r = await stub.shoal(['logs', 'web', '--tail', '5', '--since', '10m']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('web/0 | r0 line 0\nweb/1 | r1 line 0\n');
    expect(r.stderr).toBe('web/0 | r0 line 1\nweb/1 | r1 line 1\n');
    const get = stub.last('GET', '/v1/workloads/web.1/logs');
    const q = new URL(`http://x${get.url}`).searchParams;
    expect(q.get('tail')).toBe('5');
    expect(q.get('follow')).toBeNull();
    expect(Math.abs(Date.now() - 600_000 - Number(q.get('since')))).toBeLessThan(60_000);
    const one = await stub.shoal(['logs', 'web/1', '--json']);
    expect(
      one.stdout
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l).line),
    ).toEqual(['r1 line 0', 'r1 line 1']);
    expect(await stub.shoal(['logs', 'web/7'])).toMatchObject({
      code: 1,
      stderr: 'shoal: web/7: no such replica (replicas: 0, 1)\n',
    });
    expect((await stub.shoal(['logs', 'Web!'])).code).toBe(2);
  });

  it('logs -f streams until Ctrl-C, then exits 0 and closes the stream', async () => {
    const before = stub.logClosed;
    const child = spawn(
      process.execPath,
      [SHOAL, 'logs', '-f', 'web/0', '--addr', stub.addr, '--token', TOKEN],
      {
        env: cleanEnv(),
      },
    );
    let out = '';
    child.stdout.on('data', (b) => {
      out += String(b);
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const deadline = Date.now() + 60_000;
    while (!/r0 tick\n.*r0 tick\n/s.test(out) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(out).toMatch(/^r0 line 0\n(r0 tick\n)+/);
    const closeBy = Date.now() + 5_000;
    while (stub.logClosed === before && Date.now() < closeBy) await new Promise((r) => setTimeout(r, 20));
    expect(stub.logClosed).toBe(before + 1);
  });

  it('exec sends the argv after -- and exits with the command’s exit code', async () => {
    const r = await stub.shoal(['exec', 'web/1', '--timeout', '5', '--', 'sh', '-c', 'echo hi; exit 3']);
    expect(r).toMatchObject({ code: 3, stdout: 'out line\n', stderr: 'err line\n' });
    const post = stub.last('POST', '/v1/workloads/web.1/exec');
    expect(post.body).toEqual({ command: ['sh', '-c', 'echo hi; exit 3'], timeoutMs: 5000 });
    expect(await stub.shoal(['exec', 'web'])).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/give the command after --/),
    });
  });

  it('run --image posts a one-off job intent, streams its logs and exits with the job’s exit code', async () => {
    const r = await stub.shoal(['run', '--image', 'registry.local/tools/busybox:1.36', '--', 'echo', 'hi']);
    expect(r.code).toBe(7);
    const post = stub.last('POST', '/v1/jobs');
    expect(post.contentType).toBe('application/json');
    expect(post.url).toBe('/v1/jobs');
    const body = post.body as { name: string; spec: Record<string, unknown> };
    expect(body.name).toMatch(/^busybox-[0-9a-f]{6}$/);
    expect(body.spec).toMatchObject({ image: 'registry.local/tools/busybox:1.36', args: ['echo', 'hi'] });
    expect(body.spec.job).toBeDefined();
    expect(r.stdout).toMatch(/^r0 line 0\n(r0 tick\n)*$/);
    expect(r.stderr).toMatch(/^job job1 accepted\n/);
    expect(r.stderr).toMatch(/shoal: job job1 failed \(exit code 7, attempts 2\)\n$/);
    expect(stub.seen.filter((s) => s.url.startsWith('/v1/jobs/job1/wait?timeoutMs=')).length).toBe(2);
    expect((await stub.shoal(['run', '--image', 'busybox', 'echo'])).code).toBe(2);
    expect((await stub.shoal(['run'])).code).toBe(2);
  });

  it('drain resolves a node by a unique part of its id, posts {drain:true}, waits until it is empty', async () => {
    stub.drainWorkloads = 2;
    const r = await stub.shoal(['drain', 'nodeAAAA']);
    expect(r.code).toBe(0);
    const post = stub.last('POST', '/v1/nodes/');
    expect(post).toMatchObject({ url: '/v1/nodes/12D3KooWnodeAAAAbbbb/drain', body: { drain: true } });
    expect(r.stderr.split('\n')).toEqual([
      '…AAAAbbbb: draining, 2 workloads left',
      '…AAAAbbbb: draining, 1 workload left',
      '…AAAAbbbb: draining, 0 workloads left',
      '12D3KooWnodeAAAAbbbb: drained',
      '',
    ]);
    const undo = await stub.shoal(['drain', '12D3KooWnodeAAAAbbbb', '--undo']);
    expect(undo.code).toBe(0);
    expect(stub.last('POST', '/v1/nodes/').body).toEqual({ drain: false });
    expect(await stub.shoal(['drain', '12D3KooW'])).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/matches 2 members/),
    });
  });

  it('a stub without the token answers 401 and the CLI says to pass --token', async () => {
    const r = await new Promise<Run>((done) =>
      execFile(
        process.execPath,
        [SHOAL, 'ps', '--addr', stub.addr, '--data-dir', dir],
        { env: cleanEnv() },
        (err, stdout, stderr) => done({ code: err ? (err.code as number) : 0, stdout, stderr }),
      ),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/wants a token: pass --token or set SHOAL_TOKEN/);
  });
});
