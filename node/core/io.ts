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
  /**
   * Run `fn` once after `delayMs`. Timers with equal deadlines fire in creation order. A negative
   * delay is treated as 0; NaN or an infinite delay throws RangeError.
   */
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
 * Keys satisfy isStoreKey (letters, digits, `._-`, not starting with a dot); any other key throws
 * StoreError. `keys()` returns keys sorted.
 */
export interface Store {
  read(key: string): Uint8Array | undefined;
  write(key: string, data: Uint8Array): void;
  remove(key: string): void;
  keys(): string[];
  /**
   * Optional: `write` without blocking the caller on the disk (the real store fsyncs on a worker
   * thread). Resolves once the value is durable and visible to `read`; rejects with StoreError.
   * Values of one key land in call order whatever the mix of `write`, `writeAsync` and `remove`:
   * a slower earlier write never replaces a later one. Stores without it: use `write`.
   */
  writeAsync?(key: string, data: Uint8Array): Promise<void>;
  /** Optional: `remove` without blocking the caller on the disk; same ordering as `writeAsync`. */
  removeAsync?(key: string): Promise<void>;
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

/**
 * Store keys: 1–128 characters from [A-Za-z0-9._-], not starting with '.', and not containing
 * '.corrupt-' (reserved for values kept aside). So a key is always a plain file name: no path
 * separators, no '..', no hidden or temporary files. Shared by every Store implementation.
 */
const KEY_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

export function isStoreKey(key: string): boolean {
  return KEY_RE.test(key) && !key.includes('.corrupt-');
}

export function assertStoreKey(key: string): void {
  if (typeof key !== 'string' || !isStoreKey(key))
    throw new StoreError(
      String(key),
      `invalid store key ${JSON.stringify(key)}: keys are 1-128 characters of [A-Za-z0-9._-], ` +
        `not starting with '.', without '.corrupt-' (no paths)`,
    );
}
