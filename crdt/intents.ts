/**
 * Deploy intents: a hand-written state-based CRDT (multi-writer), chosen over Automerge after
 * measuring (docs/state.md: an Automerge doc costs ~61 KB RSS even for one small deploy).
 *
 * Each deploy is a set of last-writer-wins registers keyed `name`, `replicas`, `strategy` and
 * `spec.<top-level key>`, stamped with a hybrid logical clock [wall, counter, actor]:
 *  - concurrent edits of different registers (e.g. replicas vs spec.image) both survive;
 *  - concurrent edits of the same register: the larger stamp wins (later wall time, then
 *    counter, then actor id) — the same winner on every agent; an edit made after seeing another
 *    always has a larger stamp (the HLC observes every merged stamp);
 *  - delete removes every register stamped at or before the delete; an edit concurrent with the
 *    delete (stamp ≤ the delete's, or one register alone) leaves no live deploy; a full put made
 *    after the delete re-creates the deploy under the same id (users redeploy a Compose file
 *    after `shoal rm`). The merged state is order-independent: deleted = the largest delete
 *    stamp, each register = its largest stamp above it.
 * State size is bounded by (deploys × registers), independent of the number of edits: there is
 * no history. Deleted deploys and removed spec keys are dropped by `gc(before)` after a horizon.
 */

import type { IntentDigestEntry } from './codec.ts';
import { StateMessageError, validateId, validateIntentFieldValue } from './codec.ts';
import { BucketTags, bucketOf, canonicalJson, DIGEST_BUCKETS, sha256, tag32, XorSet } from './hash.ts';
import type {
  DeployIntent,
  IntentFields,
  IntentWire,
  Json,
  JsonObject,
  RegisterWire,
  Stamp,
} from './types.ts';

/** Live spec keys accepted from a local write (the wire allows more: concurrent additions). */
export const MAX_SPEC_KEYS = 128;
/** Canonical JSON size of a spec accepted from a local write. */
export const MAX_SPEC_BYTES = 256 * 1024;

export function compareStamps(a: Stamp, b: Stamp): number {
  return a[0] - b[0] || a[1] - b[1] || (a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0);
}

/** Hybrid logical clock of one agent. `now` always comes from the caller (no clock inside). */
export class Hlc {
  private wall = 0;
  private counter = 0;

  constructor(readonly actor: string) {}

  tick(now: number): Stamp {
    if (now > this.wall) {
      this.wall = Math.floor(now);
      this.counter = 0;
    } else if (this.counter >= 0xffffffff) {
      this.wall++;
      this.counter = 0;
    } else {
      this.counter++;
    }
    return [this.wall, this.counter, this.actor];
  }

  /** Make every later tick larger than `s`. */
  observe(s: Stamp): void {
    if (s[0] > this.wall) {
      this.wall = s[0];
      this.counter = s[1];
    } else if (s[0] === this.wall && s[1] > this.counter) {
      this.counter = s[1];
    }
  }

  last(): Stamp {
    return [this.wall, this.counter, this.actor];
  }
}

interface Register {
  stamp: Stamp;
  /** undefined = spec key removed. */
  value: Json | undefined;
  /** Canonical JSON of value, for equality and tie-breaks ('' when removed). */
  canon: string;
}

interface Entry {
  id: string;
  regs: Map<string, Register>;
  deleted: Stamp | null;
  hash?: Buffer;
  /** tag32 of `hash` (the anti-entropy digest's per-entry tag), memoised with it. */
  tag?: number;
  view?: DeployIntent | null;
}

export class IntentTable {
  private readonly entries = new Map<string, Entry>();
  /** Ids changed since the last hash(), with their hash at that time (null = absent then). */
  private readonly dirty = new Map<string, Buffer | null>();
  private readonly acc = new XorSet();
  private readonly buckets = new BucketTags();
  /** The ids sorted, kept until an entry is added or dropped (digests sort them once a second). */
  private sorted: string[] | undefined;
  /**
   * The ids of each digest bucket (in no order): a digest of the buckets that differ walks their
   * entries only, not every entry the table holds (deleted deploys stay for the tombstone TTL).
   * Built on the first such digest, then kept up to date (tables that never serve anti-entropy,
   * like the simulator's per-deploy views, never pay for it).
   */
  private bucketIds: string[][] | undefined;
  readonly clock: Hlc;

  constructor(readonly actor: string) {
    this.clock = new Hlc(actor);
  }

  // --- local writes (validated; errors are StateMessageError with peer 'local') -------------

