import { hashString } from './random.ts';

/**
 * Compact membership tables (docs/membership.md, "Tables").
 *
 * `MemberIds` interns member ids and address lists to small integers ("member numbers") and keeps
 * the ids in sorted order. A real agent has its own; the simulator may share one among all its
 * agents (one copy of every id and address list instead of one per agent — the same code, only
 * the numbering is shared). Nothing an agent decides depends on the numbers: every choice that
 * walks the members does so in id order (`MemberTable.kth`), so an agent with its own table and
 * one with a shared table decide alike (tested).
 *
 * `MemberTable` is one agent's view: typed arrays indexed by member number — status (1 B),
 * incarnation (4 B), time of the last status change (4 B, relative to the table's base), address
 * list (4 B) and the retransmit count of the member's queued update (1 B): 14 bytes per member,
 * instead of one object (and an addrs array) per member per agent; stored as one 16-byte record
 * per member. Per-status counts and counts
 * per block of 256 members in id order make "the k-th alive member in id order" O(N/256 + 256)
 * without a per-agent list. A digest (sum of per-member hashes of id, incarnation and status) is
 * kept up to date in O(1) per change: equal digests mean equal views (push-pull skips the lists).
 */

export const ST_UNKNOWN = 0;
export const ST_ALIVE = 1;
export const ST_SUSPECT = 2;
export const ST_DEAD = 3;
export const ST_LEFT = 4;
export const M_ALIVE = 1 << ST_ALIVE;
export const M_SUSPECT = 1 << ST_SUSPECT;
export const M_DEAD = 1 << ST_DEAD;
export const M_LEFT = 1 << ST_LEFT;

/** Counts per status per block of 64 ranks, and per super-block of 64 blocks (4,096 ranks). */
const BLOCK_SHIFT = 6;
const BLOCK = 1 << BLOCK_SHIFT;
const SUPER_SHIFT = 12;
/** Incarnations ≥ this live in a side map (the wire allows up to 2^53 − 1). */
const INC_BIG = 0xffffffff;
/** changedAt offsets outside int32 live in a side map. */
const AT_BIG = -0x80000000;
/** Not queued (qT). */
export const Q_NONE = 0xff;

export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

const EMPTY: readonly string[] = Object.freeze([]);

/** Hidden (non-enumerable, not encoded) tags of the state objects a MemberIds builds. */
export const STATE_IDS: unique symbol = Symbol('member-ids');
export const STATE_NUM: unique symbol = Symbol('member-num');

/** A state object built by MemberIds.state: the wire fields plus hidden tags of its table and number. */
export interface TaggedState {
  readonly id: string;
  readonly addrs: readonly string[];
  readonly incarnation: number;
  readonly status: string;
  readonly [STATE_IDS]?: MemberIds;
  readonly [STATE_NUM]?: number;
}

/** Interned ids (sorted order kept) and address lists. */
export class MemberIds {
  private readonly byId = new Map<string, number>();
  private readonly idList: string[] = [];
  /** Two independent 32-bit hashes of each id (digest lanes). */
  private h1 = new Uint32Array(64);
  private h2 = new Uint32Array(64);
  /** Member numbers in id order (first `count` valid when `sortedValid`) and each number's rank. */
  private sortedNums = new Int32Array(64);
  private ranks = new Int32Array(64);
  private sortedValid = true;
  private sortedView: Int32Array | undefined;
  /** Bumped whenever ranks are recomputed (tables rebuild their block counts). */
  layout = 0;
  private readonly addrByKey = new Map<string, number>();
  private readonly addrByRef = new WeakMap<readonly string[], number>();
  private readonly addrLists: (readonly string[])[] = [EMPTY];
  /** Last state object built per member (immutable; reused while it matches), and its JSON length (-1: not yet). */
  private readonly states: (TaggedState | undefined)[] = [];
  private stateLens = new Int32Array(64);

