import { afterEach, describe, expect, it } from 'vitest';
import { type Store, StoreError } from '../../node/core/io.ts';

/** What `fn` threw (undefined if it returned). */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** A storage backend under test: `open()` returns a Store over the same durable data each time. */
export interface StoreBackend {
  open(): Store;
  cleanup?(): void;
  /** Make every later write and append of the stores it opened fail with ENOSPC (or stop). */
  setFull(full: boolean): void;
}

/**
 * The Store contract (node/core/io.ts): read/write/remove/keys, overwrite, binary safety, empty
 * and large values, copies in and out, data surviving a reopen (a restart), and invalid keys
 * (paths, hidden names, empty) rejected with StoreError. Logs: records round-trip in order (empty
 * and binary ones too) and survive a reopen; a log is a key (listed, removed, replaced by a write);
 * the wrong kind of access (read of a log, append to or readLog of a value) throws StoreError; a
 * failed append leaves the records before it.
 */
export function storeConformance(name: string, makeBackend: () => StoreBackend): void {
  describe(`Store conformance: ${name}`, () => {
    let backend: StoreBackend | undefined;
    const open = (): Store => {
      backend = makeBackend();
      return backend.open();
    };
    afterEach(() => {
      backend?.cleanup?.();
      backend = undefined;
    });

    it('reads undefined for a missing key and lists no keys when empty', () => {
      const s = open();
      expect(s.read('missing')).toBeUndefined();
      expect(s.keys()).toEqual([]);
    });

    it('round-trips a value', () => {
      const s = open();
      s.write('identity', new Uint8Array([1, 2, 3]));
      expect(s.read('identity')).toEqual(new Uint8Array([1, 2, 3]));
    });

    it('overwrites', () => {
      const s = open();
      s.write('k', new Uint8Array([1, 2, 3, 4, 5]));
      s.write('k', new Uint8Array([9]));
      expect(s.read('k')).toEqual(new Uint8Array([9]));
      expect(s.keys()).toEqual(['k']);
    });

    it('removes; removing a missing key is a no-op', () => {
      const s = open();
      s.write('a', new Uint8Array([1]));
      s.write('b', new Uint8Array([2]));
      s.remove('a');
      s.remove('a');
      s.remove('never-written');
      expect(s.read('a')).toBeUndefined();
      expect(s.read('b')).toEqual(new Uint8Array([2]));
      expect(s.keys()).toEqual(['b']);
    });

    it('lists keys (compared sorted)', () => {
      const s = open();
      const ks = ['state.snapshot', 'identity', 'incarnation', 'a-b_c.1', 'Z9'];
      for (const k of ks) s.write(k, new Uint8Array([k.length]));
      expect([...s.keys()].sort()).toEqual([...ks].sort());
    });

    it('is binary safe (every byte value, a header-like prefix)', () => {
      const s = open();
      const all = new Uint8Array(512);
      for (let i = 0; i < all.length; i++) all[i] = i & 0xff;
      s.write('bin', all);
      expect(s.read('bin')).toEqual(all);
      const headerLike = new Uint8Array([0x53, 0x48, 0x53, 0x54, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
      s.write('hdr', headerLike);
      expect(s.read('hdr')).toEqual(headerLike);
    });

    it('stores an empty value (distinct from a missing key)', () => {
      const s = open();
      s.write('empty', new Uint8Array(0));
      const v = s.read('empty');
      expect(v).toBeInstanceOf(Uint8Array);
      expect(v!.length).toBe(0);
      expect(s.keys()).toEqual(['empty']);
    });

    it('stores a large value (5 MiB)', () => {
      const s = open();
      const big = new Uint8Array(5 * 1024 * 1024);
      for (let i = 0; i < big.length; i += 4096) big[i] = (i >>> 12) & 0xff;
      big[big.length - 1] = 0xab;
      s.write('big', big);
      const v = s.read('big')!;
      expect(v.length).toBe(big.length);
      expect(Buffer.from(v).equals(Buffer.from(big))).toBe(true);
    });

    it('copies in and out: mutating buffers after write or read does not change the stored value', () => {
      const s = open();
      const buf = new Uint8Array([1, 2, 3]);
      s.write('k', buf);
      buf[0] = 99;
      const r = s.read('k')!;
      expect(r).toEqual(new Uint8Array([1, 2, 3]));
      r[1] = 99;
      expect(s.read('k')).toEqual(new Uint8Array([1, 2, 3]));
    });

    it('accepts a subarray view (writes only the viewed bytes)', () => {
      const s = open();
      const base = new Uint8Array([0, 1, 2, 3, 4, 5]);
      s.write('view', base.subarray(2, 4));
      expect(s.read('view')).toEqual(new Uint8Array([2, 3]));
    });

    it('keeps data across a reopen (restart)', () => {
      const b = makeBackend();
      backend = b;
      const s1 = b.open();
      s1.write('incarnation', new Uint8Array([7]));
      s1.write('gone', new Uint8Array([1]));
      s1.remove('gone');
      const s2 = b.open();
      expect(s2.read('incarnation')).toEqual(new Uint8Array([7]));
      expect(s2.read('gone')).toBeUndefined();
      expect(s2.keys()).toEqual(['incarnation']);
    });

    it('rejects invalid keys with StoreError naming the key', () => {
      const s = open();
      const bad = [
        '',
        '../etc/passwd',
        'a/b',
        '/abs',
        '.hidden',
        '..',
        'a\\b',
        'nul\0byte',
        'sp ace',
        'x'.repeat(129),
      ];
      for (const k of bad) {
        expect(() => s.write(k, new Uint8Array([1])), JSON.stringify(k)).toThrow(StoreError);
        expect(() => s.read(k), JSON.stringify(k)).toThrow(StoreError);
        expect(() => s.remove(k), JSON.stringify(k)).toThrow(StoreError);
      }
      try {
        s.write('../x', new Uint8Array([1]));
      } catch (e) {
        expect((e as StoreError).key).toBe('../x');
        expect((e as Error).message).toContain('../x');
      }
      expect(s.keys()).toEqual([]);
      for (const k of bad) {
        expect(() => s.append(k, new Uint8Array([1])), JSON.stringify(k)).toThrow(StoreError);
        expect(() => s.readLog(k), JSON.stringify(k)).toThrow(StoreError);
      }
      expect(s.keys()).toEqual([]);
    });

    describe('logs (append, readLog)', () => {
      /** Records of every shape: empty, one byte, every byte value, a log-header-like prefix, larger. */
      const sample = (n: number): Uint8Array[] =>
        Array.from({ length: n }, (_, i) => {
          if (i % 7 === 0) return new Uint8Array(0);
          if (i % 7 === 1) return new Uint8Array([i & 0xff]);
          if (i % 7 === 2) return Uint8Array.from({ length: 256 }, (_, j) => j);
          if (i % 7 === 3) return new Uint8Array([0x53, 0x48, 0x4c, 0x47, 1, 0, 0, 0, 0, 0, 0, 0]);
          return Uint8Array.from({ length: 10 + ((i * 37) % 3000) }, (_, j) => (i * 31 + j) & 0xff);
        });

      it('reads undefined for a missing log', () => {
        const s = open();
        expect(s.readLog('missing')).toBeUndefined();
      });

      it('round-trips many records in order (empty and binary ones too)', () => {
        const s = open();
        const recs = sample(200);
        for (const r of recs) s.append('state.log', r);
        const log = s.readLog('state.log')!;
        expect(log.dropped).toBeUndefined();
        expect(log.records).toHaveLength(recs.length);
        for (let i = 0; i < recs.length; i++) expect(log.records[i], `record ${i}`).toEqual(recs[i]);
        // Appends after a read follow the records read.
        s.append('state.log', new Uint8Array([42]));
        expect(s.readLog('state.log')!.records.at(-1)).toEqual(new Uint8Array([42]));
        expect(s.readLog('state.log')!.records).toHaveLength(recs.length + 1);
      });

      it('copies in and out', () => {
        const s = open();
        const r = new Uint8Array([1, 2, 3]);
        s.append('l', r);
        r[0] = 99;
        s.append('l', new Uint8Array([0, 7, 8, 9]).subarray(1));
        const out = s.readLog('l')!.records;
        expect(out).toEqual([new Uint8Array([1, 2, 3]), new Uint8Array([7, 8, 9])]);
        out[0]![0] = 99;
        expect(s.readLog('l')!.records[0]).toEqual(new Uint8Array([1, 2, 3]));
      });

      it('survives a reopen (restart), and appends after it follow the old records', () => {
        const b = makeBackend();
        backend = b;
        const s1 = b.open();
        const recs = sample(30);
        for (const r of recs) s1.append('log', r);
        const s2 = b.open();
        expect(s2.readLog('log')!.records).toEqual(recs);
        s2.append('log', new Uint8Array([1, 2]));
        const s3 = b.open();
        expect(s3.readLog('log')!.records).toEqual([...recs, new Uint8Array([1, 2])]);
      });

      it('a log is a key: listed, removed (then a new one starts empty), values and logs side by side', () => {
        const s = open();
        s.write('value', new Uint8Array([1]));
        s.append('log', new Uint8Array([2]));
        s.append('log', new Uint8Array([3]));
        expect([...s.keys()].sort()).toEqual(['log', 'value']);
        s.remove('log');
        s.remove('log');
        expect(s.readLog('log')).toBeUndefined();
        expect(s.keys()).toEqual(['value']);
        s.append('log', new Uint8Array([4]));
        expect(s.readLog('log')!.records).toEqual([new Uint8Array([4])]);
        expect(s.read('value')).toEqual(new Uint8Array([1]));
      });

      it('the wrong kind of access throws StoreError and moves nothing; write replaces a log', () => {
        const s = open();
        s.append('log', new Uint8Array([1]));
        s.write('value', new Uint8Array([2]));
        const err = thrown(() => s.read('log'));
        expect(err).toBeInstanceOf(StoreError);
        expect((err as StoreError).name).toBe('StoreError'); // not StoreCorruptError: nothing is wrong with it
        expect((err as Error).message).toMatch(/"log".*log/);
        expect(() => s.append('value', new Uint8Array([3]))).toThrow(StoreError);
        expect(() => s.readLog('value')).toThrow(StoreError);
        // Nothing was moved or changed.
        expect(s.readLog('log')!.records).toEqual([new Uint8Array([1])]);
        expect(s.read('value')).toEqual(new Uint8Array([2]));
        // A write over a log replaces it by the value; a remove then frees the key for a log again.
        s.write('log', new Uint8Array([9]));
        expect(s.read('log')).toEqual(new Uint8Array([9]));
        expect(() => s.readLog('log')).toThrow(StoreError);
        s.remove('log');
        s.append('log', new Uint8Array([5]));
        expect(s.readLog('log')!.records).toEqual([new Uint8Array([5])]);
        expect([...s.keys()].sort()).toEqual(['log', 'value']);
      });

      it('a failed append (disk full) throws StoreError naming the key; the records before it stay', () => {
        const b = makeBackend();
        backend = b;
        const s = b.open();
        s.append('log', new Uint8Array([1]));
        s.append('log', new Uint8Array([2, 2]));
        b.setFull(true);
        const err = thrown(() => s.append('log', new Uint8Array(5000).fill(3)));
        expect(err).toBeInstanceOf(StoreError);
        expect((err as StoreError).key).toBe('log');
        expect((err as Error).message).toMatch(/"log".*ENOSPC/);
        b.setFull(false);
        expect(s.readLog('log')).toEqual({ records: [new Uint8Array([1]), new Uint8Array([2, 2])] });
        // The log goes on after the failure, in this store and after a reopen.
        s.append('log', new Uint8Array([4]));
        const want = [new Uint8Array([1]), new Uint8Array([2, 2]), new Uint8Array([4])];
        expect(s.readLog('log')).toEqual({ records: want });
        expect(b.open().readLog('log')).toEqual({ records: want });
      });

      it('a failed first append (disk full) creates nothing', () => {
        const b = makeBackend();
        backend = b;
        const s = b.open();
        b.setFull(true);
        expect(() => s.append('log', new Uint8Array([1]))).toThrow(StoreError);
        b.setFull(false);
        expect(s.readLog('log')).toBeUndefined();
        expect(s.keys()).toEqual([]);
      });
    });
  });
}
