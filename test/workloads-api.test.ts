import '../gossip/polyfill.ts';
import { request as httpRequest } from 'node:http';
import { generateKeyPair } from '@libp2p/crypto/keys';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostRecord, WorkloadRecord } from '../crdt/types.ts';
import { type Engine, EngineError, type LogLine, type LogOptions } from '../engines/engine.ts';
import { Libp2pTransport } from '../gossip/libp2p.ts';
import { StreamProtocol } from '../gossip/streams.ts';
import type { MemberStatus } from '../node/core/membership.ts';
import { ForwardError, Forwarder } from '../node/forward.ts';
import {
  readExecBody,
  readLogQuery,
  registerWorkloadRoutes,
  type WorkloadView,
} from '../node/workloads-api.ts';

/**
 * The workload routes and forwarding between two agents' worth of real parts: libp2p transports
 * on loopback, the stream protocol, a Forwarder per agent, the public routes on a listening
 * fastify — only the engine is a scripted stand-in (the real engines are exercised by
 * test/integration-logs.test.ts against dockerd).
 */

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** An engine with scripted logs/exec for workloads `ids`; records follows and their aborts. */
function scriptedEngine(hostId: string, ids: string[]) {
  const seen = { follows: 0, followsEnded: 0, logOpts: [] as LogOptions[] };
  const engine = {
    hostId,
    async inspect(id: string) {
      if (!ids.includes(id)) throw new EngineError('not-found', `no workload ${id}`, { id });
      return { id };
    },
    logs(id: string, opts: LogOptions = {}): AsyncIterable<LogLine> {
      seen.logOpts.push({ ...opts, signal: undefined });
      return (async function* () {
        const quiet = id.startsWith('quiet');
        for (let i = 0; i < 3 && !quiet; i++)
          yield { stream: 'stdout' as const, line: `${id} line ${i}`, ts: 1000 + i };
        if (!opts.follow) return;
        seen.follows++;
        try {
          for (let i = 3; !opts.signal?.aborted; i++) {
            await sleep(30);
            if (quiet) continue;
            yield {
              stream: i % 2 ? ('stderr' as const) : ('stdout' as const),
              line: `${id} line ${i}`,
              ts: 1000 + i,
            };
          }
        } finally {
          seen.followsEnded++;
        }
      })();
    },
    async exec(id: string, cmd: string[]) {
      if (!ids.includes(id)) throw new EngineError('not-found', `no workload ${id}`, { id });
      if (cmd[0] === 'stopped') throw new EngineError('not-running', `${id} is not running`, { id });
      return {
        exitCode: cmd[0] === 'fail' ? 3 : 0,
        stdout: `${hostId.slice(-4)}:${cmd.join(' ')}\n`,
        stderr: '',
      };
    },
  };
  return { engine: engine as unknown as Engine, seen };
}

function record(host: string, ws: Partial<WorkloadRecord>[]): HostRecord {
  return {
    id: host,
    version: 1,
    deleted: false,
    addrs: [],
    capacity: {} as HostRecord['capacity'],
    allocated: {} as HostRecord['allocated'],
    draining: false,
    updatedAt: 0,
    workloads: ws.map((w) => ({
      id: `${w.deployId}.${w.replica}`,
      deployId: 'web',
      replica: 0,
      gen: 1,
      resources: {} as WorkloadRecord['resources'],
      status: 'running',
      engine: 'process',
      startedAt: 5,
      exitCode: null,
      health: null,
      ...w,
    })) as WorkloadRecord[],
  };
}

interface Agent {
  t: Libp2pTransport;
  forwarder: Forwarder;
  app: FastifyInstance;
  url: string;
  seen: ReturnType<typeof scriptedEngine>['seen'];
}

