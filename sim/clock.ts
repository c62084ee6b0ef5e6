import { promiseHooks } from 'node:v8';
import type { Clock, Timer } from '../node/core/io.ts';

/**
 * Discrete-event scheduler and virtual clocks for the simulator.
 *
 * Ordering guarantee: events fire in ascending (time, sequence) order, where the sequence number
 * is assigned at `schedule` time from one counter per loop. So events with equal deadlines fire in
 * the order they were scheduled, whoever scheduled them. Nothing else (no wall clock, no
 * Math.random, no container iteration order) influences the order: same inputs → same run.
 *
 * Time is a plain number of milliseconds since the loop started (fractional values allowed;
 * IEEE-754 arithmetic is deterministic). Events are never re-entrant: a callback that schedules
 * an event for "now" gets a larger sequence number, so it fires after the current callback
 * returns and after every event already queued for the same instant.
 *
 * Cancellation is lazy: a cancelled event stays in the heap, marked dead, and is skipped when
 * popped; the heap is compacted when dead entries outnumber live ones.
 *
 * Fixed-delay timers skip the heap: events scheduled with `after(d)` (and VirtualClock.setTimer)
 * for a delay d that recurs often (every agent's probe interval, probe timeout, push-pull
 * interval) go to a FIFO queue per delay. Loop time never decreases and sequence numbers only
 * grow, so each such queue is already sorted by (time, sequence): a push is O(1), and the next
 * event is the least of the heap top and the queue heads. Same order as the heap alone. `TimerGroup.cancelAll()`
 * kills every pending event of a group in O(1) (an epoch bump), which is how a crashed agent's
 * timers and a crashed node's in-flight inbound messages disappear.
 */

/** A set of events that can be dropped together (one agent's clock, one node's inbox). */
export class TimerGroup {
  /** Bumped by cancelAll(); events remember the epoch they were scheduled in. */
  epoch = 0;
  /** Live (scheduled, not fired, not cancelled) events of this group. */
  live = 0;

  constructor(readonly loop: EventLoop) {}

  /** Number of live events in this group. */
  get pending(): number {
    return this.live;
  }

  /** Drop every pending event of this group in O(1). The group stays usable for new events. */
  cancelAll(): void {
    this.loop.live -= this.live;
    this.live = 0;
    this.epoch++;
  }
}

/** One scheduled callback. It is its own Timer handle (no extra allocation per timer). */
class LoopEvent implements Timer {
  constructor(
    public t: number,
    public seq: number,
    // biome-ignore lint/suspicious/noExplicitAny: called with `arg` (undefined for plain callbacks)
    public fn: ((arg: any) => void) | null,
    public group: TimerGroup,
    public epoch: number,
    /** Passed to fn (scheduleArg): a shared fn and a record instead of a closure per event. */
    public arg: unknown,
    /** Posted (EventLoop.post): no handle was given out, so the record is reused once fired. */
    public pooled = false,
  ) {}

  get alive(): boolean {
    return this.fn !== null && this.group.epoch === this.epoch;
  }

  cancel(): void {
    if (this.fn === null || this.group.epoch !== this.epoch) return;
    this.fn = null;
    this.arg = undefined;
    this.group.live--;
    this.group.loop.live--;
  }
}

const INERT_TIMER: Timer = { cancel() {} };

/** Events scheduled `delay` after their scheduling time, in (time, seq) order; live from `head`. */
interface DelayQueue {
  readonly delay: number;
  evs: (LoopEvent | undefined)[];
  head: number;
  /** Key (time, seq) of evs[head] while the queue is not empty. */
  t: number;
  s: number;
}

/** At most this many delay queues (each next-event choice looks at every head). */
const MAX_QUEUES = 8;
/** A delay gets its queue after this many `after` calls with it. */
const PROMOTE_AFTER = 64;

export class EventLoop {
  // 4-ary min-heap on (time, seq). Keys live in typed arrays for cache locality; events alongside.
  private ts = new Float64Array(1024);
  private ss = new Float64Array(1024);
  private evs: (LoopEvent | undefined)[] = [];
  private size = 0;
  /** FIFO queues of fixed-delay events, and how many entries (dead ones too) they hold. */
  private readonly queues: DelayQueue[] = [];
  private readonly delayHits = new Map<number, number>();
  private queued = 0;
  /** Where peekLive found the next event: -1 the heap, else an index into `queues`. */
  private nextFrom = -1;
  private seq = 0;
  private time = 0;
  private running = false;
  /** Live events (maintained by LoopEvent.cancel and TimerGroup.cancelAll). */
  live = 0;
  /** Events fired since the loop was created. */
  fired = 0;
  /** The group events go to when no group is given. */
  readonly defaultGroup: TimerGroup = new TimerGroup(this);

