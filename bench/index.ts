import { machine } from './stats.ts';

/**
 * `npm run bench -- <name> [args]` runs one benchmark; `npm run bench -- --list` lists them.
 * Each prints readable figures and, as its LAST line, one JSON object with the same figures plus
 * machine facts, so runs can be compared.
 */

export type { Bench, BenchResult } from './stats.ts';

import type { Bench } from './stats.ts';

/**
 * Issue #6: 1 h virtual, 3 deploys of 10 replicas per second each removed after 30 s (≈ 108,000
 * placements and as many departures): the shared-state stand-in, a formed cluster (no join storm)
 * and memberlist's LAN probe interval (1 s). `sim-scale --size N` without these runs the plain path.
 */
const SIM_HOUR = [
  '--shared-state',
  '--formed',
  '--probe-interval-ms',
  '1000',
  '--virtual-s',
  '3600',
  '--rate',
  '3',
];

const registry: Record<string, () => Promise<Bench>> = {
  propagation: async () => (await import('./propagation.ts')).bench,
  placement: async () => (await import('./placement.ts')).bench,
  engines: async () => (await import('./engines.ts')).bench,
  'sim-scale': async () => (await import('./sim-scale.ts')).bench,
  'sim-1k': async () => (await import('./sim-scale.ts')).sized(1000, SIM_HOUR),
  // Issue #6: 10,000 agents, 1 h virtual, ≥ 100,000 placements with departures: the shared-state
  // stand-in, a formed cluster (no join storm) and memberlist's LAN probe interval (1 s).
  'sim-10k': async () => (await import('./sim-scale.ts')).sized(10_000, SIM_HOUR),
};

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  if (!name || name === '--list' || name === '-l') {
    for (const key of Object.keys(registry)) {
      const b = await registry[key]!();
      process.stdout.write(`${b.name.padEnd(16)} ${b.description}\n`);
    }
    return;
  }
  const load = registry[name];
  if (!load) {
    process.stderr.write(`unknown benchmark "${name}"; try: npm run bench -- --list\n`);
    process.exit(2);
  }
  const bench = await load();
  const started = Date.now();
  const result = await bench.run(args);
  process.stdout.write(
    `${JSON.stringify({ bench: bench.name, ...result, wallMs: Date.now() - started, machine: machine(), at: new Date().toISOString() })}\n`,
  );
  process.exit(0);
}

await main();
