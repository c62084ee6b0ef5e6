import { afterEach, describe, expect, it } from 'vitest';
import { type Store, StoreError } from '../../node/core/io.ts';

/** A storage backend under test: `open()` returns a Store over the same durable data each time. */
export interface StoreBackend {
  open(): Store;
  cleanup?(): void;
}

/**
 * The Store contract (node/core/io.ts): read/write/remove/keys, overwrite, binary safety, empty
 * and large values, copies in and out, data surviving a reopen (a restart), and invalid keys
 * (paths, hidden names, empty) rejected with StoreError.
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
    });
  });
}
