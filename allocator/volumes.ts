/**
 * Named volumes carved from the host's volume pools. Pools are never oversold. Volumes are placed
 * largest first (then by name) — a pinned volume into its pool, an unpinned one into the pool with
 * the least free bytes that still fits (best fit, ties by pool name). Grants come back in request
 * order.
 */
import type { HostCapacity, HostLedger, VolumeGrant, VolumeRequest } from './types.ts';
import { compareStrings, formatBytes, own } from './units.ts';

export type VolumeResult = { ok: true; grants: VolumeGrant[] } | { ok: false; messages: string[] };

export function poolFree(capacity: HostCapacity, ledger: HostLedger): Map<string, number> {
  const free = new Map<string, number>();
  const pools = [...capacity.volumes].sort((a, b) => compareStrings(a.name, b.name));
  for (const p of pools) free.set(p.name, p.bytes - (own(ledger.volumes, p.name) ?? 0));
  return free;
}

export function allocateVolumes(
  capacity: HostCapacity,
  ledger: HostLedger,
  requests: readonly VolumeRequest[] | undefined,
): VolumeResult {
  if (requests === undefined || requests.length === 0) return { ok: true, grants: [] };
  const free = poolFree(capacity, ledger);
  const order = requests
    .map((r, i) => ({ r, i }))
    .sort((a, b) => b.r.bytes - a.r.bytes || compareStrings(a.r.name, b.r.name) || a.i - b.i);
  const granted: Array<VolumeGrant | undefined> = new Array(requests.length).fill(undefined);
  const messages: string[] = [];
  for (const { r, i } of order) {
    const need = formatBytes(r.bytes);
    if (r.pool !== undefined) {
      const f = free.get(r.pool);
      if (f === undefined) {
        messages.push(`volume: ${r.name} needs ${need} in pool ${r.pool}, host has no such pool`);
      } else if (f < r.bytes) {
        messages.push(
          `volume: ${r.name} needs ${need} in pool ${r.pool}, free ${formatBytes(Math.max(0, f))}`,
        );
      } else {
        free.set(r.pool, f - r.bytes);
        granted[i] = { name: r.name, pool: r.pool, bytes: r.bytes };
      }
      continue;
    }
    let best: { pool: string; free: number } | undefined;
    for (const [pool, f] of free) {
      if (f >= r.bytes && (best === undefined || f < best.free)) best = { pool, free: f };
    }
    if (best === undefined) {
      if (free.size === 0) {
        messages.push(`volume: ${r.name} needs ${need}, host has no volume pools`);
      } else {
        let largest: { pool: string; free: number } | undefined;
        for (const [pool, f] of free)
          if (largest === undefined || f > largest.free) largest = { pool, free: f };
        messages.push(
          `volume: ${r.name} needs ${need}, largest free pool ${largest?.pool} has ${formatBytes(Math.max(0, largest?.free ?? 0))}`,
        );
      }
      continue;
    }
    free.set(best.pool, best.free - r.bytes);
    granted[i] = { name: r.name, pool: best.pool, bytes: r.bytes };
  }
  if (messages.length > 0) return { ok: false, messages };
  return { ok: true, grants: granted.filter((g): g is VolumeGrant => g !== undefined) };
}
