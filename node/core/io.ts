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
 *
 * A key holds either a value or an append-only **log** (a sequence of records: `append`,
 * `readLog`), e.g. the changes of the cluster state since its last snapshot — a record costs one
 * positional write and one data sync of an open file, not a new file. `keys()` lists both kinds,
 * `remove` removes both. `write`/`writeAsync` of a log key replaces the log by the value (an
 * atomic write like any other); `read` of a log key and `append`/`readLog` of a value key throw
 * StoreError (nothing is moved aside: the data is fine, the caller asked for the wrong kind).
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
  /**
   * Append one record (any bytes, empty included) to the log `key`, creating the log on the first
   * append; durable when it returns. Throws StoreError naming the key and the errno (ENOSPC,
   * EIO); a failed append leaves the records before it readable (a partial write is cut back),
   * and its own record may or may not be read back later. Throws StoreError if the key holds a
   * value (or a value write of it is still in flight).
   */
  append(key: string, record: Uint8Array): void;
  /**
   * Optional: `append` without blocking the caller on the disk: the record is written at once
   * (page cache) and the data sync runs on a worker thread; resolves once the record is durable,
   * rejects with StoreError. Appends to one key (sync or not) land in the log in call order.
   * Concurrent appends share data syncs (one running, at most one queued). After a failed sync
   * every append waiting for a sync of that key rejects. Stores without it: use `append`.
   */
  appendAsync?(key: string, record: Uint8Array): Promise<void>;
  /**
   * The log `key`: undefined if there is none, otherwise every complete, checksum-valid record in
   * append order (copies). A torn or corrupt record (a crash mid-append, a flipped bit) ends the
   * list: that record and everything after it are dropped — `dropped` says what and where (e.g.
   * "torn record at byte 1234: 20 bytes of a 96-byte record"), the dropped bytes are kept aside
   * (`keptAt`, never deleted) and cut off the log, so the next append follows the last good
   * record. Throws StoreError on a disk error, if the key holds a value, or for a log format
   * version this build does not read (left in place).
   */
  readLog(key: string): StoreLog | undefined;
}

/** What `Store.readLog` returns. */
export interface StoreLog {
  records: Uint8Array[];
  /** Set when a torn or corrupt tail was dropped: what, where, and where it was kept. */
  dropped?: string;
  /** Where the dropped bytes were kept (nothing is deleted). */
  keptAt?: string;
  /**
   * The dropped tail was an incomplete last record — what a crash in the middle of an append
   * leaves (that record was never acknowledged as durable) — rather than corrupt bytes.
   */
  torn?: boolean;
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
