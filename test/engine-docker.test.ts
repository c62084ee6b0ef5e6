/**
 * DockerEngine against the private dockerd from scripts/docker-up.sh.
 * Without Docker: skipped loudly — unless CI=true, where an absent engine FAILS the run.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_DOCKER_SOCKET, DockerEngine } from '../engines/docker.ts';
import { type EngineHarness, engineConformance, shellScript } from './conformance/engine.ts';

const SOCKET = process.env.SHOAL_DOCKER_SOCKET || DEFAULT_DOCKER_SOCKET;
const IMAGE = 'shoal/busybox:latest';
const CI = process.env.CI === 'true';

function dockerCli(args: string[]): string {
  return execFileSync('docker', ['-H', `unix://${SOCKET}`, ...args], { encoding: 'utf8', timeout: 20_000 });
}

/** A TCP port free on 127.0.0.1 right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Why Docker cannot be used, or undefined when it can. */
function unavailableReason(): string | undefined {
  try {
    dockerCli(['version', '--format', '{{.Server.Version}}']);
  } catch (err) {
    return `no Docker engine answers at ${SOCKET} (${(err as Error).message.split('\n')[0]}); run scripts/docker-up.sh`;
  }
  try {
    dockerCli(['image', 'inspect', IMAGE]);
  } catch {
    return `image ${IMAGE} missing at ${SOCKET}; run scripts/docker-up.sh`;
  }
  return undefined;
}

const reason = unavailableReason();

if (reason !== undefined && !CI) {
  const banner = '!'.repeat(100);
  console.warn(`\n${banner}\n!!! SKIPPING the Docker engine tests: ${reason}\n${banner}\n`);
}

// Passes when Docker answers, FAILS when it does not and CI=true, is skipped (loudly) otherwise.
it.skipIf(reason !== undefined && !CI)(
  'a Docker engine answers (CI=true never skips: scripts/docker-up.sh)',
  () => {
    expect(reason, `Docker engine required: ${reason}`).toBeUndefined();
  },
);

