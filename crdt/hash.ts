/** Deterministic hashing helpers: canonical JSON, SHA-256 and an order-independent set hash. */
import { createHash } from 'node:crypto';

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
