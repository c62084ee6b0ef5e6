import * as nodeFs from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import {
  assertStoreKey,
  isStoreKey,
  type Store,
  StoreCorruptError,
  StoreError,
  type StoreLog,
} from '../core/io.ts';

export { assertStoreKey, isStoreKey } from '../core/io.ts';

/** The fs calls DiskStore makes; injectable so tests can simulate ENOSPC, EIO and torn writes. */
export interface StoreFs {
  openSync(path: string, flags: string, mode?: number): number;
  writeSync(fd: number, buffer: Uint8Array, offset: number, length: number): number;
  fsyncSync(fd: number): void;
  closeSync(fd: number): void;
  renameSync(from: string, to: string): void;
  readFileSync(path: string): Uint8Array;
  unlinkSync(path: string): void;
  readdirSync(path: string): string[];
  mkdirSync(path: string, opts: { recursive: true }): unknown;
  existsSync(path: string): boolean;
  /** fsync on libuv's thread pool (writeAsync): the event loop keeps running meanwhile. */
  fsyncAsync(fd: number): Promise<void>;
  /** Positional write (pwrite): logs write each record at their known end. */
  writeAtSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number;
  ftruncateSync(fd: number, length: number): void;
  fdatasyncSync(fd: number): void;
  /** fdatasync on libuv's thread pool (appendAsync). */
  fdatasyncAsync(fd: number): Promise<void>;
}

const realFs: StoreFs = {
  openSync: (p, f, m) => nodeFs.openSync(p, f, m),
  writeSync: (fd, b, o, l) => nodeFs.writeSync(fd, b, o, l),
  fsyncSync: (fd) => nodeFs.fsyncSync(fd),
  closeSync: (fd) => nodeFs.closeSync(fd),
  renameSync: (a, b) => nodeFs.renameSync(a, b),
  readFileSync: (p) => nodeFs.readFileSync(p),
  unlinkSync: (p) => nodeFs.unlinkSync(p),
  readdirSync: (p) => nodeFs.readdirSync(p),
  mkdirSync: (p, o) => nodeFs.mkdirSync(p, o),
  existsSync: (p) => nodeFs.existsSync(p),
  fsyncAsync: (fd) =>
    new Promise<void>((resolve, reject) => nodeFs.fsync(fd, (err) => (err ? reject(err) : resolve()))),
  writeAtSync: (fd, b, o, l, p) => nodeFs.writeSync(fd, b, o, l, p),
  ftruncateSync: (fd, l) => nodeFs.ftruncateSync(fd, l),
  fdatasyncSync: (fd) => nodeFs.fdatasyncSync(fd),
  fdatasyncAsync: (fd) =>
    new Promise<void>((resolve, reject) => nodeFs.fdatasync(fd, (err) => (err ? reject(err) : resolve()))),
};

/**
 * File format (little endian), 16-byte header then the body:
 *   0  magic  "SHST"
 *   4  u8     format version (1)
 *   5  u8[3]  reserved, zero
 *   8  u32    body length
 *   12 u32    CRC-32 of the body
 */
const MAGIC = [0x53, 0x48, 0x53, 0x54];
const VERSION = 1;
const HEADER = 16;
const TMP_PREFIX = '.tmp-';

/**
 * Log file format (little endian), 8-byte header then records, back to back:
 *   0  magic  "SHLG"
 *   4  u8     format version (1)
 *   5  u8[3]  reserved, zero
 * record:
 *   0  u32    record length n
 *   4  u32    CRC-32 of the 4 length bytes followed by the n record bytes
 *   8  u8[n]  the record
 * The checksum covers the length too: a zero-filled tail (a file extended by a crash before its
 * data reached the disk) would otherwise read as valid empty records (CRC-32 of nothing is 0).
 */
const LOG_MAGIC = [0x53, 0x48, 0x4c, 0x47];
const LOG_VERSION = 1;
const LOG_HEADER = 8;
const RECORD_HEADER = 8;

