import os from 'node:os';

/**
 * `npm run bench -- <name> [args]` runs one benchmark; `npm run bench -- --list` lists them.
 * Each prints readable figures and, as its LAST line, one JSON object with the same figures plus
 * machine facts, so runs can be compared.
 */

export interface BenchResult {
  [key: string]: unknown;
}

export interface Bench {
  name: string;
  description: string;
  run(args: string[]): Promise<BenchResult>;
}

const registry: Record<string, () => Promise<Bench>> = {
  propagation: async () => (await import('./propagation.ts')).bench,
};

export function machine(): Record<string, unknown> {
  return {
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.platform()}-${os.arch()}`,
  };
}

export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

export function summarize(values: number[]): {
  n: number;
  p50: number;
  p99: number;
  min: number;
  max: number;
} {
  const s = values.slice().sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 100) / 100;
  return {
    n: s.length,
    p50: r(quantile(s, 0.5)),
    p99: r(quantile(s, 0.99)),
    min: r(s[0] ?? Number.NaN),
    max: r(s[s.length - 1] ?? Number.NaN),
  };
}

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
