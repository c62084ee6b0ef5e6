/** Shape checks with field paths, so bad input is rejected with a reason naming the field. */

import { validatePorts } from './ports.ts';
import type { HostCapacity, PlacementRequest, ResourceRequest, TypicalShape } from './types.ts';
import { isSafeNonNegativeInt } from './units.ts';

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function int(errors: string[], path: string, v: unknown, optional = false): void {
  if (optional && v === undefined) return;
  if (!isSafeNonNegativeInt(v)) errors.push(`${path}: must be a non-negative integer, got ${String(v)}`);
}

export function validateResources(r: ResourceRequest, path = 'resources'): string[] {
  const errors: string[] = [];
  int(errors, `${path}.cpu.milli`, r.cpu?.milli);
  int(errors, `${path}.cpu.maxFragmentCores`, r.cpu?.maxFragmentCores, true);
  int(errors, `${path}.memoryBytes`, r.memoryBytes);
  int(errors, `${path}.diskBytes`, r.diskBytes, true);
  const names = new Set<string>();
  (r.volumes ?? []).forEach((v, i) => {
    const p = `${path}.volumes[${i}]`;
    if (typeof v.name !== 'string' || !NAME.test(v.name)) errors.push(`${p}.name: must match ${NAME.source}`);
    else if (names.has(v.name)) errors.push(`${p}.name: duplicate volume name '${v.name}'`);
    else names.add(v.name);
    int(errors, `${p}.bytes`, v.bytes);
    if (v.pool !== undefined && (typeof v.pool !== 'string' || !NAME.test(v.pool))) {
      errors.push(`${p}.pool: must match ${NAME.source}`);
    }
  });
  if (r.gpu !== undefined) {
    int(errors, `${path}.gpu.milli`, r.gpu.milli);
    int(errors, `${path}.gpu.memoryBytes`, r.gpu.memoryBytes, true);
    if (r.gpu.model !== undefined && (typeof r.gpu.model !== 'string' || r.gpu.model === '')) {
      errors.push(`${path}.gpu.model: must be a non-empty string`);
    }
  }
  errors.push(...validatePorts(r.ports, `${path}.ports`));
  return errors;
}

export function validateRequest(req: PlacementRequest): string[] {
  const errors: string[] = [];
  if (typeof req.deployId !== 'string' || req.deployId === '')
    errors.push('deployId: must be a non-empty string');
  errors.push(...validateResources(req.resources));
  const lim = req.limits;
  if (lim !== undefined) {
    int(errors, 'limits.cpuMilli', lim.cpuMilli, true);
    int(errors, 'limits.memoryBytes', lim.memoryBytes, true);
    if (isSafeNonNegativeInt(lim.cpuMilli) && lim.cpuMilli < req.resources.cpu.milli) {
      errors.push(`limits.cpuMilli: ${lim.cpuMilli} is below the request of ${req.resources.cpu.milli}`);
    }
    if (isSafeNonNegativeInt(lim.memoryBytes) && lim.memoryBytes < req.resources.memoryBytes) {
      errors.push(
        `limits.memoryBytes: ${lim.memoryBytes} is below the request of ${req.resources.memoryBytes}`,
      );
    }
  }
  if (req.maxPerHost !== undefined && !(isSafeNonNegativeInt(req.maxPerHost) && req.maxPerHost >= 1)) {
    errors.push(`maxPerHost: must be an integer ≥ 1, got ${String(req.maxPerHost)}`);
  }
  if (req.spread?.label !== undefined && (typeof req.spread.label !== 'string' || req.spread.label === '')) {
    errors.push('spread.label: must be a non-empty string');
  }
  return errors;
}

export function validateCapacity(c: HostCapacity, path = 'capacity'): string[] {
  const errors: string[] = [];
  int(errors, `${path}.cpu.cores`, c.cpu?.cores);
  if (c.cpu?.maxFragmentCores !== undefined && c.cpu.maxFragmentCores !== null) {
    int(errors, `${path}.cpu.maxFragmentCores`, c.cpu.maxFragmentCores);
  }
  int(errors, `${path}.memoryBytes`, c.memoryBytes);
  int(errors, `${path}.diskBytes`, c.diskBytes);
  for (const dim of ['cpu', 'memory', 'disk'] as const) {
    const r = c.oversell?.[dim];
    if (r !== undefined && !(isSafeNonNegativeInt(r) && r >= 1)) {
      errors.push(`${path}.oversell.${dim}: must be an integer permille ≥ 1 (1000 = 1.0×), got ${String(r)}`);
    }
  }
  const names = new Set<string>();
  c.volumes.forEach((p, i) => {
    if (typeof p.name !== 'string' || !NAME.test(p.name))
      errors.push(`${path}.volumes[${i}].name: must match ${NAME.source}`);
    else if (names.has(p.name)) errors.push(`${path}.volumes[${i}].name: duplicate pool '${p.name}'`);
    else names.add(p.name);
    int(errors, `${path}.volumes[${i}].bytes`, p.bytes);
  });
  c.gpus.forEach((g, i) => {
    if (typeof g.model !== 'string' || g.model === '')
      errors.push(`${path}.gpus[${i}].model: must be a non-empty string`);
    int(errors, `${path}.gpus[${i}].memoryBytes`, g.memoryBytes);
  });
  return errors;
}

export function validateTypical(shapes: readonly TypicalShape[]): string[] {
  const errors: string[] = [];
  shapes.forEach((s, i) => {
    if (!(isSafeNonNegativeInt(s.weight) && s.weight >= 1)) {
      errors.push(`typical[${i}].weight: must be an integer ≥ 1, got ${String(s.weight)}`);
    }
    errors.push(...validateResources(s.resources, `typical[${i}].resources`));
  });
  return errors;
}
