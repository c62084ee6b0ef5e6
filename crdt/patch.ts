/**
 * Delta host records (docs/state.md, "Delta host records").
 *
 * A host republishes its record on every change of its workloads; sent whole, a record with n
 * workloads costs O(n) to encode, send, decode, validate and merge on every agent, although an
 * award or a status change touches one or two workloads. A `HostPatch` carries only what changed
 * between two versions of one host's record: the receiver that holds the `base` version rebuilds
 * the new version exactly (same fields, same workload order, so the same record hash) and merges
 * it like a full record. A receiver without the base cannot use the patch; it asks the host for
 * the full record (`want`), and anti-entropy (full records) is unchanged.
 *
 * Rebuilding: start from the base's workloads without the `del` ids (order kept); then for each
 * `[index, workload]` of `put` in ascending index order, replace the workload at `index` when it
 * has the same id, else insert it there. `diffHostRecord` only produces patches for which this
 * yields the new record (the workloads both versions hold keep their relative order, ids are
 * unique), and falls back to the full record otherwise.
 */
import { StateMessageError } from './codec.ts';
import type { Capacity, HostPatch, HostRecord, Resources, WorkloadRecord } from './types.ts';

/**
 * The patch from `base` to `next` (two versions of one host's record), or undefined when the
 * full record should be sent instead: nothing to diff against, an order change, duplicate ids,
 * or a patch that would not be much smaller than the record.
 */
export function diffHostRecord(base: HostRecord, next: HostRecord): HostPatch | undefined {
  if (base.id !== next.id || next.version <= base.version) return undefined;
  const nextIndex = new Map<string, number>();
  for (const [i, w] of next.workloads.entries()) nextIndex.set(w.id, i);
  if (nextIndex.size !== next.workloads.length) return undefined;
  const kept = new Map<string, WorkloadRecord>();
  const del: string[] = [];
  let last = -1;
  for (const w of base.workloads) {
    const at = nextIndex.get(w.id);
    if (kept.has(w.id)) return undefined; // duplicate id in the base
    if (at === undefined) {
      if (del.includes(w.id)) return undefined;
      del.push(w.id);
      continue;
    }
    if (at < last) return undefined; // relative order changed
    last = at;
    kept.set(w.id, w);
  }
  const put: [number, WorkloadRecord][] = [];
  next.workloads.forEach((w, i) => {
    const old = kept.get(w.id);
    if (old === undefined || !sameWorkload(old, w)) put.push([i, w]);
  });
  // A patch touching most workloads is no cheaper than the record.
  if (put.length + del.length > Math.max(4, next.workloads.length / 2)) return undefined;
  const patch: HostPatch = {
    id: next.id,
    version: next.version,
    base: base.version,
    updatedAt: next.updatedAt,
    del,
    put,
  };
  if (!sameStrings(base.addrs, next.addrs)) patch.addrs = next.addrs;
  if (!sameCapacity(base.capacity, next.capacity)) patch.capacity = next.capacity;
  if (!sameResources(base.allocated, next.allocated)) patch.allocated = next.allocated;
  if (base.draining !== next.draining) patch.draining = next.draining;
  return patch;
}

/**
 * Rebuild the record `patch` produces from `base` (the holder's live record at `patch.base`).
 * A patch inconsistent with the base (a deleted id it does not hold, an index out of range, a
 * duplicate id) throws StateMessageError naming `peer` and the field under `path`.
 */