  /** Current virtual time, ms since the loop started. */
  get now(): number {
    return this.time;
  }

  /** Live events waiting to fire. */
  get pending(): number {
    return this.live;
  }

  /** Heap slots including dead (cancelled) entries not yet collected; for diagnostics. */
  get heapSize(): number {
    return this.size + this.queued;
  }

  /** A new group of events that can be cancelled together. */
  group(): TimerGroup {
    return new TimerGroup(this);
  }

  /**
   * Run `fn` at virtual time `atMs`. A time in the past is clamped to now (it fires after the
   * events already queued for now). Returns a handle whose cancel() is O(1).
   */
  schedule(atMs: number, fn: () => void, group: TimerGroup = this.defaultGroup): Timer {
    return this.scheduleArg(atMs, fn, undefined, group);
  }

  /** schedule(), calling `fn(arg)`: one shared function for many events, no closure each. */
  scheduleArg<A>(atMs: number, fn: (arg: A) => void, arg: A, group: TimerGroup = this.defaultGroup): Timer {
    if (Number.isNaN(atMs)) throw new RangeError('EventLoop.schedule: time is NaN');
    if (atMs === Number.POSITIVE_INFINITY) throw new RangeError('EventLoop.schedule: time is Infinity');
    if (group.loop !== this) throw new Error('EventLoop.schedule: group belongs to another loop');
    const ev = new LoopEvent(Math.max(atMs, this.time), this.seq++, fn, group, group.epoch, arg);
    group.live++;
    this.live++;
    if (this.size + this.queued > 1024 && this.size + this.queued > 3 * this.live) this.compact();
    this.push(ev);
    return ev;
  }

  /**
   * scheduleArg() without a handle (nothing can cancel the event but its group's cancelAll): the
   * record is reused once the event has fired, so a message in flight allocates no LoopEvent.
   */
  post<A>(atMs: number, fn: (arg: A) => void, arg: A, group: TimerGroup): void {
    if (Number.isNaN(atMs)) throw new RangeError('EventLoop.schedule: time is NaN');
    if (atMs === Number.POSITIVE_INFINITY) throw new RangeError('EventLoop.schedule: time is Infinity');
    if (group.loop !== this) throw new Error('EventLoop.schedule: group belongs to another loop');
    const t = Math.max(atMs, this.time);
    const free = this.free;
    let ev: LoopEvent;
    if (free.length > 0) {
      ev = free.pop()!;
      ev.t = t;
      ev.seq = this.seq++;
      ev.fn = fn;
      ev.group = group;
      ev.epoch = group.epoch;
      ev.arg = arg;
    } else {
      ev = new LoopEvent(t, this.seq++, fn, group, group.epoch, arg, true);
    }
    group.live++;
    this.live++;
    if (this.size + this.queued > 1024 && this.size + this.queued > 3 * this.live) this.compact();
    this.push(ev);
  }

  /** Fired posted events, for reuse by post(). */
  private readonly free: LoopEvent[] = [];

  /**
   * Run `fn` after `delayMs` of virtual time (negative delays are clamped to 0). Same as
   * schedule(now + delay); a delay seen often goes to its FIFO queue instead of the heap.
   */
  after(delayMs: number, fn: () => void, group: TimerGroup = this.defaultGroup): Timer {
    if (Number.isNaN(delayMs)) throw new RangeError('EventLoop.schedule: time is NaN');
    const d = delayMs > 0 ? delayMs : 0;
    // At most MAX_QUEUES: a scan beats a Map lookup keyed by a double.
    let q: DelayQueue | undefined;
    const qs = this.queues;
    for (let i = 0; i < qs.length; i++) {
      if (qs[i]!.delay === d) {
        q = qs[i];
        break;
      }
    }
    if (q === undefined) {
      q = this.promote(d);
      if (q === undefined) return this.schedule(this.time + d, fn, group);
    }
    if (group.loop !== this) throw new Error('EventLoop.schedule: group belongs to another loop');
    const ev = new LoopEvent(this.time + d, this.seq++, fn, group, group.epoch, undefined);
    group.live++;
    this.live++;
    if (this.size + this.queued > 1024 && this.size + this.queued > 3 * this.live) this.compact();
    if (q.head === q.evs.length) {
      q.t = ev.t;
      q.s = ev.seq;
    }
    q.evs.push(ev);
    this.queued++;
    return ev;
  }

