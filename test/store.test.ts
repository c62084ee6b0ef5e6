import * as realFs from 'node:fs';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { StoreCorruptError, StoreError } from '../node/core/io.ts';
import { DiskStore, type StoreFs } from '../node/io/disk-store.ts';
import { MemoryStore } from '../sim/store.ts';
import { storeConformance, thrown } from './conformance/store.ts';

storeConformance('MemoryStore', () => {
  const store = new MemoryStore();
  return {
    open: () => store,
    setFull: (full) => {
      store.failWrites = full ? 'enospc' : null;
    },
  };
});

storeConformance('DiskStore', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-store-'));
  let full = false;
  const enospc = () => Object.assign(new Error('ENOSPC: injected'), { code: 'ENOSPC' });
  const fs: Partial<StoreFs> = {
    writeSync: (fd, buf, off, len) => {
      if (full) throw enospc();
      return realFs.writeSync(fd, buf, off, len);
    },
    writeAtSync: (fd, buf, off, len, pos) => {
      if (full) throw enospc();
      return realFs.writeSync(fd, buf, off, len, pos);
    },
  };
  return {
    open: () => new DiskStore(dir, { fs }),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
    setFull: (f) => {
      full = f;
    },
  };
});

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'shoal-store-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) {
    chmodSync(d, 0o700);
    rmSync(d, { recursive: true, force: true });
  }
});

function errno(code: string): Error {
  return Object.assign(new Error(`${code}: injected`), { code });
}

