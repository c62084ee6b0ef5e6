/** SimEngine: the shared suite on virtual time, plus determinism and re-adoption. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { EngineEvent } from '../engines/engine.ts';
import { type SimClock, SimEngine, SimMachine, type SimMachineOptions, simProgram } from '../engines/sim.ts';
import { Prng } from '../node/core/random.ts';
import { type EngineHarness, engineConformance } from './conformance/engine.ts';

/**
 * A virtual clock that advances by itself: whenever the event loop is otherwise idle (a
 * setImmediate turn), the earliest pending timer fires and time jumps to its deadline.
 * Equal deadlines fire in creation order.
 */
class AutoClock implements SimClock {
  private t = 1_700_000_000_000;
  private seq = 0;
  private readonly timers: Array<{ at: number; seq: number; fn: () => void; cancelled: boolean }> = [];
  private scheduled = false;

  now(): number {
    return this.t;
  }

  setTimer(delayMs: number, fn: () => void): { cancel(): void } {
    const timer = { at: this.t + Math.max(0, delayMs), seq: this.seq++, fn, cancelled: false };
    this.timers.push(timer);
    this.schedule();
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.step();
    });
  }

  private step(): void {
    for (let i = this.timers.length - 1; i >= 0; i--) if (this.timers[i]?.cancelled) this.timers.splice(i, 1);
    if (this.timers.length === 0) return;
    this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
    const next = this.timers.shift()!;
    this.t = Math.max(this.t, next.at);
    next.fn();
    if (this.timers.length > 0) this.schedule();
  }
}

const IMAGE = 'shoal/busybox:latest';

function machine(seed: number, extra: Partial<SimMachineOptions> = {}): SimMachine {
  return new SimMachine({
    clock: new AutoClock(),
    random: new Prng(seed),
    images: [IMAGE],
    missingCommands: ['shoal-no-such-command'],
    ...extra,
  });
}

engineConformance('sim', () => {
  const m = machine(1);
  const harness: EngineHarness = {
    make: async (hostId) => new SimEngine({ hostId, machine: m }),
    program: (p) => ({ image: IMAGE, command: simProgram(p) }),
    execCommand: (p) => simProgram(p),
    missingImage: 'shoal/no-such-image:1',
    missingCommand: { image: IMAGE, command: ['shoal-no-such-command'] },
    sleep: (ms) => new Promise((r) => m.clock.setTimer(ms, r)),
    now: () => m.clock.now(),
    slackMs: 0,
  };
  return harness;
});

describe('sim engine', () => {
  async function scenario(seed: number): Promise<string[]> {
    const m = machine(seed, { failureProbability: 0.5, lifetimeMs: [100, 5_000] });
    const e = new SimEngine({ hostId: 'h', machine: m });
    const log: string[] = [];
    e.subscribe((ev: EngineEvent) =>
      log.push(
        `${ev.ts - 1_700_000_000_000} ${ev.type} ${ev.id}${ev.type === 'exited' ? ` ${ev.exitCode}` : ''}`,
      ),
    );
    for (let i = 0; i < 20; i++) {
      await e.create({ id: `w${i}`, deployId: 'd', hostId: 'h', image: IMAGE, command: ['server'] });
      await e.start(`w${i}`);
    }
    await new Promise<void>((r) => m.clock.setTimer(10_000, r));
    for (const w of await e.list()) {
      const st = await e.stats(w.id);
      log.push(`${w.id} ${w.state} ${w.exitCode ?? ''} ${st.memoryBytes} ${st.cpuMilli}`);
    }
    return log;
  }

  it('is deterministic for a seed (failures, lifetimes, exit codes, usage)', async () => {
    const a = await scenario(7);
    const b = await scenario(7);
    const c = await scenario(8);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(a.some((l) => l.includes('exited'))).toBe(true); // some crashed
    expect(a.some((l) => / running /.test(l))).toBe(true); // some still run
  });

  it('uses no real time or randomness', () => {
    const src = readFileSync(new URL('../engines/sim.ts', import.meta.url), 'utf8').replace(
      /\/\*[\s\S]*?\*\//g,
      '',
    );
    for (const banned of ['Math.random', 'Date.now', 'setTimeout', 'setInterval', 'performance.now'])
      expect(src.includes(banned), banned).toBe(false);
  });

  it('a new engine on the same machine re-adopts workloads (agent restart)', async () => {
    const m = machine(3);
    const a = new SimEngine({ hostId: 'h', machine: m });
    await a.create({
      id: 'w',
      deployId: 'd',
      hostId: 'h',
      image: IMAGE,
      command: simProgram({ runMs: 1_000, exitCode: 9 }),
    });
    await a.start('w');
    await a.close();
    const b = new SimEngine({ hostId: 'h', machine: m });
    expect((await b.list()).map((w) => [w.id, w.state])).toEqual([['w', 'running']]);
    expect(await b.wait('w')).toBe(9);
  });

  it('memory above the limit is an OOM kill, also after a live update', async () => {
    const m = machine(4);
    const e = new SimEngine({ hostId: 'h', machine: m });
    const events: EngineEvent[] = [];
    e.subscribe((ev) => events.push(ev));
    const prog = simProgram({ memoryBytes: 100 * 1024 * 1024 });
    await e.create({
      id: 'big',
      deployId: 'd',
      hostId: 'h',
      image: IMAGE,
      command: prog,
      resources: { memoryBytes: 64 * 1024 * 1024 },
    });
    await e.start('big');
    expect(await e.wait('big')).toBe(137);
    expect((await e.inspect('big')).oomKilled).toBe(true);

    await e.create({
      id: 'ok',
      deployId: 'd',
      hostId: 'h',
      image: IMAGE,
      command: prog,
      resources: { memoryBytes: 128 * 1024 * 1024 },
    });
    await e.start('ok');
    expect((await e.stats('ok')).memoryBytes).toBe(100 * 1024 * 1024);
    await e.update('ok', { memoryBytes: 64 * 1024 * 1024 });
    expect(await e.wait('ok')).toBe(137);
    expect(events.filter((ev) => ev.type === 'oom').map((ev) => ev.id)).toEqual(['big', 'ok']);
  });
});