  get size(): number {
    return this.idList.length;
  }

  lookup(id: string): number | undefined {
    return this.byId.get(id);
  }

  /** The number of `id`, assigned on first sight. */
  intern(id: string): number {
    const known = this.byId.get(id);
    if (known !== undefined) return known;
    const n = this.idList.length;
    this.byId.set(id, n);
    this.idList.push(id);
    this.states.push(undefined); // kept dense (fast elements) whatever order numbers are used in
    if (n >= this.h1.length) {
      const cap = this.h1.length * 2;
      this.h1 = grow32(this.h1, cap);
      this.h2 = grow32(this.h2, cap);
      this.sortedNums = growI32(this.sortedNums, cap);
      this.stateLens = growI32(this.stateLens, cap);
      this.sortedView = undefined;
      this.ranks = growI32(this.ranks, cap);
    }
    this.h1[n] = hashString(id);
    this.h2[n] = mix32(hashString(`${id}\u0001`) ^ 0x9e3779b9);
    // Appending in id order (the simulator interns n00000, n00001, … up front) keeps the ranks.
    if (this.sortedValid && (n === 0 || this.idList[this.sortedNums[n - 1]!]! < id)) {
      this.sortedNums[n] = n;
      this.ranks[n] = n;
    } else {
      this.sortedValid = false;
    }
    return n;
  }

  id(num: number): string {
    return this.idList[num]!;
  }

  hash1(num: number): number {
    return this.h1[num]!;
  }

  hash2(num: number): number {
    return this.h2[num]!;
  }

  /** Member numbers in id order (a view; valid until the next intern). */
  sorted(): Int32Array {
    this.ensureSorted();
    if (this.sortedView === undefined || this.sortedView.length !== this.idList.length)
      this.sortedView = this.sortedNums.subarray(0, this.idList.length);
    return this.sortedView;
  }

  rank(num: number): number {
    this.ensureSorted();
    return this.ranks[num]!;
  }

  /** Whether ranks are current (intern of an id out of order invalidates them until the next use). */
  get ranksValid(): boolean {
    return this.sortedValid;
  }

  ensureSorted(): void {
    if (this.sortedValid) return;
    const n = this.idList.length;
    const ids = this.idList;
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) =>
      ids[a]! < ids[b]! ? -1 : ids[a]! > ids[b]! ? 1 : 0,
    );
    for (let r = 0; r < n; r++) {
      this.sortedNums[r] = order[r]!;
      this.ranks[order[r]!] = r;
    }
    this.sortedValid = true;
    this.layout++;
  }

  /** The number of an address list (0 = none). Lists are kept frozen; the caller's array is not retained. */
  addrsNum(addrs: readonly string[]): number {
    if (addrs.length === 0) return 0;
    const byRef = this.addrByRef.get(addrs);
    if (byRef !== undefined) return byRef;
    const key = addrs.join('\n');
    let n = this.addrByKey.get(key);
    if (n === undefined) {
      n = this.addrLists.length;
      const frozen = Object.freeze(addrs.slice());
      this.addrLists.push(frozen);
      this.addrByKey.set(key, n);
      this.addrByRef.set(frozen, n);
    }
    return n;
  }

  addrs(n: number): readonly string[] {
    return this.addrLists[n]!;
  }

  /**
   * The immutable state object {id, addrs, incarnation, status} of member `num` (key order as the
   * wire encodes it). Reused while nothing changed — and, with a shared table, by every agent that
   * holds the same state, so messages carry shared objects instead of fresh ones.
   */
  state(num: number, incarnation: number, status: string, addrsNum: number): TaggedState {
    const addrs = this.addrLists[addrsNum]!;
    const c = this.states[num];
    if (c !== undefined && c.incarnation === incarnation && c.status === status && c.addrs === addrs)
      return c;
    const s = { id: this.idList[num]!, addrs, incarnation, status };
    Object.defineProperty(s, STATE_IDS, { value: this });
    Object.defineProperty(s, STATE_NUM, { value: num });
    Object.freeze(s);
    this.states[num] = s;
    this.stateLens[num] = 0; // not measured yet
    return s;
  }

  /** The member number of a state object this table built (undefined for any other object). */
  numOf(u: object): number | undefined {
    return (u as TaggedState)[STATE_IDS] === this ? (u as TaggedState)[STATE_NUM] : undefined;
  }

  /** Memoised `measure(u)` for the current state object of a member; undefined for others. */
  cachedLength(u: TaggedState, measure: (u: TaggedState) => number): number | undefined {
    const num = u[STATE_NUM];
    if (num === undefined || u[STATE_IDS] !== this || this.states[num] !== u) return undefined;
    let n = this.stateLens[num]!;
    if (n <= 0) {
      n = measure(u);
      this.stateLens[num] = n;
    }
    return n;
  }
}

