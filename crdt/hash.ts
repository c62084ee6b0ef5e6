/** Deterministic hashing helpers: canonical JSON, SHA-256 and an order-independent set hash. */
import { createHash } from 'node:crypto';
import { fnv1a32 } from '../allocator/units.ts';

/** JSON with object keys sorted (undefined-valued keys dropped, like JSON.stringify). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    const s = JSON.stringify(value);
    return s === undefined ? 'null' : s;
  }
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i ? ',' : '') + canonicalJson(value[i]);
    return out + ']';
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  let out = '{';
  let first = true;
  for (const k of keys) {
    const v = obj[k];
    if (v === undefined) continue;
    out += (first ? '' : ',') + JSON.stringify(k) + ':' + canonicalJson(v);
    first = false;
  }
  return out + '}';
}

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * XOR of 128-bit element hashes: adding/removing an element is O(1) and the result does not
 * depend on insertion order. Elements are distinct (keyed by id), so no two inputs cancel.
 */
export class XorSet {
  private readonly acc = new Uint32Array(4);

  toggle(h: Buffer): void {
    for (let i = 0; i < 4; i++) this.acc[i] = (this.acc[i]! ^ h.readUInt32BE(i * 4)) >>> 0;
  }

  hex(): string {
    let s = '';
    for (const w of this.acc) s += w.toString(16).padStart(8, '0');
    return s;
  }
}

/** First 32 bits of a hash, as a digest tag. */
export function tag32(h: Buffer): number {
  return h.readUInt32BE(0);
}

/**
 * Buckets of the anti-entropy digest, per table: an entry belongs to bucket `bucketOf(id)`, and a
 * bucket's tag is the XOR of its entries' 32-bit tags. Two agents compare bucket tags first and
 * exchange digest entries only for the buckets that differ (docs/state.md, "Anti-entropy").
 */
export const DIGEST_BUCKETS = 128;

/** The digest bucket of an entry id (FNV-1a, stable across builds and platforms). */
export function bucketOf(id: string): number {
  return fnv1a32(id) & (DIGEST_BUCKETS - 1);
}

/** Per-bucket XOR of entry tags: adding or removing an entry is O(1), independent of order. */
export class BucketTags {
  readonly tags = new Uint32Array(DIGEST_BUCKETS);

  toggle(id: string, tag: number): void {
    const b = bucketOf(id);
    this.tags[b] = (this.tags[b]! ^ tag) >>> 0;
  }
}
