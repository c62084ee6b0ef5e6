/**
 * Health checks: spec parsing, the HealthMonitor state machine on a virtual clock with the sim
 * prober, and real probes — host-mode HTTP/TCP against a ProcessEngine workload, and exec-mode
 * probes inside a busybox container of the private dockerd (scripts/docker-up.sh). Without Docker
 * the Docker part is skipped loudly, unless CI=true, where a missing engine fails the run.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_DOCKER_SOCKET, DockerEngine } from '../engines/docker.ts';
import { ProcessEngine } from '../engines/process.ts';
import {
  type HealthCheck,
  HealthMonitor,
  type HealthStatus,
  type MonitoredWorkload,
  parseHealthcheck,
  SpecFieldError,
  type WorkloadHealth,
} from '../node/core/health.ts';
import { type Logger, nullLogger } from '../node/core/io.ts';
import { RealClock } from '../node/io/clock.ts';
import { EngineProber, hostHttp, hostTcp } from '../node/io/prober.ts';
import { EventLoop, VirtualClock } from '../sim/clock.ts';
import { SimProber } from '../sim/prober.ts';

// --- parsing -------------------------------------------------------------------------------------

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof SpecFieldError) return err.field;
    throw err;
  }
  throw new Error('expected a SpecFieldError');
}

describe('parseHealthcheck', () => {
  it('fills in defaults; absent means no check', () => {
    expect(parseHealthcheck({ image: 'x' })).toBeUndefined();
    expect(parseHealthcheck({ healthcheck: { type: 'http', port: 8080 } })).toEqual({
      type: 'http',
      port: 8080,
      path: '/',
      expectStatus: { min: 200, max: 399 },
      interval: 10_000,
      timeout: 2_000,
      retries: 3,
      startPeriod: 0,
    });
    expect(
      parseHealthcheck({ healthcheck: { type: 'tcp', port: 1, retries: 1, startPeriod: 5000 } }),
    ).toEqual({
      type: 'tcp',
      port: 1,
      interval: 10_000,
      timeout: 2_000,
      retries: 1,
      startPeriod: 5000,
    });
    expect(
      parseHealthcheck({
        healthcheck: { type: 'exec', command: ['pg_isready', '-q'], interval: 500, timeout: 300 },
      }),
    ).toMatchObject({ type: 'exec', command: ['pg_isready', '-q'], interval: 500, timeout: 300 });
    expect(parseHealthcheck({ healthcheck: { type: 'http', port: 80, expectStatus: 204 } })).toMatchObject({
      expectStatus: { min: 204, max: 204 },
    });
    expect(
      parseHealthcheck({
        healthcheck: { type: 'http', port: 80, path: '/healthz?full=1', expectStatus: [200, 299] },
      }),
    ).toMatchObject({ path: '/healthz?full=1', expectStatus: { min: 200, max: 299 } });
  });

  it('errors name the field', () => {
    const hc = (h: unknown) => () => parseHealthcheck({ healthcheck: h });
    expect(fieldOf(() => parseHealthcheck('nope'))).toBe('spec');
    expect(fieldOf(hc('tcp'))).toBe('spec.healthcheck');
    expect(fieldOf(hc({ port: 80 }))).toBe('spec.healthcheck.type');
    expect(fieldOf(hc({ type: 'grpc', port: 80 }))).toBe('spec.healthcheck.type');
    expect(fieldOf(hc({ type: 'tcp' }))).toBe('spec.healthcheck.port');
    expect(fieldOf(hc({ type: 'tcp', port: 70000 }))).toBe('spec.healthcheck.port');
    expect(fieldOf(hc({ type: 'tcp', port: 80, interval: -1 }))).toBe('spec.healthcheck.interval');
    expect(fieldOf(hc({ type: 'tcp', port: 80, interval: 1.5 }))).toBe('spec.healthcheck.interval');
    expect(fieldOf(hc({ type: 'tcp', port: 80, interval: '10s' }))).toBe('spec.healthcheck.interval');
    expect(fieldOf(hc({ type: 'tcp', port: 80, timeout: 0 }))).toBe('spec.healthcheck.timeout');
    expect(fieldOf(hc({ type: 'tcp', port: 80, retries: 0 }))).toBe('spec.healthcheck.retries');
    expect(fieldOf(hc({ type: 'tcp', port: 80, startPeriod: -5 }))).toBe('spec.healthcheck.startPeriod');
    expect(fieldOf(hc({ type: 'tcp', port: 80, intervall: 5 }))).toBe('spec.healthcheck.intervall');
    expect(fieldOf(hc({ type: 'tcp', port: 80, path: '/' }))).toBe('spec.healthcheck.path');
    expect(fieldOf(hc({ type: 'http', port: 80, path: 'health' }))).toBe('spec.healthcheck.path');
    expect(fieldOf(hc({ type: 'http', port: 80, path: '/a b' }))).toBe('spec.healthcheck.path');
    expect(fieldOf(hc({ type: 'http', port: 80, expectStatus: 42 }))).toBe('spec.healthcheck.expectStatus');
    expect(fieldOf(hc({ type: 'http', port: 80, expectStatus: [400, 200] }))).toBe(
      'spec.healthcheck.expectStatus',
    );
    expect(fieldOf(hc({ type: 'http', port: 80, expectStatus: [200, 'x'] }))).toBe(
      'spec.healthcheck.expectStatus[1]',
    );
    expect(fieldOf(hc({ type: 'exec' }))).toBe('spec.healthcheck.command');
    expect(fieldOf(hc({ type: 'exec', command: [] }))).toBe('spec.healthcheck.command');
    expect(fieldOf(hc({ type: 'exec', command: 'pg_isready' }))).toBe('spec.healthcheck.command');
    expect(fieldOf(hc({ type: 'exec', command: ['ok', 3] }))).toBe('spec.healthcheck.command[1]');
    expect(fieldOf(hc({ type: 'exec', command: [''] }))).toBe('spec.healthcheck.command[0]');
    expect(fieldOf(hc({ type: 'exec', command: ['x'], port: 80 }))).toBe('spec.healthcheck.port');
    expect(fieldOf(() => parseHealthcheck({ healthcheck: { type: 'tcp' } }, 'deploys.web.spec'))).toBe(
      'deploys.web.spec.healthcheck.port',
    );
    expect(() => parseHealthcheck({ healthcheck: { type: 'tcp', port: 80, retries: 0 } })).toThrow(
      /^spec\.healthcheck\.retries: expected an integer in 1\.\.1000$/,
    );
  });
});

// --- the state machine on a virtual clock --------------------------------------------------------

interface Rig {
  loop: EventLoop;
  clock: VirtualClock;
  prober: SimProber;
  mon: HealthMonitor;
  events: Array<[id: string, status: HealthStatus, err: string | null, at: number]>;
  /** Loop time (ms since the loop started). */
  t(): number;
}

