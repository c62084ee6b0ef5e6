/**
 * Lifecycle hooks: spec parsing, and runHook on the sim engine (virtual clock: deterministic
 * timeouts) and on the process engine (real commands, the engine's own exec timeout).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ProcessEngine } from '../engines/process.ts';
import { SimEngine, SimMachine, simProgram } from '../engines/sim.ts';
import { SpecFieldError } from '../node/core/health.ts';
import { DEFAULT_HOOK_TIMEOUT_MS, type Hook, parseHooks, runHook } from '../node/core/hooks.ts';
import { Prng } from '../node/core/random.ts';
import { RealClock } from '../node/io/clock.ts';
import { EventLoop, VirtualClock } from '../sim/clock.ts';

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof SpecFieldError) return err.field;
    throw err;
  }
  throw new Error('expected a SpecFieldError');
}

const hook = (command: string[], over: Partial<Hook> = {}): Hook => ({
  command,
  force: false,
  timeoutMs: 5_000,
  ...over,
});

describe('parseHooks', () => {
  it('fills in defaults; absent means no hooks', () => {
    expect(parseHooks({})).toBeUndefined();
    expect(parseHooks({ hooks: {} })).toEqual({});
    expect(
      parseHooks({
        hooks: {
          afterStart: { command: ['warm', 'up'] },
          beforeStop: { command: ['drain'], force: true, timeoutMs: 250 },
        },
      }),
    ).toEqual({
      afterStart: { command: ['warm', 'up'], force: false, timeoutMs: DEFAULT_HOOK_TIMEOUT_MS },
      beforeStop: { command: ['drain'], force: true, timeoutMs: 250 },
    });
  });

  it('errors name the field', () => {
    const h = (v: unknown) => () => parseHooks({ hooks: v });
    expect(fieldOf(() => parseHooks(7))).toBe('spec');
    expect(fieldOf(h([]))).toBe('spec.hooks');
    expect(fieldOf(h({ onStart: { command: ['x'] } }))).toBe('spec.hooks.onStart');
    expect(fieldOf(h({ afterStart: ['x'] }))).toBe('spec.hooks.afterStart');
    expect(fieldOf(h({ afterStart: {} }))).toBe('spec.hooks.afterStart.command');
    expect(fieldOf(h({ afterStart: { command: 'warm up' } }))).toBe('spec.hooks.afterStart.command');
    expect(fieldOf(h({ afterStart: { command: ['warm', null] } }))).toBe('spec.hooks.afterStart.command[1]');
    expect(fieldOf(h({ beforeStop: { command: ['x'], force: 'yes' } }))).toBe('spec.hooks.beforeStop.force');
    expect(fieldOf(h({ beforeStop: { command: ['x'], timeoutMs: 0 } }))).toBe(
      'spec.hooks.beforeStop.timeoutMs',
    );
    expect(fieldOf(h({ beforeStop: { command: ['x'], timeoutMs: 600_001 } }))).toBe(
      'spec.hooks.beforeStop.timeoutMs',
    );
    expect(fieldOf(h({ beforeStop: { command: ['x'], timeout: 5 } }))).toBe('spec.hooks.beforeStop.timeout');
    expect(fieldOf(() => parseHooks({ hooks: { afterStart: {} } }, 'deploys.api.spec'))).toBe(
      'deploys.api.spec.hooks.afterStart.command',
    );
  });
});

// --- sim engine on a virtual clock ---------------------------------------------------------------

/** Run the loop (with promise continuations) until `p` settles. */
async function drive<T>(loop: EventLoop, p: Promise<T>): Promise<T> {
  let settled = false;
  const q = p.finally(() => {
    settled = true;
  });
  while (!settled) {
    const t = loop.peekTime();
    if (t === undefined) {
      await loop.runForAsync(0);
      if (!settled) throw new Error('nothing left to run and the promise is still pending');
      break;
    }
    await loop.runUntilAsync(t);
  }
  return q;
}

function simRig(execDelayMs: readonly [number, number] = [5, 5]) {
  const loop = new EventLoop();
  const clock = new VirtualClock(loop, { epochMs: 0 });
  const machine = new SimMachine({ clock, random: new Prng(7), startDelayMs: [10, 10], execDelayMs });
  const engine = new SimEngine({ hostId: 'h', machine });
  return { loop, clock, engine };
}

async function simWorkload(r: ReturnType<typeof simRig>, id: string): Promise<void> {
  await drive(r.loop, r.engine.create({ id, deployId: 'd', hostId: 'h', image: 'img', command: ['serve'] }));
  await drive(r.loop, r.engine.start(id));
}

