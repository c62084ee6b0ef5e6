/**
 * Plain-data types of the allocator. Everything here is JSON-serialisable: no classes, no Maps, no
 * `undefined`-only semantics that would not survive a round trip (optional fields mean "default").
 *
 * Units are integers throughout, so that the books never drift:
 *   - CPU and GPU in **milli** (1000 = one core / one whole device), see {@link SHARE_BASE};
 *   - memory, disk and volumes in **bytes**;
 *   - oversell ratios in **permille** (1000 = 1.0×, 1500 = 1.5×).
 *
 * These types are self-contained on purpose: `crdt/` describes gossiped host records in its own
 * terms and an adapter maps between the two.
 */

/** Integer thousandths of a CPU core or of one GPU device. */
export type Milli = number;
/** Integer bytes. */
export type Bytes = number;
/** Integer ratio in thousandths: 1000 = 1.0×. */
export type Permille = number;

/** Milli per whole CPU core and per whole GPU device (Eru's "share base"). */
export const SHARE_BASE = 1000;

/** Oversell ratio per dimension. Bound cores, volumes and GPUs are never oversold. */
export interface OversellRatios {
  /** Applies to the shared CPU pool (cores not bound to anyone). */
  cpu: Permille;
  memory: Permille;
  disk: Permille;
}

export interface CpuCapacity {
  /** Number of cores, indexed 0..cores-1. Each core holds {@link SHARE_BASE} milli. */
  cores: number;
  /**
   * Upper bound on the number of cores that may be *partially* bound at once (Eru's
   * `maxFragmentCores`). Absent or `null` = unlimited.
   */
  maxFragmentCores?: number | null;
}

/** A place on the host where named volumes are carved from (a directory, an LVM pool, a disk). */
export interface VolumePool {
  name: string;
  path?: string;
  bytes: Bytes;
}

/** One GPU device; its index is its position in {@link HostCapacity.gpus}. */
export interface GpuDevice {
  /** Model name, matched exactly by {@link GpuRequest.model} (e.g. "A100"). */
  model: string;
  memoryBytes: Bytes;
}

/** What a host has. */
export interface HostCapacity {
  cpu: CpuCapacity;
  memoryBytes: Bytes;
  diskBytes: Bytes;
  volumes: VolumePool[];
  gpus: GpuDevice[];
  /** Missing dimensions default to 1000 (no oversell). */
  oversell?: Partial<OversellRatios>;
}

export interface GpuUsage {
  milli: Milli;
  memoryBytes: Bytes;
}

/**
 * What a host has handed out: the sum of the allocations it runs. Derive it with `ledgerFrom`
 * from what the engine actually runs; never patch it by hand.
 */
export interface HostLedger {
  cpu: {
    /** Milli reserved by unbound (shared) workloads. */
    sharedMilli: Milli;
    /** Milli bound on each core, by core index. */
    cores: Milli[];
  };
  memoryBytes: Bytes;
  diskBytes: Bytes;
  /** Bytes used per volume pool name. */
  volumes: Record<string, Bytes>;
  /** Usage per GPU device index. */
  gpus: GpuUsage[];
  /**
   * Host ports held, by key `"<port>/<protocol>"` (e.g. `"80/tcp"`) → number of allocations
   * holding it (1 on a sound ledger; `checkNoOvercommit` reports more). Keys at 0 are removed, so
   * `release` is the exact inverse of `reserve`. Absent = none.
   */
  ports?: Record<string, number>;
}

/** A host as the allocator sees it: identity, labels, capacity and current books. */
export interface Host {
  id: string;
  labels: Record<string, string>;
  capacity: HostCapacity;
  ledger: HostLedger;
}

export interface CpuRequest {
  /** Reservation in milli. With `bind`, `milli / 1000` whole cores plus one fragment of `milli % 1000`. */
  milli: Milli;
  /** Bind to specific cores (cpuset). Bound cores are never oversold. */
  bind?: boolean;
  /** Tightens the host's `maxFragmentCores` for this placement. */
  maxFragmentCores?: number;
}

export interface VolumeRequest {
  /** Name of the volume inside the workload (unique per request). */
  name: string;
  bytes: Bytes;
  /** Require this pool; otherwise the allocator picks one (best fit). */
  pool?: string;
}

export interface GpuRequest {
  /**
   * Milli of GPU: `milli / 1000` whole devices plus, if `milli % 1000 > 0`, one fraction of a
   * device. E.g. 250 = a quarter of one device, 2000 = two whole devices.
   */
  milli: Milli;
  /** Exact model name every granted device must have. */
  model?: string;
  /**
   * Per-device memory: whole devices must have at least this much; a fraction reserves this much
   * of its device's memory.
   */
  memoryBytes?: Bytes;
}

export type PortProtocol = 'tcp' | 'udp';

/**
 * A host port the workload publishes. Workloads with published ports run with host networking, so
 * the port is the host's: at most one allocation per host may hold a given port/protocol.
 */
export interface PortRequest {
  /** 1..65535. */
  port: number;
  protocol: PortProtocol;
}