  /**
   * Create the deploy or replace all its fields. Writes only registers whose value differs
   * (so a concurrent edit of another field survives) and removes spec keys not in `fields.spec`.
   * Returns the delta to gossip (possibly with no fields), or undefined if the id was deleted.
   */
  put(id: string, fields: IntentFields, now: number): IntentWire | undefined {
    return this.write(id, fields, true, now);
  }

  /** Change some fields of an existing, complete deploy (`spec` replaces the whole spec, diffed). */
  update(id: string, patch: Partial<IntentFields>, now: number): IntentWire | undefined {
    if (!this.get(id)) return undefined;
    return this.write(id, patch, false, now);
  }

  /** Delete (a later full `put` re-creates it). Returns the tombstone delta to gossip. */
  remove(id: string, now: number): IntentWire {
    validateId(id, 'id');
    const w: IntentWire = { id, fields: [], deleted: this.clock.tick(now) };
    this.merge(w);
    return w;
  }

  private write(id: string, f: Partial<IntentFields>, full: boolean, now: number): IntentWire | undefined {
    validateId(id, 'id');
    const sets: [string, Json][] = [];
    for (const k of ['name', 'replicas', 'strategy'] as const) {
      if (f[k] === undefined) {
        if (full) throw new StateMessageError('local', k, 'missing');
        continue;
      }
      sets.push([k, validateIntentFieldValue(k, f[k], k)]);
    }
    const specKeys: string[] = [];
    if (f.spec !== undefined || full) {
      const spec = f.spec;
      if (typeof spec !== 'object' || spec === null || Array.isArray(spec))
        throw new StateMessageError('local', 'spec', 'expected an object');
      for (const k of Object.keys(spec)) {
        specKeys.push(k);
        sets.push([
          'spec.' + k,
          validateIntentFieldValue('spec.' + k, spec[k], `spec[${JSON.stringify(k)}]`),
        ]);
      }
      if (specKeys.length > MAX_SPEC_KEYS)
        throw new StateMessageError('local', 'spec', `more than ${MAX_SPEC_KEYS} keys`);
      if (canonicalJson(spec).length > MAX_SPEC_BYTES)
        throw new StateMessageError('local', 'spec', `larger than ${MAX_SPEC_BYTES} bytes`);
    }
    const e = this.entries.get(id);
    if (e?.deleted && !full && this.get(id) === undefined) return undefined;
    const fields: RegisterWire[] = [];
    for (const [k, v] of sets) {
      const cur = e?.regs.get(k);
      if (cur && cur.value !== undefined && cur.canon === canonicalJson(v)) continue;
      fields.push([k, this.clock.tick(now), v]);
    }
    if (f.spec !== undefined && e) {
      const keep = new Set(specKeys);
      for (const [k, r] of e.regs) {
        if (k.startsWith('spec.') && r.value !== undefined && !keep.has(k.slice(5)))
          fields.push([k, this.clock.tick(now)]);
      }
    }
    const w: IntentWire = { id, fields, deleted: null };
    this.merge(w);
    return w;
  }

  // --- merge ----------------------------------------------------------------------------------

  /**
   * Deletes stamped before this (wall ms) were collected (gc): a tombstone that old, for an id
   * this table no longer holds, is not taken back from a peer that has not collected it yet.
   */
  horizon = Number.NEGATIVE_INFINITY;

  /** Join a (validated) full entry or delta. Returns true if local state changed. */
  merge(w: IntentWire): boolean {
    if (w.deleted) this.clock.observe(w.deleted);
    for (const r of w.fields) this.clock.observe(r[1]);
    const e = this.entries.get(w.id);
    if (
      !e &&
      w.deleted &&
      w.deleted[0] < this.horizon &&
      w.fields.every((r) => compareStamps(r[1], w.deleted!) <= 0)
    )
      return false;
    const del =
      w.deleted && (!e?.deleted || compareStamps(w.deleted, e.deleted) > 0)
        ? w.deleted
        : (e?.deleted ?? null);
    const newDelete = del !== null && del !== (e?.deleted ?? null);
    const wins = new Map<string, Register>();
    for (const r of w.fields) {
      if (del && compareStamps(r[1], del) <= 0) continue; // written before the delete
      const value = r.length === 3 ? r[2] : undefined;
      const canon = value === undefined ? '' : canonicalJson(value);
      const cur = wins.get(r[0]) ?? e?.regs.get(r[0]);
      if (cur && !(newDelete && compareStamps(cur.stamp, del!) <= 0)) {
        const c = compareStamps(r[1], cur.stamp);
        if (c < 0 || (c === 0 && canon <= cur.canon)) continue;
      }
      wins.set(r[0], { stamp: r[1], value, canon });
    }
    if (!wins.size && !newDelete) return false;
    this.touch(w.id, e);
    if (e) {
      if (newDelete) {
        e.deleted = del;
        for (const [k, r] of e.regs) if (compareStamps(r.stamp, del!) <= 0) e.regs.delete(k);
      }
      for (const [k, r] of wins) e.regs.set(k, r);
    } else {
      this.entries.set(w.id, { id: w.id, regs: wins, deleted: del });
      this.sorted = undefined;
      this.bucketIds?.[bucketOf(w.id)]?.push(w.id);
    }
    return true;
  }