describe('DiskStore integrity', () => {
  it('a truncated file → StoreCorruptError naming the file; the bytes are kept aside, not deleted', () => {
    const dir = tempDir();
    const s = new DiskStore(dir, { now: () => 1234 });
    s.write('state', new Uint8Array(100).fill(7));
    const path = join(dir, 'state');
    const full = readFileSync(path);
    writeFileSync(path, full.subarray(0, 60));
    const err = thrown(() => s.read('state'));
    expect(err).toBeInstanceOf(StoreCorruptError);
    const ce = err as StoreCorruptError;
    expect(ce.key).toBe('state');
    expect(ce.message).toContain(path);
    expect(ce.message).toMatch(/truncated body: header says 100 bytes, file has 44/);
    expect(ce.keptAt).toBe(`${path}.corrupt-1234`);
    expect(readFileSync(ce.keptAt!)).toEqual(full.subarray(0, 60));
    // The key is gone (not silently replaced), the kept file is not a key, and the key is writable again.
    expect(s.read('state')).toBeUndefined();
    expect(s.keys()).toEqual([]);
    expect(s.corruptFiles()).toEqual(['state.corrupt-1234']);
    s.write('state', new Uint8Array([1]));
    expect(s.read('state')).toEqual(new Uint8Array([1]));
  });

  it('a header cut short is detected too', () => {
    const dir = tempDir();
    const s = new DiskStore(dir, { now: () => 5 });
    s.write('id', new Uint8Array([1, 2, 3]));
    writeFileSync(join(dir, 'id'), new Uint8Array([0x53, 0x48]));
    expect(() => s.read('id')).toThrow(/truncated header: file has 2 bytes/);
  });

  it('a flipped byte → StoreCorruptError (checksum mismatch); a second corruption gets a distinct name', () => {
    const dir = tempDir();
    const s = new DiskStore(dir, { now: () => 42 });
    for (let round = 0; round < 2; round++) {
      s.write('snap', new TextEncoder().encode('hello world'));
      const path = join(dir, 'snap');
      const bytes = readFileSync(path);
      bytes[bytes.length - 3]! ^= 0x01;
      writeFileSync(path, bytes);
      expect(() => s.read('snap')).toThrow(/checksum mismatch/);
    }
    expect(s.corruptFiles()).toEqual(['snap.corrupt-42', 'snap.corrupt-42-1']);
  });

  it('a foreign file (bad magic) → StoreCorruptError; a newer format version → StoreError, file left in place', () => {
    const dir = tempDir();
    const s = new DiskStore(dir);
    writeFileSync(join(dir, 'foreign'), 'just some text written by hand');
    expect(() => s.read('foreign')).toThrow(/bad magic/);
    s.write('future', new Uint8Array([1]));
    const bytes = readFileSync(join(dir, 'future'));
    bytes[4] = 9;
    writeFileSync(join(dir, 'future'), bytes);
    const err = thrown(() => s.read('future'));
    expect(err).toBeInstanceOf(StoreError);
    expect(err).not.toBeInstanceOf(StoreCorruptError);
    expect(String(err)).toMatch(/unsupported format version 9/);
    expect(s.keys()).toContain('future');
  });

  it('a write that fails mid-way leaves the old value readable and no temp file behind', () => {
    const dir = tempDir();
    let failAfter = Number.POSITIVE_INFINITY;
    let written = 0;
    const fs: Partial<StoreFs> = {
      writeSync: (fd, buf, off, len) => {
        if (written >= failAfter) throw errno('EIO');
        // Torn write: only part of the buffer goes out before the failure.
        const n = Math.min(len, Math.max(1, failAfter - written));
        written += n;
        return realFs.writeSync(fd, buf, off, n);
      },
    };
    const s = new DiskStore(dir, { fs });
    s.write('k', new Uint8Array([1, 2, 3]));
    failAfter = written + 20; // header (16) + 4 bytes of the new body, then EIO
    const err = thrown(() => s.write('k', new Uint8Array(1000).fill(9)));
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).key).toBe('k');
    expect(String((err as Error).message)).toMatch(/"k".*EIO \(I\/O error\)/);
    expect(s.read('k')).toEqual(new Uint8Array([1, 2, 3]));
    expect(readdirSync(dir)).toEqual(['k']);
  });

  it('a crash mid-write (leftover temp file) is invisible and cleaned up on open', () => {
    const dir = tempDir();
    const s = new DiskStore(dir);
    s.write('k', new Uint8Array([5]));
    writeFileSync(join(dir, '.tmp-k-999-0'), new Uint8Array([0x53, 0x48, 0x53]));
    expect(s.keys()).toEqual(['k']);
    const reopened = new DiskStore(dir);
    expect(readdirSync(dir)).toEqual(['k']);
    expect(reopened.read('k')).toEqual(new Uint8Array([5]));
  });

  it('ENOSPC → StoreError naming the key and the errno; old value intact', () => {
    const dir = tempDir();
    let full = false;
    const s = new DiskStore(dir, {
      fs: {
        writeSync: (fd, buf, off, len) => {
          if (full) throw errno('ENOSPC');
          return realFs.writeSync(fd, buf, off, len);
        },
      },
    });
    s.write('incarnation', new Uint8Array([1]));
    full = true;
    const err = thrown(() => s.write('incarnation', new Uint8Array([2])));
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).key).toBe('incarnation');
    expect((err as Error).message).toMatch(
      /store write "incarnation" failed .*ENOSPC \(no space left on device\)/,
    );
    expect(((err as StoreError).cause as { code: string }).code).toBe('ENOSPC');
    full = false;
    expect(s.read('incarnation')).toEqual(new Uint8Array([1]));
  });

  it('EIO on read → StoreError (not corrupt; nothing moved)', () => {
    const dir = tempDir();
    const s = new DiskStore(dir, {
      fs: {
        readFileSync: () => {
          throw errno('EIO');
        },
      },
    });
    expect(() => s.read('x')).toThrow(/store read "x" failed .*EIO/);
  });

  it('a directory that became unwritable → StoreError naming the key and errno (works as root too)', () => {
    const dir = tempDir();
    const s = new DiskStore(dir);
    s.write('k', new Uint8Array([1]));
    // Root ignores permission bits, so make the directory path a regular file instead: ENOTDIR.
    rmSync(dir, { recursive: true });
    writeFileSync(dir, 'not a directory');
    expect(() => s.write('k', new Uint8Array([2]))).toThrow(/store write "k" failed.*ENOTDIR/);
  });
});