  /** Count uses of delay d; the FIFO queue for d once it has recurred often enough. */
  private promote(d: number): DelayQueue | undefined {
    if (this.queues.length >= MAX_QUEUES || !Number.isFinite(d)) return undefined;
    const n = (this.delayHits.get(d) ?? 0) + 1;
    if (n < PROMOTE_AFTER) {
      if (this.delayHits.size >= 4096) this.delayHits.clear();
      this.delayHits.set(d, n);
      return undefined;
    }
    this.delayHits.delete(d);
    const q: DelayQueue = { delay: d, evs: [], head: 0, t: 0, s: 0 };
    this.queues.push(q);
    return q;
  }

  /** Time of the next live event, or undefined if none. Drops dead entries from the top. */
  peekTime(): number | undefined {
    const ev = this.peekLive();
    return ev === undefined ? undefined : ev.t;
  }

  /** Fire the next live event (advancing time to it). Returns false if there was none. */
  step(): boolean {
    const ev = this.peekLive();
    if (ev === undefined) return false;
    this.enter();
    try {
      this.fire(this.take());
    } finally {
      this.running = false;
    }
    return true;
  }

  /**
   * Fire every event with time <= `ms`, in order, then set the time to `ms` (if later).
   * Returns the number of events fired. An exception from a callback propagates (the event is
   * already consumed; the loop stays consistent and can be run again).
   */
  runUntil(ms: number): number {
    this.enter();
    const start = this.fired;
    try {
      for (;;) {
        const ev = this.peekLive();
        if (ev === undefined || ev.t > ms) break;
        this.fire(this.take());
      }
      if (ms > this.time) this.time = ms;
    } finally {
      this.running = false;
    }
    return this.fired - start;
  }

  /** runUntil(now + ms). */
  runFor(ms: number): number {
    return this.runUntil(this.time + ms);
  }

  /** Fire events until none are left (or `maxEvents` fired). Returns the number fired. */
  runUntilIdle(maxEvents = Number.POSITIVE_INFINITY): number {
    this.enter();
    const start = this.fired;
    try {
      while (this.fired - start < maxEvents) {
        const ev = this.peekLive();
        if (ev === undefined) break;
        this.fire(this.take());
      }
    } finally {
      this.running = false;
    }
    return this.fired - start;
  }

  /**
   * Like runUntil, for agent code that uses promises (engine calls, async request handlers).
   *
   * Guarantee: after each event callback returns, every microtask it enqueued — promise
   * reactions, queueMicrotask and process.nextTick callbacks, and any further microtasks those
   * enqueue, transitively — runs to completion before the next event fires, with the virtual
   * time still equal to that event's time. This holds because the loop yields through
   * setImmediate after every event, and Node drains the nextTick and microtask queues completely
   * before any macrotask. So async continuations interleave with events exactly as if they were
   * part of the event that triggered them, and the run is deterministic.
   *
   * Not covered: work that waits on real I/O or real timers (fs, sockets, setTimeout) — that
   * would make a run depend on the machine; sim code must not do it.
   *
   * Cost: the setImmediate is needed only after an event that may have left microtasks behind,
   * i.e. one during which a promise was created or settled (V8 promise hooks), or
   * queueMicrotask / process.nextTick was called (wrapped for the duration of the run). Other
   * events — most of a large simulation: timers and messages handled synchronously — run back to
   * back, without the ≈ 3 µs round trip through the event loop. Same order as yielding after
   * every event (`EventLoop.yieldEveryEvent = true`, the reference; tested).
   */
  async runUntilAsync(ms: number): Promise<number> {
    this.enter();
    const start = this.fired;
    const watch = EventLoop.yieldEveryEvent ? undefined : watchMicrotasks();
    try {
      await drain();
      if (watch) watch.dirty = false;
      for (;;) {
        const ev = this.peekLive();
        if (ev === undefined || ev.t > ms) break;
        this.fire(this.take());
        if (watch === undefined || watch.dirty) {
          await drain();
          if (watch) watch.dirty = false;
        }
      }
      if (ms > this.time) this.time = ms;
    } finally {
      watch?.stop();
      this.running = false;
    }
    return this.fired - start;
  }

  /** Reference mode of runUntilAsync: yield through setImmediate after every event (tests). */
  static yieldEveryEvent = false;

  /** runUntilAsync(now + ms). */
  runForAsync(ms: number): Promise<number> {
    return this.runUntilAsync(this.time + ms);
  }

  private enter(): void {
    if (this.running) throw new Error('EventLoop: run/step called re-entrantly from inside an event');
    this.running = true;
  }

