/**
 * Engine operation latencies: create / start / stop / remove (and inspect, list) of N sequential
 * workloads, reported as median / p99 / min / max in ms. Used by bench/ (`npm run bench`).
 */
import type { Engine, WorkloadSpec } from './engine.ts';
import { simProgram } from './sim.ts';

export interface LatencySummary {
  n: number;
  median: number;
  p99: number;
  min: number;
  max: number;
}

export type EngineOp = 'create' | 'start' | 'inspect' | 'list' | 'stop' | 'remove';

export interface EngineOpsResult {
  engine: string;
  n: number;
  ops: Record<EngineOp, LatencySummary>;
}

export interface EngineOpsOptions {
  /** Number of workloads (each goes through every op once). Default 20. */
  n?: number;
  /** The workload to run (must run until stopped and honour SIGTERM). Default: `benchSpec`. */
  spec?: (i: number) => WorkloadSpec;
  /** Clock in ms (default performance.now; pass the virtual clock for the sim engine). */
  now?: () => number;
  /** Grace period passed to stop. Default 5 s. */
  stopTimeoutMs?: number;
  /** Docker image for the default spec. */
  image?: string;
}

/** Quantile by nearest rank on sorted values. */
export function summarize(samples: readonly number[]): LatencySummary {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? 0;
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return {
    n: s.length,
    median: round(at(0.5)),
    p99: round(at(0.99)),
    min: round(s[0] ?? 0),
    max: round(s.at(-1) ?? 0),
  };
}

/** A long-running workload that stops on SIGTERM, for the given engine kind. */
export function benchSpec(engine: Engine, i: number, image = 'shoal/busybox:latest'): WorkloadSpec {
  const base = { id: `bench-${i}`, deployId: 'bench', hostId: engine.hostId };
  switch (engine.capabilities.kind) {
    case 'docker':
      return { ...base, image, command: ['sleep', '3600'] };
    case 'process':
      return { ...base, command: ['sleep', '3600'] };
    case 'sim':
      return { ...base, image, command: simProgram({}) };
  }
}

export async function benchEngineOps(engine: Engine, opts: EngineOpsOptions = {}): Promise<EngineOpsResult> {
  const n = opts.n ?? 20;
  const now = opts.now ?? (() => performance.now());
  const spec = opts.spec ?? ((i: number) => benchSpec(engine, i, opts.image));
  const samples: Record<EngineOp, number[]> = {
    create: [],
    start: [],
    inspect: [],
    list: [],
    stop: [],
    remove: [],
  };
  const timed = async <T>(op: EngineOp, fn: () => Promise<T>): Promise<T> => {
    const t0 = now();
    const r = await fn();
    samples[op].push(now() - t0);
    return r;
  };
  for (let i = 0; i < n; i++) {
    const s = spec(i);
    await engine.remove(s.id, { force: true }).catch(() => {}); // leftovers of an aborted run
    await timed('create', () => engine.create(s));
    await timed('start', () => engine.start(s.id));
    await timed('inspect', () => engine.inspect(s.id));
    await timed('list', () => engine.list());
    await timed('stop', () => engine.stop(s.id, { timeoutMs: opts.stopTimeoutMs ?? 5_000 }));
    await timed('remove', () => engine.remove(s.id));
  }
  const ops = Object.fromEntries(
    (Object.keys(samples) as EngineOp[]).map((op) => [op, summarize(samples[op])]),
  ) as Record<EngineOp, LatencySummary>;
  return { engine: engine.capabilities.kind, n, ops };
}