/** The reservation used for placement. */
export interface ResourceRequest {
  cpu: CpuRequest;
  memoryBytes: Bytes;
  diskBytes?: Bytes;
  volumes?: VolumeRequest[];
  gpu?: GpuRequest;
  /** Host ports (each port/protocol once). Absent or empty = none. */
  ports?: PortRequest[];
}

/** Limits handed to the engine (cgroup caps); never used for placement. Default = the request. */
export interface ResourceLimits {
  cpuMilli?: Milli;
  memoryBytes?: Bytes;
}

/** A label constraint, parsed from strings by `parseConstraint`. */
export type Constraint =
  | { op: 'eq' | 'ne'; key: string; value: string }
  | { op: 'in' | 'notin'; key: string; values: string[] }
  | { op: 'exists' | 'absent'; key: string };

/** Spread replicas evenly over the values of a host label. */
export interface SpreadSpec {
  /** Label key; default "zone". */
  label?: string;
}

/** Everything placement needs to know about one deploy. */
export interface PlacementRequest {
  deployId: string;
  resources: ResourceRequest;
  limits?: ResourceLimits;
  constraints?: Constraint[];
  spread?: SpreadSpec;
  /** Hard cap on replicas of this deploy per host. */
  maxPerHost?: number;
  /** Soft: prefer hosts running fewer replicas of this deploy. */
  antiAffinity?: boolean;
}

export interface CoreGrant {
  index: number;
  milli: Milli;
}

export interface VolumeGrant {
  name: string;
  pool: string;
  bytes: Bytes;
}

export interface GpuGrant {
  index: number;
  milli: Milli;
  memoryBytes: Bytes;
}

/** The exact resources one replica holds on one host. */
export interface Allocation {
  cpu: {
    sharedMilli: Milli;
    /** Bound cores, ascending index. */
    cores: CoreGrant[];
  };
  memoryBytes: Bytes;
  diskBytes: Bytes;
  /** In request order. */
  volumes: VolumeGrant[];
  /** Ascending device index. */
  gpus: GpuGrant[];
  /** Host ports held, in request order. Absent when the request has none. */
  ports?: PortRequest[];
  /** What the engine enforces. */
  limits: { cpuMilli: Milli; memoryBytes: Bytes };
}

export type StrategyKind = 'binpack' | 'spread' | 'auto' | 'global' | 'fill' | 'each';

/**
 * Placement strategy. For `fill` and `each` the `replicas` argument of `plan`/`bid` is the
 * per-host count N (Eru's `count`); `hostLimit` caps the number of hosts (Eru's `nodesLimit`,
 * absent = every eligible host).
 */
export type Strategy =
  | { kind: 'binpack' }
  | { kind: 'spread' }
  | { kind: 'auto' }
  | { kind: 'global' }
  | { kind: 'fill'; hostLimit?: number }
  | { kind: 'each'; hostLimit?: number };

/** Replicas of the deploy already running (or awarded), per host. */
export interface ExistingPlacement {
  hostId: string;
  count: number;
  /** Labels of that host; needed for zone spread when the host is not in the candidate list. */
  labels?: Record<string, string>;
}

/** A request shape that is common in the cluster, with an integer weight (e.g. how often seen). */
export interface TypicalShape {
  resources: ResourceRequest;
  weight: number;
}

export interface PlacementContext {
  strategy: Strategy;
  existing: readonly ExistingPlacement[];
  /** Recent request shapes; enables fragmentation-aware scoring. */
  typical?: readonly TypicalShape[];
  /** Weight of the fragmentation term in [0, 1]; default 0.5 when `typical` is non-empty. */
  fragmentationWeight?: number;
}

export type Dimension =
  | 'request'
  | 'label'
  | 'max-per-host'
  | 'cpu'
  | 'memory'
  | 'disk'
  | 'volume'
  | 'gpu'
  | 'port';

export interface Failure {
  dimension: Dimension;
  /** User-readable, starts with the dimension: "memory: need 2.0 GiB, free 1.5 GiB". */
  message: string;
}

export type Feasibility =
  | { ok: true; allocation: Allocation }
  | { ok: false; reason: string; failures: Failure[] };

export type Bid =
  | {
      ok: true;
      hostId: string;
      score: number;
      allocations: Allocation[];
      /**
       * Why the host offers fewer allocations than asked (e.g. `port 80/tcp: in use` after the
       * first, or `max-per-host: …`); absent when it offers all.
       */
      short?: string;
    }
  | {
      ok: false;
      hostId: string;
      reason: string;
      /** First failing dimension: 'label' and 'request' mean the host is not eligible at all. */
      dimension: Dimension;
    };

export interface HostPlacement {
  hostId: string;
  count: number;
  allocations: Allocation[];
}

export interface Plan {
  /** Ascending hostId. */
  placements: HostPlacement[];
  /** Replicas that found no host. */
  unplaced: number;
  /** Why each rejected host was rejected (last evaluation), keyed by hostId in ascending order. */
  reasons: Record<string, string>;
}

/** A broken invariant found by `checkNoOvercommit`. */
export interface Violation {
  /**
   * "cpu.shared", "cpu.core[3]", "memory", "disk", "volume[ssd]", "gpu[1].milli", "gpu[1].memory",
   * "port[80/tcp]".
   */
  dimension: string;
  used: number;
  limit: number;
  message: string;
}
