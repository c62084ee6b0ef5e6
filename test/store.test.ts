import * as realFs from 'node:fs';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { StoreCorruptError, StoreError } from '../node/core/io.ts';
import { DiskStore, type StoreFs } from '../node/io/disk-store.ts';
import { MemoryStore } from '../sim/store.ts';
import { storeConformance } from './conformance/store.ts';

storeConformance('MemoryStore', () => {
  const store = new MemoryStore();
  return { open: () => store };
});

storeConformance('DiskStore', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-store-'));
  return {
    open: () => new DiskStore(dir),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
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
    let err: unknown;
    try {
      s.read('state');
    } catch (e) {
      err = e;
    }
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
    let err: unknown;
    try {
      s.read('future');
    } catch (e) {
      err = e;
    }
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
    let err: unknown;
    try {
      s.write('k', new Uint8Array(1000).fill(9));
    } catch (e) {
      err = e;
    }
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
    let err: unknown;
    try {
      s.write('incarnation', new Uint8Array([2]));
    } catch (e) {
      err = e;
    }
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
    let err: unknown;
    try {
      s.read('snap');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StoreCorruptError);
    const keptAt = (err as StoreCorruptError).keptAt!;
    expect(s.keptAside.get(keptAt)).toEqual(new Uint8Array([1, 2]));
    expect(s.read('snap')).toBeUndefined();
    expect(s.keys()).toEqual([]);
  });
});
