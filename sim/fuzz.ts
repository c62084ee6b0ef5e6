import { Prng } from '../node/core/random.ts';
import { runScenario, type Summary } from './runner.ts';
import { parseScenario, type Scenario, type ScenarioInput } from './scenario.ts';

/**
 * `shoal sim fuzz`: random small clusters (10–30 agents, one minute of virtual workload) under a
 * random fault schedule — host and zone crashes, partitions, message loss, delay spikes, clock
 * skew — with the invariant checker on. Everything is drawn from the fuzz seed, so a failing seed
 * replays exactly (`shoal sim fuzz --from <seed> --seeds 1`).
 */

const pick = <T>(rng: Prng, xs: readonly T[]): T => xs[rng.int(xs.length)]!;
const between = (rng: Prng, lo: number, hi: number): number => lo + rng.int(hi - lo + 1);

/** The scenario fuzz seed `seed` runs. */
export function fuzzScenario(seed: number): Scenario {
  const rng = new Prng(seed).fork('fuzz-scenario');
  const size = between(rng, 10, 16);
  const gpuHosts = between(rng, 0, 3);
  const duration = 45;
  const faults: NonNullable<ScenarioInput['faults']> = [];
  const nFaults = between(rng, 2, 6);
  for (let i = 0; i < nFaults; i++) {
    const at = between(rng, 2, duration - 5);
    const kind = pick(rng, [
      'crash',
      'crash',
      'zone-crash',
      'partition',
      'partition',
      'loss',
      'delay',
      'skew',
    ] as const);
    if (kind === 'crash')
      faults.push({ kind: 'crash', at_s: at, count: between(rng, 1, 3), down_s: between(rng, 2, 30) });
    else if (kind === 'zone-crash')
      faults.push({ kind: 'crash', at_s: at, zone: pick(rng, ['a', 'b', 'c']), down_s: between(rng, 2, 20) });
    else if (kind === 'partition')
      faults.push(
        rng.next() < 0.5
          ? { kind: 'partition', at_s: at, zone: pick(rng, ['a', 'b', 'c']), for_s: between(rng, 2, 20) }
          : { kind: 'partition', at_s: at, fraction: 0.1 + rng.int(40) / 100, for_s: between(rng, 2, 20) },
      );
    else if (kind === 'loss')
      faults.push({ kind: 'loss', at_s: at, p: 0.05 + rng.int(26) / 100, for_s: between(rng, 3, 15) });
    else if (kind === 'delay')
      faults.push({
        kind: 'delay',
        at_s: at,
        extra_ms: between(rng, 50, 400),
        jitter_ms: between(rng, 0, 100),
        for_s: between(rng, 3, 15),
      });
    else
      faults.push({
        kind: 'skew',
        at_s: at,
        count: 1,
        ms: (rng.next() < 0.5 ? -1 : 1) * between(rng, 100, 10_000),
      });
  }
  const input: ScenarioInput = {
    name: `fuzz-${seed}`,
    seed,
    duration_s: duration,
    settle_s: 90,
    cluster: {
      hosts: [
        { count: size - gpuHosts, cpu_milli: 8000, memory_mib: 32_768 },
        ...(gpuHosts > 0
          ? [{ count: gpuHosts, cpu_milli: 16_000, memory_mib: 65_536, gpu: 4, gpu_model: 'A100' }]
          : []),
      ],
    },
    network: { base_ms: 1, jitter_ms: 4, loss: 0 },
    workload: {
      synthetic: {
        count: between(rng, 10, 35),
        arrival: { process: 'poisson', rate_per_s: 0.5 + rng.int(16) / 10 },
        replicas: { min: 1, max: 3 },
        lifetime:
          rng.next() < 0.3 ? { dist: 'forever' } : { dist: 'exponential', mean_s: between(rng, 10, 60) },
        strategy: pick(rng, ['binpack', 'spread', 'auto', 'global'] as const),
        shapes: [
          { weight: 5, cpu_milli: 500, memory_mib: 1024 },
          { weight: 3, cpu_milli: 2000, memory_mib: 4096 },
          { weight: 1, cpu_milli: 4000, memory_mib: 8192 },
          ...(gpuHosts > 0
            ? [{ weight: 1, cpu_milli: 1000, memory_mib: 4096, num_gpu: 1, gpu_milli: 250 }]
            : []),
        ],
      },
    },
    faults,
  };
  return parseScenario(input, `fuzz seed ${seed}`);
}

export interface FuzzOutcome {
  seed: number;
  ok: boolean;
  hosts: number;
  events: number;
  message: string | null;
  excerpt: string[];
  wallMs: number;
}

export function replayCommand(seed: number): string {
  return `npx shoal sim fuzz --from ${seed} --seeds 1 --verbose`;
}

/** Run one fuzz seed (invariants only, no metrics). */
export async function fuzzOne(seed: number, trace = false): Promise<FuzzOutcome> {
  const t = performance.now();
  let summary: Summary;
  try {
    summary = (await runScenario(fuzzScenario(seed), { seed, metrics: false, trace })).summary;
  } catch (err) {
    return {
      seed,
      ok: false,
      hosts: 0,
      events: 0,
      message: `crashed: ${(err as Error).stack ?? String(err)}`,
      excerpt: [],
      wallMs: Math.round(performance.now() - t),
    };
  }
  const v = summary.violation;
  return {
    seed,
    ok: v === null,
    hosts: summary.hosts,
    events: summary.events,
    message: v ? `${v.kind} at ${(v.atMs / 1000).toFixed(3)} s: ${v.message}` : null,
    excerpt: v ? [...v.details.slice(0, 10), '--- recent events ---', ...v.excerpt] : [],
    wallMs: Math.round(performance.now() - t),
  };
}
