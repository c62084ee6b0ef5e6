/**
 * Ledger operations. A ledger is the sum of the allocations a host runs; `reserve` and `release`
 * are pure book-keeping (they never refuse), `fits` and `checkNoOvercommit` judge the result.
 * Derive a host's books with `ledgerFrom` from what its engine actually runs.
 */
import { boundMilli, schedulableSharedMilli } from './cpu.ts';
import { parsePortKey, portKey } from './ports.ts';
import type { Allocation, HostCapacity, HostLedger, Violation } from './types.ts';
import { SHARE_BASE } from './types.ts';
import { compareStrings, formatBytes, own, ratiosOf, scalePermille, setOwn } from './units.ts';

export function emptyLedger(capacity: HostCapacity): HostLedger {
  const volumes: Record<string, number> = {};
  const pools = [...capacity.volumes].sort((a, b) => compareStrings(a.name, b.name));
  for (const p of pools) setOwn(volumes, p.name, 0);
  return {
    cpu: { sharedMilli: 0, cores: new Array<number>(capacity.cpu.cores).fill(0) },
    memoryBytes: 0,
    diskBytes: 0,
    volumes,
    gpus: capacity.gpus.map(() => ({ milli: 0, memoryBytes: 0 })),
    ports: {},
  };
}

export function cloneLedger(ledger: HostLedger): HostLedger {
  const volumes: Record<string, number> = {};
  for (const k of Object.keys(ledger.volumes)) setOwn(volumes, k, own(ledger.volumes, k) ?? 0);
  return {
    cpu: { sharedMilli: ledger.cpu.sharedMilli, cores: ledger.cpu.cores.slice() },
    memoryBytes: ledger.memoryBytes,
    diskBytes: ledger.diskBytes,
    volumes,
    gpus: ledger.gpus.map((g) => ({ milli: g.milli, memoryBytes: g.memoryBytes })),
    ports: clonePorts(ledger.ports),
  };
}

function clonePorts(ports: Record<string, number> | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  if (ports !== undefined) for (const k of Object.keys(ports)) setOwn(out, k, own(ports, k) ?? 0);
  return out;
}

/** Adds (sign = 1) or removes (sign = -1) an allocation, in place. */
function applyInPlace(ledger: HostLedger, a: Allocation, sign: 1 | -1): void {
  ledger.cpu.sharedMilli += sign * a.cpu.sharedMilli;
  for (const g of a.cpu.cores) {
    while (ledger.cpu.cores.length <= g.index) ledger.cpu.cores.push(0);
    ledger.cpu.cores[g.index] = (ledger.cpu.cores[g.index] ?? 0) + sign * g.milli;
  }
  ledger.memoryBytes += sign * a.memoryBytes;
  ledger.diskBytes += sign * a.diskBytes;
  for (const v of a.volumes)
    setOwn(ledger.volumes, v.pool, (own(ledger.volumes, v.pool) ?? 0) + sign * v.bytes);
  for (const g of a.gpus) {
    while (ledger.gpus.length <= g.index) ledger.gpus.push({ milli: 0, memoryBytes: 0 });
    const u = ledger.gpus[g.index]!;
    u.milli += sign * g.milli;
    u.memoryBytes += sign * g.memoryBytes;
  }
  if (a.ports !== undefined && a.ports.length > 0) {
    const held = ledger.ports ?? {};
    ledger.ports = held;
    for (const p of a.ports) {
      const k = portKey(p);
      const n = (own(held, k) ?? 0) + sign;
      if (n === 0) delete held[k];
      else setOwn(held, k, n);
    }
  }
}

/** The ledger with `allocation` added. Pure; does not check capacity (see `fits`). */
export function reserve(ledger: HostLedger, allocation: Allocation): HostLedger {
  const next = cloneLedger(ledger);
  applyInPlace(next, allocation, 1);
  return next;
}

