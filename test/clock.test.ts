import { describe, expect, it } from 'vitest';
import { RealClock } from '../node/io/clock.ts';
import { EventLoop, SIM_EPOCH_MS, VirtualClock } from '../sim/clock.ts';
import { clockConformance } from './conformance/clock.ts';

let loop = new EventLoop();
clockConformance(
  'VirtualClock',
  () => {
    loop = new EventLoop();
    return new VirtualClock(loop);
  },
  async (ms) => {
    loop.runFor(ms);
  },
  { exact: true },
);

// The same suite driven by runForAsync (the async drain must not change timer semantics).
let loop2 = new EventLoop();
clockConformance(
  'VirtualClock (runForAsync)',
  () => {
    loop2 = new EventLoop();
    return new VirtualClock(loop2, { skewMs: -1234 });
  },
  async (ms) => {
    await loop2.runForAsync(ms);
  },
  { exact: true },
);

clockConformance(
  'RealClock',
  () => new RealClock({ unref: true }),
  (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
);

describe('EventLoop', () => {
  it('orders by (time, sequence) and counts events', () => {
    const loop = new EventLoop();
    const out: string[] = [];
    loop.schedule(5, () => out.push('b5'));
    loop.schedule(1, () => out.push('a1'));
    loop.schedule(5, () => out.push('c5'));
    loop.schedule(3, () => {
      out.push('x3');
      loop.schedule(5, () => out.push('d5'));
      loop.schedule(0, () => out.push('past→now'));
    });
    expect(loop.pending).toBe(4);
    expect(loop.runUntil(4)).toBe(3);
    expect(loop.now).toBe(4);
    expect(out).toEqual(['a1', 'x3', 'past→now']);
    expect(loop.runUntil(10)).toBe(3);
    expect(out.slice(3)).toEqual(['b5', 'c5', 'd5']);
    expect(loop.fired).toBe(6);
    expect(loop.pending).toBe(0);
    expect(loop.now).toBe(10);
  });

  it('step() fires one event and advances to its time', () => {
    const loop = new EventLoop();
    let n = 0;
    loop.schedule(7, () => n++);
    loop.schedule(9, () => n++);
    expect(loop.step()).toBe(true);
    expect(loop.now).toBe(7);
    expect(n).toBe(1);
    expect(loop.peekTime()).toBe(9);
    expect(loop.step()).toBe(true);
    expect(loop.step()).toBe(false);
  });

  it('lazy cancel keeps counts right and compacts a heap full of dead entries', () => {
    const loop = new EventLoop();
    let fired = 0;
    const timers = [];
    for (let i = 0; i < 10_000; i++) timers.push(loop.after(100 + i, () => fired++));
    for (let i = 0; i < 10_000; i++) if (i % 10 !== 0) timers[i]!.cancel();
    expect(loop.pending).toBe(1000);
    for (let i = 0; i < 2000; i++) loop.after(50_000, () => fired++).cancel();
    expect(loop.heapSize).toBeLessThan(6000);
    loop.runUntilIdle();
    expect(fired).toBe(1000);
    expect(loop.pending).toBe(0);
  });

  it('fixed-delay queues fire in the same (time, sequence) order as the heap alone', () => {
    // Recurring delays (queued once seen often), one-off delays and absolute times (heap), equal
    // times across both, cancels and a group cancelAll, all scheduled from inside events.
    let x = 7;
    const rnd = (n: number) => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return x % n;
    };
    const loop = new EventLoop();
    const g = loop.group();
    const order: number[] = [];
    let id = 0;
    const delays = [500, 200, 300, 0, 2.5];
    const add = (depth: number) => {
      const k = id++;
      const kind = rnd(10);
      const fn = () => {
        order.push(k);
        if (depth < 6) for (let i = rnd(3); i > 0; i--) add(depth + 1);
      };
      const t =
        kind < 7
          ? loop.after(delays[rnd(delays.length)]!, fn, kind === 0 ? g : undefined)
          : kind < 9
            ? loop.after(rnd(1000) / 4, fn)
            : loop.schedule(loop.now + rnd(4) * 100, fn);
      if (rnd(5) === 0) t.cancel();
    };
    for (let i = 0; i < 400; i++) add(0);
    loop.runUntil(900);
    g.cancelAll();
    loop.runUntilIdle();
    // Reference: the same script on a loop whose every event goes through schedule() (the heap).
    x = 7;
    id = 0;
    const ref = new EventLoop();
    const rg = ref.group();
    const refOrder: number[] = [];
    const radd = (depth: number) => {
      const k = id++;
      const kind = rnd(10);
      const fn = () => {
        refOrder.push(k);
        if (depth < 6) for (let i = rnd(3); i > 0; i--) radd(depth + 1);
      };
      const t =
        kind < 7
          ? ref.schedule(ref.now + delays[rnd(delays.length)]!, fn, kind === 0 ? rg : undefined)
          : kind < 9
            ? ref.schedule(ref.now + rnd(1000) / 4, fn)
            : ref.schedule(ref.now + rnd(4) * 100, fn);
      if (rnd(5) === 0) t.cancel();
    };
    for (let i = 0; i < 400; i++) radd(0);
    ref.runUntil(900);
    rg.cancelAll();
    ref.runUntilIdle();
    expect(order.length).toBeGreaterThan(1000);
    expect(order).toEqual(refOrder);
    expect(loop.pending).toBe(0);
    expect(loop.heapSize).toBe(0);
  });

  it('TimerGroup.cancelAll drops a whole group in O(1) and the group stays usable', () => {
    const loop = new EventLoop();
    const g = loop.group();
    const out: string[] = [];
    loop.after(5, () => out.push('other'));
    const t = loop.after(5, () => out.push('g1'), g);
    loop.after(6, () => out.push('g2'), g);
    expect(g.pending).toBe(2);
    g.cancelAll();
    t.cancel(); // stale handle: no-op, counts unaffected
    expect(g.pending).toBe(0);
    expect(loop.pending).toBe(1);
    loop.after(7, () => out.push('g3'), g);
    loop.runUntilIdle();
    expect(out).toEqual(['other', 'g3']);
    expect(loop.pending).toBe(0);
  });

  it('an exception propagates; the loop stays consistent and runs on', () => {
    const loop = new EventLoop();
    const out: number[] = [];
    loop.schedule(1, () => {
      throw new Error('boom');
    });
    loop.schedule(2, () => out.push(2));
    expect(() => loop.runUntil(10)).toThrow('boom');
    expect(loop.now).toBe(1);
    loop.runUntil(10);
    expect(out).toEqual([2]);
  });

  it('refuses re-entrant runs', () => {
    const loop = new EventLoop();
    let err: unknown;
    loop.schedule(1, () => {
      try {
        loop.runFor(5);
      } catch (e) {
        err = e;
      }
    });
    loop.runUntilIdle();
    expect(String(err)).toMatch(/re-entrantly/);
  });

  it('rejects NaN and infinite times', () => {
    const loop = new EventLoop();
    expect(() => loop.schedule(Number.NaN, () => {})).toThrow(RangeError);
    expect(() => loop.schedule(Number.POSITIVE_INFINITY, () => {})).toThrow(RangeError);
  });

  it('runUntilAsync runs promise continuations right after their event, at its time', async () => {
    const loop = new EventLoop();
    const out: string[] = [];
    const engineCall = async (tag: string) => {
      await Promise.resolve();
      await null;
      return tag;
    };
    loop.schedule(1, () => {
      void engineCall('e1').then((v) => {
        out.push(`${v}@${loop.now}`);
        // a continuation schedules an event "now": it runs after events already queued for now
        loop.after(0, () => out.push(`after-e1@${loop.now}`));
        process.nextTick(() => out.push('tick'));
      });
    });
    loop.schedule(1, () => out.push('b@1'));
    loop.schedule(2, () => out.push('c@2'));
    await loop.runUntilAsync(5);
    expect(out).toEqual(['e1@1', 'tick', 'b@1', 'after-e1@1', 'c@2']);
    expect(loop.now).toBe(5);
  });

  it('the sync runUntil defers promise continuations until after it returns', async () => {
    const loop = new EventLoop();
    const out: string[] = [];
    loop.schedule(1, () => {
      void Promise.resolve().then(() => out.push(`cont@${loop.now}`));
    });
    loop.schedule(2, () => out.push('b@2'));
    loop.runUntil(5);
    await Promise.resolve();
    expect(out).toEqual(['b@2', 'cont@5']);
  });
});

