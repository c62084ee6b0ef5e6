import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EventLoop } from '../sim/clock.ts';
import { SimCluster } from '../sim/cluster.ts';

/**
 * runUntilAsync yields through the Node event loop only after events that may have queued
 * microtasks (a promise created or settled, queueMicrotask, process.nextTick). It must give the
 * same order as yielding after every event (EventLoop.yieldEveryEvent, the reference).
 */

afterEach(() => {
  EventLoop.yieldEveryEvent = false;
});

describe('runUntilAsync drains only when needed', () => {
  it('queueMicrotask, promises and a promise settled by a later event still run before the next event', async () => {
    const loop = new EventLoop();
    const out: string[] = [];
    let resolveLater: (v: string) => void = () => {};
    const later = new Promise<string>((r) => {
      resolveLater = r;
    });
    void later.then((v) => out.push(`${v}@${loop.now}`));
    loop.schedule(1, () => queueMicrotask(() => out.push(`qm@${loop.now}`)));
    loop.schedule(1, () => out.push('a@1'));
    loop.schedule(2, () => void Promise.resolve().then(() => out.push(`then@${loop.now}`)));
    loop.schedule(2, () => out.push('b@2'));
    loop.schedule(3, () => resolveLater('resolved')); // settles a promise created outside the run
    loop.schedule(3, () => out.push('c@3'));
    loop.schedule(4, () => out.push('d@4')); // plain events: no yield needed
    const qm = globalThis.queueMicrotask;
    await loop.runUntilAsync(10);
    expect(out).toEqual(['qm@1', 'a@1', 'then@2', 'b@2', 'resolved@3', 'c@3', 'd@4']);
    // The wrappers are gone after the run.
    expect(globalThis.queueMicrotask).toBe(qm);
  });

  it('process.nextTick too (checked in a plain Node process: vitest replaces process.nextTick in workers)', () => {
    const script = [
      "const { EventLoop } = await import('./sim/clock.ts');",
      'const loop = new EventLoop(); const out = [];',
      "loop.schedule(2, () => process.nextTick(() => out.push('tick@' + loop.now)));",
      "loop.schedule(2, () => out.push('b@2'));",
      'await loop.runUntilAsync(5); console.log(JSON.stringify(out));',
    ].join('\n');
    const dir = mkdtempSync(join(tmpdir(), 'drain-'));
    const file = join(dir, 'nt.mts');
    writeFileSync(file, script.replace('./sim/clock.ts', join(process.cwd(), 'sim/clock.ts')));
    const r = spawnSync(process.execPath, ['node/bin/run-ts.js', file], { encoding: 'utf8' });
    expect(r.stdout.trim()).toBe('["tick@2","b@2"]');
  });

  it('a cluster with deploys, an engine, a crash and a restart runs the same either way', async () => {
    const run = async () => {
      const c = new SimCluster({ seed: 17, size: 12, trace: true, engine: { startDelayMs: [20, 80] } });
      await c.start();
      await c.runUntil(() => c.membershipSettled('dead', true) && c.converged(), 30_000, 100);
      for (let k = 0; k < 3; k++) {
        c.get(k * 3).placement.submit(`d${k}`, {
          name: `d${k}`,
          replicas: 4,
          strategy: k % 2 ? 'spread' : 'binpack',
          spec: { resources: { cpu: { milli: 500 }, memoryBytes: 2 ** 30 } },
        });
      }
      await c.run(3_000);
      c.crash(5);
      await c.run(8_000);
      await c.restart(5);
      c.get(2).sync.removeIntent('d1');
      await c.run(10_000);
      return { hash: c.traceHash(), lines: c.trace!.length, events: c.loop.fired };
    };
    const fast = await run();
    EventLoop.yieldEveryEvent = true;
    const reference = await run();
    expect(fast.lines).toBeGreaterThan(1000);
    expect(fast).toEqual(reference);
  }, 120_000);
});