function rig(): Rig {
  const loop = new EventLoop();
  const clock = new VirtualClock(loop, { epochMs: 0 });
  const prober = new SimProber(clock);
  const mon = new HealthMonitor({ clock, prober, log: nullLogger });
  const events: Rig['events'] = [];
  mon.onChange((id, status, err) => events.push([id, status, err, loop.now]));
  return { loop, clock, prober, mon, events, t: () => loop.now };
}

function tcp(over: Partial<Omit<Extract<HealthCheck, { type: 'tcp' }>, 'type'>> = {}): HealthCheck {
  return parseHealthcheck({
    healthcheck: { type: 'tcp', port: 80, interval: 1000, timeout: 100, retries: 3, ...over },
  })!;
}

function watch(r: Rig, id: string, check: HealthCheck, startedAt = r.clock.now()): MonitoredWorkload {
  const w = { id, check, startedAt };
  r.mon.set([w]);
  return w;
}

describe('HealthMonitor (virtual clock, sim prober)', () => {
  it('starting → healthy on the first success, at once; probes every interval after the last one ended', async () => {
    const r = rig();
    watch(r, 'w', tcp());
    expect(r.mon.status('w')).toMatchObject({
      status: 'starting',
      failures: 0,
      checks: 0,
      lastCheckAt: null,
    });
    expect(r.events).toEqual([]); // the initial `starting` is not a transition
    await r.loop.runUntilAsync(5);
    expect(r.mon.status('w')).toMatchObject({ status: 'healthy', checks: 1, lastCheckAt: 1, since: 1 });
    expect(r.events).toEqual([['w', 'healthy', null, 1]]);
    await r.loop.runUntilAsync(3_500);
    // probe at 0 (done at 1), 1001 (→1002), 2002 (→2003), 3003 (→3004)
    expect(r.prober.calls.map((c) => [c.at, c.settledAt])).toEqual([
      [0, 1],
      [1001, 1002],
      [2002, 2003],
      [3003, 3004],
    ]);
    expect(r.prober.calls.every((c) => c.kind === 'tcp' && c.port === 80 && c.timeoutMs === 100)).toBe(true);
    expect(r.events).toHaveLength(1);
  });

  it('failures inside startPeriod do not count; after it, `retries` consecutive failures → unhealthy', async () => {
    const r = rig();
    r.prober.script('w', 'fail');
    watch(r, 'w', tcp({ startPeriod: 2500, retries: 2 }));
    await r.loop.runUntilAsync(2_600); // probes at 0, 1001, 2002: all in the start period
    expect(r.mon.status('w')).toMatchObject({ status: 'starting', failures: 0, checks: 3 });
    expect(r.mon.status('w')?.lastError).toBe('connection refused');
    await r.loop.runUntilAsync(3_500); // probe at 3003 counts
    expect(r.mon.status('w')).toMatchObject({ status: 'starting', failures: 1 });
    await r.loop.runUntilAsync(4_500); // probe at 4004: second counted failure
    expect(r.mon.status('w')).toMatchObject({ status: 'unhealthy', failures: 2, since: 4005 });
    expect(r.events).toEqual([['w', 'unhealthy', 'connection refused', 4005]]);
  });

  it('a success inside the start period makes it healthy at once; the start period then no longer applies', async () => {
    const r = rig();
    r.prober.script('w', 'fail', 'pass', 'fail', 'fail');
    watch(r, 'w', tcp({ startPeriod: 60_000, retries: 2 }));
    await r.loop.runUntilAsync(1_500);
    expect(r.mon.status('w')?.status).toBe('healthy');
    await r.loop.runUntilAsync(3_500);
    expect(r.mon.status('w')).toMatchObject({ status: 'unhealthy', failures: 2 });
  });

  it('retries then recovery: healthy → unhealthy after exactly `retries` failures → healthy on a success', async () => {
    const r = rig();
    r.prober.script('w', 'pass', { result: 'error', reason: 'ECONNRESET' }, 'fail', 'fail', 'pass');
    watch(r, 'w', tcp({ retries: 3 }));
    await r.loop.runUntilAsync(2_500); // pass, fail, fail
    expect(r.mon.status('w')).toMatchObject({
      status: 'healthy',
      failures: 2,
      lastError: 'connection refused',
    });
    await r.loop.runUntilAsync(3_500); // third failure
    expect(r.mon.status('w')).toMatchObject({ status: 'unhealthy', failures: 3 });
    await r.loop.runUntilAsync(4_500); // pass
    expect(r.mon.status('w')).toMatchObject({ status: 'healthy', failures: 0, lastError: null, checks: 5 });
    expect(r.events).toEqual([
      ['w', 'healthy', null, 1],
      ['w', 'unhealthy', 'connection refused', 3004],
      ['w', 'healthy', null, 4005],
    ]);
  });

  it('a failure resets nothing but a success resets the count (failures must be consecutive)', async () => {
    const r = rig();
    r.prober.script('w', 'fail', 'fail', 'pass', 'fail', 'fail', 'pass');
    watch(r, 'w', tcp({ retries: 3 }));
    await r.loop.runUntilAsync(10_000);
    expect(r.events.map((e) => e[1])).toEqual(['healthy']);
    expect(r.mon.status('w')?.status).toBe('healthy');
  });

  it('http status outside expectStatus and non-zero exec codes are failures with a reason', async () => {
    const r = rig();
    r.prober.script('h', { result: 'code', code: 500 }, { result: 'code', code: 302 });
    r.prober.script('x', { result: 'code', code: 3 });
    const http = parseHealthcheck({
      healthcheck: { type: 'http', port: 8080, path: '/health', interval: 1000, retries: 1 },
    })!;
    const exec = parseHealthcheck({
      healthcheck: { type: 'exec', command: ['check.sh', '-v'], retries: 1 },
    })!;
    r.mon.set([
      { id: 'h', check: http, startedAt: 0 },
      { id: 'x', check: exec, startedAt: 0 },
    ]);
    await r.loop.runUntilAsync(10);
    expect(r.mon.status('h')).toMatchObject({
      status: 'unhealthy',
      lastError: 'HTTP 500 from /health (expected 200..399)',
    });
    expect(r.mon.status('x')).toMatchObject({ status: 'unhealthy', lastError: 'check.sh exited with 3' });
    expect(r.prober.calls.find((c) => c.workloadId === 'x')?.argv).toEqual(['check.sh', '-v']);
    expect(r.prober.calls.find((c) => c.workloadId === 'h')).toMatchObject({
      kind: 'http',
      port: 8080,
      path: '/health',
    });
    await r.loop.runUntilAsync(1_500);
    expect(r.mon.status('h')?.status).toBe('healthy'); // 302 is within 200..399
  });

  it('timeout: a slow probe fails at the timeout; a prober that hangs is cut off by the monitor, never doubled', async () => {
    const r = rig();
    r.prober.script('slow', { result: 'pass', latencyMs: 500 });
    r.prober.script('hung', 'hang');
    r.mon.set([
      { id: 'hung', check: tcp({ timeout: 100, retries: 3 }), startedAt: 0 },
      { id: 'slow', check: tcp({ timeout: 100, retries: 1 }), startedAt: 0 },
    ]);
    await r.loop.runUntilAsync(150);
    expect(r.mon.status('slow')).toMatchObject({ status: 'unhealthy', lastError: 'timed out after 100 ms' });
    expect(r.mon.status('hung')).toMatchObject({ status: 'starting', failures: 1, lastCheckAt: 100 });
    expect(r.mon.status('hung')?.lastError).toBe('timed out after 100 ms');
    await r.loop.runUntilAsync(5_000);
    // The hung call is never settled: no second call is made beside it; each interval counts a failure.
    expect(r.prober.calls.filter((c) => c.workloadId === 'hung')).toHaveLength(1);
    expect(r.prober.inFlight('hung')).toBe(1);
    expect(r.mon.status('hung')).toMatchObject({ status: 'unhealthy', failures: 5 });
    expect(r.mon.status('hung')?.lastError).toMatch(/previous probe still running/);
    expect(r.events.filter((e) => e[0] === 'hung').map((e) => [e[1], e[3]])).toEqual([['unhealthy', 2100]]); // 100 (timeout), 1100, 2100
  });

  it('never overlaps probes of one workload, whatever the latency, interval and timeout', async () => {
    const r = rig();
    r.prober.script('w', { result: 'pass', latencyMs: 900 }, { result: 'error', latencyMs: 50 });
    watch(r, 'w', tcp({ interval: 10, timeout: 1000 }));
    await r.loop.runUntilAsync(3_000);
    expect(r.prober.maxConcurrent).toBe(1);
    const calls = r.prober.calls;
    expect(calls[0]).toMatchObject({ at: 0, settledAt: 900 });
    for (let i = 1; i < calls.length; i++) expect(calls[i]!.at).toBe(calls[i - 1]!.settledAt! + 10);
  });

  it('removal cancels the timers and ignores a late result; set([]) leaves nothing pending', async () => {
    const r = rig();
    r.prober.script('w', { result: 'error', latencyMs: 50 });
    watch(r, 'w', tcp({ retries: 1 }));
    await r.loop.runUntilAsync(20); // the probe is in flight
    r.mon.set([]);
    expect(r.mon.status('w')).toBeUndefined();
    expect(r.mon.statuses().size).toBe(0);
    await r.loop.runUntilAsync(10_000);
    expect(r.clock.pending).toBe(0);
    expect(r.loop.pending).toBe(0);
    expect(r.prober.calls).toHaveLength(1);
    expect(r.events).toEqual([]); // the failure landed after removal: ignored
  });

  it('an unchanged check keeps its state; a changed check or a new instance (startedAt) starts over', async () => {
    const r = rig();
    const w = watch(r, 'w', tcp());
    await r.loop.runUntilAsync(1_500);
    expect(r.mon.status('w')).toMatchObject({ status: 'healthy', checks: 2 });
    r.mon.set([{ ...w, check: tcp() }]); // equal (another object): no restart, no extra probe
    expect(r.mon.status('w')).toMatchObject({ status: 'healthy', checks: 2 });
    await r.loop.runUntilAsync(1_900);
    expect(r.prober.calls).toHaveLength(2);

    r.mon.set([{ ...w, check: tcp({ interval: 300 }) }]); // changed: back to starting, probe at once
    expect(r.mon.status('w')).toMatchObject({ status: 'starting', checks: 0 });
    await r.loop.runUntilAsync(2_600);
    expect(r.prober.calls.map((c) => c.at)).toEqual([0, 1001, 1900, 2201, 2502]);

    r.mon.set([{ ...w, check: tcp({ interval: 300 }), startedAt: r.clock.now() }]); // restarted instance
    expect(r.mon.status('w')).toMatchObject({ status: 'starting', checks: 0 });
  });

  it('a check changed while a probe runs: the new one waits for the old probe to settle (no overlap)', async () => {
    const r = rig();
    r.prober.script('w', { result: 'pass', latencyMs: 400 });
    const w = watch(r, 'w', tcp({ timeout: 1000 }));
    await r.loop.runUntilAsync(100);
    r.mon.set([{ ...w, check: tcp({ timeout: 1000, interval: 50 }) }]);
    await r.loop.runUntilAsync(1_000);
    expect(r.prober.maxConcurrent).toBe(1);
    expect(r.prober.calls.map((c) => c.at).slice(0, 3)).toEqual([0, 400, 850]);
    expect(r.mon.status('w')).toMatchObject({ status: 'healthy' });
  });

  it('a check changed while the old probe hangs: the new one counts failures instead of waiting forever', async () => {
    const r = rig();
    r.prober.script('w', 'hang');
    const w = watch(r, 'w', tcp({ timeout: 100, interval: 1000, retries: 2 }));
    await r.loop.runUntilAsync(50);
    r.prober.script('w', 'pass');
    r.mon.set([{ ...w, check: tcp({ timeout: 200, interval: 500, retries: 2 }) }]);
    await r.loop.runUntilAsync(1_000); // failures at 250 (200 ms wait) and 950 (500 + 200)
    expect(r.mon.status('w')).toMatchObject({ status: 'unhealthy', failures: 2 });
    expect(r.prober.calls).toHaveLength(1);
    expect(r.prober.maxConcurrent).toBe(1);
  });

  it('a throwing listener is logged and does not break the monitor', async () => {
    const r = rig();
    const errors: string[] = [];
    const log: Logger = { ...nullLogger, error: (_o, msg) => errors.push(msg ?? ''), child: () => log };
    const mon = new HealthMonitor({ clock: r.clock, prober: r.prober, log });
    const seen: HealthStatus[] = [];
    mon.onChange(() => {
      throw new Error('boom');
    });
    const off = mon.onChange((_id, s) => seen.push(s));
    r.prober.script('w', 'pass', 'fail');
    mon.set([{ id: 'w', check: tcp({ retries: 1 }), startedAt: 0 }]);
    await r.loop.runUntilAsync(1_500);
    expect(seen).toEqual(['healthy', 'unhealthy']);
    expect(errors).toEqual(['health: change listener threw', 'health: change listener threw']);
    off();
    mon.close();
    expect(r.clock.pending).toBe(0);
  });

  it('is deterministic: the same scenario gives the same transitions and probe times', async () => {
    const run = async () => {
      const r = rig();
      const ids = ['c', 'a', 'b', 'd'];
      r.prober.script('a', 'pass', 'fail', 'fail', 'pass');
      r.prober.script('b', { result: 'error', latencyMs: 7 }, { result: 'pass', latencyMs: 3 });
      r.prober.script('c', { result: 'pass', latencyMs: 5 });
      r.prober.script('d', 'hang');
      r.mon.set(
        ids.map((id, i) => ({ id, check: tcp({ interval: 100 + i * 37, retries: 2 }), startedAt: 0 })),
      );
      await r.loop.runUntilAsync(2_000);
      return {
        events: r.events,
        calls: r.prober.calls.map((c) => [c.workloadId, c.at, c.settledAt ?? null]),
        statuses: [...r.mon.statuses()],
      };
    };
    const a = await run();
    expect(await run()).toEqual(a);
    expect(a.events.length).toBeGreaterThan(3);
  });
});

