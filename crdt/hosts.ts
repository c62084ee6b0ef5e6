/**
 * Host records: one single-writer versioned register per host, merged by max version.
 *
 * Order of two entries for the same id (a total order, so merge is a semilattice join:
 * commutative, associative, idempotent):
 *   1. higher `version` wins;
 *   2. at equal version a tombstone beats a live record (removal is sticky at that version; the
 *      host, if alive, answers by republishing at a higher version — see `nextVersion`);
 *   3. otherwise the larger record hash (SHA-256 of canonical JSON) wins.
 * Merge is O(1) and hashes nothing unless versions are equal. Record hashes are computed lazily
 * by `hash()`/`digest()` and memoised per record object (records are immutable), so 10,000
 * agents sharing decoded records in the simulator hash each record once.
 */
import type { HostDigestEntry } from './codec.ts';
import { BucketTags, bucketOf, sha256, tag32, XorSet } from './hash.ts';
import type { HostEntry, HostRecord, HostTombstone, Resources } from './types.ts';

export type MergeResult = 'newer' | 'stale' | 'equal';

const recordHashes = new WeakMap<HostEntry, Buffer>();

/**
 * Canonical encoding of an entry: a positional tuple (independent of the key order of the
 * object, labels sorted). ~4x faster than a generic sorted-key JSON. Every field of HostEntry
 * must appear here (test/crdt-hosts checks that changing any field changes the hash).
 */
function hostTuple(e: HostEntry): unknown[] {
  if (e.deleted) return ['host-tomb/1', e.id, e.version, e.updatedAt];
  const c = e.capacity;
  const labels = Object.keys(c.labels)
    .sort()
    .map((k) => [k, c.labels[k]]);
  return [
    'host/2',
    e.id,
    e.version,
    e.addrs,
    [
      c.cpuMilli,
      c.cores,
      c.memory,
      c.disk,
      c.gpus.map((g) => [g.index, g.model, g.memory]),
      labels,
      [c.oversell.cpu, c.oversell.memory, c.oversell.disk, c.oversell.gpu],
    ],
    resTuple(e.allocated),
    e.workloads.map((w) => [
      w.id,
      w.deployId,
      w.replica,
      w.gen,
      resTuple(w.resources),
      w.status,
      w.engine,
      w.startedAt,
      w.exitCode,
      w.health,
    ]),
    e.draining,
    e.updatedAt,
  ];
}

function resTuple(r: Resources): unknown[] {
  const t: unknown[] = [r.cpuMilli, r.cores, r.memory, r.disk, r.gpus.map((g) => [g.index, g.milli])];
  // Appended only when present: records without ports keep the hashes they had.
  if (r.ports !== undefined) t.push(r.ports.map((p) => [p.port, p.protocol]));
  return t;
}

/** SHA-256 of the canonical encoding of one entry (memoised per object). */
export function hostEntryHash(e: HostEntry): Buffer {
  let h = recordHashes.get(e);
  if (!h) {
    h = sha256(JSON.stringify(hostTuple(e)));
    recordHashes.set(e, h);
  }
  return h;
}

/** Negative if `a` loses to `b`, 0 if identical, positive if `a` wins. Same id assumed. */
export function compareHostEntries(a: HostEntry, b: HostEntry): number {
  if (a === b) return 0;
  if (a.version !== b.version) return a.version - b.version;
  if (a.deleted !== b.deleted) return a.deleted ? 1 : -1;
  return Buffer.compare(hostEntryHash(a), hostEntryHash(b));
}

/**
 * The version a host writes next: above everything it wrote (`ownLast`) and everything anyone
 * has seen for it (`seen`, e.g. `table.versionOf(id)` after a pull from peers, tombstones
 * included). A host that lost its disk starts with ownLast = 0; passing its clock in ms as
 * `floor` also puts it above its pre-crash versions before it has heard from any peer, as long
 * as it wrote at most one version per ms and its clock did not step back.
 */
export function nextVersion(ownLast: number, seen: number | undefined, floor = 0): number {
  return Math.max(ownLast + 1, (seen ?? 0) + 1, floor);
}

export class HostTable {
  private readonly entries = new Map<string, HostEntry>();
  /** Ids changed since the last hash(), with the entry they had then (already hashed). */
  private readonly dirty = new Map<string, HostEntry | null>();
  private readonly acc = new XorSet();
  private readonly buckets = new BucketTags();
  private liveCount = 0;
  /**
   * Entries sorted by id, kept across calls of all(): a replaced entry is swapped in place
   * (binary search), an insert or removal drops it. Placement scans read all() several times a
   * second on every agent; sorting N records each time was a top cost with many agents.
   */
  private sorted: HostEntry[] | undefined;

  /**
   * Tombstones older than this (`updatedAt`, ms) were collected (gc): one that old, for a host this
   * table no longer holds, is not taken back from a peer that has not collected it yet.
   */
  horizon = Number.NEGATIVE_INFINITY;

  /** Merge one entry (validated by the codec, or built locally). */
  merge(e: HostEntry): MergeResult {
    if (e.deleted && e.updatedAt < this.horizon && !this.entries.has(e.id)) return 'stale';
    return this.mergeEntry(e);
  }

  private mergeEntry(e: HostEntry): MergeResult {
    const cur = this.entries.get(e.id);
    if (cur) {
      const c = compareHostEntries(e, cur);
      if (c === 0) return 'equal';
      if (c < 0) return 'stale';
    }
    this.replace(e.id, cur, e);
    return 'newer';
  }