function grow32(a: Uint32Array, cap: number) {
  const b = new Uint32Array(cap);
  b.set(a);
  return b;
}

function growI32(a: Int32Array, cap: number) {
  const b = new Int32Array(cap);
  b.set(a);
  return b;
}

/** One agent's view of the members (see the file comment). Self is stored but not counted. */
export class MemberTable {
  private cap = 0;
  /**
   * One 16-byte record per member, all fields of a member in one cache line (a large simulation
   * touches thousands of agents' tables at random): bytes 0–3 incarnation (u32), 4–7 change time
   * relative to `base` (i32), 8–11 address list (u32), 12 status, 13 queued transmit count.
   */
  private w = new Uint32Array(0);
  private i32 = new Int32Array(0);
  private b = new Uint8Array(0);
  private readonly incBig = new Map<number, number>();
  private readonly atBig = new Map<number, number>();
  /** Members per status, self excluded (index = status). */
  readonly counts = [0, 0, 0, 0, 0];
  /** Known members, self included. */
  known = 0;
  /** Per block of 64 ranks and per super-block of 4,096: members per status (5 entries each), self excluded. */
  private blocks = new Uint8Array(0);
  private supers = new Uint16Array(0);
  private blocksLayout = -1;
  private d1 = 0;
  private d2 = 0;
  self = -1;

  constructor(
    readonly ids: MemberIds,
    /** changedAt values are stored relative to this (a clock reading). */
    private readonly base: number,
  ) {}

  /** The clock reading change times are stored relative to. */
  get baseTime(): number {
    return this.base;
  }

  private ensure(num: number): void {
    if (num < this.cap) return;
    // With a shared table every agent ends up knowing ~all ids: size straight to that.
    const cap = Math.max(num + 1, this.ids.size, this.cap + (this.cap >> 1), 16);
    const buf = new ArrayBuffer(cap * 16);
    const b = new Uint8Array(buf);
    b.set(this.b);
    // New records: all zero but "not queued"; one record written, then doubled by copyWithin.
    const from = this.cap * 16;
    b[from + 13] = Q_NONE;
    for (let len = 16; from + len < b.length; len *= 2) b.copyWithin(from + len, from, from + len);
    this.w = new Uint32Array(buf);
    this.i32 = new Int32Array(buf);
    this.b = b;
    this.cap = cap;
  }

  statusOf(num: number): number {
    return num < this.cap ? this.b[num * 16 + 12]! : ST_UNKNOWN;
  }

  incarnation(num: number): number {
    const v = this.w[num * 4]!;
    return v === INC_BIG ? this.incBig.get(num)! : v;
  }

  changedAt(num: number): number {
    const v = this.i32[num * 4 + 1]!;
    return v === AT_BIG ? this.atBig.get(num)! : this.base + v;
  }

  /** The member's address list number (MemberIds.addrs). */
  addrOf(num: number): number {
    return this.w[num * 4 + 2]!;
  }