// --- real probes: host mode (process engine) -----------------------------------------------------

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function until<T>(what: string, fn: () => T | undefined, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function statusIs(mon: HealthMonitor, id: string, s: HealthStatus): () => WorkloadHealth | undefined {
  return () => {
    const h = mon.status(id);
    return h?.status === s ? h : undefined;
  };
}

const SERVER = `
const http = require('node:http');
http.createServer((req, res) => {
  res.statusCode = req.url === '/bad' ? 500 : req.url === '/moved' ? 301 : 200;
  res.end('ok\\n');
}).listen(Number(process.argv[1]), '127.0.0.1');
`;

describe('EngineProber, host mode (ProcessEngine + real HTTP server)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-health-'));
  const engine = new ProcessEngine({ hostId: 'hp', dataDir: dir, pollMs: 50 });
  const prober = new EngineProber(engine);
  const clock = new RealClock({ unref: true });
  let port = 0;
  let closedPort = 0;

  beforeAll(async () => {
    port = await freePort();
    closedPort = await freePort();
    await engine.create({
      id: 'web',
      deployId: 'd',
      hostId: 'hp',
      command: [process.execPath, '-e', SERVER, String(port)],
    });
    await engine.start('web');
    for (let i = 0; ; i++) {
      const up = await hostTcp('127.0.0.1', port, 500).then(
        () => true,
        () => false,
      );
      if (up) break;
      if (i > 200) throw new Error('the test server never listened');
      await new Promise((r) => setTimeout(r, 25));
    }
  });

  afterAll(async () => {
    for (const w of await engine.list()) await engine.remove(w.id, { force: true }).catch(() => {});
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('defaults to host mode for the process engine', () => {
    expect(prober.mode).toBe('host');
  });

  it('an HTTP check goes healthy against the workload; /bad (500) goes unhealthy; tcp to a closed port fails', async () => {
    const mon = new HealthMonitor({ clock, prober, log: nullLogger });
    const timing = { interval: 50, timeout: 1000, retries: 2 };
    const startedAt = (await engine.inspect('web')).startedAt ?? Date.now();
    // Several checks against the one workload: each monitored id is routed to 'web'.
    const check = (h: Record<string, unknown>) => parseHealthcheck({ healthcheck: { ...timing, ...h } })!;
    const byId = new Map<string, string>();
    const routed = {
      tcp: (id: string, p: number, t: number) => prober.tcp(byId.get(id)!, p, t),
      http: (id: string, p: number, path: string, t: number) => prober.http(byId.get(id)!, p, path, t),
      exec: (id: string, argv: string[], t: number) => prober.exec(byId.get(id)!, argv, t),
    };
    const m2 = new HealthMonitor({ clock, prober: routed, log: nullLogger });
    for (const id of ['bad', 'moved', 'tcp', 'closed']) byId.set(id, 'web');
    mon.set([{ id: 'web', check: check({ type: 'http', port, path: '/healthz' }), startedAt }]);
    m2.set([
      { id: 'bad', check: check({ type: 'http', port, path: '/bad' }), startedAt },
      { id: 'moved', check: check({ type: 'http', port, path: '/moved' }), startedAt },
      { id: 'tcp', check: check({ type: 'tcp', port }), startedAt },
      { id: 'closed', check: check({ type: 'tcp', port: closedPort }), startedAt },
    ]);
    try {
      await until('web healthy', statusIs(mon, 'web', 'healthy'));
      const bad = await until('bad unhealthy', statusIs(m2, 'bad', 'unhealthy'));
      expect(bad.lastError).toBe('HTTP 500 from /bad (expected 200..399)');
      await until('moved healthy (3xx counts, not followed)', statusIs(m2, 'moved', 'healthy'));
      await until('tcp healthy', statusIs(m2, 'tcp', 'healthy'));
      const closed = await until('closed unhealthy', statusIs(m2, 'closed', 'unhealthy'));
      expect(closed.lastError).toBe(`connect 127.0.0.1:${closedPort}: ECONNREFUSED`);
    } finally {
      mon.close();
      m2.close();
    }
  });

  it('host probes refuse a workload that is not running (another process on the port proves nothing)', async () => {
    await engine.create({ id: 'gone', deployId: 'd', hostId: 'hp', command: ['sh', '-c', 'exit 0'] });
    await engine.start('gone');
    await engine.wait('gone');
    await expect(prober.http('gone', port, '/', 1000)).rejects.toThrow(
      /workload gone is not running \(exited\)/,
    );
    await expect(prober.tcp('nope', port, 1000)).rejects.toThrow(/cannot inspect workload nope/);
  });

  it('hostHttp / hostTcp time out on a server that accepts but never answers', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const p = (silent.address() as net.AddressInfo).port;
    try {
      const t0 = Date.now();
      await expect(hostHttp('127.0.0.1', p, '/x', 200)).rejects.toThrow(
        `GET http://127.0.0.1:${p}/x: timed out after 200 ms`,
      );
      expect(Date.now() - t0).toBeLessThan(1_500);
      await expect(hostTcp('127.0.0.1', p, 200)).resolves.toBeUndefined();
      expect(await hostHttp('127.0.0.1', port, '/bad', 1000)).toBe(500);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });

  it('exec checks run in the workload through the engine', async () => {
    expect(await prober.exec('web', ['sh', '-c', 'exit 3'], 2000)).toBe(3);
    expect(await prober.exec('web', ['true'], 2000)).toBe(0);
    await expect(prober.exec('web', ['sleep', '5'], 200)).rejects.toThrow('timed out after 200 ms');
  });
});

