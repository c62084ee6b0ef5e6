import type { SimAgent, SimCluster } from './cluster.ts';

/**
 * The invariant checker of every scenario run (GUIDE §2):
 *
 * - **No overcommit at any instant**: a host's committed books are checked every time they change
 *   (each write of its own record — awards, drops, adoptions, status changes), and the books
 *   *including bid reservations* (which change without a record write) every `sampleMs` of virtual
 *   time. The first violation stops the run.
 * - **Exactly once at rest** and **convergence after heal**: once faults stop and every crashed
 *   agent is back, the cluster must come to rest within the settle time: membership settled, one
 *   state hash on every live agent, every replica of every live deploy held by exactly one live
 *   host (or its deploy pending with a reason: no room).
 *
 * A violation carries the virtual time, the seed and the last lines of the run's event log.
 */

export type ViolationKind = 'overcommit' | 'not-at-rest';

export interface Violation {
  kind: ViolationKind;
  /** Virtual ms since the workload started. */
  atMs: number;
  message: string;
  details: string[];
}

/** A bounded log of the run's recent events (the "trace excerpt" of a violation). */
export class EventLog {
  private readonly lines: string[] = [];
  private next = 0;
  constructor(private readonly capacity = 80) {}
  add(line: string): void {
    if (this.lines.length < this.capacity) this.lines.push(line);
    else {
      this.lines[this.next] = line;
      this.next = (this.next + 1) % this.capacity;
    }
  }
  tail(): string[] {
    return [...this.lines.slice(this.next), ...this.lines.slice(0, this.next)];
  }
}

export class InvariantChecker {
  violation: Violation | undefined;
  /** Book checks done (event-driven + sampled), for the summary. */
  checks = 0;

  constructor(
    private readonly cluster: SimCluster,
    private readonly now: () => number,
  ) {}

  /** One host's books (called on every change of its own record). */
  checkHost(a: SimAgent): void {
    if (this.violation || !a.up) return;
    this.checks++;
    const v = a.placement.violations();
    if (v.length > 0)
      this.violation = {
        kind: 'overcommit',
        atMs: this.now(),
        message: `${a.id} overcommits: ${v[0]}`,
        details: v.map((x) => `${a.id}: ${x}`),
      };
  }

  /** Every live host's books, reservations included (sampled). */
  sample(): void {
    for (const a of this.cluster.agents) {
      if (this.violation) return;
      if (a.up) this.checkHost(a);
    }
  }

  /** Is the cluster at rest? Returns what is not (empty = at rest). */
  restProblems(tolerateSuspect: boolean): string[] {
    const out: string[] = [];
    if (!this.cluster.membershipSettled('dead', tolerateSuspect)) out.push('membership not settled');
    const hashes = this.cluster.hashes();
    if (hashes.size !== 1) out.push(`${hashes.size} distinct state hashes among live agents`);
    out.push(...this.cluster.placementViolations(true));
    return out;
  }

  notAtRest(settleMs: number, problems: string[]): void {
    this.violation ??= {
      kind: 'not-at-rest',
      atMs: this.now(),
      message: `not at rest ${settleMs / 1000} s after faults stopped: ${problems[0]}`,
      details: problems.slice(0, 20),
    };
  }
}
