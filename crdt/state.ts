/**
 * ClusterState = HostTable + IntentTable, with one hash over both, snapshots for persistence and
 * the anti-entropy exchange:
 *
 *   A ──digest──▶ B           B: handle(digest) → [delta (what A lacks), want (what B lacks)]
 *   A ◀─delta, want── B       A: handle(delta) applies; handle(want) → [delta]
 *   A ──delta──▶ B            after these 1.5 round trips (no loss) A and B hold the same hash.
 *
 * Local writes and freshly merged remote entries are gossiped as `delta` messages.
 */
import {
  decodeMessage,
  encodeMessage,
  type HostDigestEntry,
  type IntentDigestEntry,
  MESSAGE_LIMITS,
  SNAPSHOT_LIMITS,
  type StateMessage,
  StateMessageError,
} from './codec.ts';
import { DIGEST_BUCKETS, sha256Hex } from './hash.ts';
import { HostTable } from './hosts.ts';
import { IntentTable } from './intents.ts';
import type { HostEntry, IntentWire } from './types.ts';

export interface StateDelta {
  hosts: HostEntry[];
  intents: IntentWire[];
}

export interface StateDigest {
  hash: string;
  hosts: HostDigestEntry[];
  intents: IntentDigestEntry[];
  /**
   * The digest covers only these buckets (ascending; host buckets `0 … DIGEST_BUCKETS−1`, intent
   * buckets `DIGEST_BUCKETS …`): its receiver reconciles the entries in them and nothing else.
   * Absent: every entry.
   */
  buckets?: number[];
}

export interface Want {
  hosts: string[];
  intents: string[];
}

export interface ApplyResult {
  /** Entries that changed local state (worth re-gossiping). */
  hosts: HostEntry[];
  intents: IntentWire[];
}

export interface StateSummary {
  hash: string;
  hosts: { entries: number; live: number };
  intents: { entries: number; live: number };
}

export class ClusterState {
  readonly hosts = new HostTable();
  readonly intents: IntentTable;

  /** `actor`: this agent's id (stamps its intent edits). */
  constructor(readonly actor: string) {
    this.intents = new IntentTable(actor);
  }

  /** Hex SHA-256 over all hosts and intents: equal on agents that exchanged all messages. */
  hash(): string {
    return sha256Hex(`shoal-state/1\0${this.hosts.hash()}\0${this.intents.hash()}`);
  }

  summary(): StateSummary {
    return {
      hash: this.hash(),
      hosts: { entries: this.hosts.size, live: this.hosts.liveSize },
      intents: { entries: this.intents.size, live: this.intents.all().length },
    };
  }

  /**
   * Merge a validated delta. Checks bounds that depend on local state first and throws
   * StateMessageError (naming `peer`) before applying anything.
   */
  apply(delta: StateDelta, peer = 'local'): ApplyResult {
    delta.intents.forEach((w, i) => {
      const n = this.intents.registerCountAfter(w);
      if (n > MESSAGE_LIMITS.maxRegisters) {
        throw new StateMessageError(
          peer,
          `intents[${i}].fields`,
          `deploy would hold ${n} registers (> ${MESSAGE_LIMITS.maxRegisters})`,
        );
      }
    });
    const out: ApplyResult = { hosts: [], intents: [] };
    for (const h of delta.hosts) if (this.hosts.merge(h) === 'newer') out.hosts.push(h);
    for (const w of delta.intents) if (this.intents.merge(w)) out.intents.push(w);
    return out;
  }

  /** The anti-entropy digest: every entry, or only those in `buckets` (see `StateDigest.buckets`). */
  digest(buckets?: readonly number[]): StateDigest {
    if (buckets === undefined)
      return { hash: this.hash(), hosts: this.hosts.digest(), intents: this.intents.digest() };
    const { hosts, intents } = splitBuckets(buckets);
    return {
      hash: this.hash(),
      hosts: this.hosts.digest(hosts),
      intents: this.intents.digest(intents),
      buckets: [...buckets],
    };
  }

  /**
   * Tags of the digest buckets, hosts then intents (`2 × DIGEST_BUCKETS` values): two states
   * hold the same entries in a bucket iff its tags are equal (but for 32-bit collisions). A copy.
   */
  bucketTags(): Uint32Array {
    const out = new Uint32Array(2 * DIGEST_BUCKETS);
    out.set(this.hosts.bucketTags(), 0);
    out.set(this.intents.bucketTags(), DIGEST_BUCKETS);
    return out;
  }