/** The ledger with `allocation` removed: the exact inverse of `reserve`. */
export function release(ledger: HostLedger, allocation: Allocation): HostLedger {
  const next = cloneLedger(ledger);
  applyInPlace(next, allocation, -1);
  return next;
}

/** Books of a host running exactly `allocations` (order does not matter). */
export function ledgerFrom(capacity: HostCapacity, allocations: readonly Allocation[]): HostLedger {
  const ledger = emptyLedger(capacity);
  for (const a of allocations) applyInPlace(ledger, a, 1);
  return ledger;
}

/** Whether adding `allocation` keeps every invariant of `checkNoOvercommit`. */
export function fits(capacity: HostCapacity, ledger: HostLedger, allocation: Allocation): boolean {
  return checkNoOvercommit(capacity, reserve(ledger, allocation)).length === 0;
}

/**
 * Every dimension in which `ledger` breaks capacity × oversell (bound cores, volumes and GPUs at
 * 1.0×), uses something the host does not have, is negative, or is not an integer.
 */
export function checkNoOvercommit(capacity: HostCapacity, ledger: HostLedger): Violation[] {
  const out: Violation[] = [];
  const ratios = ratiosOf(capacity);
  const check = (dimension: string, used: number, limit: number, fmt: (n: number) => string): void => {
    if (!Number.isSafeInteger(used)) {
      out.push({ dimension, used, limit, message: `${dimension}: usage ${used} is not an integer` });
    } else if (used < 0) {
      out.push({ dimension, used, limit, message: `${dimension}: usage ${fmt(used)} is negative` });
    } else if (used > limit) {
      out.push({
        dimension,
        used,
        limit,
        message: `${dimension}: ${fmt(used)} used > ${fmt(limit)} schedulable`,
      });
    }
  };
  const milli = (n: number): string => `${n} milli`;

  ledger.cpu.cores.forEach((used, i) => {
    check(`cpu.core[${i}]`, used, i < capacity.cpu.cores ? SHARE_BASE : 0, milli);
  });
  check('cpu.shared', ledger.cpu.sharedMilli, schedulableSharedMilli(capacity, boundMilli(ledger)), milli);
  check('memory', ledger.memoryBytes, scalePermille(capacity.memoryBytes, ratios.memory), formatBytes);
  check('disk', ledger.diskBytes, scalePermille(capacity.diskBytes, ratios.disk), formatBytes);

  const poolSize = new Map(capacity.volumes.map((p) => [p.name, p.bytes]));
  for (const name of Object.keys(ledger.volumes).sort(compareStrings)) {
    check(`volume[${name}]`, own(ledger.volumes, name) ?? 0, poolSize.get(name) ?? 0, formatBytes);
  }
  ledger.gpus.forEach((used, i) => {
    const device = capacity.gpus[i];
    check(`gpu[${i}].milli`, used.milli, device ? SHARE_BASE : 0, milli);
    check(`gpu[${i}].memory`, used.memoryBytes, device ? device.memoryBytes : 0, formatBytes);
  });
  // Host ports: each port/protocol is held by at most one allocation (host networking).
  const ports = ledger.ports ?? {};
  for (const key of Object.keys(ports).sort(compareStrings)) {
    const used = own(ports, key) ?? 0;
    const dimension = `port[${key}]`;
    if (parsePortKey(key) === null) {
      out.push({
        dimension,
        used,
        limit: 0,
        message: `${dimension}: not a port/protocol (1..65535, tcp|udp)`,
      });
    } else if (!Number.isSafeInteger(used)) {
      out.push({ dimension, used, limit: 1, message: `${dimension}: usage ${used} is not an integer` });
    } else if (used < 0) {
      out.push({ dimension, used, limit: 1, message: `${dimension}: usage ${used} is negative` });
    } else if (used > 1) {
      out.push({ dimension, used, limit: 1, message: `${dimension}: held by ${used} allocations (max 1)` });
    }
  }
  return out;
}