  /** Queued transmit count of the member's update, or Q_NONE. */
  q(num: number): number {
    return this.b[num * 16 + 13]!;
  }

  setQ(num: number, t: number): void {
    this.b[num * 16 + 13] = t;
  }

  /** Digest of the whole view (53 bits): equal views give equal digests. */
  digest(): number {
    return this.d1 + (this.d2 & 0x1fffff) * 4294967296;
  }

  private entryHash(num: number, inc: number, st: number, lane: 1 | 2): number {
    const lo = inc >>> 0;
    const hi = Math.floor(inc / 4294967296);
    const x = mix32(lo ^ Math.imul(st, 0x27d4eb2f) ^ Math.imul(hi, 0x165667b1));
    return lane === 1
      ? mix32(this.ids.hash1(num) ^ x)
      : mix32(this.ids.hash2(num) ^ Math.imul(x, 0x9e3779b1));
  }

  /**
   * Set member `num` to (incarnation, status), with its address list and, when `changedAt` is
   * given, a new status-change time. Keeps counts, blocks and the digest current.
   */
  set(num: number, incarnation: number, st: number, addrsNum: number, changedAt: number | undefined): void {
    this.ensure(num);
    const o = num * 4;
    const prev = this.b[num * 16 + 12]!;
    const prevInc = prev === ST_UNKNOWN ? 0 : this.incarnation(num);
    if (prev !== ST_UNKNOWN) {
      this.d1 = (this.d1 - this.entryHash(num, prevInc, prev, 1)) >>> 0;
      this.d2 = (this.d2 - this.entryHash(num, prevInc, prev, 2)) >>> 0;
    } else {
      this.known++;
    }
    this.d1 = (this.d1 + this.entryHash(num, incarnation, st, 1)) >>> 0;
    this.d2 = (this.d2 + this.entryHash(num, incarnation, st, 2)) >>> 0;
    if (incarnation >= INC_BIG) {
      this.w[o] = INC_BIG;
      this.incBig.set(num, incarnation);
    } else {
      this.w[o] = incarnation;
      if (this.incBig.size > 0) this.incBig.delete(num);
    }
    this.w[o + 2] = addrsNum;
    if (changedAt !== undefined) {
      const rel = changedAt - this.base;
      if (rel > AT_BIG && rel <= 0x7fffffff) {
        this.i32[o + 1] = rel;
        if (this.atBig.size > 0) this.atBig.delete(num);
      } else {
        this.i32[o + 1] = AT_BIG;
        this.atBig.set(num, changedAt);
      }
    }
    if (prev !== st) {
      this.b[num * 16 + 12] = st;
      if (num !== this.self) {
        this.counts[prev]!--;
        this.counts[st]!++;
        if (this.blocksLayout === this.ids.layout && this.ids.ranksValid) {
          const r = this.ids.rank(num);
          const b = (r >> BLOCK_SHIFT) * 5;
          if (b + 5 > this.blocks.length) this.blocksLayout = -1;
          else {
            const sb = (r >> SUPER_SHIFT) * 5;
            this.blocks[b + prev]!--;
            this.blocks[b + st]!++;
            this.supers[sb + prev]!--;
            this.supers[sb + st]!++;
          }
        }
      }
    }
  }