  /** Registers the entry would hold after merging `w` (used to bound a peer's delta first). */
  registerCountAfter(w: IntentWire): number {
    const e = this.entries.get(w.id);
    let n = e ? e.regs.size : 0;
    for (const r of w.fields) if (!e?.regs.has(r[0])) n++;
    return n;
  }

  // --- reads ----------------------------------------------------------------------------------

  /** The materialised intent; undefined if unknown, deleted or not yet complete. */
  get(id: string): DeployIntent | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    if (e.view === undefined) e.view = materialise(e);
    return e.view ?? undefined;
  }

  /** Deleted and not re-created since (an incomplete resurrection counts as deleted). */
  isDeleted(id: string): boolean {
    return !!this.entries.get(id)?.deleted && this.get(id) === undefined;
  }

  /** Complete, live intents sorted by id. */
  all(): DeployIntent[] {
    const out: DeployIntent[] = [];
    for (const id of this.sortedIds()) {
      const v = this.get(id);
      if (v) out.push(v);
    }
    return out;
  }

  get size(): number {
    return this.entries.size;
  }

  ids(): string[] {
    return [...this.sortedIds()];
  }

  /** The ids sorted (cached; `ids()` returns a copy). A subclass that overrides `ids()` overrides this too. */
  protected sortedIds(): readonly string[] {
    this.sorted ??= [...this.entries.keys()].sort();
    return this.sorted;
  }

  /** Full state of one entry (registers sorted by key). */
  wire(id: string): IntentWire | undefined {
    const e = this.entries.get(id);
    return e ? toWire(e) : undefined;
  }

  allWire(): IntentWire[] {
    return this.sortedIds().map((id) => toWire(this.entries.get(id)!));
  }

  // --- anti-entropy ---------------------------------------------------------------------------

  /** (id, tag) sorted by id — of every entry, or of the entries in digest `buckets` only. */
  digest(buckets?: ReadonlySet<number>): IntentDigestEntry[] {
    const out: IntentDigestEntry[] = [];
    for (const id of this.idsIn(buckets)) out.push({ id, tag: this.entryTag(this.entries.get(id)!) });
    return out;
  }

  /** All ids sorted, or those of `buckets` sorted: O(their entries), whatever the table holds. */
  protected idsIn(buckets: ReadonlySet<number> | undefined): readonly string[] {
    if (buckets === undefined) return this.sortedIds();
    if (this.bucketIds === undefined) {
      const by: string[][] = Array.from({ length: DIGEST_BUCKETS }, () => []);
      for (const id of this.entries.keys()) by[bucketOf(id)]!.push(id);
      this.bucketIds = by;
    }
    const out: string[] = [];
    for (const b of buckets) {
      const ids = this.bucketIds[b];
      if (ids !== undefined) for (const id of ids) out.push(id);
    }
    return out.sort();
  }

  /**
   * Full entries the digest's owner lacks or holds with different content — among the entries in
   * `buckets` when the digest covers only those.
   */
  newerThan(digest: readonly IntentDigestEntry[], buckets?: ReadonlySet<number>): IntentWire[] {
    const theirs = new Map(digest.map((d) => [d.id, d.tag]));
    const out: IntentWire[] = [];
    for (const id of this.idsIn(buckets)) {
      const e = this.entries.get(id)!;
      if (theirs.get(id) !== this.entryTag(e)) out.push(toWire(e));
    }
    return out;
  }

  /** Ids to request from the digest's owner (unknown here, or different content). */
  missingFrom(digest: readonly IntentDigestEntry[]): string[] {
    const out: string[] = [];
    for (const d of digest) {
      const e = this.entries.get(d.id);
      if (!e || this.entryTag(e) !== d.tag) out.push(d.id);
    }
    return out.sort();
  }

  hash(): string {
    this.settle();
    return sha256(`intents\0${this.entries.size}\0${this.acc.hex()}`).toString('hex');
  }

  /** Per digest bucket, the XOR of its entries' tags (the digest's `tag`); a view, do not keep. */
  bucketTags(): Uint32Array {
    this.settle();
    return this.buckets.tags;
  }

  /** Fold the entries changed since the last call into the hash and the bucket tags. */
  private settle(): void {
    for (const [id, old] of this.dirty) {
      if (old) {
        this.acc.toggle(old);
        this.buckets.toggle(id, tag32(old));
      }
      const e = this.entries.get(id);
      if (e) {
        this.acc.toggle(this.entryHash(e));
        this.buckets.toggle(id, this.entryTag(e));
      }
    }
    this.dirty.clear();
  }

  /**
   * Drop deleted deploys and removed spec keys whose stamp wall time is `< before`. Same horizon
   * rule as hosts: longer than any partition/offline time tolerated.
   */
  gc(before: number): number {
    this.horizon = Math.max(this.horizon, before);
    let n = 0;
    for (const [id, e] of this.entries) {
      if (e.deleted && e.deleted[0] < before) {
        this.touch(id, e);
        if (e.regs.size === 0) {
          this.entries.delete(id);
          this.sorted = undefined;
          const ids = this.bucketIds?.[bucketOf(id)];
          ids?.splice(ids.indexOf(id), 1);
          n++;
          continue;
        }
        e.deleted = null; // re-created long ago: the delete has reached everyone
        n++;
      }
      for (const [k, r] of e.regs) {
        if (r.value === undefined && r.stamp[0] < before) {
          this.touch(id, e);
          e.regs.delete(k);
          n++;
        }
      }
    }
    return n;
  }

  private entryHash(e: Entry): Buffer {
    if (!e.hash) e.hash = sha256('intent\0' + canonicalEntryOf(e));
    return e.hash;
  }

  private entryTag(e: Entry): number {
    e.tag ??= tag32(this.entryHash(e));
    return e.tag;
  }

  /** Call BEFORE changing `e` (undefined = creating `id`): record its old hash, drop caches. */
  private touch(id: string, e: Entry | undefined): void {
    if (!this.dirty.has(id)) this.dirty.set(id, e ? this.entryHash(e) : null);
    if (e) {
      e.hash = undefined;
      e.tag = undefined;
      e.view = undefined;
    }
  }
}

