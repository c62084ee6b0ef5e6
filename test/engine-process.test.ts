/** ProcessEngine: the shared suite, plus re-adoption by a new engine object (an agent restart). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { detectCgroups } from '../engines/cgroups.ts';
import { readProcStat } from '../engines/proc.ts';
import { ProcessEngine } from '../engines/process.ts';
import { type EngineHarness, engineConformance, shellScript } from './conformance/engine.ts';

const dirs: string[] = [];
function dataDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'shoal-proc-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const harness = (): EngineHarness => {
  const dir = dataDir();
  return {
    make: async (hostId) => new ProcessEngine({ hostId, dataDir: dir, pollMs: 50 }),
    program: (p) => ({ command: ['sh', '-c', shellScript(p)] }),
    execCommand: (p) => ['sh', '-c', shellScript(p)],
    missingCommand: { command: ['shoal-no-such-command'] },
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    now: () => Date.now(),
    slackMs: 1_000,
  };
};

engineConformance('process', harness);

describe('process engine', () => {
  it('refuses mounts and user with a clear reason (docker-only)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shoal-proc-refuse-'));
    const e = new ProcessEngine({ hostId: 'h1', dataDir: dir, pollMs: 50 });
    const base = { deployId: 'd', hostId: 'h1', command: ['sleep', '1'] };
    await expect(e.create({ ...base, id: 'u', user: '1000' })).rejects.toThrow(/user is docker-only/);
    await expect(e.create({ ...base, id: 'm', mounts: [{ type: 'tmpfs', target: '/x' }] })).rejects.toThrow(
      /cannot mount volumes/,
    );
    await e.close();
    rmSync(dir, { recursive: true, force: true });
  });
  it('a new engine object re-adopts running workloads; the exit code is recorded while nobody watched', async () => {
    const dir = dataDir();
    const a = new ProcessEngine({ hostId: 'h1', dataDir: dir, pollMs: 50 });
    await a.create({ id: 'keep', deployId: 'd', hostId: 'h1', command: ['sh', '-c', 'sleep 0.8; exit 7'] });
    await a.create({ id: 'long', deployId: 'd', hostId: 'h1', command: ['sleep', '3600'] });
    await a.start('keep');
    await a.start('long');
    const pid = (await a.inspect('long')).pid!;
    await a.close(); // the agent goes away; its workloads do not

    await new Promise((r) => setTimeout(r, 1_000)); // 'keep' exits while no engine exists
    const b = new ProcessEngine({ hostId: 'h1', dataDir: dir, pollMs: 50 });
    const listed = await b.list();
    expect(listed.map((w) => [w.id, w.state])).toEqual([
      ['keep', 'exited'],
      ['long', 'running'],
    ]);
    expect(listed[0]?.exitCode).toBe(7);
    expect(listed[1]?.pid).toBe(pid);
    expect(await b.wait('keep')).toBe(7);

    const exited = b.wait('long');
    await b.stop('long', { timeoutMs: 2_000 });
    expect(await exited).toBe(143);
    expect(readProcStat(pid)).toBeUndefined();
    // Still re-adoptable as "exited 143" by yet another incarnation.
    const c = new ProcessEngine({ hostId: 'h1', dataDir: dir });
    expect((await c.inspect('long')).exitCode).toBe(143);
    for (const e of [b, c]) {
      for (const w of await e.list()) await e.remove(w.id, { force: true }).catch(() => {});
      await e.close();
    }
  });

  it('a reused pid is not mistaken for the workload (start time differs)', async () => {
    const dir = dataDir();
    const e = new ProcessEngine({ hostId: 'h1', dataDir: dir, pollMs: 50 });
    await e.create({ id: 'w', deployId: 'd', hostId: 'h1', command: ['sleep', '3600'] });
    await e.start('w');
    // Forge the record: pretend the wrapper and workload were other processes with this pid.
    const { readFileSync, writeFileSync } = await import('node:fs');
    const runPath = join(dir, 'process', 'w', 'run.json');
    const run = JSON.parse(readFileSync(runPath, 'utf8')) as Record<string, number>;
    const real = { ...run };
    writeFileSync(runPath, JSON.stringify({ ...run, wrapperStart: 1, childStart: 1 }));
    const info = await e.inspect('w');
    expect(info.state).toBe('exited');
    expect(info.lost).toBe(true);
    writeFileSync(runPath, JSON.stringify(real));
    expect((await e.inspect('w')).state).toBe('running');
    await e.remove('w', { force: true });
    await e.close();
  });

  it('env, workdir and cgroup limits (when root) apply to the process', async () => {
    const dir = dataDir();
    const e = new ProcessEngine({ hostId: 'h1', dataDir: dir, pollMs: 50 });
    await e.create({
      id: 'env',
      deployId: 'd',
      hostId: 'h1',
      command: ['sh', '-c', 'echo "$GREETING from $(pwd)"; cat /proc/self/cgroup; exec sleep 3600'],
      env: { GREETING: 'hello' },
      workdir: '/tmp',
      resources: { cpuMilli: 250, memoryBytes: 32 * 1024 * 1024, cpuset: [0] },
    });
    await e.start('env');
    await new Promise((r) => setTimeout(r, 200));
    const lines: string[] = [];
    for await (const l of e.logs('env')) lines.push(l.line);
    expect(lines[0]).toBe('hello from /tmp');
    const info = await e.inspect('env');
    const cg = detectCgroups();
    if (cg) {
      expect(info.enforced).toMatchObject({ cpu: true, memory: true, cpuset: true });
      expect(lines.join('\n')).toMatch(/shoal\/h1\/env/);
      if (cg.version === 1) {
        const { readFileSync } = await import('node:fs');
        const mem = () =>
          readFileSync('/sys/fs/cgroup/memory/shoal/h1/env/memory.limit_in_bytes', 'utf8').trim();
        expect(mem()).toBe(String(32 * 1024 * 1024));
        expect(readFileSync('/sys/fs/cgroup/cpu/shoal/h1/env/cpu.cfs_quota_us', 'utf8').trim()).toBe('25000');
        expect(readFileSync('/sys/fs/cgroup/cpuset/shoal/h1/env/cpuset.cpus', 'utf8').trim()).toBe('0');
        await e.update('env', { memoryBytes: 64 * 1024 * 1024 });
        expect(mem()).toBe(String(64 * 1024 * 1024));
      }
      const r = await e.exec('env', ['sh', '-c', 'cat /proc/self/cgroup']);
      expect(r.stdout).toMatch(/shoal\/h1\/env/);
    } else {
      expect(info.enforced.memory).toBe(false);
      expect(info.enforced.notes.join(' ')).toMatch(/not enforced/);
    }
    const st = await e.stats('env');
    expect(st.memoryBytes).toBeGreaterThan(0);
    await e.remove('env', { force: true });
    await e.close();
  });

  it('an OOM kill under a cgroup memory limit is reported', async () => {
    const cg = detectCgroups();
    if (!cg?.enforces.memory) return;
    const e = new ProcessEngine({ hostId: 'h1', dataDir: dataDir(), pollMs: 50 });
    await e.create({
      id: 'oom',
      deployId: 'd',
      hostId: 'h1',
      command: ['sh', '-c', 'x=aaaaaaaaaaaaaaaa; while :; do x="$x$x"; done'],
      resources: { memoryBytes: 16 * 1024 * 1024 },
    });
    await e.start('oom');
    expect(await e.wait('oom')).toBe(137);
    expect((await e.inspect('oom')).oomKilled).toBe(true);
    await e.remove('oom');
    await e.close();
  });
});
