import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkloadView } from '../node/workloads-api.ts';
import { ClusterProcs, waitFor } from './cluster-procs.ts';

/**
 * Logs and exec across agents, for real: three agent processes on the real dockerd
 * (scripts/docker-up.sh). A container printing a line every 200 ms runs on one of them; its logs
 * are followed through a second agent (forwarded over libp2p and streamed back while it runs),
 * a command is exec'd in it through the third, and once its host is killed the same calls answer
 * 502 naming that host. Like test/integration-docker.test.ts this needs Docker and fails (never
 * skips) without it.
 */
const SOCK = process.env.SHOAL_DOCKER_SOCKET || '/tmp/shoal-docker/docker.sock';
const docker = (...args: string[]) =>
  execFileSync('docker', ['-H', `unix://${SOCK}`, ...args], { encoding: 'utf8' }).trim();

const DEPLOY = 'ticker';
const WID = `${DEPLOY}.0`;
const ONCE = 'once';

describe('logs and exec through agents that do not host the workload (real Docker)', {
  timeout: 120_000,
}, () => {
  const c = new ClusterProcs({ prefix: 'shoal-logs-' });
  const args = ['--cpu', '4', '--memory', '8GiB', '--engine', 'docker', '--docker-socket', SOCK];
  let host = -1;
  let others: number[] = [];
  const api = (i: number, path: string, init?: RequestInit) =>
    fetch(`${c.get(i).api}${path}`, {
      ...init,
      headers: { ...(init?.headers as Record<string, string>), authorization: `Bearer ${c.token(i)}` },
    });

  beforeAll(async () => {
    const seed = await c.spawn({ extraArgs: args });
    await c.spawn({ extraArgs: args, join: [seed.addrs[0]!] });
    await c.spawn({ extraArgs: args, join: [seed.addrs[0]!] });
    await waitFor(
      async () =>
        (await Promise.all([0, 1, 2].map((i) => c.nodes(i)))).every(
          (v) => v.filter((n) => n.status === 'alive').length === 3,
        ),
      30_000,
      100,
    );
    await c.http(0, 'POST', '/v1/deploys', {
      id: DEPLOY,
      name: DEPLOY,
      replicas: 1,
      spec: {
        resources: { cpu: { milli: 100 }, memoryBytes: 32 * 2 ** 20 },
        image: 'shoal/busybox:latest',
        command: ['sh', '-c', 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.2; done'],
      },
    });
    // Every agent sees the replica running somewhere (gossip), and knows where.
    let where = '';
    await waitFor(
      async () => {
        const views = await Promise.all(
          [0, 1, 2].map(async (i) => (await (await api(i, `/v1/workloads/${WID}`)).json()) as WorkloadView),
        );
        where = views[0]?.host ?? '';
        return views.every((v) => v.status === 'running' && v.host === where);
      },
      30_000,
      200,
    );
    host = [0, 1, 2].find((i) => c.get(i).id === where)!;
    expect(host).toBeGreaterThanOrEqual(0);
    others = [0, 1, 2].filter((i) => i !== host);
  }, 90_000);

  afterAll(async () => {
    await c.stopAll();
    for (const d of [DEPLOY, ONCE]) {
      const ids = docker('ps', '-aq', '--filter', `label=shoal.deploy=${d}`);
      if (ids) docker('rm', '-f', ...ids.split('\n'));
    }
  });

  it('GET /v1/workloads on any agent lists the replica on its host', async () => {
    const list = (await (await api(others[0]!, `/v1/workloads?deploy=${DEPLOY}`)).json()) as WorkloadView[];
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({
      id: WID,
      deployId: DEPLOY,
      replica: 0,
      host: c.get(host).id,
      current: true,
    });
    expect(list[0]!.startedAt).toBeGreaterThan(0);
  });

  it('follows the logs through an agent that does not host it: lines arrive while it runs, cancel is clean', async () => {
    const via = others[0]!;
    const ctrl = new AbortController();
    const t0 = Date.now();
    const res = await api(via, `/v1/workloads/${WID}/logs?follow=1&tail=0`, { signal: ctrl.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    expect(res.headers.get('x-shoal-served-by')).toBe(c.get(host).id);
    const reader = res.body!.getReader();
    const arrivals: { at: number; line: { stream: string; line: string; ts: number } }[] = [];
    let buf = '';
    while (arrivals.length < 8) {
      const { value, done } = await reader.read();
      expect(done).toBe(false);
      buf += new TextDecoder().decode(value);
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const p of parts) arrivals.push({ at: Date.now(), line: JSON.parse(p) });
    }
    ctrl.abort();
    await reader.cancel().catch(() => {});
    // Streamed as produced (one line per ~200 ms), not buffered until the end.
    const span = arrivals.at(-1)!.at - arrivals[0]!.at;
    expect(span).toBeGreaterThan(800);
    expect(Date.now() - t0).toBeLessThan(20_000);
    const numbers = arrivals.map((a) => Number(/^tick (\d+)$/.exec(a.line.line)?.[1]));
    expect(numbers.every((n, k) => Number.isInteger(n) && (k === 0 || n === numbers[k - 1]! + 1))).toBe(true);
    expect(arrivals.every((a) => a.line.stream === 'stdout' && a.line.ts > t0 - 5_000)).toBe(true);

    // The agents are fine afterwards: a bounded read through the other non-host agent.
    const tail = await api(others[1]!, `/v1/workloads/${WID}/logs?tail=3`);
    expect(tail.status).toBe(200);
    const lines = (await tail.text()).trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(JSON.parse(lines[2]!).line).toMatch(/^tick \d+$/);
  });

  it('execs a command in it through a third agent', async () => {
    const via = others[1]!;
    const res = await api(via, `/v1/workloads/${WID}/exec`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        command: ['sh', '-c', 'echo "hello $((6*7))"; echo oops >&2; exit 3'],
        timeoutMs: 10_000,
      }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-shoal-served-by')).toBe(c.get(host).id);
    expect(await res.json()).toEqual({ exitCode: 3, stdout: 'hello 42\n', stderr: 'oops\n' });
    const bad = await api(via, `/v1/workloads/${WID}/exec`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ command: [] }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toMatch(/^command:/);
  });

  it('logs of an exited workload still work through another agent, and a follow of it ends', async () => {
    await c.http(0, 'POST', '/v1/deploys', {
      id: ONCE,
      name: ONCE,
      replicas: 1,
      spec: {
        resources: { cpu: { milli: 100 }, memoryBytes: 32 * 2 ** 20 },
        image: 'shoal/busybox:latest',
        command: ['sh', '-c', 'echo one; echo two >&2; echo three'],
        restart: 'no',
      },
    });
    let w: WorkloadView | undefined;
    await waitFor(
      async () => {
        const r = await api(0, `/v1/workloads/${ONCE}.0`);
        w = r.status === 200 ? ((await r.json()) as WorkloadView) : undefined;
        return w?.status === 'exited';
      },
      30_000,
      200,
    );
    expect(w!.exitCode).toBe(0);
    const via = [0, 1, 2].find((i) => c.get(i).id !== w!.host)!;
    for (const q of ['', '?follow=1']) {
      const res = await api(via, `/v1/workloads/${ONCE}.0/logs${q}`, { signal: AbortSignal.timeout(10_000) });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-shoal-served-by')).toBe(w!.host);
      const lines = (await res.text())
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { stream: string; line: string });
      // stdout and stderr are separate pipes: their relative order is not guaranteed.
      expect(lines.map((l) => l.line).sort()).toEqual(['one', 'three', 'two']);
      expect(lines.find((l) => l.line === 'two')!.stream).toBe('stderr');
    }
  });

  it('its host killed: unreachable, then dead — 502 naming the host', async () => {
    const hostId = c.get(host).id;
    const via = others[0]!;
    await c.kill(host, 'SIGKILL');
    const first = await api(via, `/v1/workloads/${WID}/logs?tail=1`);
    expect([502, 504]).toContain(first.status);
    const body1 = (await first.json()) as { error: string; message: string; node: string };
    expect(body1.node).toBe(hostId);
    expect(body1.message).toContain(hostId);
    await waitFor(
      async () => (await c.nodes(via)).find((n) => n.id === hostId)?.status === 'dead',
      30_000,
      100,
    );
    const second = await api(via, `/v1/workloads/${WID}/exec`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['true'] }),
    });
    expect(second.status).toBe(502);
    const body2 = (await second.json()) as { error: string; message: string; node: string };
    expect(body2).toMatchObject({ error: 'node-down', node: hostId });
    expect(body2.message).toContain(`${hostId} is dead`);
  });
});
