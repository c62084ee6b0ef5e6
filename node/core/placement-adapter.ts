import { parseConstraint } from '../../allocator/constraints.ts';
import { ledgerFrom } from '../../allocator/ledger.ts';
import { comparePorts, portKey } from '../../allocator/ports.ts';
import type {
  Allocation,
  Host,
  HostCapacity,
  PlacementRequest,
  PortRequest,
  ResourceRequest,
  Strategy,
} from '../../allocator/types.ts';
import { validateRequest } from '../../allocator/validate.ts';
import type { Capacity, DeployIntent, HostRecord, Json, Resources } from '../../crdt/types.ts';

/**
 * Maps between the gossiped cluster state (crdt/) and the allocator's pure types. Everything here
 * is a pure function.
 */

/** crdt capacity (ratios as floats) → allocator capacity (permille ratios). */
export function hostCapacity(c: Capacity): HostCapacity {
  return {
    cpu: { cores: c.cores, maxFragmentCores: null },
    memoryBytes: c.memory,
    diskBytes: c.disk,
    volumes: [],
    gpus: c.gpus
      .slice()
      .sort((a, b) => a.index - b.index)
      .map((g) => ({ model: g.model, memoryBytes: g.memory })),
    oversell: {
      cpu: Math.round(c.oversell.cpu * 1000),
      memory: Math.round(c.oversell.memory * 1000),
      disk: Math.round(c.oversell.disk * 1000),
    },
  };
}

/** An allocation as gossiped usage (crdt Resources): bound cores are those granted whole. */
export function resourcesOf(a: Allocation): Resources {
  const fragment = a.cpu.cores.reduce((n, g) => n + g.milli, 0);
  const r: Resources = {
    cpuMilli: a.cpu.sharedMilli + fragment,
    cores: a.cpu.cores.filter((g) => g.milli >= 1000).map((g) => g.index),
    memory: a.memoryBytes,
    disk: a.diskBytes,
    gpus: a.gpus.map((g) => ({ index: g.index, milli: g.milli })),
  };
  if (a.ports !== undefined && a.ports.length > 0)
    r.ports = a.ports.map((p) => ({ port: p.port, protocol: p.protocol }));
  return r;
}

/** Sum of usages (host ports: their union, ascending). */
export function sumResources(rs: readonly Resources[]): Resources {
  const cores = new Set<number>();
  const gpus = new Map<number, number>();
  const ports = new Map<string, PortRequest>();
  let cpuMilli = 0;
  let memory = 0;
  let disk = 0;
  for (const r of rs) {
    cpuMilli += r.cpuMilli;
    memory += r.memory;
    disk += r.disk;
    for (const c of r.cores) cores.add(c);
    for (const g of r.gpus) gpus.set(g.index, (gpus.get(g.index) ?? 0) + g.milli);
    for (const p of r.ports ?? []) ports.set(portKey(p), { port: p.port, protocol: p.protocol });
  }
  const out: Resources = {
    cpuMilli,
    cores: [...cores].sort((a, b) => a - b),
    memory,
    disk,
    gpus: [...gpus].sort((a, b) => a[0] - b[0]).map(([index, milli]) => ({ index, milli })),
  };
  if (ports.size > 0) out.ports = [...ports.values()].sort(comparePorts);
  return out;
}

const viewOf = new WeakMap<HostRecord, Host>();

/**
 * A remote host as a coordinator sees it from gossip: its ledger approximated from the gossiped
 * usage of its workloads (fragment cores are counted as shared CPU). Only used to pre-select
 * candidates; the host itself bids from its exact books.
 *
 * Memoised per record object (records are immutable; the allocator never changes a `Host`): a
 * coordinator ranks every live host each round, and a record with N workloads costs O(N) to
 * convert, so an unchanged record is converted once, not once per round.
 */
export function hostFromRecord(r: HostRecord): Host {
  let host = viewOf.get(r);
  if (host === undefined) {
    host = convertRecord(r);
    viewOf.set(r, host);
  }
  return host;
}