/** A log this process appends to. */
interface LogFile {
  fd: number;
  /** Bytes of header and complete records: the next record is written here. */
  size: number;
  /** Data syncs of appendAsync: one running, at most one more queued (they coalesce). */
  readonly sync: SharedSync;
  /** A data sync failed: what was written since the last good sync is in doubt. */
  failed?: unknown;
  /** Removed, replaced or failed: no more appends through it; closed once no sync uses the fd. */
  retired: boolean;
}

export interface DiskStoreOptions {
  /** Replace fs calls (tests: fault injection). */
  fs?: Partial<StoreFs>;
  /** Clock for the `.corrupt-<timestamp>` suffix. Default Date.now. */
  now?: () => number;
}

/**
 * A Store over a directory: one file per key, written atomically (temp file, fsync, rename,
 * directory fsync) with a checksummed header. A file that fails its check is renamed to
 * `<key>.corrupt-<timestamp>` (never deleted) and read throws StoreCorruptError. Disk errors throw
 * StoreError naming the key and the errno. Leftover temp files (a crash mid-write) are removed when
 * the store is opened: they never held a committed value.
 *
 * Logs (`append`, `readLog`): one file per key, created atomically (temp file with the header,
 * fsync, rename, directory fsync) and then kept open; an append is one positional write at the
 * known end plus one fdatasync. The first append to a log in this process checks the whole file
 * first (as `readLog`: a torn or corrupt tail is copied to `<key>.corrupt-<timestamp>` and cut
 * off), so records always follow the last good one. One DiskStore per directory: the ordering
 * guarantees (and a log's known end) hold within one instance.
 */
export class DiskStore implements Store {
  private readonly fs: StoreFs;
  private readonly now: () => number;
  private tmpSeq = 0;
  /** Per key: the sequence number (in call order) of the write or remove that is on disk. */
  private readonly landed = new Map<string, number>();
  private opSeq = 0;
  /** Directory fsyncs of writeAsync: one running, at most one more queued (they coalesce). */
  private readonly dirSync = new SharedSync();
  /** Logs appended to by this process, by key. */
  private readonly logs = new Map<string, LogFile>();
  /** Per key: the sequence number of the latest writeAsync still in flight. */
  private readonly pendingValue = new Map<string, number>();

  constructor(
    readonly dir: string,
    opts: DiskStoreOptions = {},
  ) {
    this.fs = { ...realFs, ...opts.fs };
    this.now = opts.now ?? Date.now;
    try {
      this.fs.mkdirSync(dir, { recursive: true });
      for (const name of this.fs.readdirSync(dir)) {
        if (name.startsWith(TMP_PREFIX)) this.fs.unlinkSync(join(dir, name));
      }
    } catch (e) {
      throw new StoreError('', `cannot open store directory ${dir}: ${errnoText(e)}`, e);
    }
  }