describe('VirtualClock', () => {
  it('reads epoch + loop time + skew as whole milliseconds', () => {
    const loop = new EventLoop();
    const a = new VirtualClock(loop);
    const b = new VirtualClock(loop, { skewMs: 250.7 });
    expect(a.now()).toBe(SIM_EPOCH_MS);
    expect(new Date(a.now()).toISOString()).toBe('2026-01-01T00:00:00.000Z');
    loop.runFor(1000.5);
    expect(a.now()).toBe(SIM_EPOCH_MS + 1000);
    expect(b.now()).toBe(SIM_EPOCH_MS + 1251);
    b.setSkew(-5000);
    expect(b.now()).toBe(SIM_EPOCH_MS - 4000);
  });

  it('skew changes what the agent reads, not how long a delay lasts', () => {
    const loop = new EventLoop();
    const skewed = new VirtualClock(loop, { skewMs: 60_000 });
    let at = -1;
    skewed.setTimer(100, () => {
      at = loop.now;
    });
    loop.runFor(200);
    expect(at).toBe(100);
  });

  it('kill() drops pending timers and makes later ones inert; cancelAll() keeps the clock usable', () => {
    const loop = new EventLoop();
    const a = new VirtualClock(loop);
    const b = new VirtualClock(loop);
    const out: string[] = [];
    a.setTimer(10, () => out.push('a1'));
    a.setTimer(20, () => out.push('a2'));
    b.setTimer(15, () => out.push('b1'));
    loop.runFor(12);
    a.kill();
    a.setTimer(1, () => out.push('a-after-kill')).cancel();
    a.setTimer(1, () => out.push('a-after-kill'));
    expect(a.pending).toBe(0);
    b.cancelAll();
    b.setTimer(1, () => out.push('b2'));
    loop.runUntilIdle();
    expect(out).toEqual(['a1', 'b2']);
    expect(loop.pending).toBe(0);
  });
});