describe.runIf(reason === undefined)('docker engine', () => {
  engineConformance('docker', () => {
    const harness: EngineHarness = {
      make: async (hostId) => new DockerEngine({ hostId, socketPath: SOCKET }),
      program: (p) => ({ image: IMAGE, command: ['sh', '-c', shellScript(p)] }),
      execCommand: (p) => ['sh', '-c', shellScript(p)],
      missingImage: 'shoal/no-such-image:1',
      missingCommand: { image: IMAGE, command: ['/bin/shoal-no-such-command'] },
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      now: () => Date.now(),
      slackMs: 1_000,
    };
    return harness;
  });

  describe('docker-only', () => {
    const hostId = `hd${process.pid}-${Date.now().toString(36)}`;
    const engine = new DockerEngine({ hostId, socketPath: SOCKET });

    afterAll(async () => {
      for (const w of await engine.list()) await engine.remove(w.id, { force: true }).catch(() => {});
      await engine.close();
    });

    it('limits are visible in docker inspect and raised live by update; labels via docker ps', async () => {
      const MiB = 1024 * 1024;
      await engine.create({
        id: 'limits',
        deployId: 'dep-limits',
        hostId,
        image: IMAGE,
        command: ['sleep', '3600'],
        resources: { cpuMilli: 500, cpuset: [0], memoryBytes: 64 * MiB },
      });
      await engine.start('limits');
      const name = engine.containerName('limits');
      const hc = () =>
        JSON.parse(dockerCli(['inspect', '--format', '{{json .HostConfig}}', name])) as {
          Memory: number;
          MemorySwap: number;
          NanoCpus: number;
          CpuQuota: number;
          CpuPeriod: number;
          CpuShares: number;
          CpusetCpus: string;
          Init: boolean;
          NetworkMode: string;
        };
      const before = hc();
      expect(before.Memory).toBe(64 * MiB);
      expect(before.MemorySwap).toBe(64 * MiB);
      expect(before.CpuQuota / before.CpuPeriod).toBeCloseTo(0.5);
      expect(before.CpuShares).toBe(512);
      expect(before.CpusetCpus).toBe('0');
      expect(before.Init).toBe(true);
      expect(before.NetworkMode).toBe('none');

      await engine.update('limits', { memoryBytes: 256 * MiB, cpuMilli: 1500 });
      const after = hc();
      expect(after.Memory).toBe(256 * MiB);
      expect(after.CpuQuota / after.CpuPeriod).toBeCloseTo(1.5);
      // The kernel sees it too (cgroup v1 or v2).
      const limit = dockerCli([
        'exec',
        name,
        'sh',
        '-c',
        'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max',
      ]).trim();
      expect(Number(limit)).toBe(256 * MiB);

      for (const label of [`shoal.host=${hostId}`, 'shoal.workload=limits', 'shoal.deploy=dep-limits']) {
        const names = dockerCli(['ps', '--filter', `label=${label}`, '--format', '{{.Names}}']).trim();
        expect(names.split('\n')).toEqual([name]);
      }
    });

    it('published ports run with host networking: the workload answers on the host', async () => {
      const port = await freePort();
      await engine.create({
        id: 'web',
        deployId: 'dep-web',
        hostId,
        image: IMAGE,
        command: [
          'sh',
          '-c',
          `mkdir -p /tmp/w && echo hello-host-net > /tmp/w/index.html && exec httpd -f -p ${port} -h /tmp/w`,
        ],
        ports: [{ port, protocol: 'tcp' }],
        resources: { memoryBytes: 32 * 1024 * 1024 },
      });
      await engine.start('web');
      const mode = dockerCli([
        'inspect',
        '--format',
        '{{.HostConfig.NetworkMode}}',
        engine.containerName('web'),
      ]);
      expect(mode.trim()).toBe('host');
      expect((await engine.inspect('web')).spec.ports).toEqual([{ port, protocol: 'tcp' }]);
      let body = '';
      for (let i = 0; i < 50 && body === ''; i++) {
        body = await fetch(`http://127.0.0.1:${port}/`)
          .then((r) => r.text())
          .catch(() => '');
        if (body === '') await new Promise((r) => setTimeout(r, 100));
      }
      expect(body).toBe('hello-host-net\n');
      await engine.remove('web', { force: true });
    });

    it('mounts (bind, tmpfs) and user are applied', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'shoal-mount-'));
      writeFileSync(join(dir, 'greeting'), 'hello from the host\n', { mode: 0o644 });
      chmodSync(dir, 0o755); // readable by the container's user 1234
      await engine.create({
        id: 'mounts',
        deployId: 'm',
        hostId,
        image: 'shoal/busybox:latest',
        command: ['sleep', '3600'],
        user: '1234:1234',
        mounts: [
          { type: 'bind', source: dir, target: '/data', readOnly: true },
          { type: 'tmpfs', target: '/scratch', sizeBytes: 8 * 1024 * 1024 },
        ],
      });
      await engine.start('mounts');
      const cat = await engine.exec('mounts', ['cat', '/data/greeting']);
      expect(cat.stdout).toBe('hello from the host\n');
      expect((await engine.exec('mounts', ['id', '-u'])).stdout.trim()).toBe('1234');
      const ro = await engine.exec('mounts', ['sh', '-c', 'echo x > /data/new']);
      expect(ro.exitCode).not.toBe(0); // read-only bind
      const df = await engine.exec('mounts', ['sh', '-c', 'grep " /scratch " /proc/mounts']);
      expect(df.stdout).toMatch(/tmpfs \/scratch tmpfs .*size=8192k/);
      await engine.remove('mounts', { force: true });
      rmSync(dir, { recursive: true, force: true });
    });

    it('an OOM kill is reported as oomKilled', async () => {
      await engine.create({
        id: 'oom',
        deployId: 'dep-oom',
        hostId,
        image: IMAGE,
        // Grow a shell variable far beyond the 8 MiB limit.
        command: ['sh', '-c', 'x=aaaaaaaaaaaaaaaa; while :; do x="$x$x"; done'],
        resources: { memoryBytes: 8 * 1024 * 1024 },
      });
      await engine.start('oom');
      const code = await engine.wait('oom');
      const info = await engine.inspect('oom');
      expect(code).toBe(137);
      expect(info.oomKilled).toBe(true);
    });
  });
});