describe('DiskStore.writeAsync (fsync off the event loop)', () => {
  /** fsyncAsync calls held until released, to order their completions by hand. */
  function heldFsyncs() {
    const held: { fd: number; release: () => void; fail: (e: Error) => void }[] = [];
    const fsyncAsync = (fd: number) =>
      new Promise<void>((resolve, reject) => {
        held.push({
          fd,
          release: () => {
            realFs.fsyncSync(fd);
            resolve();
          },
          fail: reject,
        });
      });
    return { held, fsyncAsync };
  }
  const until = async (cond: () => boolean) => {
    for (let i = 0; !cond(); i++) {
      if (i > 500) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 2));
    }
  };

  it('resolves once the value is in place and durable; reopening reads it', async () => {
    const dir = tempDir();
    const s = new DiskStore(dir);
    await s.writeAsync('k', new Uint8Array([1, 2, 3]));
    expect(s.read('k')).toEqual(new Uint8Array([1, 2, 3]));
    expect(new DiskStore(dir).read('k')).toEqual(new Uint8Array([1, 2, 3]));
    expect(readdirSync(dir)).toEqual(['k']);
  });

  it('a slower earlier write never replaces a later write or remove of the same key', async () => {
    const dir = tempDir();
    const { held, fsyncAsync } = heldFsyncs();
    const s = new DiskStore(dir, { fs: { fsyncAsync } });
    const first = s.writeAsync('k', new Uint8Array([1]));
    const second = s.writeAsync('k', new Uint8Array([2]));
    await until(() => held.length === 2);
    held[1]!.release(); // the later write's file fsync completes first
    await until(() => held.length === 3); // …then its directory fsync
    held[2]!.release();
    await second;
    expect(s.read('k')).toEqual(new Uint8Array([2]));
    held[0]!.release();
    await first;
    expect(s.read('k')).toEqual(new Uint8Array([2]));
    // A sync write or a remove issued while an async write is in flight wins as well.
    const third = s.writeAsync('k', new Uint8Array([3]));
    s.write('k', new Uint8Array([4]));
    await until(() => held.length === 4);
    held[3]!.release();
    await third;
    expect(s.read('k')).toEqual(new Uint8Array([4]));
    const fourth = s.writeAsync('gone', new Uint8Array([5]));
    s.remove('gone');
    await until(() => held.length === 5);
    held[4]!.release();
    await fourth;
    expect(s.read('gone')).toBeUndefined();
    expect(readdirSync(dir).sort()).toEqual(['k']);
  });

  it('a failed fsync rejects with StoreError naming the key; the old value stays, no temp file', async () => {
    const dir = tempDir();
    const { held, fsyncAsync } = heldFsyncs();
    const s = new DiskStore(dir, { fs: { fsyncAsync } });
    s.write('k', new Uint8Array([1]));
    const w = s.writeAsync('k', new Uint8Array([2]));
    await until(() => held.length === 1);
    held[0]!.fail(errno('EIO'));
    const err = await w.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).key).toBe('k');
    expect((err as Error).message).toMatch(/EIO \(I\/O error\)/);
    expect(s.read('k')).toEqual(new Uint8Array([1]));
    expect(readdirSync(dir)).toEqual(['k']);
  });

  it('shares directory fsyncs between concurrent writes', async () => {
    const dir = tempDir();
    let calls = 0;
    const s = new DiskStore(dir, {
      fs: {
        fsyncAsync: (fd) => {
          calls++;
          return new Promise((resolve) => setTimeout(() => resolve(realFs.fsyncSync(fd)), 5));
        },
      },
    });
    await Promise.all(Array.from({ length: 20 }, (_, i) => s.writeAsync(`k${i}`, new Uint8Array([i]))));
    for (let i = 0; i < 20; i++) expect(s.read(`k${i}`)).toEqual(new Uint8Array([i]));
    // 20 file fsyncs, and far fewer than 20 directory fsyncs.
    expect(calls).toBeLessThan(20 + 10);
  });
});

