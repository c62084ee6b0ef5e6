import type { HostRecord, WorkloadRecord } from '../../crdt/types.ts';

/**
 * Indexes that let a placement scan touch only what it acts on (docs/placement.md, "Scans"):
 * which hosts claim each deploy (kept from host-record changes), and which member coordinates
 * each live deploy (kept from intent changes and members' alive transitions). Both give exactly
 * the answers the former full scan computed from every record and every member; the simulator
 * checks it (test/placement-scan.test.ts: same seed → the same trace with the full scan).
 */

/** 32-bit FNV-1a of a string's UTF-16 code units. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability ~½. */
function fmix32(x: number): number {
  let h = x >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

const memberHashes = new Map<string, number>();
function memberHash(member: string): number {
  let h = memberHashes.get(member);
  if (h === undefined) {
    h = fnv1a(member);
    if (memberHashes.size > 100_000) memberHashes.clear();
    memberHashes.set(member, h);
  }
  return h;
}

/**
 * Rendezvous weight of `member` for a deploy whose `fnv1a` hash is `deployHash`: a 48-bit mix of
 * both hashes (two finalised lanes). Pure and cheap — SHA-256 per pair was ~15% of a 100-agent
 * simulation.
 */
export function weight(deployHash: number, member: string): number {
  const m = memberHash(member);
  const hi = fmix32(deployHash ^ Math.imul(m, 0x9e3779b1));
  const lo = fmix32((deployHash + 0x7f4a7c15) ^ Math.imul(m ^ 0x5bd1e995, 0x27d4eb2f));
  return hi * 0x10000 + (lo >>> 16);
}

/** Rendezvous weight of `member` for `deployId` (the highest weight coordinates; ties: lower id). */
export function rendezvous(deployId: string, member: string): number {
  return weight(fnv1a(deployId), member);
}

/** Does claim `a` (gen, host) beat claim `b`? Higher generation, then lower host id. */
export function claimBeats(a: { gen: number; host: string }, b: { gen: number; host: string }): boolean {
  if (a.gen !== b.gen) return a.gen > b.gen;
  return a.host < b.host;
}

/** The coordinator among `self` and `alive`: highest weight, ties to the lower id. */
export function coordinatorAmong(deployHash: number, self: string, alive: readonly string[]): string {
  let best = self;
  let bestW = weight(deployHash, self);
  for (const id of alive) {
    const w = weight(deployHash, id);
    if (w > bestW || (w === bestW && id < best)) {
      best = id;
      bestW = w;
    }
  }
  return best;
}

const byDeployOf = new WeakMap<HostRecord, Map<string, WorkloadRecord[]>>();

/**
 * A record's workloads grouped by deploy, in record order (memoised per record object: records
 * are immutable, and in the simulator many agents share one decoded record).
 */
export function claimsByDeploy(rec: HostRecord): Map<string, WorkloadRecord[]> {
  let m = byDeployOf.get(rec);
  if (m === undefined) {
    m = new Map();
    for (const w of rec.workloads) {
      const list = m.get(w.deployId);
      if (list) list.push(w);
      else m.set(w.deployId, [w]);
    }
    byDeployOf.set(rec, m);
  }
  return m;
}

/** Hosts that may claim a deploy: a superset of those whose live record does (callers check). */
export interface ClaimsView {
  /** Kept by someone else from the records themselves (the simulator's shared state): update() is not needed. */
  readonly external?: boolean;
  /** Host `id`'s live record changed from `prev` to `rec`. */
  update(id: string, rec: HostRecord | undefined): void;
  /** The live record host `id` was last indexed with (undefined if not kept). */
  recordOf(id: string): HostRecord | undefined;
  /** Hosts that may claim `deployId`, sorted by id. */
  hostsOf(deployId: string): string[];
}

/** The coordinator of each live deploy in one agent's view. */
export interface CoordinatorView {
  /** The coordinator of `deployId` if it is a live deploy in this view, else undefined. */
  of(deployId: string): string | undefined;
  /** Live deploys `member` coordinates in this view (this agent's own id is the one asked). */
  coordinatedBy(member: string): Iterable<string>;
  add(deployId: string, alive: readonly string[]): void;
  remove(deployId: string): void;
  memberUp(member: string): void;
  memberDown(member: string, alive: readonly string[]): void;
  /** false: memberUp and memberDown do nothing (the view follows membership by itself). */
  readonly tracksMembers?: boolean;
}

/**
 * Which hosts' live records claim each deploy, kept from record changes in O(size of the
 * changed record): `hostsOf(d)` is exactly { h : the live record of h lists a workload of d }.
 */
export class ClaimIndex implements ClaimsView {
  private readonly byDeploy = new Map<string, Set<string>>();
  /** The record each host was last indexed with (undefined: none, or a tombstone). */
  private readonly indexed = new Map<string, HostRecord>();

  /** Host `id`'s live record is now `rec` (undefined: unknown or removed). */
  update(id: string, rec: HostRecord | undefined): void {
    const old = this.indexed.get(id);
    if (old === rec) return;
    const next = rec ? claimsByDeploy(rec) : undefined;
    if (old) {
      for (const d of claimsByDeploy(old).keys()) {
        if (next?.has(d)) continue;
        const set = this.byDeploy.get(d);
        set?.delete(id);
        if (set?.size === 0) this.byDeploy.delete(d);
      }
    }
    if (rec && next) {
      this.indexed.set(id, rec);
      for (const d of next.keys()) {
        const set = this.byDeploy.get(d);
        if (set) set.add(id);
        else this.byDeploy.set(d, new Set([id]));
      }
    } else {
      this.indexed.delete(id);
    }
  }

  /** The live record host `id` was last indexed with. */
  recordOf(id: string): HostRecord | undefined {
    return this.indexed.get(id);
  }

  /** Hosts whose live record claims `deployId`, sorted by id. */
  hostsOf(deployId: string): string[] {
    const set = this.byDeploy.get(deployId);
    return set ? [...set].sort() : [];
  }
}

/**
 * The coordinator of every live deploy in one agent's view (the member with the highest
 * rendezvous weight among those it believes alive, itself included), kept as members come and
 * go: when a member becomes alive, each deploy compares its weight with its coordinator's (O(1));
 * when a member stops being alive, only the deploys it coordinated are recomputed.
 */
export class CoordinatorIndex implements CoordinatorView {
  private readonly coord = new Map<string, { id: string; w: number; h: number }>();
  private readonly byMember = new Map<string, Set<string>>();

  constructor(private readonly self: string) {}

  has(deployId: string): boolean {
    return this.coord.has(deployId);
  }

  of(deployId: string): string | undefined {
    return this.coord.get(deployId)?.id;
  }

  /** Deploys `member` coordinates (live view: do not modify). */
  coordinatedBy(member: string): ReadonlySet<string> {
    return this.byMember.get(member) ?? EMPTY;
  }

  add(deployId: string, alive: readonly string[]): void {
    if (this.coord.has(deployId)) return;
    const h = fnv1a(deployId);
    this.assign(deployId, h, coordinatorAmong(h, this.self, alive));
  }

  remove(deployId: string): void {
    const c = this.coord.get(deployId);
    if (!c) return;
    this.coord.delete(deployId);
    this.unlink(c.id, deployId);
  }

  /** `member` (not self) became alive in this agent's view. */
  memberUp(member: string): void {
    for (const [d, c] of this.coord) {
      const w = weight(c.h, member);
      if (w > c.w || (w === c.w && member < c.id)) {
        this.unlink(c.id, d);
        this.assign(d, c.h, member, w);
      }
    }
  }

  /** `member` (not self) is no longer alive; `alive` is the alive set without it. */
  memberDown(member: string, alive: readonly string[]): void {
    const mine = this.byMember.get(member);
    if (!mine) return;
    this.byMember.delete(member);
    for (const d of mine) {
      const h = this.coord.get(d)!.h;
      this.assign(d, h, coordinatorAmong(h, this.self, alive));
    }
  }

  private assign(deployId: string, h: number, id: string, w = weight(h, id)): void {
    this.coord.set(deployId, { id, w, h });
    const set = this.byMember.get(id);
    if (set) set.add(deployId);
    else this.byMember.set(id, new Set([deployId]));
  }

  private unlink(member: string, deployId: string): void {
    const set = this.byMember.get(member);
    set?.delete(deployId);
    if (set?.size === 0) this.byMember.delete(member);
  }
}

const EMPTY: ReadonlySet<string> = new Set();
