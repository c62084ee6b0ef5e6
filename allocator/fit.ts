/**
 * How many more copies of a request fit on a host. Analytic per dimension (no replica-by-replica
 * simulation except for volumes, which are rare and few), capped at {@link MAX_FITS}. It agrees
 * with `allocate` on the question that matters: `countFits(...) >= 1` exactly when `allocate`
 * succeeds. For bound CPU/GPU fragments it is the best split (Eru's), which may exceed what the
 * greedy allocator reaches replica by replica.
 */
import { cpuFits } from './cpu.ts';
import { gpuFits } from './gpu.ts';
import { portFits } from './ports.ts';
import type { HostCapacity, HostLedger, ResourceRequest } from './types.ts';
import { fitsOf, own, ratiosOf, scalePermille, setOwn } from './units.ts';
import { allocateVolumes } from './volumes.ts';

export const MAX_FITS = 1_000_000;

export function countFits(capacity: HostCapacity, ledger: HostLedger, r: ResourceRequest): number {
  const ratios = ratiosOf(capacity);
  let n = MAX_FITS;
  if (r.memoryBytes > 0) {
    n = Math.min(
      n,
      fitsOf(scalePermille(capacity.memoryBytes, ratios.memory) - ledger.memoryBytes, r.memoryBytes),
    );
  }
  const disk = r.diskBytes ?? 0;
  if (disk > 0)
    n = Math.min(n, fitsOf(scalePermille(capacity.diskBytes, ratios.disk) - ledger.diskBytes, disk));
  if (n > 0) n = cpuFits(capacity, ledger, r.cpu, n);
  if (n > 0) n = gpuFits(capacity, ledger, r.gpu, n);
  if (n > 0) n = portFits(ledger, r.ports, n);
  if (n > 0 && r.volumes !== undefined && r.volumes.length > 0) n = volumeFits(capacity, ledger, r, n);
  return Math.max(0, n);
}

/**
 * Volumes: simulated exactly (best fit, replica by replica) up to {@link VOLUME_SIMULATION_LIMIT}
 * replicas; beyond that the bound "total free pool bytes / requested bytes" is returned (an
 * over-estimate only for hosts with thousands of volume slots).
 */
export const VOLUME_SIMULATION_LIMIT = 1024;

function volumeFits(capacity: HostCapacity, ledger: HostLedger, r: ResourceRequest, cap: number): number {
  let want = 0;
  for (const v of r.volumes ?? []) want += v.bytes;
  let free = 0;
  for (const p of capacity.volumes) free += Math.max(0, p.bytes - (own(ledger.volumes, p.name) ?? 0));
  const bound = want > 0 ? Math.min(cap, fitsOf(free, want)) : cap;
  const simulate = Math.min(bound, VOLUME_SIMULATION_LIMIT);
  const volumes: Record<string, number> = {};
  for (const k of Object.keys(ledger.volumes)) setOwn(volumes, k, own(ledger.volumes, k) ?? 0);
  const books: HostLedger = { ...ledger, volumes };
  let k = 0;
  while (k < simulate) {
    const got = allocateVolumes(capacity, books, r.volumes);
    if (!got.ok) break;
    for (const g of got.grants) setOwn(volumes, g.pool, (own(volumes, g.pool) ?? 0) + g.bytes);
    k++;
  }
  return k === simulate ? bound : k;
}
