/**
 * Feasibility: can this host take one more replica, and exactly which resources would it get?
 * Stages, each short-circuiting the next: request validity → placement constraints (labels,
 * max-per-host) → resources (every failing dimension is reported, in the order cpu, memory, disk,
 * volume, gpu, port).
 */
import { unmetConstraints } from './constraints.ts';
import { allocateCpu } from './cpu.ts';
import { allocateGpu } from './gpu.ts';
import { portsInUse } from './ports.ts';
import type {
  Allocation,
  Failure,
  Feasibility,
  Host,
  HostCapacity,
  HostLedger,
  PlacementContext,
  PlacementRequest,
  ResourceLimits,
  ResourceRequest,
} from './types.ts';
import { formatBytes, own, plural, ratiosOf, scalePermille } from './units.ts';
import { validateRequest } from './validate.ts';
import { allocateVolumes } from './volumes.ts';

export type AllocateResult = { ok: true; allocation: Allocation } | { ok: false; failures: Failure[] };

/**
 * The exact allocation of one replica of `resources` on a host with `ledger`, or every dimension
 * that does not fit. Deterministic; ties go to the lowest core / device index.
 */
export function allocate(
  capacity: HostCapacity,
  ledger: HostLedger,
  resources: ResourceRequest,
  limits?: ResourceLimits,
): AllocateResult {
  const failures: Failure[] = [];
  const ratios = ratiosOf(capacity);

  const cpu = allocateCpu(capacity, ledger, resources.cpu);
  if (!cpu.ok) failures.push({ dimension: 'cpu', message: cpu.message });

  const memFree = scalePermille(capacity.memoryBytes, ratios.memory) - ledger.memoryBytes;
  if (resources.memoryBytes > memFree) {
    failures.push({
      dimension: 'memory',
      message: `memory: need ${formatBytes(resources.memoryBytes)}, free ${formatBytes(Math.max(0, memFree))}`,
    });
  }
  const disk = resources.diskBytes ?? 0;
  const diskFree = scalePermille(capacity.diskBytes, ratios.disk) - ledger.diskBytes;
  if (disk > diskFree) {
    failures.push({
      dimension: 'disk',
      message: `disk: need ${formatBytes(disk)}, free ${formatBytes(Math.max(0, diskFree))}`,
    });
  }
  const volumes = allocateVolumes(capacity, ledger, resources.volumes);
  if (!volumes.ok) for (const message of volumes.messages) failures.push({ dimension: 'volume', message });

  const gpu = allocateGpu(capacity, ledger, resources.gpu);
  if (!gpu.ok) failures.push({ dimension: 'gpu', message: gpu.message });

  for (const message of portsInUse(ledger, resources.ports)) failures.push({ dimension: 'port', message });

  if (!cpu.ok || !volumes.ok || !gpu.ok || failures.length > 0) return { ok: false, failures };
  return {
    ok: true,
    allocation: {
      cpu: cpu.grant,
      memoryBytes: resources.memoryBytes,
      diskBytes: disk,
      volumes: volumes.grants,
      gpus: gpu.grants,
      ...(resources.ports !== undefined && resources.ports.length > 0
        ? { ports: resources.ports.map((p) => ({ port: p.port, protocol: p.protocol })) }
        : {}),
      limits: {
        cpuMilli: limits?.cpuMilli ?? resources.cpu.milli,
        memoryBytes: limits?.memoryBytes ?? resources.memoryBytes,
      },
    },
  };
}

/** Replicas of the deploy on this host and in this host's spread bucket. */
export interface DeployCounts {
  onHost: number;
  /** Replicas in hosts sharing this host's spread-label value; null if the host lacks the label. */
  inBucket: number | null;
}

export function spreadLabel(request: PlacementRequest): string | null {
  return request.spread === undefined ? null : (request.spread.label ?? 'zone');
}

/** Counts for `host` from the context's existing placements. */
export function countsFor(host: Host, request: PlacementRequest, ctx: PlacementContext): DeployCounts {
  const label = spreadLabel(request);
  const mine = label === null ? undefined : own(host.labels, label);
  let onHost = 0;
  let inBucket = 0;
  for (const e of ctx.existing) {
    if (e.hostId === host.id) onHost += e.count;
    if (mine === undefined || label === null) continue;
    const labels = e.hostId === host.id ? host.labels : (e.labels ?? {});
    if (own(labels, label) === mine) inBucket += e.count;
  }
  return { onHost, inBucket: mine === undefined ? null : inBucket };
}

/** Label and max-per-host checks (no resources). */
export function placementFailures(host: Host, request: PlacementRequest, onHost: number): Failure[] {
  const failures: Failure[] = unmetConstraints(request.constraints, host.labels).map((message) => ({
    dimension: 'label',
    message,
  }));
  if (request.maxPerHost !== undefined && onHost >= request.maxPerHost) {
    failures.push({ dimension: 'max-per-host', message: maxPerHostReason(request, onHost) });
  }
  return failures;
}

export function maxPerHostReason(request: PlacementRequest, onHost: number): string {
  return (
    `max-per-host: ${plural(onHost, 'replica')} of ${request.deployId} already on this host ` +
    `(max ${request.maxPerHost})`
  );
}

export function failed(failures: Failure[]): Feasibility {
  return { ok: false, failures, reason: failures.map((f) => f.message).join('; ') };
}

/** Can `host` take one more replica of `request`, given the deploy's placements in `ctx`? */
export function feasibility(host: Host, request: PlacementRequest, ctx: PlacementContext): Feasibility {
  const invalid = validateRequest(request);
  if (invalid.length > 0)
    return failed(invalid.map((e) => ({ dimension: 'request', message: `request: ${e}` })));
  const placement = placementFailures(host, request, countsFor(host, request, ctx).onHost);
  if (placement.length > 0) return failed(placement);
  const r = allocate(host.capacity, host.ledger, request.resources, request.limits);
  return r.ok ? { ok: true, allocation: r.allocation } : failed(r.failures);
}
