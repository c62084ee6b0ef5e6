import { assertStoreKey, type Store, StoreCorruptError, StoreError } from '../node/core/io.ts';

/**
 * In-memory Store for simulated agents. It outlives a simulated crash: the simulator keeps the
 * object and hands it to the restarted agent (writes are durable when write() returns, as the
 * contract says). Values are copied in and out, so callers may mutate their buffers.
 *
 * Fault injection mirrors DiskStore's behaviour:
 * - `failWrites = 'enospc' | 'eio'`: write() throws StoreError (cause.code ENOSPC/EIO) and the
 *   old value stays readable.
 * - `corrupt(key)`: the next read of `key` throws StoreCorruptError; the value is moved aside to
 *   `<key>.corrupt-<n>` (see `keptAside`), so later reads return undefined, as on disk.
 */
export class MemoryStore implements Store {
  private readonly data = new Map<string, Uint8Array>();
  private readonly corrupted = new Set<string>();
  /** Values moved aside after failing their (simulated) integrity check. */
  readonly keptAside = new Map<string, Uint8Array>();
  private asideSeq = 0;
  failWrites: 'enospc' | 'eio' | null = null;
  /** Operation counters. */
  readonly ops = { reads: 0, writes: 0, removes: 0, bytesWritten: 0 };

  read(key: string): Uint8Array | undefined {
    assertStoreKey(key);
    this.ops.reads++;
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

  write(key: string, value: Uint8Array): void {
    assertStoreKey(key);
    if (this.failWrites !== null) {
      const code = this.failWrites === 'enospc' ? 'ENOSPC' : 'EIO';
      const text = code === 'ENOSPC' ? 'no space left on device' : 'I/O error';
      const cause = Object.assign(new Error(`${code}: ${text} (injected)`), { code });
      throw new StoreError(key, `store write "${key}" failed: ${code} (${text}, injected)`, cause);
    }
    this.ops.writes++;
    this.ops.bytesWritten += value.length;
    this.corrupted.delete(key);
    this.data.set(key, value.slice());
  }

  remove(key: string): void {
    assertStoreKey(key);
    this.ops.removes++;
    this.corrupted.delete(key);
    this.data.delete(key);
  }

  /** Keys present, sorted (deterministic, like DiskStore). */
  keys(): string[] {
    return [...this.data.keys()].sort();
  }

  /** Make the next read of `key` fail its integrity check. No-op if the key is absent. */
  corrupt(key: string): void {
    assertStoreKey(key);
    if (this.data.has(key)) this.corrupted.add(key);
  }

  /** Total bytes held (for memory reports). */
  get bytes(): number {
    let n = 0;
    for (const v of this.data.values()) n += v.length;
    return n;
  }
}
