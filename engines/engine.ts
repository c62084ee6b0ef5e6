/**
 * The engine interface: what a host's agent uses to run workloads. Three implementations pass
 * one conformance suite (test/conformance/engine.ts): `DockerEngine` (engines/docker.ts),
 * `ProcessEngine` (engines/process.ts, the embedded default without Docker) and `SimEngine`
 * (engines/sim.ts, deterministic, for the simulator).
 *
 * Invariant 5 ("truth is the engine"): `list()` reports what actually runs, with the resources the
 * engine actually applies, so the agent can re-derive its ledger after any crash. Every call is
 * keyed by the shoal workload id; an engine only ever sees and touches workloads of its own host
 * (label `shoal.host=<hostId>`). Restart policy is shoal's business, never the engine's.
 *
 * This module depends on nothing else in the repo (engines/ sits below node/).
 */

/** One GPU device (whole = 1000 milli, or a fraction of one device). */
export interface GpuShare {
  /** Device id as the host names it (index "0" or a UUID). */
  device: string;
  /** 1..1000. Docker binds whole devices; a fraction only shares the device, it is not enforced. */
  milli: number;
}

/** What a workload may use. Absent / 0 means unbounded in that dimension. */
export interface Resources {
  /** CPU in millicores (1000 = one core), enforced as a CFS quota plus proportional shares. */
  cpuMilli?: number;
  /** Cores the workload is bound to (whole cores). Empty or absent = not bound. */
  cpuset?: number[];
  /** Memory limit in bytes (no swap on top). */
  memoryBytes?: number;
  /** GPU devices made visible to the workload. */
  gpus?: GpuShare[];
}

export interface WorkloadSpec {
  /** Shoal workload id: the handle for every engine call. Unique on a host. */
  id: string;
  deployId: string;
  /** Must equal the engine's own host id. */
  hostId: string;
  /** Container image (docker, sim). Never pulled: it must already be present in the engine. */
  image?: string;
  /** argv[0..] (no shell). Docker: replaces the image's entrypoint when set. Process: required. */
  command?: string[];
  /** Appended to `command` (docker without `command`: replaces the image's CMD). */
  args?: string[];
  env?: Record<string, string>;
  /** Working directory (process engine: must exist on the host). */
  workdir?: string;
  /** Extra labels; the `shoal.*` keys are reserved and set by the engine. */
  labels?: Record<string, string>;
  resources?: Resources;
  /** User to run as (docker: name, uid or uid:gid). The process engine refuses it. */
  user?: string;
  /** Filesystem mounts (docker). The process engine refuses them. */
  mounts?: Mount[];
  /**
   * Host ports the workload publishes. Non-empty = host networking: the workload listens on these
   * ports of the host itself (docker `NetworkMode: host`; a process is never isolated; the sim
   * records them). Empty or absent = no network (docker `NetworkMode: none`).
   */
  ports?: PublishedPort[];
}

/** A host port a workload listens on (host networking: no mapping, the port is the host's). */
export interface PublishedPort {
  /** 1..65535. */
  port: number;
  protocol: 'tcp' | 'udp';
}

/** A filesystem mount: a host path (bind), a named or anonymous volume, or a tmpfs. */
export interface Mount {
  type: 'bind' | 'volume' | 'tmpfs';
  /** bind: absolute host path; volume: name (absent = anonymous); tmpfs: none. */
  source?: string;
  /** Absolute path inside the workload. */
  target: string;
  readOnly?: boolean;
  /** tmpfs size limit in bytes. */
  sizeBytes?: number;
}

export type WorkloadState = 'created' | 'running' | 'exited';

/** What an engine really enforces for one workload (not what was asked). */
export interface Enforcement {
  cpu: boolean;
  cpuset: boolean;
  memory: boolean;
  gpus: boolean;
  /** Human-readable reasons for anything requested but not enforced. */
  notes: string[];
}

export interface WorkloadInfo {
  id: string;
  deployId: string;
  hostId: string;
  /** All labels, including `shoal.workload`, `shoal.deploy`, `shoal.host`. */
  labels: Record<string, string>;
  state: WorkloadState;
  /** Set once exited. -1 when the engine lost it (e.g. the host rebooted under a process). */
  exitCode?: number;
  /** Exited because the memory limit was hit. */
  oomKilled?: boolean;
  /** The exit code could not be recovered (see `exitCode` = -1). */
  lost?: boolean;
  /** Epoch milliseconds. */
  createdAt: number;
  startedAt?: number;
  finishedAt?: number;
  /** Host pid of the workload's main process while running (when the engine knows it). */
  pid?: number;
  /** The spec as created, with `resources` replaced by what is applied now (after updates). */
  spec: WorkloadSpec;
  enforced: Enforcement;
  /** Engine-specific reference (container id, state directory, ...). */
  ref: string;
}

export interface LogLine {
  stream: 'stdout' | 'stderr';
  /** Without the trailing newline. */
  line: string;
  /** Epoch milliseconds (see docs/engines.md for each engine's precision). */
  ts: number;
}

export interface LogOptions {
  /** Only the last `tail` lines of history (per engine: of the merged stream). */
  tail?: number;
  /** Keep streaming new lines until the workload exits or `signal` aborts. */
  follow?: boolean;
  /** Only lines written at or after this epoch-ms instant. */
  since?: number;
  signal?: AbortSignal;
}