function convertRecord(r: HostRecord): Host {
  const capacity = hostCapacity(r.capacity);
  const allocations: Allocation[] = [];
  for (const w of r.workloads) {
    const res = w.resources;
    const whole = res.cores.length * 1000;
    allocations.push({
      cpu: {
        sharedMilli: Math.max(0, res.cpuMilli - whole),
        cores: res.cores.filter((i) => i < capacity.cpu.cores).map((index) => ({ index, milli: 1000 })),
      },
      memoryBytes: res.memory,
      diskBytes: res.disk,
      volumes: [],
      gpus: res.gpus
        .filter((g) => g.index < capacity.gpus.length)
        .map((g) => ({ index: g.index, milli: g.milli, memoryBytes: 0 })),
      // Host ports held: a coordinator leaves the host out for a request publishing one of them.
      ...(res.ports !== undefined && res.ports.length > 0 ? { ports: res.ports } : {}),
      limits: { cpuMilli: res.cpuMilli, memoryBytes: res.memory },
    });
  }
  return { id: r.id, labels: r.capacity.labels, capacity, ledger: ledgerFrom(capacity, allocations) };
}

export const BIDDING_STRATEGIES = ['binpack', 'spread', 'auto', 'global'] as const;

/** Per-host strategies (Eru's FILL/EACH): `replicas` counts per host, slots are (host, k). */
export function isPerHost(strategy: string): boolean {
  return strategy === 'fill' || strategy === 'each';
}

export interface PlacementSpec {
  request: PlacementRequest;
  strategy: Strategy;
}

export class IntentSpecError extends Error {
  constructor(
    readonly deployId: string,
    readonly field: string,
    readonly problem: string,
  ) {
    super(`deploy ${deployId}: ${field}: ${problem}`);
    this.name = 'IntentSpecError';
  }
}

function isObj(v: Json | undefined): v is { [k: string]: Json } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function int(deployId: string, v: Json | undefined, field: string, dflt?: number): number {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new IntentSpecError(deployId, field, 'expected a non-negative integer');
  }
  return v;
}

/**
 * The host ports of a spec's `ports` (`{target, published?, protocol?}`). Published ports run with
 * host networking: the workload listens on the host port itself, so `published` (when given) must
 * equal `target`, and `hostIp` cannot be honoured (the workload picks its own address).
 */
export function specPorts(deployId: string, ports: Json | undefined, field = 'spec.ports'): PortRequest[] {
  if (ports === undefined || ports === null) return [];
  if (!Array.isArray(ports)) throw new IntentSpecError(deployId, field, 'expected a list of ports');
  return ports.map((p, i) => {
    const at = `${field}[${i}]`;
    if (!isObj(p))
      throw new IntentSpecError(deployId, at, 'expected an object {target, published?, protocol?}');
    const target = p.target;
    if (typeof target !== 'number' || !Number.isInteger(target) || target < 1 || target > 65_535)
      throw new IntentSpecError(deployId, `${at}.target`, 'expected an integer in 1..65535');
    if (p.published !== undefined && p.published !== target)
      throw new IntentSpecError(deployId, `${at}.published`, publishedMismatch(target, p.published));
    if (p.hostIp !== undefined) throw new IntentSpecError(deployId, `${at}.hostIp`, HOST_IP_UNSUPPORTED);
    const protocol = p.protocol ?? 'tcp';
    if (protocol !== 'tcp' && protocol !== 'udp')
      throw new IntentSpecError(deployId, `${at}.protocol`, 'expected tcp or udp');
    return { port: target, protocol };
  });
}

/** Why `published` ≠ `target` is refused (shared by the intent validator and Compose). */
export function publishedMismatch(target: number, published: Json | undefined): string {
  return (
    `must equal target (${target}), got ${JSON.stringify(published)}: published ports use host ` +
    `networking, so the workload listens on the host port itself (no port mapping)`
  );
}

export const HOST_IP_UNSUPPORTED =
  'not supported: published ports use host networking, so the workload itself chooses the address ' +
  'it listens on (configure it to listen on that address)';

/**
 * The ports a deploy's replicas may hold: the spec's, plus — while a rollout is under way — the
 * ports of the stable template that replicas not yet updated still run (docs/deploys.md). Unique,
 * in spec order, then the stable template's.
 */
function requestPorts(id: string, spec: { [k: string]: Json }): PortRequest[] {
  const out = specPorts(id, spec.ports);
  const ro = spec.rollout;
  const stable = isObj(ro) && isObj(ro.stable) && isObj(ro.stable.template) ? ro.stable.template : undefined;
  if (stable === undefined) return out;
  let old: PortRequest[];
  try {
    old = specPorts(id, stable.ports, 'spec.rollout.stable.template.ports');
  } catch {
    return out; // a stable template accepted before host networking: its ports were never published
  }
  const seen = new Set(out.map(portKey));
  for (const p of old) if (!seen.has(portKey(p))) out.push(p);
  return out;
}