describe('runHook on the sim engine (virtual clock)', () => {
  it('a passing hook: ok, exit 0, output, duration on the clock', async () => {
    const r = simRig();
    await simWorkload(r, 'w');
    const res = await drive(
      r.loop,
      runHook(r.engine, 'w', hook(simProgram({ stdout: ['warmed'] })), r.clock),
    );
    expect(res).toEqual({
      ok: true,
      fatal: false,
      exitCode: 0,
      stdout: 'warmed\n',
      stderr: '',
      timedOut: false,
      durationMs: 5,
    });
  });

  it('a failing hook: not fatal without force, fatal with it; the reason carries the exit code and stderr', async () => {
    const r = simRig();
    await simWorkload(r, 'w');
    const cmd = simProgram({ exitCode: 3, stderr: ['cache warm-up failed: no db'] });
    const soft = await drive(r.loop, runHook(r.engine, 'w', hook(cmd), r.clock));
    expect(soft).toMatchObject({ ok: false, fatal: false, exitCode: 3, timedOut: false });
    expect(soft.error).toBe(`${cmd[0]} exited with 3: cache warm-up failed: no db`);
    const hard = await drive(r.loop, runHook(r.engine, 'w', hook(cmd, { force: true }), r.clock));
    expect(hard).toMatchObject({ ok: false, fatal: true, exitCode: 3 });
    const okForced = await drive(
      r.loop,
      runHook(r.engine, 'w', hook(simProgram({}), { force: true }), r.clock),
    );
    expect(okForced).toMatchObject({ ok: true, fatal: false });
  });

  it('timeout is enforced on the clock (the sim engine ignores exec timeouts): deterministic', async () => {
    const r = simRig([5_000, 5_000]);
    await simWorkload(r, 'w');
    const t0 = r.loop.now;
    const res = await drive(
      r.loop,
      runHook(r.engine, 'w', hook(simProgram({}), { timeoutMs: 1_000, force: true }), r.clock),
    );
    expect(res).toMatchObject({ ok: false, fatal: true, timedOut: true, exitCode: null, durationMs: 1_000 });
    expect(res.error).toBe('timed out after 1000 ms');
    expect(r.loop.now - t0).toBe(1_000);
  });

  it('a workload that is not running: the hook fails (never throws)', async () => {
    const r = simRig();
    await simWorkload(r, 'w');
    await drive(r.loop, r.engine.stop('w', { timeoutMs: 100 }));
    const res = await drive(r.loop, runHook(r.engine, 'w', hook(['drain']), r.clock));
    expect(res).toMatchObject({ ok: false, fatal: false, exitCode: null, timedOut: false });
    expect(res.error).toMatch(/not running/);
    const missing = await drive(r.loop, runHook(r.engine, 'nope', hook(['drain'], { force: true }), r.clock));
    expect(missing).toMatchObject({ ok: false, fatal: true });
    expect(missing.error).toMatch(/not found/);
  });

  it('the clock timer is cancelled once the hook finished (nothing left pending)', async () => {
    const r = simRig();
    await simWorkload(r, 'w');
    await drive(r.loop, runHook(r.engine, 'w', hook(simProgram({}), { timeoutMs: 60_000 }), r.clock));
    expect(r.clock.pending).toBe(0);
  });
});

// --- process engine: real commands ---------------------------------------------------------------

describe('runHook on the process engine', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-hooks-'));
  const work = mkdtempSync(join(tmpdir(), 'shoal-hooks-work-'));
  const engine = new ProcessEngine({ hostId: 'hk', dataDir: dir, pollMs: 50 });

  afterAll(async () => {
    for (const w of await engine.list()) await engine.remove(w.id, { force: true }).catch(() => {});
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  it('afterStart runs in the workload (its cwd and env); beforeStop reports a non-zero exit', async () => {
    await engine.create({
      id: 'app',
      deployId: 'd',
      hostId: 'hk',
      command: ['sleep', '60'],
      workdir: work,
      env: { GREETING: 'hello' },
    });
    await engine.start('app');
    const after = await runHook(
      engine,
      'app',
      hook(['sh', '-c', 'echo "$GREETING" > started.txt; echo warmed']),
    );
    expect(after).toMatchObject({ ok: true, exitCode: 0, stdout: 'warmed\n', fatal: false, durationMs: 0 });
    expect(existsSync(join(work, 'started.txt'))).toBe(true);
    expect(readFileSync(join(work, 'started.txt'), 'utf8')).toBe('hello\n');

    const before = await runHook(
      engine,
      'app',
      hook(['sh', '-c', 'echo draining; echo "drain failed" >&2; exit 4'], { force: true }),
    );
    expect(before).toMatchObject({
      ok: false,
      fatal: true,
      exitCode: 4,
      stdout: 'draining\n',
      stderr: 'drain failed\n',
    });
    expect(before.error).toBe('sh exited with 4: drain failed');
    await engine.stop('app', { timeoutMs: 2_000 }); // beforeStop never vetoes the stop
    expect((await engine.inspect('app')).state).toBe('exited');
  });

  it('a missing command fails the hook with exit 127', async () => {
    await engine.create({ id: 'm', deployId: 'd', hostId: 'hk', command: ['sleep', '60'] });
    await engine.start('m');
    const res = await runHook(engine, 'm', hook(['shoal-no-such-hook']));
    expect(res).toMatchObject({ ok: false, exitCode: 127 });
    expect(res.error).toMatch(/^shoal-no-such-hook exited with 127/);
  });

  it('timeout: the engine kills the command; with a real clock the result is the same', async () => {
    await engine.create({ id: 'slow', deployId: 'd', hostId: 'hk', command: ['sleep', '60'] });
    await engine.start('slow');
    const t0 = Date.now();
    const res = await runHook(engine, 'slow', hook(['sleep', '5'], { timeoutMs: 300 }));
    expect(res).toMatchObject({ ok: false, timedOut: true, exitCode: null, error: 'timed out after 300 ms' });
    const clock = new RealClock({ unref: true });
    const res2 = await runHook(engine, 'slow', hook(['sleep', '5'], { timeoutMs: 300, force: true }), clock);
    expect(res2).toMatchObject({ ok: false, fatal: true, timedOut: true });
    expect(res2.durationMs).toBeGreaterThanOrEqual(300);
    expect(Date.now() - t0).toBeLessThan(3_000);
  });

  it('output is capped at 4 KiB (the tail is kept)', async () => {
    await engine.create({ id: 'loud', deployId: 'd', hostId: 'hk', command: ['sleep', '60'] });
    await engine.start('loud');
    const res = await runHook(
      engine,
      'loud',
      hook(['sh', '-c', 'i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done']),
    );
    expect(res.ok).toBe(true);
    expect(res.stdout.length).toBe(4_096);
    expect(res.stdout.endsWith('line1999\n')).toBe(true);
    expect(res.stdout.startsWith('…')).toBe(true);
  });
});