  /** The bytes of `key`'s file; undefined if there is none. Errors name the operation, key and errno. */
  private readFile(key: string, path: string, op: 'read' | 'readLog'): Uint8Array | undefined {
    try {
      return this.fs.readFileSync(path);
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return undefined;
      throw new StoreError(key, `store ${op} "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
  }

  /** Path of the file holding `key`. */
  pathOf(key: string): string {
    assertStoreKey(key);
    return join(this.dir, key);
  }

  read(key: string): Uint8Array | undefined {
    const path = this.pathOf(key);
    const buf = this.readFile(key, path, 'read');
    if (buf === undefined) return undefined;
    const problem = check(buf);
    // A plain Uint8Array copy (not a Buffer view): callers get exactly the contract's type.
    if (problem === undefined) return new Uint8Array(buf.subarray(HEADER));
    if (problem.unsupported)
      throw new StoreError(key, `store read "${key}" failed (${path}): ${problem.what}`);
    const keptAt = this.keepAside(key, path);
    throw new StoreCorruptError(
      key,
      `store value "${key}" is corrupt (${path}): ${problem.what}; kept at ${keptAt}`,
      keptAt,
    );
  }

  write(key: string, data: Uint8Array): void {
    const path = this.pathOf(key);
    const seq = this.issue(key);
    this.retireLog(key);
    const { tmp, fd } = this.writeTemp(key, path, data);
    try {
      this.fs.fsyncSync(fd);
    } catch (e) {
      this.discardTemp(fd, tmp);
      throw new StoreError(key, `store write "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
    this.commitTemp(key, path, fd, tmp, seq);
    this.syncDir(key);
  }

  /**
   * `write` with both fsyncs (file, then directory) on libuv's thread pool, so the caller's event
   * loop keeps running: the temp file is written at once (page cache), fsynced off-thread, then
   * renamed into place — unless a later write or remove of the key landed meanwhile, in which case
   * this (older) value is dropped. Directory fsyncs of concurrent writes are shared.
   */
  writeAsync(key: string, data: Uint8Array): Promise<void> {
    let path: string;
    let seq: number;
    let tmp: string;
    let fd: number;
    try {
      path = this.pathOf(key);
      seq = this.issue(key);
      this.retireLog(key);
      ({ tmp, fd } = this.writeTemp(key, path, data));
    } catch (e) {
      return Promise.reject(e);
    }
    this.pendingValue.set(key, seq);
    const settled = (): void => {
      if (this.pendingValue.get(key) === seq) this.pendingValue.delete(key);
    };
    return this.fs
      .fsyncAsync(fd)
      .then(
        () => {
          if ((this.landed.get(key) ?? 0) > seq) {
            // A later value is in place already: this one must not replace it.
            this.discardTemp(fd, tmp);
            return;
          }
          this.commitTemp(key, path, fd, tmp, seq);
          return this.syncDirAsync(key);
        },
        (e: unknown) => {
          this.discardTemp(fd, tmp);
          throw new StoreError(key, `store write "${key}" failed (${path}): ${errnoText(e)}`, e);
        },
      )
      .finally(settled);
  }

  /** `remove`, with the directory fsync off the event loop (shared with concurrent writes). */
  removeAsync(key: string): Promise<void> {
    let path: string;
    try {
      path = this.pathOf(key);
      this.landed.set(key, this.issue(key));
      this.retireLog(key);
      this.fs.unlinkSync(path);
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return Promise.resolve();
      if (e instanceof StoreError) return Promise.reject(e);
      return Promise.reject(new StoreError(key, `store remove "${key}" failed: ${errnoText(e)}`, e));
    }
    return this.syncDirAsync(key);
  }

  /** A sequence number for a write or remove of `key` (call order). */
  private issue(_key: string): number {
    return ++this.opSeq;
  }

  /** Write header and body to a fresh temp file (not yet fsynced); returns it open. */
  private writeTemp(key: string, path: string, data: Uint8Array): { tmp: string; fd: number } {
    if (data.length > 0xffffffff) throw new StoreError(key, `store write "${key}": value too large`);
    const header = new Uint8Array(HEADER);
    header.set(MAGIC, 0);
    header[4] = VERSION;
    const view = new DataView(header.buffer);
    view.setUint32(8, data.length, true);
    view.setUint32(12, crc32(data), true);
    const tmp = join(this.dir, `${TMP_PREFIX}${key}-${process.pid}-${this.tmpSeq++}`);
    let fd: number | undefined;
    try {
      fd = this.fs.openSync(tmp, 'w', 0o600);
      writeAll(this.fs, fd, header);
      writeAll(this.fs, fd, data);
      return { tmp, fd };
    } catch (e) {
      this.discardTemp(fd, tmp);
      throw new StoreError(key, `store write "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
  }

  /** Close (if open) and remove a temp file; errors are ignored (the original one matters). */
  private discardTemp(fd: number | undefined, tmp: string): void {
    if (fd !== undefined) {
      try {
        this.fs.closeSync(fd);
      } catch {
        // already failing
      }
    }
    try {
      this.fs.unlinkSync(tmp);
    } catch {
      // the temp file may not exist; a leftover is removed on next open
    }
  }

  /** Close the fsynced temp file and rename it over the key (the commit point). */
  private commitTemp(key: string, path: string, fd: number, tmp: string, seq: number): void {
    try {
      this.fs.closeSync(fd);
    } catch (e) {
      this.discardTemp(undefined, tmp);
      throw new StoreError(key, `store write "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
    try {
      this.fs.renameSync(tmp, path);
    } catch (e) {
      this.discardTemp(undefined, tmp);
      throw new StoreError(key, `store write "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
    this.landed.set(key, seq);
  }

  /** fsync the directory off-thread; a request made while one runs shares the next one. */
  private syncDirAsync(key: string): Promise<void> {
    const run = (): Promise<void> => {
      let fd: number | undefined;
      try {
        fd = this.fs.openSync(this.dir, 'r');
      } catch (e) {
        return Promise.reject(e);
      }
      const opened = fd;
      return this.fs.fsyncAsync(opened).finally(() => this.fs.closeSync(opened));
    };
    const tolerate = (e: unknown): void => {
      // As syncDir: some filesystems refuse fsync on a directory; the rename is still atomic.
      const code = errnoOf(e);
      if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM')
        throw new StoreError(
          key,
          `store sync of ${this.dir} failed after writing "${key}": ${errnoText(e)}`,
          e,
        );
    };
    return this.dirSync.request(() => run().catch(tolerate));
  }

  remove(key: string): void {
    const path = this.pathOf(key);
    // An async write of this key still in flight must not bring the value back.
    this.landed.set(key, this.issue(key));
    this.retireLog(key);
    try {
      this.fs.unlinkSync(path);
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return;
      throw new StoreError(key, `store remove "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
    this.syncDir(key);
  }

  // ───────────────────────────── logs ─────────────────────────────

  append(key: string, record: Uint8Array): void {
    const path = this.pathOf(key);
    const log = this.openLog(key, path);
    const start = log.size;
    this.writeRecord(key, path, log, record);
    try {
      this.fs.fdatasyncSync(log.fd);
    } catch (e) {
      // Unknown what reached the disk: cut the record off again (best effort), and fail the
      // async appends waiting for a sync of this log (their data may be lost with ours).
      this.cutBack(key, log, start);
      log.failed ??= e;
      this.retireLog(key, log);
      throw new StoreError(key, `store append "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
  }

  /**
   * `append` with the fdatasync on libuv's thread pool: the record is written at once (so appends
   * land in call order), the sync runs off the event loop and is shared with the appends made
   * while one runs (one running, at most one queued, as the directory syncs of writeAsync).
   */
  appendAsync(key: string, record: Uint8Array): Promise<void> {
    let path: string;
    let log: LogFile;
    try {
      path = this.pathOf(key);
      log = this.openLog(key, path);
      this.writeRecord(key, path, log, record);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.syncLogAsync(key, path, log);
  }

  readLog(key: string): StoreLog | undefined {
    const path = this.pathOf(key);
    const buf = this.readFile(key, path, 'readLog');
    if (buf === undefined) return undefined;
    const walk = walkLog(buf);
    if (walk.wrongKind !== undefined)
      throw new StoreError(key, `store readLog "${key}" failed (${path}): ${walk.wrongKind}`);
    if (walk.badFile !== undefined) {
      // Not a log at all (a foreign or mangled file): the whole file is kept aside.
      this.retireLog(key);
      const keptAt = this.keepAside(key, path);
      return { records: [], dropped: `${walk.badFile}; the whole file was kept at ${keptAt}`, keptAt };
    }
    if (walk.problem === undefined) return { records: walk.records };
    const keptAt = this.cutTail(key, path, buf, walk.good, this.logs.get(key));
    return {
      records: walk.records,
      dropped: `${walk.problem}; the ${buf.length - walk.good} bytes from byte ${walk.good} were kept at ${keptAt}`,
      keptAt,
      ...(walk.torn ? { torn: true } : {}),
    };
  }

  /**
   * The open log of `key`: on the first append in this process the file is checked (a bad tail
   * is kept aside and cut off) and opened, or created if there is none.
   */
  private openLog(key: string, path: string): LogFile {
    const open = this.logs.get(key);
    if (open !== undefined) return open;
    if ((this.pendingValue.get(key) ?? 0) > (this.landed.get(key) ?? 0))
      throw new StoreError(
        key,
        `store append "${key}" failed (${path}): a value write of this key is in flight (a key holds a value or a log)`,
      );
    let buf: Uint8Array | undefined;
    try {
      buf = this.fs.readFileSync(path);
    } catch (e) {
      if (errnoOf(e) !== 'ENOENT')
        throw new StoreError(key, `store append "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
    if (buf !== undefined) {
      const walk = walkLog(buf);
      if (walk.wrongKind !== undefined)
        throw new StoreError(key, `store append "${key}" failed (${path}): ${walk.wrongKind}`);
      if (walk.badFile !== undefined) {
        this.keepAside(key, path);
        buf = undefined;
      } else {
        if (walk.problem !== undefined) this.cutTail(key, path, buf, walk.good, undefined);
        let fd: number;
        try {
          fd = this.fs.openSync(path, 'r+');
        } catch (e) {
          throw new StoreError(key, `store append "${key}" failed (${path}): ${errnoText(e)}`, e);
        }
        const log: LogFile = { fd, size: walk.good, retired: false, sync: new SharedSync() };
        this.logs.set(key, log);
        return log;
      }
    }
    return this.createLog(key, path);
  }

  /** A new, empty log: temp file with the header, fsync, rename, directory fsync; kept open. */
  private createLog(key: string, path: string): LogFile {
    const header = new Uint8Array(LOG_HEADER);
    header.set(LOG_MAGIC, 0);
    header[4] = LOG_VERSION;
    const tmp = join(this.dir, `${TMP_PREFIX}${key}-${process.pid}-${this.tmpSeq++}`);
    const seq = this.issue(key);
    let fd: number | undefined;
    try {
      fd = this.fs.openSync(tmp, 'w', 0o600);
      writeAllAt(this.fs, fd, header, 0);
      this.fs.fsyncSync(fd);
      this.fs.renameSync(tmp, path);
    } catch (e) {
      this.discardTemp(fd, tmp);
      throw new StoreError(key, `store append "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
    // The fd follows the file through the rename. An older async value write must not replace it.
    this.landed.set(key, seq);
    try {
      this.syncDir(key);
    } catch (e) {
      this.fs.closeSync(fd);
      throw e;
    }
    const log: LogFile = { fd, size: LOG_HEADER, retired: false, sync: new SharedSync() };
    this.logs.set(key, log);
    return log;
  }

  /** Write one record at the end of the log (not yet synced); a failed write is cut back. */
  private writeRecord(key: string, path: string, log: LogFile, record: Uint8Array): void {
    if (record.length > 0xffffffff - RECORD_HEADER)
      throw new StoreError(key, `store append "${key}": record too large`);
    const buf = new Uint8Array(RECORD_HEADER + record.length);
    const view = new DataView(buf.buffer);
    view.setUint32(0, record.length, true);
    view.setUint32(4, recordCrc(buf.subarray(0, 4), record), true);
    buf.set(record, RECORD_HEADER);
    const start = log.size;
    try {
      writeAllAt(this.fs, log.fd, buf, start);
    } catch (e) {
      this.cutBack(key, log, start);
      throw new StoreError(key, `store append "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
    log.size = start + buf.length;
  }

  /**
   * After a failed append: truncate the log back to `size` so the records before it stay intact
   * and the next append follows them. If even that fails, forget the open file: the next append
   * checks the file again (a torn record is then cut off as a torn tail, kept aside).
   */
  private cutBack(key: string, log: LogFile, size: number): void {
    try {
      this.fs.ftruncateSync(log.fd, size);
      log.size = size;
    } catch {
      this.retireLog(key);
    }
  }

  /** fdatasync the log off-thread; a request made while one runs shares the next one. */
  private syncLogAsync(key: string, path: string, log: LogFile): Promise<void> {
    const failure = (e: unknown): StoreError =>
      new StoreError(key, `store append "${key}" failed (${path}): ${errnoText(e)}`, e);
    return log.sync.request(
      () =>
        (log.failed !== undefined ? Promise.reject(log.failed) : this.fs.fdatasyncAsync(log.fd)).catch(
          (e: unknown) => {
            // What was written since the last good sync is in doubt: the waiters of this sync and
            // of the one queued behind it fail; the next append checks the file again.
            log.failed ??= e;
            this.retireLog(key, log);
            throw failure(e);
          },
        ),
      () => this.closeIfIdle(log),
    );
  }

  /** Stop appending through the open log of `key` (removed, replaced or failed). */
  private retireLog(key: string, which?: LogFile): void {
    const log = which ?? this.logs.get(key);
    if (log === undefined) return;
    if (this.logs.get(key) === log) this.logs.delete(key);
    log.retired = true;
    this.closeIfIdle(log);
  }

  /** Close a retired log's fd once no data sync uses it. */
  private closeIfIdle(log: LogFile): void {
    if (!log.retired || !log.sync.idle || log.fd < 0) return;
    const fd = log.fd;
    log.fd = -1;
    try {
      this.fs.closeSync(fd);
    } catch {
      // nothing more to lose: the fd is gone either way
    }
  }

  /**
   * Keep the bytes of a log from `good` on aside (`<key>.corrupt-<timestamp>`, fsynced, never
   * deleted), then cut them off the log. Returns where they were kept.
   */
  private cutTail(
    key: string,
    path: string,
    buf: Uint8Array,
    good: number,
    log: LogFile | undefined,
  ): string {
    const aside = this.asideName(path);
    let fd: number | undefined;
    try {
      fd = this.fs.openSync(aside, 'wx', 0o600);
      writeAllAt(this.fs, fd, buf.subarray(good), 0);
      this.fs.fsyncSync(fd);
    } catch (e) {
      throw new StoreError(
        key,
        `store log "${key}" has a bad tail (${path}) that could not be kept aside: ${errnoText(e)}`,
        e,
      );
    } finally {
      if (fd !== undefined) this.fs.closeSync(fd);
    }
    this.syncDir(key);
    let own: number | undefined;
    try {
      // Through the open fd if this process appends to the log; else open it for the cut.
      let target: number;
      if (log !== undefined && log.fd >= 0) target = log.fd;
      else target = own = this.fs.openSync(path, 'r+');
      this.fs.ftruncateSync(target, good);
      this.fs.fsyncSync(target);
    } catch (e) {
      throw new StoreError(
        key,
        `store log "${key}" has a bad tail (${path}, kept at ${aside}) that could not be cut off: ${errnoText(e)}`,
        e,
      );
    } finally {
      if (own !== undefined) this.fs.closeSync(own);
    }
    if (log !== undefined) log.size = good;
    return aside;
  }

  /** Keys present, sorted (deterministic). Temp files and kept-aside corrupt values are not keys. */
  keys(): string[] {
    let names: string[];
    try {
      names = this.fs.readdirSync(this.dir);
    } catch (e) {
      throw new StoreError('', `store list ${this.dir} failed: ${errnoText(e)}`, e);
    }
    return names.filter(isStoreKey).sort();
  }

  /** Files kept aside after failing their integrity check (names, sorted). */
  corruptFiles(): string[] {
    return this.fs
      .readdirSync(this.dir)
      .filter((n) => n.includes('.corrupt-'))
      .sort();
  }

  private syncDir(key: string): void {
    let fd: number | undefined;
    try {
      fd = this.fs.openSync(this.dir, 'r');
      this.fs.fsyncSync(fd);
    } catch (e) {
      // Some filesystems refuse fsync on a directory (EINVAL/EISDIR); the rename is still atomic.
      const code = errnoOf(e);
      if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM')
        throw new StoreError(
          key,
          `store sync of ${this.dir} failed after writing "${key}": ${errnoText(e)}`,
          e,
        );
    } finally {
      if (fd !== undefined) this.fs.closeSync(fd);
    }
  }

  private keepAside(key: string, path: string): string {
    const aside = this.asideName(path);
    try {
      this.fs.renameSync(path, aside);
    } catch (e) {
      throw new StoreError(
        key,
        `store value "${key}" is corrupt (${path}) and could not be moved aside: ${errnoText(e)}`,
        e,
      );
    }
    return aside;
  }

  /** A free `<path>.corrupt-<timestamp>[-<n>]` name. */
  private asideName(path: string): string {
    const stamp = this.now();
    let aside = `${path}.corrupt-${stamp}`;
    for (let i = 1; this.fs.existsSync(aside); i++) aside = `${path}.corrupt-${stamp}-${i}`;
    return aside;
  }
}

function check(buf: Uint8Array): { what: string; unsupported?: boolean } | undefined {
  if (buf.length >= LOG_MAGIC.length && LOG_MAGIC.every((b, i) => buf[i] === b))
    return {
      what: 'the key holds an append-only log (SHLG), not a value: read it with readLog',
      unsupported: true,
    };
  if (buf.length < HEADER)
    return { what: `truncated header: file has ${buf.length} bytes, a header needs ${HEADER}` };
  for (let i = 0; i < 4; i++) {
    if (buf[i] !== MAGIC[i]) return { what: 'bad magic (not a shoal store file)' };
  }
  if (buf[4] !== VERSION)
    return { what: `unsupported format version ${buf[4]} (this build reads ${VERSION})`, unsupported: true };
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const len = view.getUint32(8, true);
  const body = buf.length - HEADER;
  if (body < len) return { what: `truncated body: header says ${len} bytes, file has ${body}` };
  if (body > len) return { what: `trailing garbage: header says ${len} bytes, file has ${body}` };
  const want = view.getUint32(12, true);
  const got = crc32(buf.subarray(HEADER));
  if (want !== got) return { what: `checksum mismatch: header crc32 ${hex(want)}, body crc32 ${hex(got)}` };
  return undefined;
}

/** The result of checking a log file: its good records, and what is wrong with the rest. */
interface LogWalk {
  records: Uint8Array[];
  /** Bytes of header and good records. */
  good: number;
  /** A torn or corrupt record at `good`: what ends the log. */
  problem?: string;
  /** The problem is an incomplete last record (what a crash mid-append leaves), not corruption. */
  torn?: boolean;
  /** Not a log file at all (bad or truncated header): nothing in it is usable. */
  badFile?: string;
  /** A value file, or a format this build does not read: the caller asked for the wrong thing. */
  wrongKind?: string;
}

/**
 * A sync job run at most once at a time: a request made while one runs shares the next run (at
 * most one queued) — it must start after the caller's write, and every caller arriving meanwhile
 * is covered by that same run. `settled` runs after each run, once it no longer counts as running.
 */
class SharedSync {
  #running: Promise<void> | undefined;
  #queued: Promise<void> | undefined;

  get idle(): boolean {
    return this.#running === undefined && this.#queued === undefined;
  }

  request(job: () => Promise<void>, settled?: () => void): Promise<void> {
    if (this.#queued) return this.#queued;
    const start = (): Promise<void> => {
      const p: Promise<void> = job().finally(() => {
        if (this.#running === p) this.#running = undefined;
        settled?.();
      });
      this.#running = p;
      return p;
    };
    if (this.#running === undefined) return start();
    // One is running (it may have started before the caller's write): queue the next.
    const queued: Promise<void> = this.#running
      .catch(() => {})
      .then(() => {
        this.#queued = undefined;
        return start();
      });
    this.#queued = queued;
    return queued;
  }
}

function walkLog(buf: Uint8Array): LogWalk {
  const records: Uint8Array[] = [];
  if (buf.length >= 4 && MAGIC.every((b, i) => buf[i] === b))
    return { records, good: 0, wrongKind: 'the key holds a value, not a log' };
  if (buf.length < LOG_HEADER)
    return {
      records,
      good: 0,
      badFile: `truncated log header: file has ${buf.length} bytes, a header needs ${LOG_HEADER}`,
    };
  if (!LOG_MAGIC.every((b, i) => buf[i] === b))
    return { records, good: 0, badFile: 'bad magic (not a shoal log file)' };
  if (buf[4] !== LOG_VERSION)
    return {
      records,
      good: 0,
      wrongKind: `unsupported log format version ${buf[4]} (this build reads ${LOG_VERSION})`,
    };
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let off = LOG_HEADER;
  while (off < buf.length) {
    const left = buf.length - off;
    if (left < RECORD_HEADER)
      return {
        records,
        good: off,
        torn: true,
        problem: `torn record at byte ${off}: ${left} bytes of a ${RECORD_HEADER}-byte record header`,
      };
    const len = view.getUint32(off, true);
    if (left - RECORD_HEADER < len)
      return {
        records,
        good: off,
        torn: true,
        problem: `torn record at byte ${off}: ${left} bytes of a ${RECORD_HEADER + len}-byte record`,
      };
    const body = buf.subarray(off + RECORD_HEADER, off + RECORD_HEADER + len);
    const want = view.getUint32(off + 4, true);
    const got = recordCrc(buf.subarray(off, off + 4), body);
    if (want !== got)
      return {
        records,
        good: off,
        problem:
          `checksum mismatch at byte ${off} (record ${records.length}, ${len} bytes): ` +
          `stored crc32 ${hex(want)}, computed ${hex(got)}`,
      };
    // A plain Uint8Array copy (not a view of the file's buffer).
    records.push(new Uint8Array(body));
    off += RECORD_HEADER + len;
  }
  return { records, good: off };
}

/** CRC-32 of a record's 4 length bytes followed by the record. */
function recordCrc(lengthBytes: Uint8Array, record: Uint8Array): number {
  return crc32(record, crc32(lengthBytes));
}

function writeAllAt(fs: StoreFs, fd: number, buf: Uint8Array, position: number): void {
  let off = 0;
  while (off < buf.length) {
    const n = fs.writeAtSync(fd, buf, off, buf.length - off, position + off);
    if (n <= 0) throw Object.assign(new Error('short write'), { code: 'EIO' });
    off += n;
  }
}

function writeAll(fs: StoreFs, fd: number, buf: Uint8Array): void {
  let off = 0;
  while (off < buf.length) {
    const n = fs.writeSync(fd, buf, off, buf.length - off);
    if (n <= 0) throw Object.assign(new Error('short write'), { code: 'EIO' });
    off += n;
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function errnoOf(e: unknown): string | undefined {
  if (typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string') return e.code;
  return undefined;
}

const ERRNO_TEXT: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EIO: 'I/O error',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  EDQUOT: 'disk quota exceeded',
  ENOTDIR: 'not a directory',
  EISDIR: 'is a directory',
  EMFILE: 'too many open files',
};

function errnoText(e: unknown): string {
  const code = errnoOf(e);
  const msg = e instanceof Error ? e.message : String(e);
  if (code === undefined) return msg;
  return `${code} (${ERRNO_TEXT[code] ?? 'error'}): ${msg}`;
}
