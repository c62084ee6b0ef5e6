import * as nodeFs from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { assertStoreKey, isStoreKey, type Store, StoreCorruptError, StoreError } from '../core/io.ts';

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
 */
export class DiskStore implements Store {
  private readonly fs: StoreFs;
  private readonly now: () => number;
  private tmpSeq = 0;
  /** Per key: the sequence number (in call order) of the write or remove that is on disk. */
  private readonly landed = new Map<string, number>();
  private opSeq = 0;
  /** Directory fsyncs of writeAsync: one running, at most one more queued (they coalesce). */
  private dirSyncRunning: Promise<void> | undefined;
  private dirSyncQueued: Promise<void> | undefined;

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

  /** Path of the file holding `key`. */
  pathOf(key: string): string {
    assertStoreKey(key);
    return join(this.dir, key);
  }

  read(key: string): Uint8Array | undefined {
    const path = this.pathOf(key);
    let buf: Uint8Array;
    try {
      buf = this.fs.readFileSync(path);
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return undefined;
      throw new StoreError(key, `store read "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
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
      ({ tmp, fd } = this.writeTemp(key, path, data));
    } catch (e) {
      return Promise.reject(e);
    }
    return this.fs.fsyncAsync(fd).then(
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
    );
  }

  /** `remove`, with the directory fsync off the event loop (shared with concurrent writes). */
  removeAsync(key: string): Promise<void> {
    let path: string;
    try {
      path = this.pathOf(key);
      this.landed.set(key, this.issue(key));
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
    if (this.dirSyncQueued) return this.dirSyncQueued;
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
    const start = (): Promise<void> => {
      const p = run()
        .catch(tolerate)
        .finally(() => {
          if (this.dirSyncRunning === p) this.dirSyncRunning = undefined;
        });
      this.dirSyncRunning = p;
      return p;
    };
    if (this.dirSyncRunning === undefined) return start();
    // One is running (it may have started before our rename): queue the next, shared by all
    // callers until it starts.
    const queued: Promise<void> = this.dirSyncRunning
      .catch(() => {})
      .then(() => {
        this.dirSyncQueued = undefined;
        return start();
      });
    this.dirSyncQueued = queued;
    return queued;
  }

  remove(key: string): void {
    const path = this.pathOf(key);
    // An async write of this key still in flight must not bring the value back.
    this.landed.set(key, this.issue(key));
    try {
      this.fs.unlinkSync(path);
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return;
      throw new StoreError(key, `store remove "${key}" failed (${path}): ${errnoText(e)}`, e);
    }
    this.syncDir(key);
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
    const stamp = this.now();
    let aside = `${path}.corrupt-${stamp}`;
    for (let i = 1; this.fs.existsSync(aside); i++) aside = `${path}.corrupt-${stamp}-${i}`;
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
}

function check(buf: Uint8Array): { what: string; unsupported?: boolean } | undefined {
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