  /** The buckets whose tags differ from `remote`'s (`bucketTags()` of the peer), ascending. */
  differingBuckets(remote: Uint32Array): number[] {
    const mine = this.bucketTags();
    const out: number[] = [];
    for (let i = 0; i < mine.length; i++) if (mine[i] !== remote[i]) out.push(i);
    return out;
  }

  /** On a peer's digest: what to push to it and what to ask it for (within its buckets, if any). */
  reconcile(remote: StateDigest): { send: StateDelta; want: Want } {
    if (remote.hash === this.hash())
      return { send: { hosts: [], intents: [] }, want: { hosts: [], intents: [] } };
    const only = remote.buckets === undefined ? undefined : splitBuckets(remote.buckets);
    return {
      send: {
        hosts: this.hosts.newerThan(remote.hosts, only?.hosts),
        intents: this.intents.newerThan(remote.intents, only?.intents),
      },
      want: {
        hosts: this.hosts.missingFrom(remote.hosts),
        intents: this.intents.missingFrom(remote.intents),
      },
    };
  }

  /** Full entries for the ids a peer asked for (unknown ids are skipped). */
  deltaFor(want: Want): StateDelta {
    const hosts: HostEntry[] = [];
    for (const id of want.hosts) {
      const e = this.hosts.get(id);
      if (e) hosts.push(e);
    }
    const intents: IntentWire[] = [];
    for (const id of want.intents) {
      const w = this.intents.wire(id);
      if (w) intents.push(w);
    }
    return { hosts, intents };
  }

  /** Everything, sorted by id (deterministic). */
  snapshot(): StateDelta {
    return { hosts: this.hosts.all(), intents: this.intents.allWire() };
  }

  /**
   * Handle a decoded message from `peer`; returns the replies to send back to it.
   * Throws StateMessageError only (bounds that depend on local state), before applying anything.
   */
  handle(msg: StateMessage, peer: string): StateMessage[] {
    switch (msg.t) {
      case 'delta':
      case 'snapshot':
        this.apply(msg, peer);
        return [];
      case 'digest': {
        const { send, want } = this.reconcile(msg);
        const out: StateMessage[] = [];
        if (send.hosts.length || send.intents.length) out.push({ t: 'delta', ...send });
        if (want.hosts.length || want.intents.length) out.push({ t: 'want', ...want });
        return out;
      }
      case 'want': {
        const d = this.deltaFor(msg);
        return d.hosts.length || d.intents.length ? [{ t: 'delta', ...d }] : [];
      }
    }
  }

  /** Drop host tombstones and deleted intents older than `before` (caller's clock, ms). */
  gc(before: number): { hosts: number; intents: number } {
    return { hosts: this.hosts.gc(before), intents: this.intents.gc(before) };
  }

  encodeSnapshot(): Uint8Array {
    return encodeMessage({ t: 'snapshot', ...this.snapshot() });
  }

  /** Rebuild from `encodeSnapshot()` bytes (validated; errors name `source`). */
  static decodeSnapshot(bytes: Uint8Array, actor: string, source = 'store'): ClusterState {
    const msg = decodeMessage(bytes, source, SNAPSHOT_LIMITS);
    if (msg.t !== 'snapshot') throw new StateMessageError(source, 't', 'expected a snapshot');
    const s = new ClusterState(actor);
    s.apply(msg, source);
    return s;
  }
}

/** State-wide bucket numbers → the host table's and the intent table's own bucket numbers. */
function splitBuckets(buckets: readonly number[]): { hosts: Set<number>; intents: Set<number> } {
  const hosts = new Set<number>();
  const intents = new Set<number>();
  for (const b of buckets) {
    if (b < DIGEST_BUCKETS) hosts.add(b);
    else intents.add(b - DIGEST_BUCKETS);
  }
  return { hosts, intents };
}

export function encodeDelta(d: StateDelta): Uint8Array {
  return encodeMessage({ t: 'delta', hosts: d.hosts, intents: d.intents });
}

export function encodeDigest(d: StateDigest): Uint8Array {
  return encodeMessage({ t: 'digest', ...d });
}
