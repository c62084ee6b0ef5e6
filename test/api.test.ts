import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiBackend, NodeInfo, SelfPatch } from '../node/api.ts';
import { buildApi, parseHostPort, readSelfPatch } from '../node/api.ts';
import { patchHost } from '../node/backend.ts';
import type { HostFacts } from '../node/host.ts';
import type { MetricsSnapshot } from '../node/metrics.ts';
import { createAgentMetrics } from '../node/metrics.ts';
import { type RunningAgent, startAgent } from '../node/run.ts';

/** An in-memory ApiBackend for API and CLI tests: two members, a patchable self, fixed metrics. */
class FakeBackend implements ApiBackend {
  readonly patches: SelfPatch[] = [];
  host: HostFacts = {
    cores: 4,
    cpuMilli: 4000,
    memoryBytes: 8 * 2 ** 30,
    diskBytes: 100 * 2 ** 30,
    gpus: [],
    labels: { zone: 'a' },
  };
  metricsReads = 0;

  id(): string {
    return 'node-self';
  }

  nodes(): NodeInfo[] {
    return [
      {
        id: 'node-self',
        status: 'alive',
        incarnation: 3,
        addrs: ['/ip4/127.0.0.1/tcp/4701/p2p/node-self'],
        capacity: {
          cpuMilli: this.host.cpuMilli,
          cores: this.host.cores,
          memory: this.host.memoryBytes,
          disk: this.host.diskBytes,
          gpus: this.host.gpus.map((g) => ({ index: g.index, model: g.model, memory: g.memoryBytes })),
          labels: this.host.labels,
        },
        allocated: { cpuMilli: 1500, cores: [], memory: 2 ** 30, disk: 0, gpus: [] },
        labels: this.host.labels,
        statusAgeMs: 12_000,
        self: true,
      },
      {
        id: 'node-peer',
        status: 'suspect',
        incarnation: 1,
        addrs: [],
        capacity: null,
        allocated: null,
        labels: {},
        statusAgeMs: 300_000,
        self: false,
      },
    ];
  }

  patchSelf(patch: SelfPatch): NodeInfo {
    this.patches.push(patch);
    this.host = patchHost(this.host, patch);
    return this.nodes()[0]!;
  }

  state(): Record<string, unknown> & { hash: string } {
    return { hash: 'ab'.repeat(32), hosts: { entries: 2, live: 1 } };
  }

  health(): Record<string, unknown> {
    return { status: 'ok', incarnation: 3 };
  }

  metrics(): MetricsSnapshot {
    this.metricsReads++;
    return {
      id: 'node-self',
      incarnation: 3,
      uptimeSeconds: 42.5,
      members: { alive: 1, suspect: 1, dead: 0, left: 0 },
      hosts: { known: 2, live: 1 },
      sync: {
        published: 5,
        exchanges: 7,
        exchangesEqual: 4,
        bucketsDiffering: 3,
        tombstonesCollected: 6,
        exchangeFailures: 1,
        applied: 9,
        rejected: 2,
      },
      agent: { badMessages: 6, persistErrors: 0 },
      capacity: {
        cpuMilli: this.host.cpuMilli,
        cores: this.host.cores,
        memoryBytes: this.host.memoryBytes,
        diskBytes: this.host.diskBytes,
        gpus: this.host.gpus.length,
      },
      allocated: { cpuMilli: 1500, memoryBytes: 2 ** 30, diskBytes: 0 },
    };
  }
}

/**
 * Parse Prometheus text exposition into sample name{labels} → value, checking every line's shape.
 * (prom-client prints NaN as "Nan"; Prometheus parses floats case-insensitively.)
 */
function parseExposition(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (-?[0-9.e+-]+|NaN|[+-]Inf)$/i.exec(line);
    if (!m) throw new Error(`not an exposition line: ${JSON.stringify(line)}`);
    samples.set(m[1]!, Number(m[2]));
  }
  return samples;
}