  get(id: string): HostEntry | undefined {
    return this.entries.get(id);
  }

  /** Live record, or undefined if unknown or removed. */
  live(id: string): HostRecord | undefined {
    const e = this.entries.get(id);
    return e && !e.deleted ? e : undefined;
  }

  /**
   * The candidate list `build()` makes — the ids of the live, not draining hosts in the view
   * named by `view` (a membership digest) — shared among callers with that view where the table
   * can tell the list still holds; this table: built every time.
   */
  candidates(_view: string, build: () => readonly string[]): readonly string[] {
    return build();
  }

  /** Highest version known for `id` (tombstones included). */
  versionOf(id: string): number | undefined {
    return this.entries.get(id)?.version;
  }

  get size(): number {
    return this.entries.size;
  }

  get liveSize(): number {
    return this.liveCount;
  }

  /** All entries (tombstones included), sorted by id. */
  all(): HostEntry[] {
    this.sorted ??= [...this.entries.values()].sort(byId);
    return this.sorted.slice();
  }

  /** Live records sorted by id. */
  allLive(): HostRecord[] {
    return this.all().filter((e): e is HostRecord => !e.deleted);
  }

  /**
   * Remove a host: write a tombstone above the highest known version. `now` is the caller's
   * clock (the GC horizon counts from it). Returns the tombstone to gossip.
   */
  tombstone(id: string, now: number): HostTombstone {
    const t: HostTombstone = { id, version: (this.versionOf(id) ?? 0) + 1, deleted: true, updatedAt: now };
    this.mergeEntry(t); // a local write: the horizon (for peers' old tombstones) does not apply
    return t;
  }

  /**
   * Forget tombstones with `updatedAt < before`. Safe once every agent has seen the tombstone:
   * choose the horizon above the longest partition/offline time tolerated; an agent offline for
   * longer must rejoin with empty state (else it can resurrect the host record it still holds).
   */
  gc(before: number): number {
    this.horizon = Math.max(this.horizon, before);
    let n = 0;
    for (const [id, e] of this.entries) {
      if (e.deleted && e.updatedAt < before) {
        this.replace(id, e, undefined);
        n++;
      }
    }
    return n;
  }

  /**
   * Compact summary for anti-entropy: (id, version, tag) sorted by id — of every entry, or of the
   * entries in `buckets` only (digest buckets, see `bucketTags`).
   */
  digest(buckets?: ReadonlySet<number>): HostDigestEntry[] {
    const out: HostDigestEntry[] = [];
    for (const e of this.all()) {
      if (buckets !== undefined && !buckets.has(bucketOf(e.id))) continue;
      out.push({ id: e.id, version: e.version, tag: tag32(hostEntryHash(e)) });
    }
    return out;
  }

  /**
   * Entries the digest's owner lacks, has at a lower version, or has with different content —
   * among the entries in `buckets` when the digest covers only those.
   */
  newerThan(digest: readonly HostDigestEntry[], buckets?: ReadonlySet<number>): HostEntry[] {
    const theirs = new Map(digest.map((d) => [d.id, d]));
    const out: HostEntry[] = [];
    for (const e of this.all()) {
      if (buckets !== undefined && !buckets.has(bucketOf(e.id))) continue;
      const d = theirs.get(e.id);
      if (!d || d.version < e.version || (d.version === e.version && d.tag !== tag32(hostEntryHash(e))))
        out.push(e);
    }
    return out;
  }

  /** Ids to request from the digest's owner: it holds them at a higher version or different content. */
  missingFrom(digest: readonly HostDigestEntry[]): string[] {
    const out: string[] = [];
    for (const d of digest) {
      const e = this.entries.get(d.id);
      if (!e || e.version < d.version || (e.version === d.version && d.tag !== tag32(hostEntryHash(e))))
        out.push(d.id);
    }
    return out.sort();
  }

  /** Per digest bucket, the XOR of its entries' tags (the digest's `tag`); a view, do not keep. */
  bucketTags(): Uint32Array {
    this.settle();
    return this.buckets.tags;
  }

  /** Hex SHA-256 over all entries, independent of merge order (XOR of per-entry hashes). */
  hash(): string {
    this.settle();
    return sha256(`hosts\0${this.entries.size}\0${this.acc.hex()}`).toString('hex');
  }

  /** Fold the entries changed since the last call into the hash and the bucket tags. */
  private settle(): void {
    for (const [id, old] of this.dirty) {
      if (old) {
        const h = hostEntryHash(old);
        this.acc.toggle(h);
        this.buckets.toggle(id, tag32(h));
      }
      const e = this.entries.get(id);
      if (e) {
        const h = hostEntryHash(e);
        this.acc.toggle(h);
        this.buckets.toggle(id, tag32(h));
      }
    }
    this.dirty.clear();
  }

  private replace(id: string, cur: HostEntry | undefined, next: HostEntry | undefined): void {
    // Remember the entry as it was at the last hash() call; nothing is hashed here.
    if (!this.dirty.has(id)) this.dirty.set(id, cur ?? null);
    if (cur && !cur.deleted) this.liveCount--;
    if (this.sorted !== undefined) {
      if (cur && next) this.sorted[sortedIndex(this.sorted, id)] = next;
      else this.sorted = undefined;
    }
    if (next) {
      this.entries.set(id, next);
      if (!next.deleted) this.liveCount++;
    } else {
      this.entries.delete(id);
    }
  }
}

/** Index of `id` in `sorted` (which holds it). */
function sortedIndex(sorted: readonly HostEntry[], id: string): number {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]!.id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function byId(a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