  private fire(ev: LoopEvent): void {
    const fn = ev.fn!;
    const arg = ev.arg;
    ev.fn = null;
    ev.arg = undefined;
    ev.group.live--;
    this.live--;
    this.time = ev.t;
    this.fired++;
    if (ev.pooled && this.free.length < 4096) this.free.push(ev);
    fn(arg);
  }

  /**
   * The next live event — the least (time, seq) of the heap top and the queue heads — after
   * discarding dead entries there, or undefined. Notes where it is for take(). Compares keys only
   * (heap key arrays, each queue's cached head key); only the winner is dereferenced.
   */
  private peekLive(): LoopEvent | undefined {
    const qs = this.queues;
    for (;;) {
      let from = -1;
      let bt = Number.POSITIVE_INFINITY;
      let bs = 0;
      if (this.size > 0) {
        bt = this.ts[0]!;
        bs = this.ss[0]!;
      }
      for (let i = 0; i < qs.length; i++) {
        const q = qs[i]!;
        if (q.head < q.evs.length && (q.t < bt || (q.t === bt && q.s < bs))) {
          bt = q.t;
          bs = q.s;
          from = i;
        }
      }
      if (from < 0) {
        if (this.size === 0) return undefined;
        const top = this.evs[0]!;
        if (top.fn !== null && top.group.epoch === top.epoch) {
          this.nextFrom = -1;
          return top;
        }
        this.pop();
      } else {
        const q = qs[from]!;
        const ev = q.evs[q.head]!;
        if (ev.fn !== null && ev.group.epoch === ev.epoch) {
          this.nextFrom = from;
          return ev;
        }
        this.shift(q);
      }
    }
  }

  /** Remove and return the event peekLive() just returned. */
  private take(): LoopEvent {
    const from = this.nextFrom;
    if (from < 0) return this.pop();
    return this.shift(this.queues[from]!);
  }

  /** Remove a queue's head. */
  private shift(q: DelayQueue): LoopEvent {
    const evs = q.evs;
    const ev = evs[q.head]!;
    evs[q.head++] = undefined;
    this.queued--;
    if (q.head === evs.length) {
      evs.length = 0;
      q.head = 0;
    } else {
      if (q.head >= 1024 && q.head * 2 >= evs.length) {
        evs.copyWithin(0, q.head);
        evs.length -= q.head;
        q.head = 0;
      }
      const next = evs[q.head]!;
      q.t = next.t;
      q.s = next.seq;
    }
    return ev;
  }

  private pop(): LoopEvent {
    const evs = this.evs;
    const top = evs[0]!;
    const n = --this.size;
    if (n > 0) {
      const last = evs[n]!;
      const t = this.ts[n]!;
      const s = this.ss[n]!;
      evs[n] = undefined;
      this.siftDown(0, last, t, s);
    } else {
      evs[0] = undefined;
    }
    return top;
  }

  private push(ev: LoopEvent): void {
    if (this.size === this.ts.length) this.grow();
    const i = this.size++;
    this.siftUp(i, ev, ev.t, ev.seq);
  }

  private grow(): void {
    const cap = this.ts.length * 2;
    const ts = new Float64Array(cap);
    const ss = new Float64Array(cap);
    ts.set(this.ts);
    ss.set(this.ss);
    this.ts = ts;
    this.ss = ss;
  }

  /** Place (ev, t, s) at or above slot i. */
  private siftUp(i: number, ev: LoopEvent, t: number, s: number): void {
    const { ts, ss, evs } = this;
    while (i > 0) {
      const p = (i - 1) >> 2;
      const pt = ts[p]!;
      if (pt < t || (pt === t && ss[p]! < s)) break;
      ts[i] = pt;
      ss[i] = ss[p]!;
      evs[i] = evs[p];
      i = p;
    }
    ts[i] = t;
    ss[i] = s;
    evs[i] = ev;
  }

  /** Place (ev, t, s) at or below slot i (4-ary heap: shallower, and keys sit in typed arrays). */
  private siftDown(i: number, ev: LoopEvent, t: number, s: number): void {
    const { ts, ss, evs } = this;
    const n = this.size;
    for (;;) {
      const first = 4 * i + 1;
      if (first >= n) break;
      let c = first;
      let ct = ts[c]!;
      let cs = ss[c]!;
      const end = Math.min(first + 4, n);
      for (let k = first + 1; k < end; k++) {
        const kt = ts[k]!;
        if (kt < ct || (kt === ct && ss[k]! < cs)) {
          c = k;
          ct = kt;
          cs = ss[k]!;
        }
      }
      if (t < ct || (t === ct && s < cs)) break;
      ts[i] = ct;
      ss[i] = cs;
      evs[i] = evs[c];
      i = c;
    }
    ts[i] = t;
    ss[i] = s;
    evs[i] = ev;
  }