/**
 * The placement part of a deploy intent. The intent's `spec` carries (top-level keys, each its
 * own CRDT register): `resources` {cpu: {milli, bind?}, memoryBytes, diskBytes?, gpu?: {milli,
 * model?, memoryBytes?}}, `limits`?, `ports`? (host ports, see `specPorts`), `constraints`? (strings
 * like "zone in (a,b)"), `spread`? ({label?}), `maxPerHost`?, `antiAffinity`?. `strategy` is one of
 * BIDDING_STRATEGIES.
 */
export function placementSpec(intent: DeployIntent): PlacementSpec {
  const id = intent.id;
  const spec = intent.spec;
  const r = spec.resources;
  if (!isObj(r)) throw new IntentSpecError(id, 'spec.resources', 'expected an object');
  const cpu = r.cpu;
  if (!isObj(cpu)) throw new IntentSpecError(id, 'spec.resources.cpu', 'expected an object {milli, bind?}');
  const resources: ResourceRequest = {
    cpu: { milli: int(id, cpu.milli, 'spec.resources.cpu.milli') },
    memoryBytes: int(id, r.memoryBytes, 'spec.resources.memoryBytes'),
    diskBytes: int(id, r.diskBytes, 'spec.resources.diskBytes', 0),
  };
  if (cpu.bind === true) resources.cpu.bind = true;
  const ports = requestPorts(id, spec);
  if (ports.length > 0) resources.ports = ports;
  if (r.gpu !== undefined) {
    if (!isObj(r.gpu))
      throw new IntentSpecError(id, 'spec.resources.gpu', 'expected an object {milli, model?}');
    resources.gpu = { milli: int(id, r.gpu.milli, 'spec.resources.gpu.milli') };
    if (typeof r.gpu.model === 'string') resources.gpu.model = r.gpu.model;
    if (r.gpu.memoryBytes !== undefined)
      resources.gpu.memoryBytes = int(id, r.gpu.memoryBytes, 'spec.resources.gpu.memoryBytes');
  }
  const request: PlacementRequest = { deployId: id, resources };
  if (spec.constraints !== undefined) {
    if (!Array.isArray(spec.constraints))
      throw new IntentSpecError(id, 'spec.constraints', 'expected a list of strings');
    request.constraints = spec.constraints.map((c, i) => {
      if (typeof c !== 'string') throw new IntentSpecError(id, `spec.constraints[${i}]`, 'expected a string');
      const parsed = parseConstraint(c);
      if (!parsed.ok) throw new IntentSpecError(id, `spec.constraints[${i}]`, parsed.error.message);
      return parsed.constraint;
    });
  }
  if (spec.spread !== undefined) {
    if (!isObj(spec.spread)) throw new IntentSpecError(id, 'spec.spread', 'expected an object {label?}');
    request.spread = typeof spec.spread.label === 'string' ? { label: spec.spread.label } : {};
  }
  if (spec.maxPerHost !== undefined) request.maxPerHost = int(id, spec.maxPerHost, 'spec.maxPerHost');
  if (spec.antiAffinity === true) request.antiAffinity = true;
  const problems = validateRequest(request);
  if (problems.length > 0) throw new IntentSpecError(id, 'spec', problems.join('; '));
  const kind = intent.strategy;
  if (kind === 'fill' || kind === 'each') {
    // Per-host strategies: `replicas` is N per host; `spec.hostLimit` caps the hosts (absent = all).
    if (spec.hostLimit === undefined) return { request, strategy: { kind } };
    const hostLimit = int(id, spec.hostLimit, 'spec.hostLimit');
    if (hostLimit < 1) throw new IntentSpecError(id, 'spec.hostLimit', 'expected at least 1');
    return { request, strategy: { kind, hostLimit } };
  }
  if (!(BIDDING_STRATEGIES as readonly string[]).includes(kind)) {
    throw new IntentSpecError(
      id,
      'strategy',
      `expected one of ${[...BIDDING_STRATEGIES, 'fill', 'each'].join(', ')}`,
    );
  }
  return { request, strategy: { kind } as Strategy };
}
