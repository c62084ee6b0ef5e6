/**
 * The small interfaces the agent core is written against (sans-IO). The real agent plugs in the
 * wall clock, a crypto-seeded PRNG and the disk; the simulator plugs in a virtual clock, a seeded
 * PRNG and an in-memory store. The core never touches timers, Math.random, Date.now or fs itself.
 * Conformance suites: test/conformance/{clock,random,store}.ts.
 */

export interface Timer {
  /** Cancel; a no-op if it already fired or was cancelled. */
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the Unix epoch (virtual in the simulator; skew may apply per agent). */
  now(): number;
  /** Run `fn` once after `delayMs` (>= 0). Timers with equal deadlines fire in creation order. */
  setTimer(delayMs: number, fn: () => void): Timer;
}

export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, maxExclusive). maxExclusive >= 1. */
  int(maxExclusive: number): number;
}

/**
 * Durable key/value storage for one agent (identity, incarnation, state snapshots).
 * `write` is atomic (a reader sees the old or the new value, never a torn one) and durable when
 * it returns. A value that fails its integrity check makes `read` throw StoreCorruptError —
 * the value is kept aside, never silently dropped. Disk errors (ENOSPC, EIO) throw StoreError.
 */
export interface Store {
  read(key: string): Uint8Array | undefined;
  write(key: string, data: Uint8Array): void;
  remove(key: string): void;
  keys(): string[];
}

export class StoreError extends Error {
  constructor(
    readonly key: string,
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'StoreError';
  }
}

export class StoreCorruptError extends StoreError {
  constructor(
    key: string,
    message: string,
    /** Where the corrupt bytes were moved to (nothing is deleted). */
    readonly keptAt?: string,
  ) {
    super(key, message);
    this.name = 'StoreCorruptError';
  }
}

/** Structured logger (pino-compatible subset). */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

export const nullLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return nullLogger;
  },
};
