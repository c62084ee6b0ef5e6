/**
 * Plain-data types of the cluster state. Everything here is JSON-serialisable (no classes, no
 * Maps, no undefined-valued required fields) so that `allocator/` and the HTTP API can consume
 * it directly. Records are treated as immutable once handed to a table.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** One GPU device of a host. */
export interface Gpu {
  /** Device index on the host (0-based, unique per host). */
  index: number;
  model: string;
  /** Device memory in bytes. */
  memory: number;
}

/** Oversell ratio per dimension (>= 1; 1 = no oversell). Bound cores are never oversold. */
export interface Oversell {
  cpu: number;
  memory: number;
  disk: number;
  gpu: number;
}

/** What a host offers. */
export interface Capacity {
  /** Total CPU in millicores (cores × 1000 unless restricted). */
  cpuMilli: number;
  /** Number of cores (indices 0..cores-1 may be bound). */
  cores: number;
  /** Bytes. */
  memory: number;
  /** Bytes. */
  disk: number;
  gpus: Gpu[];
  /** Host labels, including `zone`. The host's labels live here only (HostRecord has no copy). */
  labels: Record<string, string>;
  oversell: Oversell;
}

/** Share of one GPU device, in milli of the device (1000 = whole device). */
export interface GpuShare {
  index: number;
  milli: number;
}

/** A host port held by a workload (published with host networking). */
export interface PortHeld {
  /** 1..65535. */
  port: number;
  protocol: 'tcp' | 'udp';
}

/** A usage vector (what a workload uses, or what a host has allocated in total). */
export interface Resources {
  cpuMilli: number;
  /** Whole cores bound exclusively (indices, ascending, unique). */
  cores: number[];
  memory: number;
  disk: number;
  /** Per-device shares (ascending index, unique). */
  gpus: GpuShare[];
  /**
   * Host ports held (each port/protocol once). Absent = none. Lets coordinators leave out hosts
   * whose ports are taken, so a pending replica shows `port 80/tcp: in use`.
   */
  ports?: PortHeld[];
}

export type WorkloadStatus = 'pending' | 'starting' | 'running' | 'stopping' | 'exited' | 'failed';
export const WORKLOAD_STATUSES: readonly WorkloadStatus[] = [
  'pending',
  'starting',
  'running',
  'stopping',
  'exited',
  'failed',
];

export type EngineKind = 'docker' | 'process' | 'sim';
export const ENGINE_KINDS: readonly EngineKind[] = ['docker', 'process', 'sim'];

/** One replica of a deploy, as its host reports it. */
export interface WorkloadRecord {
  id: string;
  deployId: string;
  /** Replica index within the deploy (0-based). */
  replica: number;
  /**
   * Award generation of this claim on (deployId, replica): a re-auction (the previous holder died)
   * awards generation + 1. Of two live claims on one replica the higher generation wins, then the
   * lower host id; the loser stops its copy (exactly-once at rest).
   */
  gen: number;
  resources: Resources;
  status: WorkloadStatus;
  engine: EngineKind;
  /** Host clock, ms since the epoch; null until started. Informational. */
  startedAt: number | null;
  exitCode: number | null;
  /** Health check verdict (null: no check configured, or not running). */
  health: 'starting' | 'healthy' | 'unhealthy' | null;
  /** Hash of the deploy template the replica runs (rolling updates watch it); absent until known. */
  version?: string;
  /** Restarts of this replica since it was placed here (restart policy, job retries). */
  restarts?: number;
  /** Why the replica is not running (e.g. the image does not exist), when known. */
  error?: string;
}

/**
 * A host's own record. Single writer (the host): merged by max `version`.
 * `updatedAt` is the writer's clock (informational only; never used to order records).
 */
export interface HostRecord {
  id: string;
  version: number;
  deleted: false;
  addrs: string[];
  capacity: Capacity;
  allocated: Resources;
  workloads: WorkloadRecord[];
  draining: boolean;
  updatedAt: number;
}

/** Removal of a long-dead host, written by any agent at a version above the last record. */
export interface HostTombstone {
  id: string;
  version: number;
  deleted: true;
  /** Clock of the agent that removed the host; the GC horizon is measured against it. */
  updatedAt: number;
}

export type HostEntry = HostRecord | HostTombstone;

/**
 * What changed in a host's record from version `base` to `version` (crdt/patch.ts): only the
 * host publishes patches of its own record; a receiver holding `base` rebuilds the new version.
 * Absent top-level fields are unchanged; `del` lists workload ids removed from the base, `put`
 * the workloads added or changed with their index in the new record (ascending).
 */
export interface HostPatch {
  id: string;
  version: number;
  base: number;
  updatedAt: number;
  addrs?: string[];
  capacity?: Capacity;
  allocated?: Resources;
  draining?: boolean;
  del: string[];
  put: [index: number, workload: WorkloadRecord][];
}

/** Hybrid logical clock stamp: [wall ms, counter, actor]. Totally ordered, unique per write. */
export type Stamp = readonly [wall: number, counter: number, actor: string];

/** The user-editable fields of a deploy intent. */
export interface IntentFields {
  name: string;
  /** Opaque JSON object; its top-level keys are separately mergeable. */
  spec: JsonObject;
  replicas: number;
  strategy: string;
}

/** A deploy intent as materialised from its registers. */
export interface DeployIntent extends IntentFields {
  id: string;
  /** Largest stamp of any register: grows with every edit, identical on converged agents. */
  revision: Stamp;
}

/**
 * One last-writer-wins register on the wire: `[key, stamp]` = key removed (spec keys only),
 * `[key, stamp, value]` = key set. Keys: `name`, `replicas`, `strategy`, `spec.<top-level key>`.
 */
export type RegisterWire =
  | readonly [key: string, stamp: Stamp]
  | readonly [key: string, stamp: Stamp, value: Json];

/** A deploy's registers (full state or a delta); `deleted` set = removed (delete wins). */
export interface IntentWire {
  id: string;
  fields: RegisterWire[];
  deleted: Stamp | null;
}
