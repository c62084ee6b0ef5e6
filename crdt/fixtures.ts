/** Builders of valid records for tests, benchmarks and the simulator. Pure data. */
import type { Capacity, HostRecord, Resources, WorkloadRecord } from './types.ts';

export function emptyResources(): Resources {
  return { cpuMilli: 0, cores: [], memory: 0, disk: 0, gpus: [] };
}

export function makeCapacity(over: Partial<Capacity> = {}): Capacity {
  return {
    cpuMilli: 8000,
    cores: 8,
    memory: 32 * 2 ** 30,
    disk: 500 * 2 ** 30,
    gpus: [],
    labels: { zone: 'z1' },
    oversell: { cpu: 1, memory: 1, disk: 1, gpu: 1 },
    ...over,
  };
}

export function makeWorkload(
  id: string,
  deployId: string,
  replica: number,
  over: Partial<WorkloadRecord> = {},
): WorkloadRecord {
  return {
    id,
    deployId,
    replica,
    gen: 1,
    resources: { cpuMilli: 500, cores: [], memory: 256 * 2 ** 20, disk: 0, gpus: [] },
    status: 'running',
    engine: 'sim',
    startedAt: 1_700_000_000_000,
    exitCode: null,
    health: null,
    ...over,
  };
}

export function makeHostRecord(id: string, version: number, over: Partial<HostRecord> = {}): HostRecord {
  return {
    id,
    version,
    deleted: false,
    addrs: [`/ip4/10.0.0.1/tcp/4001/p2p/${id}`],
    capacity: makeCapacity(),
    allocated: emptyResources(),
    workloads: [],
    draining: false,
    updatedAt: 1_700_000_000_000 + version,
    ...over,
  };
}