  /**
   * Become a copy of `src`: the same entries (incarnations, statuses, change times, addresses,
   * queue marks) and digest, with counts for this table's own `self`. O(N) copying instead of N
   * `set` calls — a simulated formed start, where every agent's view is the same. Both tables must
   * share their MemberIds and base. Block counts are rebuilt when first needed.
   */
  adoptFrom(src: MemberTable): void {
    if (src.ids !== this.ids || src.base !== this.base)
      throw new Error('MemberTable.adoptFrom: the tables differ in ids or base');
    if (this.cap === src.cap) this.b.set(src.b);
    else {
      this.b = src.b.slice();
      this.w = new Uint32Array(this.b.buffer);
      this.i32 = new Int32Array(this.b.buffer);
      this.cap = src.cap;
    }
    this.incBig.clear();
    for (const [k, v] of src.incBig) this.incBig.set(k, v);
    this.atBig.clear();
    for (const [k, v] of src.atBig) this.atBig.set(k, v);
    // src counts everyone but src.self; this table, everyone but this.self.
    for (let st = 0; st < 5; st++) this.counts[st] = src.counts[st]!;
    if (src.self >= 0) {
      this.counts[this.statusOf(src.self)]!++;
      this.counts[ST_UNKNOWN]!--;
    }
    if (this.self >= 0) {
      this.counts[this.statusOf(this.self)]!--;
      this.counts[ST_UNKNOWN]!++;
    }
    this.known = src.known;
    this.d1 = src.d1;
    this.d2 = src.d2;
    this.blocksLayout = -1;
  }

  /** Members (self excluded) whose status is in `mask` (bit per status). */
  count(mask: number): number {
    const c = this.counts;
    let n = 0;
    for (let st = 1; st <= 4; st++) if ((mask >> st) & 1) n += c[st]!;
    return n;
  }

  private ensureBlocks(): void {
    const ids = this.ids;
    ids.ensureSorted();
    const nBlocks = (ids.size + BLOCK - 1) >> BLOCK_SHIFT;
    if (this.blocksLayout === ids.layout && this.blocks.length >= nBlocks * 5) return;
    const blocks = new Uint8Array(Math.max(nBlocks, 1) * 5);
    const supers = new Uint16Array(Math.max(ids.size >> SUPER_SHIFT, 0) * 5 + 5);
    const sorted = ids.sorted();
    for (let r = 0; r < sorted.length; r++) {
      const num = sorted[r]!;
      if (num === this.self || num >= this.cap) continue;
      const st = this.b[num * 16 + 12]!;
      blocks[(r >> BLOCK_SHIFT) * 5 + st]!++;
      supers[(r >> SUPER_SHIFT) * 5 + st]!++;
    }
    this.blocks = blocks;
    this.supers = supers;
    this.blocksLayout = ids.layout;
  }

  /** The k-th (0-based) member in id order whose status is in `mask`, self excluded; -1 if none. */
  kth(mask: number, k: number): number {
    if (k < 0) return -1;
    // Every id of the table but self matches (e.g. everyone alive at rest): the k-th in id order,
    // skipping self, without counting.
    const ids = this.ids;
    if (ids.ranksValid && this.count(mask) === ids.size - (this.self >= 0 ? 1 : 0)) {
      if (k >= ids.size - 1) return -1;
      const sorted = ids.sorted();
      return this.self >= 0 && k >= ids.rank(this.self) ? sorted[k + 1]! : sorted[k]!;
    }
    this.ensureBlocks();
    const a = (mask >> 1) & 1;
    const s = (mask >> 2) & 1;
    const d = (mask >> 3) & 1;
    const l = (mask >> 4) & 1;
    // Super-blocks, then blocks, then ranks: O(N/4096 + 64 + 64).
    const supers = this.supers;
    const nSupers = supers.length / 5;
    let sb = 0;
    for (; sb < nSupers; sb++) {
      const o = sb * 5;
      const c = a * supers[o + 1]! + s * supers[o + 2]! + d * supers[o + 3]! + l * supers[o + 4]!;
      if (k < c) break;
      k -= c;
    }
    if (sb === nSupers) return -1;
    const blocks = this.blocks;
    const nBlocks = blocks.length / 5;
    let b = sb << (SUPER_SHIFT - BLOCK_SHIFT);
    const bEnd = Math.min(nBlocks, b + (1 << (SUPER_SHIFT - BLOCK_SHIFT)));
    for (; b < bEnd; b++) {
      const o = b * 5;
      const c = a * blocks[o + 1]! + s * blocks[o + 2]! + d * blocks[o + 3]! + l * blocks[o + 4]!;
      if (k < c) break;
      k -= c;
    }
    if (b === bEnd) return -1; // counts out of step with statuses: cannot happen
    const sorted = this.ids.sorted();
    const bytes = this.b;
    const end = Math.min((b + 1) << BLOCK_SHIFT, sorted.length);
    for (let r = b << BLOCK_SHIFT; r < end; r++) {
      const num = sorted[r]!;
      if (num === this.self || num >= this.cap) continue;
      if ((mask >> bytes[num * 16 + 12]!) & 1 && k-- === 0) return num;
    }
    return -1;
  }