export function applyHostPatch(
  base: HostRecord,
  patch: HostPatch,
  peer: string,
  path: string,
  maxWorkloads: number,
): HostRecord {
  if (base.id !== patch.id) throw new StateMessageError(peer, `${path}.id`, `base record is ${base.id}`);
  if (base.version !== patch.base)
    throw new StateMessageError(peer, `${path}.base`, `base version is ${base.version}, not ${patch.base}`);
  let workloads: WorkloadRecord[] = base.workloads;
  if (patch.del.length > 0) {
    const gone = new Set<string>();
    patch.del.forEach((id, j) => {
      if (gone.has(id)) throw new StateMessageError(peer, `${path}.del[${j}]`, `${id} listed twice`);
      gone.add(id);
    });
    workloads = workloads.filter((w) => !gone.has(w.id));
    if (workloads.length !== base.workloads.length - gone.size) {
      const held = new Set(base.workloads.map((w) => w.id));
      const j = patch.del.findIndex((id) => !held.has(id));
      throw new StateMessageError(peer, `${path}.del[${j}]`, 'not in the base record');
    }
  }
  if (patch.put.length > 0) {
    workloads = workloads.slice();
    const ids = new Set(workloads.map((w) => w.id));
    patch.put.forEach(([at, w], j) => {
      const p = `${path}.put[${j}]`;
      if (at > workloads.length)
        throw new StateMessageError(peer, `${p}[0]`, `index ${at} past the end (${workloads.length})`);
      if (workloads[at]?.id === w.id) {
        workloads[at] = w;
        return;
      }
      if (ids.has(w.id)) throw new StateMessageError(peer, `${p}[1].id`, `${w.id} is held at another index`);
      ids.add(w.id);
      workloads.splice(at, 0, w);
    });
  }
  if (workloads.length > maxWorkloads)
    throw new StateMessageError(
      peer,
      `${path}.put`,
      `record would hold ${workloads.length} workloads (> ${maxWorkloads})`,
    );
  return {
    id: base.id,
    version: patch.version,
    deleted: false,
    addrs: patch.addrs ?? base.addrs,
    capacity: patch.capacity ?? base.capacity,
    allocated: patch.allocated ?? base.allocated,
    workloads,
    draining: patch.draining ?? base.draining,
    updatedAt: patch.updatedAt,
  };
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function sameNumbers(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function sameResources(a: Resources, b: Resources): boolean {
  return (
    a === b ||
    (a.cpuMilli === b.cpuMilli &&
      a.memory === b.memory &&
      a.disk === b.disk &&
      sameNumbers(a.cores, b.cores) &&
      a.gpus.length === b.gpus.length &&
      a.gpus.every((g, i) => g.index === b.gpus[i]!.index && g.milli === b.gpus[i]!.milli) &&
      samePorts(a.ports, b.ports))
  );
}

/** Host ports (absent and empty are different records: the hash tells them apart). */
function samePorts(a: Resources['ports'], b: Resources['ports']): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && a.every((p, i) => p.port === b[i]!.port && p.protocol === b[i]!.protocol);
}

function sameCapacity(a: Capacity, b: Capacity): boolean {
  if (a === b) return true;
  const la = Object.keys(a.labels);
  return (
    a.cpuMilli === b.cpuMilli &&
    a.cores === b.cores &&
    a.memory === b.memory &&
    a.disk === b.disk &&
    a.gpus.length === b.gpus.length &&
    a.gpus.every((g, i) => {
      const h = b.gpus[i]!;
      return g.index === h.index && g.model === h.model && g.memory === h.memory;
    }) &&
    la.length === Object.keys(b.labels).length &&
    la.every((k) => Object.hasOwn(b.labels, k) && a.labels[k] === b.labels[k]) &&
    a.oversell.cpu === b.oversell.cpu &&
    a.oversell.memory === b.oversell.memory &&
    a.oversell.disk === b.oversell.disk &&
    a.oversell.gpu === b.oversell.gpu
  );
}

/** Every field of a workload record (the record hash covers them all; see crdt/hosts.ts). */
export function sameWorkload(a: WorkloadRecord, b: WorkloadRecord): boolean {
  return (
    a === b ||
    (a.id === b.id &&
      a.deployId === b.deployId &&
      a.replica === b.replica &&
      a.gen === b.gen &&
      a.status === b.status &&
      a.engine === b.engine &&
      a.startedAt === b.startedAt &&
      a.exitCode === b.exitCode &&
      a.health === b.health &&
      a.version === b.version &&
      a.restarts === b.restarts &&
      a.error === b.error &&
      sameResources(a.resources, b.resources))
  );
}
