/**
 * Deterministic generators for benchmarks and property tests: random clusters and requests from
 * a seed, using an inline PRNG (mulberry32) so the allocator stays free of ambient randomness.
 */
import { emptyLedger } from './ledger.ts';
import type { Host, HostCapacity, PlacementRequest, ResourceRequest, TypicalShape } from './types.ts';
import { GiB, MiB } from './units.ts';

/** mulberry32: returns a function yielding uint32 values. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

export class SeededRandom {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return this.next() % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  chance(permille: number): boolean {
    return this.int(1000) < permille;
  }
}

export interface ClusterOptions {
  hosts: number;
  zones?: number;
  /** Permille of hosts that carry GPUs. */
  gpuPermille?: number;
  /** Oversell for cpu/memory in permille. */
  oversell?: number;
}

/** A cluster of empty hosts "h0000".."hNNNN" over zones "z0".."zK". */
export function makeCluster(seed: number, opts: ClusterOptions): Host[] {
  const rnd = new SeededRandom(seed);
  const zones = opts.zones ?? 3;
  const hosts: Host[] = [];
  for (let i = 0; i < opts.hosts; i++) {
    const cores = rnd.pick([4, 8, 16, 32, 64]);
    const capacity: HostCapacity = {
      cpu: { cores, maxFragmentCores: rnd.chance(500) ? null : Math.max(1, cores / 4) },
      memoryBytes: cores * rnd.pick([2, 4, 8]) * GiB,
      diskBytes: rnd.pick([100, 200, 500]) * GiB,
      volumes: rnd.chance(300) ? [{ name: 'ssd', bytes: 200 * GiB }] : [],
      gpus: rnd.chance(opts.gpuPermille ?? 100)
        ? Array.from({ length: rnd.pick([1, 2, 4, 8]) }, () => ({
            model: rnd.pick(['A100', 'T4']),
            memoryBytes: rnd.pick([16, 40, 80]) * GiB,
          }))
        : [],
      oversell: { cpu: opts.oversell ?? 1000, memory: 1000, disk: 1000 },
    };
    hosts.push({
      id: `h${String(i).padStart(4, '0')}`,
      labels: { zone: `z${rnd.int(zones)}`, ...(capacity.gpus.length > 0 ? { gpu: 'yes' } : {}) },
      capacity,
      ledger: emptyLedger(capacity),
    });
  }
  return hosts;
}

export function makeResources(rnd: SeededRandom): ResourceRequest {
  const bind = rnd.chance(200);
  const r: ResourceRequest = {
    cpu: { milli: rnd.pick([100, 250, 500, 1000, 1500, 2000, 4000]), ...(bind ? { bind: true } : {}) },
    memoryBytes: rnd.pick([128, 256, 512, 1024, 2048, 8192]) * MiB,
    diskBytes: rnd.pick([0, 1, 10]) * GiB,
  };
  if (rnd.chance(50))
    r.gpu = { milli: rnd.pick([250, 500, 1000, 2000]), ...(rnd.chance(500) ? { model: 'A100' } : {}) };
  if (rnd.chance(50)) r.volumes = [{ name: 'data', bytes: rnd.pick([1, 5, 20]) * GiB }];
  return r;
}

/** `n` deploy requests "d0000".. with random shapes and occasional spread / maxPerHost. */
export function makeRequests(seed: number, n: number): PlacementRequest[] {
  const rnd = new SeededRandom(seed);
  return Array.from({ length: n }, (_, i) => ({
    deployId: `d${String(i).padStart(4, '0')}`,
    resources: makeResources(rnd),
    ...(rnd.chance(300) ? { spread: {} } : {}),
    ...(rnd.chance(200) ? { maxPerHost: 1 + rnd.int(3) } : {}),
  }));
}

/** A few weighted typical shapes. */
export function makeTypical(seed: number, n = 4): TypicalShape[] {
  const rnd = new SeededRandom(seed);
  return Array.from({ length: n }, () => ({ resources: makeResources(rnd), weight: 1 + rnd.int(10) }));
}

export interface HostSpec {
  id: string;
  cores?: number;
  memoryBytes?: number;
  diskBytes?: number;
  labels?: Record<string, string>;
  gpus?: HostCapacity['gpus'];
  volumes?: HostCapacity['volumes'];
  oversell?: HostCapacity['oversell'];
  maxFragmentCores?: number | null;
}

/** An empty host from a terse spec (defaults: 4 cores, 8 GiB, 100 GiB disk). */
export function makeHost(spec: HostSpec): Host {
  const capacity: HostCapacity = {
    cpu: {
      cores: spec.cores ?? 4,
      ...(spec.maxFragmentCores !== undefined ? { maxFragmentCores: spec.maxFragmentCores } : {}),
    },
    memoryBytes: spec.memoryBytes ?? 8 * GiB,
    diskBytes: spec.diskBytes ?? 100 * GiB,
    volumes: spec.volumes ?? [],
    gpus: spec.gpus ?? [],
    ...(spec.oversell !== undefined ? { oversell: spec.oversell } : {}),
  };
  return { id: spec.id, labels: spec.labels ?? {}, capacity, ledger: emptyLedger(capacity) };
}
