import { assertStoreKey, type Store, StoreCorruptError, StoreError, type StoreLog } from '../node/core/io.ts';

/**
 * In-memory Store for simulated agents. It outlives a simulated crash: the simulator keeps the
 * object and hands it to the restarted agent (writes and appends are durable when they return, as
 * the contract says). Values and records are copied in and out, so callers may mutate their
 * buffers. No `writeAsync`/`appendAsync`: simulated agents take the synchronous paths.
 *
 * Fault injection mirrors DiskStore's behaviour:
 * - `failWrites = 'enospc' | 'eio'`: write() and append() throw StoreError (cause.code
 *   ENOSPC/EIO) and the old value or log stays readable.
 * - `corrupt(key)`: the next read of `key` throws StoreCorruptError; the value is moved aside to
 *   `<key>.corrupt-<n>` (see `keptAside`), so later reads return undefined, as on disk.
 * - `corruptLogRecord(key, index)`: record `index` of the log `key` fails its check; the next
 *   readLog (or append, which checks the log first as DiskStore does) drops it and every record
 *   after it: they are moved aside to `<key>.corrupt-<n>` and cut off the log.
 */
export class MemoryStore implements Store {
  private readonly data = new Map<string, Uint8Array>();
  private readonly logs = new Map<string, Uint8Array[]>();
  private readonly corrupted = new Set<string>();
  /** Per log key: the index of the first record that fails its (simulated) check. */
  private readonly corruptRecords = new Map<string, number>();
  /**
   * Values moved aside after failing their (simulated) integrity check. A log's dropped records
   * are kept as one entry: each record prefixed by its u32 LE length.
   */
  readonly keptAside = new Map<string, Uint8Array>();
  private asideSeq = 0;
  failWrites: 'enospc' | 'eio' | null = null;
  /** Operation counters. */
  readonly ops = { reads: 0, writes: 0, removes: 0, appends: 0, bytesWritten: 0 };

  read(key: string): Uint8Array | undefined {
    assertStoreKey(key);
    this.ops.reads++;
    if (this.logs.has(key))
      throw new StoreError(key, `store read "${key}" failed: the key holds an append-only log, not a value`);
    const v = this.data.get(key);
    if (v === undefined) return undefined;
    if (this.corrupted.has(key)) {
      this.corrupted.delete(key);
      this.data.delete(key);
      const keptAt = `${key}.corrupt-${this.asideSeq++}`;
      this.keptAside.set(keptAt, v);
      throw new StoreCorruptError(
        key,
        `store value "${key}" is corrupt (injected); kept at ${keptAt}`,
        keptAt,
      );
    }
    return v.slice();
  }

  /** Replaces a log of the same key too (as DiskStore's atomic write). */
  write(key: string, value: Uint8Array): void {
    assertStoreKey(key);
    this.failIfFull('write', key);
    this.ops.writes++;
    this.ops.bytesWritten += value.length;
    this.corrupted.delete(key);
    this.dropLog(key);
    this.data.set(key, value.slice());
  }

  remove(key: string): void {
    assertStoreKey(key);
    this.ops.removes++;
    this.corrupted.delete(key);
    this.data.delete(key);
    this.dropLog(key);
  }

  /** Keys present (values and logs), sorted (deterministic, like DiskStore). */
  keys(): string[] {
    return [...this.data.keys(), ...this.logs.keys()].sort();
  }

  append(key: string, record: Uint8Array): void {
    assertStoreKey(key);
    if (this.data.has(key))
      throw new StoreError(key, `store append "${key}" failed: the key holds a value, not a log`);
    this.failIfFull('append', key);
    this.cutCorrupt(key);
    this.ops.appends++;
    this.ops.bytesWritten += record.length;
    let log = this.logs.get(key);
    if (log === undefined) {
      log = [];
      this.logs.set(key, log);
    }
    log.push(record.slice());
  }

  readLog(key: string): StoreLog | undefined {
    assertStoreKey(key);
    this.ops.reads++;
    if (this.data.has(key))
      throw new StoreError(key, `store readLog "${key}" failed: the key holds a value, not a log`);
    const cut = this.cutCorrupt(key);
    const log = this.logs.get(key);
    if (log === undefined) return undefined;
    const records = log.map((r) => r.slice());
    return cut === undefined ? { records } : { records, ...cut };
  }

  /** Make the next read of `key` fail its integrity check. No-op if the key is absent. */
  corrupt(key: string): void {
    assertStoreKey(key);
    if (this.data.has(key)) this.corrupted.add(key);
  }

  /**
   * Make record `index` of the log `key` fail its check (see the class comment). No-op if the log
   * has no such record.
   */
  corruptLogRecord(key: string, index: number): void {
    assertStoreKey(key);
    const log = this.logs.get(key);
    if (log === undefined || !Number.isInteger(index) || index < 0 || index >= log.length) return;
    const prev = this.corruptRecords.get(key);
    this.corruptRecords.set(key, prev === undefined ? index : Math.min(prev, index));
  }

  /** Total bytes held (for memory reports). */
  get bytes(): number {
    let n = 0;
    for (const v of this.data.values()) n += v.length;
    for (const log of this.logs.values()) for (const r of log) n += r.length;
    return n;
  }

  private failIfFull(op: 'write' | 'append', key: string): void {
    if (this.failWrites === null) return;
    const code = this.failWrites === 'enospc' ? 'ENOSPC' : 'EIO';
    const text = code === 'ENOSPC' ? 'no space left on device' : 'I/O error';
    const cause = Object.assign(new Error(`${code}: ${text} (injected)`), { code });
    throw new StoreError(key, `store ${op} "${key}" failed: ${code} (${text}, injected)`, cause);
  }

  private dropLog(key: string): void {
    this.logs.delete(key);
    this.corruptRecords.delete(key);
  }

  /** Apply an injected corrupt record: move it and the records after it aside. */
  private cutCorrupt(key: string): { dropped: string; keptAt: string } | undefined {
    const index = this.corruptRecords.get(key);
    const log = this.logs.get(key);
    if (index === undefined || log === undefined) return undefined;
    this.corruptRecords.delete(key);
    const tail = log.splice(index);
    const kept = new Uint8Array(tail.reduce((n, r) => n + 4 + r.length, 0));
    const view = new DataView(kept.buffer);
    let off = 0;
    for (const r of tail) {
      view.setUint32(off, r.length, true);
      kept.set(r, off + 4);
      off += 4 + r.length;
    }
    const keptAt = `${key}.corrupt-${this.asideSeq++}`;
    this.keptAside.set(keptAt, kept);
    return {
      dropped: `checksum mismatch at record ${index} (injected): ${tail.length} records dropped; kept at ${keptAt}`,
      keptAt,
    };
  }
}