/**
 * `canonicalJson(toWire(e))`, built from the registers' kept canonical values instead of
 * serialising every value again (the entry hash of every changed intent, on every agent).
 * Byte for byte the same string — agents of older builds hash it that way (test/crdt-intents).
 */
export function canonicalEntryOf(e: {
  id: string;
  regs: ReadonlyMap<string, { stamp: Stamp; value: Json | undefined; canon: string }>;
  deleted: Stamp | null;
}): string {
  const keys = [...e.regs.keys()].sort();
  let fields = '';
  for (const k of keys) {
    const r = e.regs.get(k)!;
    fields += `${fields ? ',' : ''}[${JSON.stringify(k)},${JSON.stringify(r.stamp)}${r.value === undefined ? '' : `,${r.canon}`}]`;
  }
  return `{"deleted":${JSON.stringify(e.deleted)},"fields":[${fields}],"id":${JSON.stringify(e.id)}}`;
}

function toWire(e: Entry): IntentWire {
  const keys = [...e.regs.keys()].sort();
  const fields: RegisterWire[] = keys.map((k) => {
    const r = e.regs.get(k)!;
    return r.value === undefined ? [k, r.stamp] : [k, r.stamp, r.value];
  });
  return { id: e.id, fields, deleted: e.deleted };
}

function materialise(e: Entry): DeployIntent | null {
  const name = e.regs.get('name');
  const replicas = e.regs.get('replicas');
  const strategy = e.regs.get('strategy');
  if (!name || !replicas || !strategy) return null;
  let revision: Stamp = name.stamp;
  const specEntries: [string, Json][] = [];
  for (const [k, r] of e.regs) {
    if (compareStamps(r.stamp, revision) > 0) revision = r.stamp;
    if (k.startsWith('spec.') && r.value !== undefined) specEntries.push([k.slice(5), r.value]);
  }
  specEntries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const spec = Object.fromEntries(specEntries) as JsonObject;
  return {
    id: e.id,
    name: name.value as string,
    spec,
    replicas: replicas.value as number,
    strategy: strategy.value as string,
    revision,
  };
}
