import type { SimPool } from './pool.ts';
import { runScenario } from './runner.ts';
import { loadScenario } from './scenario.ts';
import { resizeHosts, scenarioHosts } from './workload.ts';

/**
 * `shoal sim plan`: the smallest cluster (host count, same host mix as the scenario's) whose
 * placement success — replicas held by a host within `plan.deadline_s` of their submission —
 * meets a target. Each probe is a whole simulation run in a worker thread; the search evaluates
 * as many host counts at once as there are workers (a k-section, bisection with one worker).
 * Assumes success does not drop when hosts are added.
 */

export interface Probe {
  hosts: number;
  successRatio: number | null;
  violation: string | null;
}

export async function planProbe(file: string, hosts: number, seed: number): Promise<Probe> {
  const s = loadScenario(file);
  const r = await runScenario(s, { seed, hosts: resizeHosts(s, scenarioHosts(s), hosts) });
  const v = r.summary.violation;
  return {
    hosts,
    successRatio: r.summary.metrics?.successRatio ?? null,
    violation: v ? `${v.kind}: ${v.message}` : null,
  };
}

export interface PlanResult {
  target: number;
  /** Smallest passing host count found (null: none up to max). */
  hosts: number | null;
  probes: Probe[];
}

export async function planSearch(
  file: string,
  opts: {
    target: number;
    seed: number;
    min: number;
    max: number;
    pool: SimPool;
    onProbe?: (p: Probe) => void;
  },
): Promise<PlanResult> {
  const s = loadScenario(file);
  const start = Math.min(opts.max, Math.max(opts.min, scenarioHosts(s).length));
  const probes: Probe[] = [];
  const passes = (p: Probe) =>
    p.violation === null && p.successRatio !== null && p.successRatio >= opts.target;
  const probe = async (ns: number[]): Promise<Probe[]> => {
    const got = await Promise.all(
      ns.map((n) => opts.pool.run<Probe>({ kind: 'plan', file, hosts: n, seed: opts.seed })),
    );
    for (const p of got) {
      probes.push(p);
      opts.onProbe?.(p);
    }
    return got;
  };
  let lo = opts.min - 1; // largest count known to fail
  let hi: number | null = null; // smallest count known to pass
  // Bracket: the scenario's own size, then doubling (as many sizes at once as workers).
  let next = [start];
  while (hi === null) {
    const got = await probe(next);
    for (const p of got) {
      if (passes(p)) hi = hi === null ? p.hosts : Math.min(hi, p.hosts);
      else lo = Math.max(lo, p.hosts);
    }
    if (hi !== null) break;
    if (lo >= opts.max) return { target: opts.target, hosts: null, probes };
    const top = Math.max(...next);
    next = [];
    for (let k = 1; k <= opts.pool.size; k++) next.push(Math.min(opts.max, top * 2 ** k));
    next = [...new Set(next)].filter((n) => n > lo);
  }
  // Narrow (lo, hi) with k interior points per round.
  while (hi - lo > 1) {
    const k = Math.min(opts.pool.size, hi - lo - 1);
    const pts = [
      ...new Set(Array.from({ length: k }, (_, i) => lo + Math.round(((i + 1) * (hi! - lo)) / (k + 1)))),
    ].filter((n) => n > lo && n < hi!);
    const got = await probe(pts);
    for (const p of got.sort((a, b) => a.hosts - b.hosts)) {
      if (passes(p)) hi = Math.min(hi, p.hosts);
      else if (p.hosts < hi) lo = Math.max(lo, p.hosts);
    }
  }
  return { target: opts.target, hosts: hi, probes: probes.sort((a, b) => a.hosts - b.hosts) };
}
