import { describe, expect, it } from 'vitest';
import type { Clock } from '../../node/core/io.ts';

export interface ClockConformanceOptions {
  /**
   * `advance(ms)` moves time by exactly `ms` (a virtual clock). Enables the tests that need exact
   * time: timers set at different moments with equal deadlines, and "not yet fired" at the
   * deadline minus a hair. A real clock only gets margins that hold under load.
   */
  exact?: boolean;
}

/**
 * The Clock contract (node/core/io.ts): timers fire once, at or after their delay; equal deadlines
 * fire in creation order; cancel works and is a no-op after firing or twice; timers set from a
 * timer callback work; a callback never runs inside setTimer.
 *
 * `makeClock()` is called once per test; `advance(ms)` lets `ms` of that clock's time pass (a sleep
 * for a real clock, running the event loop for a virtual one).
 */
export function clockConformance(
  name: string,
  makeClock: () => Clock,
  advance: (ms: number) => Promise<void>,
  opts: ClockConformanceOptions = {},
): void {
  // Real clocks: delays small enough to keep the suite quick, far enough apart to survive a loaded machine.
  const SHORT = 5;
  const LONG = 250;

  describe(`Clock conformance: ${name}`, () => {
    it('now() is a plausible epoch-ms timestamp and does not go backwards across a timer', async () => {
      const clock = makeClock();
      const t0 = clock.now();
      expect(Number.isFinite(t0)).toBe(true);
      expect(t0).toBeGreaterThan(Date.UTC(2020, 0, 1));
      let t1 = 0;
      clock.setTimer(SHORT, () => {
        t1 = clock.now();
      });
      await advance(SHORT * 4);
      expect(t1).toBeGreaterThanOrEqual(t0);
    });

    it('fires once, at or after its delay', async () => {
      const clock = makeClock();
      const start = clock.now();
      const fired: number[] = [];
      clock.setTimer(20, () => fired.push(clock.now()));
      await advance(80);
      expect(fired.length).toBe(1);
      expect(fired[0]! - start).toBeGreaterThanOrEqual(20);
      await advance(40);
      expect(fired.length).toBe(1);
    });

    it('does not fire early', async () => {
      const clock = makeClock();
      let fired = false;
      clock.setTimer(LONG, () => {
        fired = true;
      });
      await advance(opts.exact ? LONG - 1 : SHORT);
      expect(fired).toBe(false);
      await advance(opts.exact ? 1 : LONG + 100);
      expect(fired).toBe(true);
    });

    it('never calls back from inside setTimer, even with delay 0', async () => {
      const clock = makeClock();
      let fired = false;
      clock.setTimer(0, () => {
        fired = true;
      });
      expect(fired).toBe(false);
      await advance(SHORT * 4);
      expect(fired).toBe(true);
    });

    it('fires equal deadlines in creation order', async () => {
      const clock = makeClock();
      const order: number[] = [];
      for (let i = 0; i < 20; i++) clock.setTimer(10, () => order.push(i));
      await advance(60);
      expect(order).toEqual(Array.from({ length: 20 }, (_, i) => i));
    });

    it('fires in deadline order, whatever the creation order', async () => {
      const clock = makeClock();
      const order: string[] = [];
      clock.setTimer(opts.exact ? 30 : 120, () => order.push('late'));
      clock.setTimer(opts.exact ? 10 : 5, () => order.push('early'));
      await advance(opts.exact ? 40 : 250);
      expect(order).toEqual(['early', 'late']);
    });

    if (opts.exact) {
      it('equal deadlines set at different times and with different delays fire in creation order', async () => {
        const clock = makeClock();
        const order: string[] = [];
        clock.setTimer(10, () => order.push('a'));
        await advance(5);
        clock.setTimer(5, () => order.push('b'));
        clock.setTimer(5, () => order.push('c'));
        await advance(10);
        expect(order).toEqual(['a', 'b', 'c']);
      });
    }

    it('cancel prevents firing; cancel twice and cancel after firing are no-ops', async () => {
      const clock = makeClock();
      const fired: string[] = [];
      const a = clock.setTimer(10, () => fired.push('a'));
      const b = clock.setTimer(10, () => fired.push('b'));
      const c = clock.setTimer(15, () => fired.push('c'));
      a.cancel();
      a.cancel();
      await advance(60);
      expect(fired).toEqual(['b', 'c']);
      b.cancel();
      c.cancel();
      await advance(30);
      expect(fired).toEqual(['b', 'c']);
    });

    it('a timer can cancel another timer due at the same time', async () => {
      const clock = makeClock();
      const fired: string[] = [];
      let second: { cancel(): void } | undefined;
      clock.setTimer(10, () => {
        fired.push('first');
        second?.cancel();
      });
      second = clock.setTimer(10, () => fired.push('second'));
      await advance(60);
      expect(fired).toEqual(['first']);
    });

    it('timers set from a callback fire, after the timers already due', async () => {
      const clock = makeClock();
      const order: string[] = [];
      clock.setTimer(10, () => {
        order.push('outer');
        clock.setTimer(0, () => order.push('nested0'));
        clock.setTimer(10, () => {
          order.push('nested10');
          clock.setTimer(5, () => order.push('deep'));
        });
      });
      clock.setTimer(10, () => order.push('sibling'));
      await advance(100);
      expect(order).toEqual(['outer', 'sibling', 'nested0', 'nested10', 'deep']);
    });

    it('a timer can re-arm itself (periodic)', async () => {
      const clock = makeClock();
      let n = 0;
      const tick = () => {
        n++;
        if (n < 5) clock.setTimer(2, tick);
      };
      clock.setTimer(2, tick);
      await advance(opts.exact ? 10 : 150);
      expect(n).toBe(5);
    });

    it('rejects a non-finite delay', () => {
      const clock = makeClock();
      expect(() => clock.setTimer(Number.NaN, () => {})).toThrow(RangeError);
      expect(() => clock.setTimer(Number.POSITIVE_INFINITY, () => {})).toThrow(RangeError);
    });
  });
}