  /** Like kth, but as if member `skip` were not there. */
  kthSkipping(mask: number, k: number, skip: number): number {
    const r = this.kth(mask, k);
    if (r < 0 || skip < 0 || !((mask >> this.statusOf(skip)) & 1) || skip === this.self) return r;
    return this.ids.rank(r) >= this.ids.rank(skip) ? this.kth(mask, k + 1) : r;
  }

  /** Known member numbers (self included) in id order. */
  *numsSorted(): Generator<number> {
    const sorted = this.ids.sorted();
    for (let r = 0; r < sorted.length; r++) {
      const num = sorted[r]!;
      if (num < this.cap && this.b[num * 16 + 12] !== ST_UNKNOWN) yield num;
    }
  }
}

/** A growable FIFO of int32 (a ring buffer; grows ×2 when full, halves below 1/8 full). */
export class IntFifo {
  private buf = new Int32Array(16);
  private head = 0;
  size = 0;

  private resize(cap: number): void {
    const old = this.buf;
    const b = new Int32Array(cap);
    const first = Math.min(this.size, old.length - this.head);
    b.set(old.subarray(this.head, this.head + first));
    if (first < this.size) b.set(old.subarray(0, this.size - first), first);
    this.buf = b;
    this.head = 0;
  }

  push(v: number): void {
    if (this.size === this.buf.length) this.resize(this.buf.length * 2);
    this.buf[(this.head + this.size) & (this.buf.length - 1)] = v;
    this.size++;
  }

  shift(): number {
    const v = this.buf[this.head]!;
    this.head = (this.head + 1) & (this.buf.length - 1);
    this.size--;
    if (this.buf.length > 64 && this.size < this.buf.length >> 3) this.resize(this.buf.length >> 1);
    return v;
  }
}

/**
 * A random permutation of [0, n) in O(1) memory: a 4-round Feistel network on the smallest even
 * number of bits covering n, with cycle walking (expected < 4 steps per element).
 */
export class Permutation {
  private half = 1;
  private mask = 1;
  // Four round keys as fields (not an array: one object less to reach per probe).
  private k0 = 0;
  private k1 = 0;
  private k2 = 0;
  private k3 = 0;
  n = 0;

  reset(n: number, nextU32: () => number): void {
    this.n = n;
    let bits = 2;
    while (2 ** bits < n) bits += 2;
    this.half = bits / 2;
    this.mask = (1 << this.half) - 1;
    this.k0 = nextU32();
    this.k1 = nextU32();
    this.k2 = nextU32();
    this.k3 = nextU32();
  }

  at(i: number): number {
    let x = i;
    do x = this.round(x);
    while (x >= this.n);
    return x;
  }

  private round(x: number): number {
    const mask = this.mask;
    let l = x >>> this.half;
    let r = x & mask;
    let t = l ^ (mix32(r ^ this.k0) & mask);
    l = r;
    r = t;
    t = l ^ (mix32(r ^ this.k1) & mask);
    l = r;
    r = t;
    t = l ^ (mix32(r ^ this.k2) & mask);
    l = r;
    r = t;
    t = l ^ (mix32(r ^ this.k3) & mask);
    l = r;
    r = t;
    return (l << this.half) | r;
  }
}
