import os from 'node:os';

/** Shared pieces of the benchmarks (kept out of bench/index.ts, whose top-level await runs main). */

export interface BenchResult {
  [key: string]: unknown;
}

export interface Bench {
  name: string;
  description: string;
  run(args: string[]): Promise<BenchResult>;
}

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