// --- real probes: exec mode inside a busybox container -------------------------------------------

const SOCKET = process.env.SHOAL_DOCKER_SOCKET || DEFAULT_DOCKER_SOCKET;
const IMAGE = 'shoal/busybox:latest';
const CI = process.env.CI === 'true';

function dockerReason(): string | undefined {
  const cli = (args: string[]) =>
    execFileSync('docker', ['-H', `unix://${SOCKET}`, ...args], {
      encoding: 'utf8',
      timeout: 20_000,
      stdio: 'pipe',
    });
  try {
    cli(['version', '--format', '{{.Server.Version}}']);
  } catch (err) {
    return `no Docker engine answers at ${SOCKET} (${(err as Error).message.split('\n')[0]}); run scripts/docker-up.sh`;
  }
  try {
    cli(['image', 'inspect', IMAGE]);
  } catch {
    return `image ${IMAGE} missing at ${SOCKET}; run scripts/docker-up.sh`;
  }
  return undefined;
}

const reason = dockerReason();
if (reason !== undefined && !CI) {
  const banner = '!'.repeat(100);
  console.warn(`\n${banner}\n!!! SKIPPING the Docker health-check tests: ${reason}\n${banner}\n`);
}

it.skipIf(reason !== undefined && !CI)(
  'a Docker engine answers (CI=true never skips: scripts/docker-up.sh)',
  () => {
    expect(reason, `Docker engine required: ${reason}`).toBeUndefined();
  },
);