describe('MemoryStore fault injection', () => {
  it('failWrites → StoreError with the errno; the old value stays', () => {
    const s = new MemoryStore();
    s.write('k', new Uint8Array([1]));
    s.failWrites = 'enospc';
    expect(() => s.write('k', new Uint8Array([2]))).toThrow(/store write "k" failed: ENOSPC/);
    s.failWrites = 'eio';
    expect(() => s.write('k', new Uint8Array([2]))).toThrow(StoreError);
    s.failWrites = null;
    expect(s.read('k')).toEqual(new Uint8Array([1]));
  });

  it('corrupt(key) → the next read throws StoreCorruptError; the value is kept aside', () => {
    const s = new MemoryStore();
    s.write('snap', new Uint8Array([1, 2]));
    s.corrupt('snap');
    const err = thrown(() => s.read('snap'));
    expect(err).toBeInstanceOf(StoreCorruptError);
    const keptAt = (err as StoreCorruptError).keptAt!;
    expect(s.keptAside.get(keptAt)).toEqual(new Uint8Array([1, 2]));
    expect(s.read('snap')).toBeUndefined();
    expect(s.keys()).toEqual([]);
  });
});

describe('DiskStore logs (append-only: one open file, positional writes, fdatasync)', () => {
  const recs = (n: number) => Array.from({ length: n }, (_, i) => new Uint8Array(20 + i).fill(i + 1));
  const until = async (cond: () => boolean) => {
    for (let i = 0; !cond(); i++) {
      if (i > 500) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  /** fdatasyncAsync calls held until released, to order their completions by hand. */
  function heldSyncs() {
    const held: { release: () => void; fail: (e: Error) => void }[] = [];
    const fdatasyncAsync = (fd: number) =>
      new Promise<void>((resolve, reject) => {
        held.push({
          release: () => {
            realFs.fdatasyncSync(fd);
            resolve();
          },
          fail: reject,
        });
      });
    return { held, fdatasyncAsync };
  }

  it('file layout: 8-byte SHLG header, then [u32 length][u32 crc32][bytes] per record', () => {
    const dir = tempDir();
    const s = new DiskStore(dir);
    s.append('log', new Uint8Array([7, 8, 9]));
    s.append('log', new Uint8Array(0));
    const f = readFileSync(join(dir, 'log'));
    expect([...f.subarray(0, 8)]).toEqual([0x53, 0x48, 0x4c, 0x47, 1, 0, 0, 0]);
    expect(f.length).toBe(8 + 8 + 3 + 8);
    expect(f.readUInt32LE(8)).toBe(3);
    expect([...f.subarray(16, 19)]).toEqual([7, 8, 9]);
    expect(f.readUInt32LE(19)).toBe(0);
    // The checksum covers the length: an empty record's is not 0 (a zeroed tail is not a record).
    expect(f.readUInt32LE(23)).not.toBe(0);
    expect(readdirSync(dir)).toEqual(['log']);
  });

  it('a torn tail (a crash mid-append) is dropped with `dropped` set and kept aside; the next append follows the last good record', () => {
    const dir = tempDir();
    const s = new DiskStore(dir, { now: () => 77 });
    const r = recs(5);
    for (const x of r) s.append('state.log', x);
    const path = join(dir, 'state.log');
    const full = readFileSync(path);
    const lastStart = full.length - (8 + r[4]!.length);
    writeFileSync(path, full.subarray(0, full.length - 5)); // the last record loses 5 bytes
    const reopened = new DiskStore(dir, { now: () => 77 });
    const log = reopened.readLog('state.log')!;
    expect(log.records).toEqual(r.slice(0, 4));
    expect(log.torn).toBe(true); // an incomplete last record, not corruption
    expect(log.dropped).toMatch(
      new RegExp(
        `torn record at byte ${lastStart}: ${8 + r[4]!.length - 5} bytes of a ${8 + r[4]!.length}-byte record`,
      ),
    );
    expect(log.dropped).toContain('state.log.corrupt-77');
    expect(log.keptAt).toBe(`${path}.corrupt-77`);
    // Kept aside, not deleted; cut off the log.
    expect(readFileSync(log.keptAt!)).toEqual(full.subarray(lastStart, full.length - 5));
    expect(readFileSync(path).length).toBe(lastStart);
    expect(reopened.keys()).toEqual(['state.log']);
    expect(reopened.corruptFiles()).toEqual(['state.log.corrupt-77']);
    // A second read finds nothing more to drop.
    expect(reopened.readLog('state.log')).toEqual({ records: r.slice(0, 4) });
    reopened.append('state.log', new Uint8Array([1, 2, 3]));
    expect(new DiskStore(dir).readLog('state.log')).toEqual({
      records: [...r.slice(0, 4), new Uint8Array([1, 2, 3])],
    });
  });

  it('the first append after a reopen checks the log itself: a torn record header is cut (and kept) before appending', () => {
    const dir = tempDir();
    const s = new DiskStore(dir, { now: () => 5 });
    const r = recs(3);
    for (const x of r) s.append('log', x);
    const path = join(dir, 'log');
    const good = readFileSync(path).length;
    realFs.appendFileSync(path, new Uint8Array([9, 0, 0])); // 3 bytes of a record header
    const reopened = new DiskStore(dir, { now: () => 5 });
    reopened.append('log', new Uint8Array([4]));
    expect(reopened.corruptFiles()).toEqual(['log.corrupt-5']);
    expect(readFileSync(join(dir, 'log.corrupt-5'))).toEqual(Buffer.from([9, 0, 0]));
    expect(new DiskStore(dir).readLog('log')).toEqual({ records: [...r, new Uint8Array([4])] });
    expect(readFileSync(path).length).toBe(good + 9);
  });

  it('a flipped byte → checksum mismatch: the records before it are read, it and the rest are kept aside', () => {
    const dir = tempDir();
    const s = new DiskStore(dir, { now: () => 9 });
    const r = recs(6);
    for (const x of r) s.append('log', x);
    const path = join(dir, 'log');
    const bytes = readFileSync(path);
    let off = 8;
    for (let i = 0; i < 2; i++) off += 8 + r[i]!.length;
    bytes[off + 8 + 3]! ^= 0x10; // a byte inside record 2
    writeFileSync(path, bytes);
    const log = new DiskStore(dir, { now: () => 9 }).readLog('log')!;
    expect(log.records).toEqual(r.slice(0, 2));
    expect(log.torn).toBeUndefined(); // corruption, not a crash mid-append
    expect(log.dropped).toMatch(
      new RegExp(`checksum mismatch at byte ${off} \\(record 2, ${r[2]!.length} bytes\\)`),
    );
    expect(readFileSync(log.keptAt!)).toEqual(bytes.subarray(off));
    expect(readFileSync(path).length).toBe(off);
  });

  it('a zero-filled tail (file extended, data lost) is not read as empty records', () => {
    const dir = tempDir();
    const s = new DiskStore(dir, { now: () => 3 });
    s.append('log', new Uint8Array([1]));
    realFs.appendFileSync(join(dir, 'log'), new Uint8Array(64));
    const log = new DiskStore(dir).readLog('log')!;
    expect(log.records).toEqual([new Uint8Array([1])]);
    expect(log.dropped).toMatch(/checksum mismatch at byte 17 \(record 1, 0 bytes\)/);
  });

  it('a file that is not a log (bad magic, cut header) is kept aside whole; a newer version → StoreError, left in place', () => {
    const dir = tempDir();
    const s = new DiskStore(dir, { now: () => 1 });
    writeFileSync(join(dir, 'foreign'), 'text written by hand');
    const log = s.readLog('foreign')!;
    expect(log.records).toEqual([]);
    expect(log.dropped).toMatch(
      /bad magic \(not a shoal log file\); the whole file was kept at .*foreign\.corrupt-1/,
    );
    expect(s.keys()).toEqual([]);
    writeFileSync(join(dir, 'cut'), new Uint8Array([0x53, 0x48, 0x4c]));
    s.append('cut', new Uint8Array([5])); // the bad file goes aside, a new log starts
    expect(s.readLog('cut')).toEqual({ records: [new Uint8Array([5])] });
    expect(s.corruptFiles()).toEqual(['cut.corrupt-1', 'foreign.corrupt-1']);
    s.append('future', new Uint8Array([1]));
    const bytes = readFileSync(join(dir, 'future'));
    bytes[4] = 2;
    writeFileSync(join(dir, 'future'), bytes);
    const fresh = new DiskStore(dir);
    expect(() => fresh.readLog('future')).toThrow(/unsupported log format version 2/);
    expect(() => fresh.append('future', new Uint8Array([1]))).toThrow(/unsupported log format version 2/);
    expect(readFileSync(join(dir, 'future'))).toEqual(bytes);
  });

  it('read of a log → StoreError saying it is a log (file left in place, not corrupt)', () => {
    const dir = tempDir();
    const s = new DiskStore(dir);
    s.append('log', new Uint8Array([1]));
    const err = thrown(() => s.read('log'));
    expect(err).toBeInstanceOf(StoreError);
    expect(err).not.toBeInstanceOf(StoreCorruptError);
    expect((err as Error).message).toMatch(/append-only log \(SHLG\), not a value/);
    expect(s.corruptFiles()).toEqual([]);
    expect(s.readLog('log')).toEqual({ records: [new Uint8Array([1])] });
  });

  it('a partial write then ENOSPC: StoreError naming the key and errno; the log is cut back to its last record', () => {
    const dir = tempDir();
    let full = false;
    const s = new DiskStore(dir, {
      fs: {
        writeAtSync: (fd, buf, off, len, pos) => {
          if (!full) return realFs.writeSync(fd, buf, off, len, pos);
          if (len > 10) return realFs.writeSync(fd, buf, off, 10, pos); // torn: 10 bytes go out
          throw errno('ENOSPC');
        },
      },
    });
    s.append('log', new Uint8Array([1, 1]));
    const size = readFileSync(join(dir, 'log')).length;
    full = true;
    const err = thrown(() => s.append('log', new Uint8Array(100).fill(2)));
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).key).toBe('log');
    expect((err as Error).message).toMatch(/store append "log" failed .*ENOSPC \(no space left on device\)/);
    expect(readFileSync(join(dir, 'log')).length).toBe(size);
    const rejected = rejection(s.appendAsync('log', new Uint8Array(100).fill(3)));
    full = false;
    s.append('log', new Uint8Array([4]));
    expect(new DiskStore(dir).readLog('log')).toEqual({
      records: [new Uint8Array([1, 1]), new Uint8Array([4])],
    });
    return rejected.then((e) => {
      expect(e).toBeInstanceOf(StoreError);
      expect((e as Error).message).toMatch(/ENOSPC/);
    });
  });

  it('a failed fdatasync (sync append) → StoreError; the record is cut back, earlier ones stay', () => {
    const dir = tempDir();
    let fail = false;
    const s = new DiskStore(dir, {
      fs: {
        fdatasyncSync: (fd) => {
          if (fail) throw errno('EIO');
          realFs.fdatasyncSync(fd);
        },
      },
    });
    s.append('log', new Uint8Array([1]));
    fail = true;
    expect(() => s.append('log', new Uint8Array([2]))).toThrow(
      /store append "log" failed .*EIO \(I\/O error\)/,
    );
    fail = false;
    expect(s.readLog('log')).toEqual({ records: [new Uint8Array([1])] });
    s.append('log', new Uint8Array([3]));
    expect(new DiskStore(dir).readLog('log')).toEqual({
      records: [new Uint8Array([1]), new Uint8Array([3])],
    });
  });

  it('appendAsync: records land in call order at once, resolve once synced, syncs are shared; durable across a reopen', async () => {
    const dir = tempDir();
    const { held, fdatasyncAsync } = heldSyncs();
    const s = new DiskStore(dir, { fs: { fdatasyncAsync } });
    const done: number[] = [];
    const p = [0, 1, 2, 3].map((i) => s.appendAsync('log', new Uint8Array([i])).then(() => done.push(i)));
    // Written at once (page cache): visible in order before any sync completes.
    expect(s.readLog('log')!.records).toEqual([0, 1, 2, 3].map((i) => new Uint8Array([i])));
    // A sync append in between lands in call order too.
    s.append('log', new Uint8Array([4]));
    const last = s.appendAsync('log', new Uint8Array([5])).then(() => done.push(5));
    await until(() => held.length === 1);
    // One sync running (record 0), one queued for all the others.
    expect(done).toEqual([]);
    held[0]!.release();
    await p[0];
    expect(done).toEqual([0]);
    await until(() => held.length === 2);
    held[1]!.release();
    await Promise.all([...p, last]);
    expect(done).toEqual([0, 1, 2, 3, 5]);
    expect(held).toHaveLength(2);
    expect(new DiskStore(dir).readLog('log')).toEqual({
      records: [0, 1, 2, 3, 4, 5].map((i) => new Uint8Array([i])),
    });
  });

  it('appendAsync: a failed sync rejects its waiters and the queued ones with StoreError; the log goes on', async () => {
    const dir = tempDir();
    const { held, fdatasyncAsync } = heldSyncs();
    const s = new DiskStore(dir, { fs: { fdatasyncAsync } });
    s.append('log', new Uint8Array([1]));
    const a = s.appendAsync('log', new Uint8Array([2])).catch((e: unknown) => e);
    const b = s.appendAsync('log', new Uint8Array([3])).catch((e: unknown) => e);
    await until(() => held.length === 1);
    held[0]!.fail(errno('EIO'));
    for (const e of [await a, await b]) {
      expect(e).toBeInstanceOf(StoreError);
      expect((e as StoreError).key).toBe('log');
      expect((e as Error).message).toMatch(/store append "log" failed .*EIO/);
    }
    expect(held).toHaveLength(1); // the queued sync did not run on a log in doubt
    // The next append checks the file again and goes on after what is there.
    const c = s.appendAsync('log', new Uint8Array([4]));
    await until(() => held.length === 2);
    held[1]!.release();
    await c;
    expect(new DiskStore(dir).readLog('log')!.records.at(-1)).toEqual(new Uint8Array([4]));
  });

  it('remove closes the log file (once its syncs are done); write over a log replaces it; no fd leaks', async () => {
    const dir = tempDir();
    const openFds = new Set<number>();
    const s = new DiskStore(dir, {
      fs: {
        openSync: (p, f, m) => {
          const fd = realFs.openSync(p, f, m);
          openFds.add(fd);
          return fd;
        },
        closeSync: (fd) => {
          openFds.delete(fd);
          realFs.closeSync(fd);
        },
      },
    });
    s.append('a', new Uint8Array([1]));
    expect(openFds.size).toBe(1); // the log stays open between appends
    await s.appendAsync('a', new Uint8Array([2]));
    s.append('a', new Uint8Array([3]));
    expect(openFds.size).toBe(1);
    const pending = s.appendAsync('a', new Uint8Array([4]));
    s.remove('a');
    await pending;
    expect(openFds.size).toBe(0);
    expect(s.readLog('a')).toBeUndefined();
    s.append('b', new Uint8Array([1]));
    s.write('b', new Uint8Array([2]));
    expect(openFds.size).toBe(0);
    expect(s.read('b')).toEqual(new Uint8Array([2]));
    expect(() => s.append('b', new Uint8Array([3]))).toThrow(/holds a value, not a log/);
    s.append('c', new Uint8Array([1]));
    await s.removeAsync('c');
    expect(openFds.size).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['b']);
  });

  it('writeAsync over a log: an append while the value is in flight throws; after a later remove the key is a log again', async () => {
    const dir = tempDir();
    const s = new DiskStore(dir);
    s.append('k', new Uint8Array([1]));
    const w = s.writeAsync('k', new Uint8Array([2]));
    expect(() => s.append('k', new Uint8Array([3]))).toThrow(/value write of this key is in flight/);
    await w;
    expect(s.read('k')).toEqual(new Uint8Array([2]));
    const w2 = s.writeAsync('k', new Uint8Array([4]));
    s.remove('k');
    s.append('k', new Uint8Array([5])); // the remove came after the value: the key is free
    await w2; // the older value is dropped, it does not replace the new log
    expect(s.readLog('k')).toEqual({ records: [new Uint8Array([5])] });
  });
});

function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}