describe('workload routes and forwarding', () => {
  const status = new Map<string, MemberStatus>();
  let hosts: HostRecord[] = [];
  const agents: Agent[] = [];
  let A: Agent;
  let B: Agent;

  async function agent(workloads: string[]): Promise<Agent> {
    const t = await Libp2pTransport.create({
      privateKey: await generateKeyPair('Ed25519'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      dialTimeoutMs: 1_500,
    });
    await t.start({ onMessage() {}, onTopic() {}, onRequest: (_f, d) => d });
    const memberStatus = (id: string) => status.get(id);
    const streams = new StreamProtocol(t.libp2p, {
      dialTimeoutMs: 1_500,
      accept: (peer) => (status.get(peer) === 'alive' ? true : `${peer} is not a live member`),
    });
    const forwarder = new Forwarder({ self: t.id, streams, memberStatus });
    const { engine, seen } = scriptedEngine(t.id, workloads);
    const deps = { self: t.id, hosts: () => hosts, memberStatus, engine, forwarder };
    registerWorkloadRoutes(forwarder.local, deps, { local: true });
    await forwarder.start();
    const app = Fastify();
    registerWorkloadRoutes(app, deps);
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    status.set(t.id, 'alive');
    const a = { t, forwarder, app, url, seen };
    agents.push(a);
    return a;
  }

  beforeAll(async () => {
    A = await agent(['api.0']);
    B = await agent(['web.0', 'web.1', 'quiet.0']);
    for (const x of agents) for (const y of agents) if (x !== y) x.t.addPeer(y.t.id, y.t.addrs());
    hosts = [
      record(A.t.id, [{ deployId: 'api', replica: 0 }]),
      record(B.t.id, [
        { deployId: 'web', replica: 0 },
        { deployId: 'web', replica: 1, status: 'exited', exitCode: 0 },
        { deployId: 'quiet', replica: 0 },
      ]),
    ];
  });

  afterAll(async () => {
    for (const a of agents) {
      await a.app.close();
      await a.forwarder.stop();
      await a.t.stop();
    }
  });

  const get = async (a: Agent, path: string) => {
    const res = await fetch(`${a.url}${path}`);
    return { status: res.status, headers: res.headers, text: await res.text() };
  };
  const post = async (a: Agent, path: string, body: unknown) => {
    const res = await fetch(`${a.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, unknown> };
  };

  it('lists every replica from the host records, filtered by deploy and host', async () => {
    const all = JSON.parse((await get(A, '/v1/workloads')).text) as WorkloadView[];
    expect(all.map((w) => `${w.id}@${w.host === A.t.id ? 'A' : 'B'}`)).toEqual([
      'api.0@A',
      'quiet.0@B',
      'web.0@B',
      'web.1@B',
    ]);
    expect(all.every((w) => w.current && w.hostStatus === 'alive')).toBe(true);
    expect(all.find((w) => w.id === 'web.1')).toMatchObject({
      status: 'exited',
      exitCode: 0,
      gen: 1,
      replica: 1,
    });
    const web = JSON.parse((await get(A, '/v1/workloads?deploy=web')).text) as WorkloadView[];
    expect(web.map((w) => w.id)).toEqual(['web.0', 'web.1']);
    const onA = JSON.parse((await get(B, `/v1/workloads?host=${A.t.id}`)).text) as WorkloadView[];
    expect(onA.map((w) => w.id)).toEqual(['api.0']);
    const bad = await get(A, '/v1/workloads?deploi=web');
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('deploi');
    expect((await get(A, '/v1/workloads/web.0')).text).toContain(B.t.id);
    expect((await get(A, '/v1/workloads/nope.0')).status).toBe(404);
  });

  it('a stale claim is listed but not current; the newest generation answers', async () => {
    const saved = hosts;
    hosts = [
      record(A.t.id, [{ deployId: 'web', replica: 0, gen: 1, status: 'stopping' }]),
      record(B.t.id, [{ deployId: 'web', replica: 0, gen: 2 }]),
    ];
    try {
      const all = JSON.parse((await get(A, '/v1/workloads')).text) as WorkloadView[];
      expect(all.sort((x, y) => x.gen - y.gen).map((w) => [w.gen, w.current])).toEqual([
        [1, false],
        [2, true],
      ]);
      expect(JSON.parse((await get(A, '/v1/workloads/web.0')).text)).toMatchObject({ host: B.t.id, gen: 2 });
    } finally {
      hosts = saved;
    }
  });

  it('logs of a workload on another agent are forwarded and streamed as NDJSON', async () => {
    const res = await get(A, '/v1/workloads/web.1/logs?tail=10&since=5');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    expect(res.headers.get('x-shoal-served-by')).toBe(B.t.id);
    const lines = res.text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toEqual(
      [0, 1, 2].map((i) => ({ stream: 'stdout', line: `web.1 line ${i}`, ts: 1000 + i })),
    );
    expect(B.seen.logOpts.at(-1)).toMatchObject({ follow: false, tail: 10, since: 5 });
    // Local workload: no forwarding.
    const local = await get(A, '/v1/workloads/api.0/logs');
    expect(local.headers.get('x-shoal-served-by')).toBeNull();
    expect(local.text).toContain('api.0 line 2');
    const bad = await get(A, '/v1/workloads/web.1/logs?tail=x');
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('tail');
  });

  it('follow: lines arrive while it runs; the client disconnecting stops the remote follow', async () => {
    const before = B.seen.followsEnded;
    const got: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(`${A.url}/v1/workloads/web.0/logs?follow=1`, (res) => {
        let buf = '';
        res.on('data', (chunk: Buffer) => {
          buf += chunk.toString();
          const parts = buf.split('\n');
          buf = parts.pop() ?? '';
          got.push(...parts);
          if (got.length >= 8) {
            req.destroy();
            resolve();
          }
        });
        res.on('error', () => {});
      });
      req.on('error', (err) => {
        if (got.length < 8) reject(err);
      });
      req.end();
    });
    expect(JSON.parse(got[7]!)).toMatchObject({ line: 'web.0 line 7' });
    expect(B.seen.follows).toBeGreaterThan(0);
    for (let i = 0; i < 200 && B.seen.followsEnded === before; i++) await sleep(20);
    expect(B.seen.followsEnded).toBe(before + 1);
  });

  it('a quiet follow answers its head at once (no line yet), through forwarding too', async () => {
    const before = B.seen.followsEnded;
    const ctrl = new AbortController();
    const t0 = Date.now();
    // The forward head budget is 10 s; without an early head this would wait for it (504).
    const res = await fetch(`${A.url}/v1/workloads/quiet.0/logs?follow=1`, { signal: ctrl.signal });
    expect(res.status).toBe(200);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    ctrl.abort();
    for (let i = 0; i < 200 && B.seen.followsEnded === before; i++) await sleep(20);
    expect(B.seen.followsEnded).toBe(before + 1);
  });

  it('closing an API ends its open follows (local and forwarded) instead of waiting for clients', async () => {
    for (const target of ['api.0', 'quiet.0']) {
      const app = Fastify();
      registerWorkloadRoutes(app, {
        self: A.t.id,
        hosts: () => hosts,
        memberStatus: (id) => status.get(id),
        engine: scriptedEngine(A.t.id, ['api.0']).engine,
        forwarder: A.forwarder,
      });
      const url = await app.listen({ host: '127.0.0.1', port: 0 });
      const res = await fetch(`${url}/v1/workloads/${target}/logs?follow=1`);
      expect(res.status).toBe(200);
      const body = res.text();
      const t0 = Date.now();
      await app.close();
      expect(Date.now() - t0).toBeLessThan(3_000);
      await body; // the client sees the stream end
    }
  });

  it('exec is forwarded to the host; errors keep their status; the body is validated', async () => {
    const ok = await post(A, '/v1/workloads/web.0/exec', { command: ['echo', 'hi'] });
    expect(ok.status).toBe(200);
    expect(ok.json).toEqual({ exitCode: 0, stdout: `${B.t.id.slice(-4)}:echo hi\n`, stderr: '' });
    expect((await post(A, '/v1/workloads/web.0/exec', { command: ['fail'] })).json.exitCode).toBe(3);
    const stopped = await post(A, '/v1/workloads/web.0/exec', { command: ['stopped'] });
    expect(stopped.status).toBe(409);
    expect(stopped.json.message).toContain('not running');
    const bad = await post(A, '/v1/workloads/web.0/exec', { command: 'ls' });
    expect(bad.status).toBe(400);
    expect(bad.json.message).toMatch(/^command:/);
    expect(readExecBody({ command: ['a', 1] })).toBe('command[1]: expected a string');
    expect(readExecBody({ command: ['a'], timeoutMs: 0 })).toMatch(/^timeoutMs:/);
    expect(readLogQuery({ follow: 'yes' })).toMatch(/^follow:/);
  });

  it('only routes registered on Forwarder.local are reachable by a forwarded call', async () => {
    const r = await A.forwarder.json<{ message: string }>(B.t.id, { method: 'GET', path: '/v1/workloads' });
    expect(r.status).toBe(404);
    expect(r.body.message).toContain('not a forwardable route');
    // The target serves its own engine only: a workload it does not run is 404, never re-forwarded.
    const r2 = await A.forwarder.json<{ message: string }>(B.t.id, {
      method: 'GET',
      path: '/v1/workloads/api.0/logs',
    });
    expect(r2.status).toBe(404);
    // forwardTo self runs locally.
    const self = await A.forwarder.json<{ stdout: string }>(A.t.id, {
      method: 'POST',
      path: '/v1/workloads/api.0/exec',
      body: { command: ['x'] },
    });
    expect(self.body.stdout).toContain('x');
    await expect(A.forwarder.forwardTo(B.t.id, { method: 'GET', path: '/etc/passwd' })).rejects.toThrow(
      /path/,
    );
  });

  it('a dead host, a non-member caller and an unreachable host: 502 naming the host', async () => {
    status.set(B.t.id, 'dead');
    try {
      const dead = await get(A, '/v1/workloads/web.0/logs');
      expect(dead.status).toBe(502);
      expect(JSON.parse(dead.text)).toMatchObject({ error: 'node-down', node: B.t.id });
      expect(dead.text).toContain(`${B.t.id} is dead`);
    } finally {
      status.set(B.t.id, 'alive');
    }
    // A (the target) does not count B (the caller) as a live member: refused.
    status.set(B.t.id, 'suspect');
    try {
      const refused = await post(B, '/v1/workloads/api.0/exec', { command: ['x'] });
      expect(refused.status).toBe(502);
      expect(refused.json).toMatchObject({ error: 'refused', node: A.t.id });
      expect(refused.json.message).toContain(`${B.t.id} is not a live member`);
    } finally {
      status.set(B.t.id, 'alive');
    }
    // A third agent that vanished while still listed alive.
    const C = await agent(['job.0']);
    A.t.addPeer(C.t.id, C.t.addrs());
    hosts = [...hosts, record(C.t.id, [{ deployId: 'job', replica: 0 }])];
    await C.app.close();
    await C.forwarder.stop();
    await C.t.stop();
    agents.pop();
    const t0 = Date.now();
    const gone = await get(A, '/v1/workloads/job.0/logs');
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect([502, 504]).toContain(gone.status);
    expect(JSON.parse(gone.text)).toMatchObject({ node: C.t.id });
    expect(gone.text).toContain(C.t.id);
    const err = await A.forwarder
      .forwardTo(C.t.id, { method: 'GET', path: '/v1/x' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ForwardError);
  });
});