describe('HTTP API (fake backend)', () => {
  const backend = new FakeBackend();
  const app = buildApi(backend);
  afterAll(() => app.close());

  it('GET /v1/health answers ok with the agent id', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/health' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ ok: true, id: 'node-self', status: 'ok', incarnation: 3 });
  });

  it('GET /v1/nodes lists members with the contract fields', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/nodes' });
    expect(res.statusCode).toBe(200);
    const nodes = res.json() as NodeInfo[];
    expect(nodes.map((n) => n.id)).toEqual(['node-self', 'node-peer']);
    for (const n of nodes) {
      for (const k of ['id', 'status', 'addrs', 'capacity', 'allocated', 'labels'])
        expect(n).toHaveProperty(k);
    }
    expect(nodes[0]).toMatchObject({ self: true, status: 'alive', labels: { zone: 'a' } });
  });

  it('GET /v1/nodes/:id answers one member, or 404 naming the id', async () => {
    const ok = await app.inject({ method: 'GET', url: '/v1/nodes/node-peer' });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({ id: 'node-peer', status: 'suspect' });
    const missing = await app.inject({ method: 'GET', url: '/v1/nodes/nobody' });
    expect(missing.statusCode).toBe(404);
    expect(missing.headers['content-type']).toMatch(/application\/json/);
    expect(missing.json()).toEqual({ error: 'not-found', message: 'no node nobody' });
  });

  it('GET /v1/state answers the summary with its hash', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/state' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ hash: 'ab'.repeat(32) });
  });

  it('unknown routes answer JSON 404 naming method and path', async () => {
    const res = await app.inject({ method: 'DELETE', url: '/v1/nope?x=1' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ error: 'not-found', message: 'no route DELETE /v1/nope?x=1' });
  });

  it('PATCH /v1/node applies labels (replacing the set) and capacity', async () => {
    const res = await app.inject({
      method: 'PATCH',
      url: '/v1/node',
      payload: { labels: { zone: 'b', disk: 'ssd' }, cpu: 2.5, memory: '16GiB', gpu: '2xA100:80GiB' },
    });
    expect(res.statusCode).toBe(200);
    expect(backend.patches.at(-1)).toEqual({
      labels: { zone: 'b', disk: 'ssd' },
      cpu: '2.5',
      memory: '16GiB',
      gpu: '2xA100:80GiB',
    });
    const n = res.json() as NodeInfo;
    expect(n.labels).toEqual({ zone: 'b', disk: 'ssd' });
    expect(n.capacity).toMatchObject({ cpuMilli: 2500, cores: 2, memory: 16 * 2 ** 30 });
    expect(backend.host.gpus).toHaveLength(2);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['an array body', [1], /^body: expected a JSON object/],
    ['an unknown field', { zone: 'a' }, /^zone: unknown field/],
    ['labels not an object', { labels: 'zone=a' }, /^labels: expected an object/],
    ['labels as an array', { labels: ['zone=a'] }, /^labels: expected an object/],
    ['a label value not a string', { labels: { zone: 3 } }, /^labels\.zone: expected a string, got number/],
    ['a bad label key', { labels: { 'bad key': 'x' } }, /^labels\.bad key: /],
    ['a label key containing =', { labels: { 'a=b': 'c' } }, /^labels\.a=b: /],
    ['bad memory', { memory: '8 potatoes' }, /^memory: cannot read "8 potatoes" as a size/],
    ['memory of the wrong type', { memory: true }, /^memory: expected a string/],
    ['bad cpu', { cpu: 'lots' }, /^cpu: "lots" is not a core count/],
    ['negative cpu', { cpu: -1 }, /^cpu: /],
    ['bad disk', { disk: '1XB' }, /^disk: /],
    ['bad gpu', { gpu: '0xA100' }, /^gpu: /],
  ];
  it.each(bad)('PATCH /v1/node rejects %s with 400 naming the field', async (_name, payload, message) => {
    const before = backend.patches.length;
    const hostBefore = backend.host;
    const res = await app.inject({ method: 'PATCH', url: '/v1/node', payload: payload as object });
    expect(res.statusCode).toBe(400);
    const body = res.json() as { error: string; message: string };
    expect(body.error).toBe('bad-request');
    expect(body.message).toMatch(message);
    // Rejected before or by validation: the host facts are untouched.
    expect(backend.host).toBe(hostBefore);
    expect(backend.patches.length - before).toBeLessThanOrEqual(1);
  });

  it('PATCH /v1/node with malformed JSON answers 400, not 500', async () => {
    const res = await app.inject({
      method: 'PATCH',
      url: '/v1/node',
      headers: { 'content-type': 'application/json' },
      payload: '{"labels":',
    });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ error: 'bad-request' });
  });

  it('PATCH /v1/node: an unexpected backend failure is a 500, not blamed on the caller', async () => {
    const broken = new FakeBackend();
    broken.patchSelf = () => {
      throw new Error('disk on fire');
    };
    const a = buildApi(broken);
    const res = await a.inject({ method: 'PATCH', url: '/v1/node', payload: { cpu: '2' } });
    expect(res.statusCode).toBe(500);
    expect(res.json()).toMatchObject({ error: 'internal' });
    await a.close();
  });

  it('GET /metrics serves the Prometheus text format with shoal_* metrics and process metrics', async () => {
    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = res.body;
    const s = parseExposition(text);
    expect(s.get('shoal_members{status="alive"}')).toBe(1);
    expect(s.get('shoal_members{status="suspect"}')).toBe(1);
    expect(s.get('shoal_members{status="dead"}')).toBe(0);
    expect(s.get('shoal_members{status="left"}')).toBe(0);
    expect(s.get('shoal_agent_info{id="node-self"}')).toBe(1);
    expect(s.get('shoal_incarnation')).toBe(3);
    expect(s.get('shoal_uptime_seconds')).toBe(42.5);
    expect(s.get('shoal_hosts_known')).toBe(2);
    expect(s.get('shoal_hosts_live')).toBe(1);
    expect(s.get('shoal_state_published_total')).toBe(5);
    expect(s.get('shoal_state_exchanges_total')).toBe(7);
    expect(s.get('shoal_state_exchanges_equal_total')).toBe(4);
    expect(s.get('shoal_state_digest_buckets_differing_total')).toBe(3);
    expect(s.get('shoal_state_tombstones_collected_total')).toBe(6);
    expect(s.get('shoal_state_exchange_failures_total')).toBe(1);
    expect(s.get('shoal_state_applied_total')).toBe(9);
    expect(s.get('shoal_state_rejected_total')).toBe(2);
    expect(s.get('shoal_bad_messages_total')).toBe(6);
    expect(s.get('shoal_persist_errors_total')).toBe(0);
    expect(s.get('shoal_host_cpu_millicores')).toBe(backend.host.cpuMilli);
    expect(s.get('shoal_host_memory_bytes')).toBe(backend.host.memoryBytes);
    expect(s.get('shoal_host_disk_bytes')).toBe(backend.host.diskBytes);
    expect(s.get('shoal_host_gpus')).toBe(backend.host.gpus.length);
    expect(s.get('shoal_host_allocated_cpu_millicores')).toBe(1500);
    // prom-client default process metrics.
    expect(s.get('process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(s.has('process_cpu_seconds_total')).toBe(true);
    expect(s.has('nodejs_eventloop_lag_seconds')).toBe(true);
    // Every shoal_* metric has HELP and TYPE lines.
    const names = new Set(
      [...s.keys()].filter((k) => k.startsWith('shoal_')).map((k) => k.replace(/\{.*$/, '')),
    );
    expect(names.size).toBeGreaterThanOrEqual(20);
    for (const name of names) {
      expect(text).toMatch(new RegExp(`^# HELP ${name} \\S`, 'm'));
      expect(text).toMatch(new RegExp(`^# TYPE ${name} (gauge|counter)$`, 'm'));
    }
    expect(text).toMatch(/^# TYPE shoal_state_published_total counter$/m);
  });

  it('GET /metrics reads the backend once per scrape and reflects changes at the next scrape', async () => {
    const b = new FakeBackend();
    const a = buildApi(b);
    await a.inject({ method: 'GET', url: '/metrics' });
    expect(b.metricsReads).toBe(1);
    b.host = { ...b.host, cpuMilli: 1234 };
    const s = parseExposition((await a.inject({ method: 'GET', url: '/metrics' })).body);
    expect(b.metricsReads).toBe(2);
    expect(s.get('shoal_host_cpu_millicores')).toBe(1234);
    await a.close();
  });

  it('agents in one process keep separate metric registries', async () => {
    const a = createAgentMetrics(() => ({ ...new FakeBackend().metrics(), id: 'one', incarnation: 1 }));
    const b = createAgentMetrics(() => ({ ...new FakeBackend().metrics(), id: 'two', incarnation: 2 }), {
      processMetrics: false,
    });
    const sa = parseExposition(await a.render());
    const sb = parseExposition(await b.render());
    expect(sa.get('shoal_incarnation')).toBe(1);
    expect(sb.get('shoal_incarnation')).toBe(2);
    expect(sb.has('shoal_agent_info{id="one"}')).toBe(false);
    expect(sb.has('process_cpu_seconds_total')).toBe(false);
    expect(sa.has('process_cpu_seconds_total')).toBe(true);
  });
});

describe('readSelfPatch', () => {
  it('passes numbers through as strings and keeps only given fields', () => {
    expect(readSelfPatch({ cpu: 4, memory: 1024 })).toEqual({ cpu: '4', memory: '1024' });
    expect(readSelfPatch({})).toEqual({});
    expect(readSelfPatch(null)).toMatch(/^body: /);
  });
});

describe('parseHostPort', () => {
  it('reads host:port, [v6]:port and :port', () => {
    expect(parseHostPort('0.0.0.0:4700')).toEqual({ host: '0.0.0.0', port: 4700 });
    expect(parseHostPort('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(parseHostPort(':0')).toEqual({ host: '127.0.0.1', port: 0 });
  });
  it('names the field on bad input', () => {
    expect(() => parseHostPort('localhost', '--api')).toThrow(/^--api: expected host:port/);
    expect(() => parseHostPort('h:70000', '--addr')).toThrow(/^--addr: /);
  });
});

describe('a real agent in-process', () => {
  let dir: string;
  let running: RunningAgent;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shoal-api-'));
    running = await startAgent({
      dataDir: join(dir, 'agent'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      api: '127.0.0.1:0',
      join: [],
      label: ['zone=test'],
      cpu: '2',
      memory: '4GiB',
      logLevel: 'warn',
    });
  });

  afterAll(async () => {
    await running?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves health, nodes (itself, alive, with capacity) and metrics', async () => {
    const health = (await (await fetch(`${running.apiUrl}/v1/health`)).json()) as { ok: boolean; id: string };
    expect(health.ok).toBe(true);
    expect(health.id).toBe(running.agent.id);

    // Protected routes want the agent's token, which it made in its data dir on first start.
    const denied = await fetch(`${running.apiUrl}/v1/nodes`);
    expect(denied.status).toBe(401);
    expect(readFileSync(join(dir, 'agent', 'token'), 'utf8').trim()).toBe(running.token);
    const auth = { headers: { authorization: `Bearer ${running.token}` } };
    const nodes = (await (await fetch(`${running.apiUrl}/v1/nodes`, auth)).json()) as NodeInfo[];
    expect(nodes).toHaveLength(1);
    const self = nodes[0]!;
    expect(self).toMatchObject({
      id: running.agent.id,
      self: true,
      status: 'alive',
      labels: { zone: 'test' },
    });
    expect(self.capacity).toMatchObject({ cpuMilli: 2000, cores: 2, memory: 4 * 2 ** 30 });
    expect(self.addrs.length).toBeGreaterThan(0);

    const res = await fetch(`${running.apiUrl}/metrics`);
    expect(res.status).toBe(200);
    const s = parseExposition(await res.text());
    expect(s.get('shoal_members{status="alive"}')).toBe(1);
    expect(s.get(`shoal_agent_info{id="${running.agent.id}"}`)).toBe(1);
    expect(s.get('shoal_incarnation')).toBe(running.agent.membership.incarnation);
    expect(s.get('shoal_host_cpu_millicores')).toBe(2000);
    expect(s.get('shoal_host_memory_bytes')).toBe(4 * 2 ** 30);
    expect(s.get('shoal_hosts_live')).toBe(1);
    expect(s.get('shoal_state_published_total')).toBeGreaterThanOrEqual(0);
    expect(s.get('shoal_uptime_seconds')).toBeGreaterThanOrEqual(0);
    // The real agent also exports placement and reconcile-loop counters.
    expect(s.get('shoal_placement_rounds_total')).toBe(0);
    expect(s.get('shoal_host_workloads')).toBe(0);
    expect(s.get('shoal_reconcile_created_total')).toBe(0);
  });
});