  /** Drop dead entries and rebuild the heap. (time, seq) is a total order, so this cannot change the run. */
  private compact(): void {
    const live: LoopEvent[] = [];
    for (let i = 0; i < this.size; i++) {
      const ev = this.evs[i]!;
      if (ev.fn !== null && ev.group.epoch === ev.epoch) live.push(ev);
    }
    this.evs = [];
    this.size = 0;
    for (const ev of live) this.push(ev);
    // Queues keep their order: dropping entries from a sorted queue leaves it sorted.
    this.queued = 0;
    for (const q of this.queues) {
      const kept: LoopEvent[] = [];
      for (let i = q.head; i < q.evs.length; i++) {
        const ev = q.evs[i]!;
        if (ev.fn !== null && ev.group.epoch === ev.epoch) kept.push(ev);
      }
      q.evs = kept;
      q.head = 0;
      if (kept.length > 0) {
        q.t = kept[0]!.t;
        q.s = kept[0]!.seq;
      }
      this.queued += kept.length;
    }
  }
}

function drain(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Notes (in `dirty`) whether microtasks may have been queued: a promise was created or settled,
 * or queueMicrotask / process.nextTick was called. Until `stop()`.
 */
function watchMicrotasks(): { dirty: boolean; stop(): void } {
  const w = { dirty: true, stop: () => {} };
  const mark = () => {
    w.dirty = true;
  };
  const stopHooks = promiseHooks.createHook({ init: mark, settled: mark });
  const qm = globalThis.queueMicrotask;
  const proc = globalThis.process;
  const nt = proc.nextTick;
  globalThis.queueMicrotask = (cb) => {
    w.dirty = true;
    qm(cb);
  };
  proc.nextTick = ((...args: Parameters<typeof process.nextTick>) => {
    w.dirty = true;
    nt(...args);
  }) as typeof process.nextTick;
  w.stop = () => {
    stopHooks();
    globalThis.queueMicrotask = qm;
    proc.nextTick = nt;
  };
  return w;
}

/** 2026-01-01T00:00:00Z: virtual clocks report real-looking timestamps. */
export const SIM_EPOCH_MS = Date.UTC(2026, 0, 1);

export interface VirtualClockOptions {
  /** Offset of this agent's clock from true (loop) time, ms. May be negative. Default 0. */
  skewMs?: number;
  /** What loop time 0 reads as. Default SIM_EPOCH_MS. */
  epochMs?: number;
}

/**
 * An agent's clock on an EventLoop. `now()` = floor(epoch + loop time + skew): an integer like
 * Date.now(). Timers run on the loop's true time (skew shifts what the agent reads, not how long
 * a delay lasts). All timers belong to one TimerGroup, so a crash drops them at once.
 */
export class VirtualClock implements Clock {
  readonly timers: TimerGroup;
  private skew: number;
  private readonly epoch: number;
  private dead = false;

  constructor(
    readonly loop: EventLoop,
    opts: VirtualClockOptions = {},
  ) {
    this.timers = loop.group();
    this.skew = opts.skewMs ?? 0;
    this.epoch = opts.epochMs ?? SIM_EPOCH_MS;
  }

  now(): number {
    return Math.floor(this.epoch + this.loop.now + this.skew);
  }

  get skewMs(): number {
    return this.skew;
  }

  /** Change the skew (a clock jump; may make now() go backwards, as NTP steps can). */
  setSkew(ms: number): void {
    this.skew = ms;
  }

  setTimer(delayMs: number, fn: () => void): Timer {
    if (!Number.isFinite(delayMs)) throw new RangeError(`setTimer: delayMs must be finite, got ${delayMs}`);
    if (this.dead) return INERT_TIMER;
    return this.loop.after(delayMs, fn, this.timers);
  }

  /** Pending timers of this clock. */
  get pending(): number {
    return this.timers.live;
  }

  /** Drop every pending timer; the clock stays usable. */
  cancelAll(): void {
    this.timers.cancelAll();
  }

  /**
   * The agent crashed: drop every pending timer, and make later setTimer calls (from promise
   * continuations of the dead agent) inert. A restarted agent gets a new VirtualClock.
   */
  kill(): void {
    this.dead = true;
    this.timers.cancelAll();
  }

  get killed(): boolean {
    return this.dead;
  }
}
