import type { Clock, Timer } from '../core/io.ts';

/**
 * The wall clock. `now()` is Date.now(). Timers keep their own queue ordered by
 * (deadline, creation sequence) on the monotonic clock (performance.now), driven by one Node
 * timer, so the Clock contract holds exactly: a timer never fires before its delay has elapsed
 * (an early Node wake-up is re-armed), and timers with equal deadlines fire in creation order
 * (Node's own timers do not promise that across different delays).
 */
export interface RealClockOptions {
  /** Do not keep the process alive for pending timers. Default false. */
  unref?: boolean;
}

interface Entry extends Timer {
  deadline: number;
  seq: number;
  fn: (() => void) | null;
}

export class RealClock implements Clock {
  private readonly heap: Entry[] = [];
  private seq = 0;
  private handle: NodeJS.Timeout | undefined;
  private armedFor = Number.POSITIVE_INFINITY;
  private readonly unref: boolean;

  constructor(opts: RealClockOptions = {}) {
    this.unref = opts.unref ?? false;
  }

  now(): number {
    return Date.now();
  }

  setTimer(delayMs: number, fn: () => void): Timer {
    if (!Number.isFinite(delayMs)) throw new RangeError(`setTimer: delayMs must be finite, got ${delayMs}`);
    const entry: Entry = {
      // Whole milliseconds (rounded up, so never early): timers set within the same millisecond
      // with the same delay share a deadline and fire in creation order.
      deadline: Math.ceil(performance.now() + Math.max(delayMs, 0)),
      seq: this.seq++,
      fn,
      cancel() {
        entry.fn = null;
      },
    };
    this.push(entry);
    this.arm();
    return entry;
  }

  /** Live timers (cancelled ones are dropped lazily; this count excludes them). */
  get pending(): number {
    let n = 0;
    for (const e of this.heap) if (e.fn !== null) n++;
    return n;
  }

  /** Cancel every pending timer. */
  cancelAll(): void {
    for (const e of this.heap) e.fn = null;
    this.heap.length = 0;
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.handle = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
  }

  private arm(): void {
    while (this.heap.length > 0 && this.heap[0]!.fn === null) this.pop();
    if (this.heap.length === 0) {
      if (this.handle !== undefined) clearTimeout(this.handle);
      this.handle = undefined;
      this.armedFor = Number.POSITIVE_INFINITY;
      return;
    }
    const deadline = this.heap[0]!.deadline;
    if (this.handle !== undefined && this.armedFor <= deadline) return;
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.armedFor = deadline;
    this.handle = setTimeout(() => this.onWake(), Math.max(0, Math.ceil(deadline - performance.now())));
    if (this.unref) this.handle.unref();
  }

  private onWake(): void {
    this.handle = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
    try {
      // Run everything due; timers set by callbacks for "now" run in this pass, after the others due.
      while (this.heap.length > 0) {
        const top = this.heap[0]!;
        if (top.fn === null) {
          this.pop();
          continue;
        }
        if (top.deadline > performance.now()) break;
        this.pop();
        const fn = top.fn;
        top.fn = null;
        fn();
      }
    } finally {
      this.arm();
    }
  }

  private push(e: Entry): void {
    const h = this.heap;
    let i = h.length;
    h.push(e);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(e, h[p]!)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = e;
  }

  private pop(): Entry {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    const n = h.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(h[c + 1]!, h[c]!)) c++;
        if (!before(h[c]!, last)) break;
        h[i] = h[c]!;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}

function before(a: Entry, b: Entry): boolean {
  return a.deadline < b.deadline || (a.deadline === b.deadline && a.seq < b.seq);
}