export interface Stats {
  /** Average CPU use in millicores since the previous `stats` call (or a short sample window). */
  cpuMilli: number;
  memoryBytes: number;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export type EngineEvent =
  | { type: 'started'; id: string; ts: number }
  | { type: 'exited'; id: string; ts: number; exitCode: number; oomKilled: boolean }
  | { type: 'oom'; id: string; ts: number }
  | { type: 'removed'; id: string; ts: number }
  /** Reserved: health checks are not implemented by any engine yet. */
  | { type: 'health-changed'; id: string; ts: number; health: 'starting' | 'healthy' | 'unhealthy' };

export type EngineEventListener = (event: EngineEvent) => void;

export type EngineKind = 'docker' | 'process' | 'sim';

export interface EngineCapabilities {
  kind: EngineKind;
  /** Runs `image` workloads. */
  images: boolean;
  /** Limits this engine can enforce on this host right now. */
  enforces: { cpu: boolean; cpuset: boolean; memory: boolean; gpus: boolean };
}

export interface Engine {
  readonly hostId: string;
  readonly capabilities: EngineCapabilities;

  /** Create (not start). `conflict` if the id exists, `image-not-found` / `command-not-found` when
   * the engine can tell now, `invalid-spec` for a malformed spec. */
  create(spec: WorkloadSpec): Promise<WorkloadInfo>;
  /** Start a created workload; a no-op when running; `conflict` once exited (create a new one). */
  start(id: string): Promise<void>;
  /** SIGTERM, then SIGKILL after `timeoutMs` (default 10 s). Resolves once it has exited;
   * a no-op for a workload that is not running. */
  stop(id: string, opts?: { timeoutMs?: number }): Promise<void>;
  /** `conflict` when running unless `force` (which kills it first). */
  remove(id: string, opts?: { force?: boolean }): Promise<void>;
  inspect(id: string): Promise<WorkloadInfo>;
  /** Every workload of this host (label shoal.host=<hostId>), whatever its state. */
  list(): Promise<WorkloadInfo[]>;
  logs(id: string, opts?: LogOptions): AsyncIterable<LogLine>;
  stats(id: string): Promise<Stats>;
  /** Run a command inside the workload (its cwd, env, limits). `not-running` unless running;
   * `timeout` after `timeoutMs` (default 30 s; the command is killed where the engine can). */
  exec(id: string, cmd: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Change limits live. Fields present are applied; absent ones stay; 0 / [] lifts a limit. */
  update(id: string, resources: Resources): Promise<WorkloadInfo>;
  /** Resolves with the exit code once the workload has exited (immediately if it has). */
  wait(id: string): Promise<number>;
  /** Events for this host's workloads. Returns the unsubscribe function. */
  subscribe(listener: EngineEventListener): () => void;
  /** Release connections, timers and watchers. Workloads keep running. */
  close(): Promise<void>;
}

export type EngineErrorCode =
  | 'not-found'
  | 'image-not-found'
  | 'command-not-found'
  | 'conflict'
  | 'not-running'
  | 'invalid-spec'
  | 'unsupported'
  | 'unavailable'
  | 'timeout'
  | 'internal';

export class EngineError extends Error {
  override readonly name = 'EngineError';
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    readonly details: { id?: string; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
  }
}

export function isEngineError(err: unknown, code?: EngineErrorCode): err is EngineError {
  return err instanceof EngineError && (code === undefined || err.code === code);
}

export const notFound = (id: string): EngineError =>
  new EngineError('not-found', `workload ${id} not found on this host`, { id });

export const imageNotFound = (image: string, id?: string): EngineError =>
  new EngineError(
    'image-not-found',
    `image ${image} is not present in the local engine; shoal never pulls — import or build it`,
    { id },
  );

/** Minimal structural logger (pino and node/core's Logger fit it). */
export interface EngineLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: EngineLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** Label keys set on every workload. */
export const LABEL_WORKLOAD = 'shoal.workload';
export const LABEL_DEPLOY = 'shoal.deploy';
export const LABEL_HOST = 'shoal.host';

/** The full label set of a workload: user labels plus the reserved shoal.* ones. */
export function workloadLabels(spec: WorkloadSpec): Record<string, string> {
  return {
    ...(spec.labels ?? {}),
    [LABEL_WORKLOAD]: spec.id,
    [LABEL_DEPLOY]: spec.deployId,
    [LABEL_HOST]: spec.hostId,
  };
}

/** Turn a subscription into an async iterable (ends when `signal` aborts). */
export function engineEvents(engine: Engine, signal?: AbortSignal): AsyncIterable<EngineEvent> {
  return {
    [Symbol.asyncIterator]() {
      const buffered: EngineEvent[] = [];
      let wake: (() => void) | undefined;
      let done = signal?.aborted ?? false;
      const unsubscribe = engine.subscribe((e) => {
        buffered.push(e);
        wake?.();
      });
      const finish = () => {
        done = true;
        unsubscribe();
        wake?.();
      };
      signal?.addEventListener('abort', finish, { once: true });
      return {
        async next(): Promise<IteratorResult<EngineEvent>> {
          while (buffered.length === 0 && !done) {
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
            wake = undefined;
          }
          const e = buffered.shift();
          if (e !== undefined) return { value: e, done: false };
          return { value: undefined, done: true };
        },
        async return(): Promise<IteratorResult<EngineEvent>> {
          finish();
          return { value: undefined, done: true };
        },
      };
    },
  };
}