describe.runIf(reason === undefined)('EngineProber, exec mode (busybox container, NetworkMode none)', () => {
  const hostId = `hh${process.pid}-${Date.now().toString(36)}`;
  const engine = new DockerEngine({ hostId, socketPath: SOCKET });
  const prober = new EngineProber(engine);

  beforeAll(async () => {
    await engine.create({
      id: 'httpd',
      deployId: 'd',
      hostId,
      image: IMAGE,
      command: [
        'sh',
        '-c',
        'mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www',
      ],
    });
    await engine.start('httpd');
  });

  afterAll(async () => {
    for (const w of await engine.list()) await engine.remove(w.id, { force: true }).catch(() => {});
    await engine.close();
  });

  it('defaults to exec mode for docker', () => {
    expect(prober.mode).toBe('exec');
  });

  it('http, tcp and exec probes run inside the container', async () => {
    let code = 0;
    for (let i = 0; i < 50 && code !== 200; i++) {
      code = await prober.http('httpd', 8080, '/index.html', 5000).catch(() => 0);
      if (code !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    expect(code).toBe(200);
    expect(await prober.http('httpd', 8080, '/missing', 5000)).toBe(404);
    await expect(prober.http('httpd', 8081, '/', 5000)).rejects.toThrow(/Connection refused/);
    await expect(prober.tcp('httpd', 8080, 5000)).resolves.toBeUndefined();
    await expect(prober.tcp('httpd', 8081, 5000)).rejects.toThrow(
      /connect 127\.0\.0\.1:8081: .*Connection refused/,
    );
    expect(await prober.exec('httpd', ['test', '-f', '/tmp/www/index.html'], 5000)).toBe(0);
    expect(await prober.exec('httpd', ['test', '-f', '/nope'], 5000)).toBe(1);
  });

  it('a HealthMonitor on the real clock: healthy httpd, unhealthy 404 path', async () => {
    const clock = new RealClock({ unref: true });
    const mon = new HealthMonitor({ clock, prober, log: nullLogger });
    const startedAt = (await engine.inspect('httpd')).startedAt ?? Date.now();
    const check = parseHealthcheck({
      healthcheck: {
        type: 'http',
        port: 8080,
        path: '/index.html',
        interval: 100,
        timeout: 5000,
        retries: 2,
      },
    })!;
    mon.set([{ id: 'httpd', check, startedAt }]);
    try {
      await until('httpd healthy', statusIs(mon, 'httpd', 'healthy'), 20_000);
      const missing = parseHealthcheck({
        healthcheck: { type: 'http', port: 8080, path: '/missing', interval: 100, timeout: 5000, retries: 2 },
      })!;
      mon.set([{ id: 'httpd', check: missing, startedAt }]);
      const h = await until('httpd unhealthy', statusIs(mon, 'httpd', 'unhealthy'), 20_000);
      expect(h.lastError).toBe('HTTP 404 from /missing (expected 200..399)');
    } finally {
      mon.close();
    }
  });

  it('tcp falls back when the image lacks nc; without any tool the error says what to do', async () => {
    await engine.create({
      id: 'bare',
      deployId: 'd',
      hostId,
      image: IMAGE,
      command: ['sh', '-c', 'rm /bin/nc && mkdir -p /w && echo ok > /w/i && exec httpd -f -p 8080 -h /w'],
    });
    await engine.start('bare');
    let open = false;
    for (let i = 0; i < 50 && !open; i++) {
      open = await prober.tcp('bare', 8080, 5000).then(
        () => true,
        () => false,
      );
      if (!open) await new Promise((r) => setTimeout(r, 100));
    }
    expect(open).toBe(true); // via wget: a 404 from httpd still proves the port is open
    await expect(prober.tcp('bare', 8081, 5000)).rejects.toThrow(/Connection refused/);
    expect(await prober.exec('bare', ['rm', '/bin/wget'], 5000)).toBe(0);
    const err = await prober.tcp('bare', 8080, 5000).then(
      () => '',
      (e: Error) => e.message,
    );
    expect(err).toMatch(/^no way to open a TCP connection inside workload bare \(tried /);
    for (const tool of ['nc: ', 'bash: ', 'wget: ', 'use an exec check']) expect(err).toContain(tool);
    await expect(prober.http('bare', 8080, '/i', 5000)).rejects.toThrow(/no usable wget in workload bare/);
  });

  it('a stopped container: probes fail with not-running', async () => {
    await engine.create({
      id: 'short',
      deployId: 'd',
      hostId,
      image: IMAGE,
      command: ['sh', '-c', 'exit 0'],
    });
    await engine.start('short');
    await engine.wait('short');
    await expect(prober.tcp('short', 8080, 2000)).rejects.toThrow(/not running/);
  });
});
