import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeployView } from '../node/deploys-api.ts';
import { ClusterProcs, waitFor } from './cluster-procs.ts';

/**
 * Agents driving the real dockerd (scripts/docker-up.sh): a deploy becomes labelled containers with
 * the limits of its allocation; kill -9 of an agent and a restart keep the same containers (none
 * duplicated) and the host's books equal the sum of what the engine runs. With CI=true Docker is
 * provisioned by the test command; without it these tests fail rather than skip.
 */
const SOCK = process.env.SHOAL_DOCKER_SOCKET || '/tmp/shoal-docker/docker.sock';
const docker = (...args: string[]) =>
  execFileSync('docker', ['-H', `unix://${SOCK}`, ...args], { encoding: 'utf8' }).trim();

describe('agents on the real Docker engine', { timeout: 120_000 }, () => {
  const c = new ClusterProcs({ prefix: 'shoal-docker-' });
  const args = ['--cpu', '4', '--memory', '8GiB', '--engine', 'docker', '--docker-socket', SOCK];
  const ours = () =>
    docker('ps', '-a', '--filter', 'label=shoal.deploy=svc', '--format', '{{.ID}} {{.Label "shoal.host"}}');

  beforeAll(async () => {
    const seed = await c.spawn({ extraArgs: args });
    await c.spawn({ extraArgs: args, join: [seed.addrs[0]!] });
    await waitFor(
      async () =>
        (await Promise.all([0, 1].map((i) => c.nodes(i)))).every(
          (v) => v.filter((n) => n.status === 'alive').length === 2,
        ),
      30_000,
      100,
    );
  }, 90_000);

  afterAll(async () => {
    await c.stopAll();
    const ids = docker('ps', '-aq', '--filter', 'label=shoal.deploy=svc');
    if (ids) docker('rm', '-f', ...ids.split('\n'));
  });

  it('a deploy runs as labelled containers with its limits enforced by Docker', async () => {
    await c.http(0, 'POST', '/v1/deploys', {
      id: 'svc',
      name: 'svc',
      replicas: 3,
      strategy: 'binpack',
      spec: {
        resources: { cpu: { milli: 500 }, memoryBytes: 128 * 2 ** 20 },
        image: 'shoal/busybox:latest',
        command: ['sleep', '3600'],
      },
    });
    await waitFor(async () => ours().split('\n').filter(Boolean).length === 3, 30_000, 200);
    const first = ours().split('\n')[0]!.split(' ')[0]!;
    const hc = JSON.parse(docker('inspect', first))[0].HostConfig;
    expect(hc.Memory).toBe(128 * 2 ** 20);
    expect(hc.CpuQuota / hc.CpuPeriod).toBeCloseTo(0.5, 5);
    const d = await c.http<DeployView>(1, 'GET', '/v1/deploys/svc');
    expect(d.placed).toBe(3);
  });

  it('kill -9 an agent, restart it: the same containers, none duplicated; books = engine', async () => {
    // The agent hosting containers (binpack may have put them all on one host).
    const idx = [0, 1].find((i) => ours().includes(c.get(i).id))!;
    const host = c.get(idx).id;
    const before = ours()
      .split('\n')
      .filter((l) => l.endsWith(host))
      .map((l) => l.split(' ')[0])
      .sort();
    expect(before.length).toBeGreaterThan(0);
    // The seed has no --join: after a restart it rejoins from the members it remembered. Those are
    // written with the agent's periodic persist (every second), so a kill right after the cluster
    // formed could leave the seed remembering nobody: wait until its file names the other agent.
    const other = c.get(1 - idx).id;
    await waitFor(() => {
      try {
        return readFileSync(join(c.get(idx).dataDir, 'state', 'members.json'), 'latin1').includes(other);
      } catch {
        return false;
      }
    }, 10_000);
    await c.kill(idx, 'SIGKILL');
    await c.restart(idx);
    await waitFor(
      async () => (await c.nodes(1 - idx)).find((n) => n.id === host)?.status === 'alive',
      30_000,
      200,
    );
    await new Promise((r) => setTimeout(r, 3_000)); // a few reconcile passes
    const after = ours()
      .split('\n')
      .filter((l) => l.endsWith(host))
      .map((l) => l.split(' ')[0])
      .sort();
    expect(after).toEqual(before);
    expect(ours().split('\n').filter(Boolean).length).toBe(3);
    const me = (await c.nodes(idx)).find((n) => n.id === host)!;
    const alloc = me.allocated as { cpuMilli: number; memory: number };
    expect(alloc.cpuMilli).toBe(before.length * 500);
    expect(alloc.memory).toBe(before.length * 128 * 2 ** 20);
  });

  it('realloc raises the memory limit of the running containers live (same containers)', async () => {
    const before = ours()
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ')[0])
      .sort();
    await c.http(1, 'PATCH', '/v1/deploys/svc', {
      resources: { cpu: { milli: 500 }, memoryBytes: 256 * 2 ** 20 },
    });
    await waitFor(
      async () =>
        before.every((id) => JSON.parse(docker('inspect', id!))[0].HostConfig.Memory === 256 * 2 ** 20),
      20_000,
      200,
    );
    const after = ours()
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ')[0])
      .sort();
    expect(after).toEqual(before);
    await expect(
      c.http(0, 'PATCH', '/v1/deploys/svc', { resources: { cpu: { milli: 'x' }, memoryBytes: 1 } }),
    ).rejects.toThrow(/400.*spec\.resources\.cpu\.milli/);
  });

  it('health: a failing HTTP check turns the workload unhealthy, a passing one healthy; a crashed container restarts per policy', async () => {
    const web = (id: string, path: string) =>
      c.http(0, 'POST', '/v1/deploys', {
        id,
        name: id,
        replicas: 1,
        spec: {
          resources: { cpu: { milli: 100 }, memoryBytes: 64 * 2 ** 20 },
          image: 'shoal/busybox:latest',
          command: ['sh', '-c', 'echo ok > /tmp/index.html; exec httpd -f -p 8080 -h /tmp'],
          healthcheck: { type: 'http', port: 8080, path, interval: 500, timeout: 2000, retries: 2 },
        },
      });
    await web('good', '/index.html');
    await web('bad', '/missing');
    await c.http(0, 'POST', '/v1/deploys', {
      id: 'crash',
      name: 'crash',
      replicas: 1,
      spec: {
        resources: { cpu: { milli: 100 }, memoryBytes: 32 * 2 ** 20 },
        image: 'shoal/busybox:latest',
        command: ['sh', '-c', 'sleep 1; exit 3'],
        restart: 'on-failure',
      },
    });
    const healthOf = async (deploy: string) =>
      (await c.http<DeployView>(1, 'GET', `/v1/deploys/${deploy}`)).instances[0]?.health;
    await waitFor(async () => (await healthOf('good')) === 'healthy', 30_000, 250);
    await waitFor(async () => (await healthOf('bad')) === 'unhealthy', 30_000, 250);
    await waitFor(
      () =>
        c.procs.some((p) =>
          p.lines.some((l) => l.msg === 'reconcile: restarted' && String(l.workload).startsWith('crash.')),
        ),
      30_000,
      250,
    );
  });
});
