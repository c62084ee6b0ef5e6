import type { Clock, Logger, Timer } from './io.ts';

/**
 * Per-workload health checks (sans-IO). `parseHealthcheck` validates `spec.healthcheck` of a
 * deploy intent; `HealthMonitor` runs the checks of this host's running workloads on the injected
 * `Clock` through an injected `Prober` (real: node/io/prober.ts, simulated: sim/prober.ts) and
 * keeps a state machine per workload:
 *
 *   starting ──success──▶ healthy ──`retries` consecutive failures──▶ unhealthy
 *      │                     ▲                                          │
 *      └──`retries` failures─┼──────────────────────────────────────────┘
 *        (after startPeriod) └──────────────── success ─────────────────┘
 *
 * Failures of probes *started* within `startPeriod` of the workload's start do not count (a slow
 * starter is not unhealthy); a success at any time makes it healthy. The first probe runs as soon
 * as a workload is monitored, the next one `interval` ms after the previous one finished — so
 * probes of one workload never overlap (Docker's schedule, Kubernetes' zero initial delay).
 * See docs/engines.md, "Health checks and hooks".
 */

export type HealthStatus = 'starting' | 'healthy' | 'unhealthy';

export type HealthCheck =
  | (HealthCheckTiming & { type: 'tcp'; port: number })
  | (HealthCheckTiming & {
      type: 'http';
      port: number;
      /** Starts with '/'; printable ASCII, no spaces. Default '/'. */
      path: string;
      /** Inclusive range of statuses that count as healthy. Default 200..399. */
      expectStatus: { min: number; max: number };
    })
  | (HealthCheckTiming & { type: 'exec'; command: string[] });

export interface HealthCheckTiming {
  /** Ms between the end of one probe and the start of the next. Default 10000. */
  interval: number;
  /** Ms a probe may take; longer is a failure. Default 2000. */
  timeout: number;
  /** Consecutive counted failures that make a workload unhealthy. Default 3. */
  retries: number;
  /** Ms after the workload's start during which failures do not count. Default 0. */
  startPeriod: number;
}

export const HEALTHCHECK_DEFAULTS = {
  interval: 10_000,
  timeout: 2_000,
  retries: 3,
  startPeriod: 0,
  path: '/',
  expectStatus: { min: 200, max: 399 },
} as const;

/** Upper bound of every duration field (one day): a typo must not park a timer for years. */
export const MAX_DURATION_MS = 86_400_000;
export const MAX_RETRIES = 1_000;
const MAX_ARGV = 256;
const MAX_ARG_CHARS = 4_096;
const MAX_PATH_CHARS = 2_048;

/** A malformed spec field; `field` is the full path (`spec.healthcheck.interval`). */
export class SpecFieldError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = 'SpecFieldError';
  }
}

type Obj = { readonly [k: string]: unknown };

export function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An object with only `allowed` keys (a typo such as `intervall` is an error, not a no-op). */
export function objectAt(v: unknown, field: string, allowed: readonly string[], what: string): Obj {
  if (!isObject(v)) throw new SpecFieldError(field, `expected an object ${what}`);
  for (const k of Object.keys(v).sort()) {
    if (!allowed.includes(k))
      throw new SpecFieldError(`${field}.${k}`, `unknown field (allowed: ${allowed.join(', ')})`);
  }
  return v;
}

export function intAt(v: unknown, field: string, min: number, max: number, dflt?: number): number {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max)
    throw new SpecFieldError(field, `expected an integer in ${min}..${max}`);
  return v;
}

/** A non-empty argv (no shell): non-empty strings without NUL, bounded in count and length. */
export function argvAt(v: unknown, field: string): string[] {
  if (!Array.isArray(v) || v.length === 0)
    throw new SpecFieldError(field, 'expected a non-empty list of strings (argv, no shell)');
  if (v.length > MAX_ARGV) throw new SpecFieldError(field, `at most ${MAX_ARGV} arguments`);
  return v.map((a, i) => {
    if (typeof a !== 'string') throw new SpecFieldError(`${field}[${i}]`, 'expected a string');
    if (i === 0 && a.length === 0) throw new SpecFieldError(`${field}[0]`, 'expected a command name');
    if (a.length > MAX_ARG_CHARS || a.includes('\0'))
      throw new SpecFieldError(`${field}[${i}]`, `at most ${MAX_ARG_CHARS} characters, no NUL`);
    return a;
  });
}

const CHECK_TYPES = ['tcp', 'http', 'exec'] as const;
const TIMING_KEYS = ['type', 'interval', 'timeout', 'retries', 'startPeriod'] as const;
const KEYS_BY_TYPE: Record<HealthCheck['type'], readonly string[]> = {
  tcp: [...TIMING_KEYS, 'port'],
  http: [...TIMING_KEYS, 'port', 'path', 'expectStatus'],
  exec: [...TIMING_KEYS, 'command'],
};
const PATH_RE = /^\/[\x21-\x7e]*$/;

/**
 * `spec.healthcheck` of an intent spec, validated and with defaults filled in; undefined when
 * absent. `path` names the spec itself (errors read `${path}.healthcheck.<field>`). Throws
 * SpecFieldError. Pure.
 */
export function parseHealthcheck(spec: unknown, path = 'spec'): HealthCheck | undefined {
  if (!isObject(spec)) throw new SpecFieldError(path, 'expected an object');
  const raw = spec.healthcheck;
  if (raw === undefined || raw === null) return undefined;
  const p = `${path}.healthcheck`;
  if (!isObject(raw)) throw new SpecFieldError(p, 'expected an object {type, ...}');
  const type = raw.type;
  if (typeof type !== 'string' || !(CHECK_TYPES as readonly string[]).includes(type))
    throw new SpecFieldError(`${p}.type`, `expected one of ${CHECK_TYPES.join(', ')}`);
  const t = type as HealthCheck['type'];
  const o = objectAt(raw, p, KEYS_BY_TYPE[t], `for a ${t} check`);
  const timing: HealthCheckTiming = {
    interval: intAt(o.interval, `${p}.interval`, 1, MAX_DURATION_MS, HEALTHCHECK_DEFAULTS.interval),
    timeout: intAt(o.timeout, `${p}.timeout`, 1, MAX_DURATION_MS, HEALTHCHECK_DEFAULTS.timeout),
    retries: intAt(o.retries, `${p}.retries`, 1, MAX_RETRIES, HEALTHCHECK_DEFAULTS.retries),
    startPeriod: intAt(
      o.startPeriod,
      `${p}.startPeriod`,
      0,
      MAX_DURATION_MS,
      HEALTHCHECK_DEFAULTS.startPeriod,
    ),
  };
  if (t === 'exec') return { type: t, command: argvAt(o.command, `${p}.command`), ...timing };
  const port = intAt(o.port, `${p}.port`, 1, 65_535);
  if (t === 'tcp') return { type: t, port, ...timing };
  let urlPath: string = HEALTHCHECK_DEFAULTS.path;
  if (o.path !== undefined) {
    if (typeof o.path !== 'string' || o.path.length > MAX_PATH_CHARS || !PATH_RE.test(o.path))
      throw new SpecFieldError(
        `${p}.path`,
        `expected a path starting with '/' (printable ASCII, no spaces, at most ${MAX_PATH_CHARS} characters)`,
      );
    urlPath = o.path;
  }
  return {
    type: t,
    port,
    path: urlPath,
    expectStatus: parseExpectStatus(o.expectStatus, `${p}.expectStatus`),
    ...timing,
  };
}

function parseExpectStatus(v: unknown, field: string): { min: number; max: number } {
  if (v === undefined) return { ...HEALTHCHECK_DEFAULTS.expectStatus };
  if (typeof v === 'number') {
    const code = intAt(v, field, 100, 599);
    return { min: code, max: code };
  }
  if (Array.isArray(v) && v.length === 2) {
    const min = intAt(v[0], `${field}[0]`, 100, 599);
    const max = intAt(v[1], `${field}[1]`, 100, 599);
    if (min > max) throw new SpecFieldError(field, `empty range ${min}..${max}`);
    return { min, max };
  }
  throw new SpecFieldError(field, 'expected a status code (200) or an inclusive range [200, 399]');
}

/** A canonical string for a check: equal checks, equal keys (whatever the key order). */
export function checkKey(c: HealthCheck): string {
  const base = [c.type, c.interval, c.timeout, c.retries, c.startPeriod];
  if (c.type === 'exec') return JSON.stringify([...base, c.command]);
  if (c.type === 'tcp') return JSON.stringify([...base, c.port]);
  return JSON.stringify([...base, c.port, c.path, c.expectStatus.min, c.expectStatus.max]);
}

/**
 * Runs one probe. Every method settles within about `timeoutMs` (the monitor enforces the timeout
 * on its Clock as well) and rejects with an Error whose message is the reason (connection
 * refused, timed out, not running, ...). A resolved HTTP status or exit code is judged by the
 * monitor, not the prober.
 */
export interface Prober {
  /** Resolves once a TCP connection to the workload's `port` is established. */
  tcp(workloadId: string, port: number, timeoutMs: number): Promise<void>;
  /** GET `path` on the workload's `port`; resolves with the status code of the response. */
  http(workloadId: string, port: number, path: string, timeoutMs: number): Promise<number>;
  /** Runs `argv` inside the workload; resolves with its exit code. */
  exec(workloadId: string, argv: string[], timeoutMs: number): Promise<number>;
}

export interface MonitoredWorkload {
  id: string;
  check: HealthCheck;
  /** Epoch ms the workload (this instance of it) started; the start period counts from here. */
  startedAt: number;
}

export interface WorkloadHealth {
  status: HealthStatus;
  /** Consecutive failures that counted (reset by a success). */
  failures: number;
  /** Reason of the latest failure; null after a success. */
  lastError: string | null;
  /** Clock time the latest probe finished (or timed out); null before the first. */
  lastCheckAt: number | null;
  /** Clock time `status` was entered. */
  since: number;
  /** Probes finished since monitoring (re)started. */
  checks: number;
}

export type HealthChangeListener = (id: string, status: HealthStatus, lastError: string | null) => void;

interface Entry {
  readonly id: string;
  readonly check: HealthCheck;
  readonly startedAt: number;
  readonly key: string;
  health: WorkloadHealth;
  /** Next probe. */
  timer: Timer | undefined;
  /** The monitor's deadline for the current probe. */
  deadline: Timer | undefined;
  /** Due to probe while a replaced entry's probe still runs: probe when that one settles. */
  awaitingSlot: boolean;
  /** Bumped per probe: a late result of an older probe is ignored. */
  probeSeq: number;
  /** False once removed or replaced: callbacks of a dead entry do nothing. */
  live: boolean;
}

const MAX_ERROR_CHARS = 300;

function reasonOf(err: unknown): string {
  const msg = err instanceof Error ? err.message : typeof err === 'string' ? err : String(err);
  const one = msg.replace(/\s+/g, ' ').trim() || 'probe failed';
  return one.length > MAX_ERROR_CHARS ? `${one.slice(0, MAX_ERROR_CHARS - 1)}…` : one;
}

/**
 * Runs the health checks of a set of workloads on a Clock. Deterministic under a virtual clock:
 * timers are created in workload-id order and results are applied in the order the prober's
 * promises settle (a simulated prober settles them on the same clock).
 */
export class HealthMonitor {
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<HealthChangeListener>();
  /** Workload id → the entry whose prober call has not settled yet (at most one per id). */
  private readonly inFlight = new Map<string, Entry>();
  private closed = false;

  constructor(private readonly deps: { clock: Clock; prober: Prober; log: Logger }) {}

  /**
   * The workloads to monitor now (typically: the running workloads that have a check). New ids
   * start with status `starting` and a probe at once; ids absent from `workloads` stop being
   * monitored (timers cancelled, late results ignored); an id whose check or startedAt changed
   * (a new instance, an edited check) starts over. Unchanged ids keep their state and schedule.
   */
  set(workloads: readonly MonitoredWorkload[]): void {
    if (this.closed) return;
    const want = new Map<string, MonitoredWorkload>();
    for (const w of workloads) {
      if (want.has(w.id)) throw new RangeError(`HealthMonitor.set: duplicate workload id ${w.id}`);
      want.set(w.id, w);
    }
    for (const id of [...this.entries.keys()].sort()) {
      const w = want.get(id);
      const e = this.entries.get(id)!;
      if (!w) {
        this.drop(e);
        this.deps.log.debug({ workload: id }, 'health: no longer monitored');
      } else if (e.key !== checkKey(w.check) || e.startedAt !== w.startedAt) {
        this.drop(e);
      }
    }
    for (const id of [...want.keys()].sort()) {
      if (this.entries.has(id)) continue;
      const w = want.get(id)!;
      const e: Entry = {
        id,
        check: w.check,
        startedAt: w.startedAt,
        key: checkKey(w.check),
        health: {
          status: 'starting',
          failures: 0,
          lastError: null,
          lastCheckAt: null,
          since: this.deps.clock.now(),
          checks: 0,
        },
        timer: undefined,
        deadline: undefined,
        awaitingSlot: false,
        probeSeq: 0,
        live: true,
      };
      this.entries.set(id, e);
      e.timer = this.deps.clock.setTimer(0, () => this.probe(e));
    }
  }

  /** Health of one monitored workload (a copy), or undefined when it is not monitored. */
  status(id: string): WorkloadHealth | undefined {
    const e = this.entries.get(id);
    return e ? { ...e.health } : undefined;
  }

  /** Health of every monitored workload, in id order (copies). */
  statuses(): Map<string, WorkloadHealth> {
    const out = new Map<string, WorkloadHealth>();
    for (const id of [...this.entries.keys()].sort()) out.set(id, { ...this.entries.get(id)!.health });
    return out;
  }

  /** Called on every status transition (not for the initial `starting`). Returns unsubscribe. */
  onChange(cb: HealthChangeListener): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  /** Stop everything (agent shutdown). Later `set` calls are ignored. */
  close(): void {
    this.closed = true;
    for (const e of [...this.entries.values()]) this.drop(e);
    this.listeners.clear();
  }

  private drop(e: Entry): void {
    e.live = false;
    e.timer?.cancel();
    e.deadline?.cancel();
    this.entries.delete(e.id);
  }

  private probe(e: Entry): void {
    e.timer = undefined;
    if (!e.live) return;
    const { clock } = this.deps;
    const startedProbeAt = clock.now();
    const holder = this.inFlight.get(e.id);
    if (holder === e) {
      // This entry's previous probe timed out but the prober has not given up on it yet. Never
      // start a second one beside it: count another failure and look again after the interval.
      this.settle(e, startedProbeAt, 'previous probe still running (the prober ignores its timeout)');
      return;
    }
    if (holder !== undefined) {
      // A probe of the entry this one replaced (check edited, instance restarted) still runs:
      // start as soon as it settles — but a hung one counts as a failure after our timeout.
      e.awaitingSlot = true;
      e.timer = clock.setTimer(e.check.timeout, () => {
        e.timer = undefined;
        if (!e.live || !e.awaitingSlot) return;
        e.awaitingSlot = false;
        this.settle(e, startedProbeAt, 'previous probe still running (the prober ignores its timeout)');
      });
      return;
    }
    const seq = ++e.probeSeq;
    const c = e.check;
    let done = false;
    const finish = (error: string | undefined): void => {
      if (done || !e.live || e.probeSeq !== seq) return;
      done = true;
      e.deadline?.cancel();
      e.deadline = undefined;
      this.settle(e, startedProbeAt, error);
    };
    const released = (): void => {
      if (this.inFlight.get(e.id) !== e) return;
      this.inFlight.delete(e.id);
      const successor = this.entries.get(e.id);
      if (successor && successor !== e && successor.awaitingSlot && successor.live) {
        successor.awaitingSlot = false;
        successor.timer?.cancel();
        this.probe(successor);
      }
    };
    this.inFlight.set(e.id, e);
    e.deadline = clock.setTimer(c.timeout, () => finish(`timed out after ${c.timeout} ms`));
    let run: Promise<string | undefined>;
    try {
      run = this.runCheck(e.id, c);
    } catch (err) {
      run = Promise.reject(err);
    }
    run.then(
      (error) => {
        released();
        finish(error);
      },
      (err: unknown) => {
        released();
        finish(reasonOf(err));
      },
    );
  }

  /** undefined = healthy, else the reason. */
  private async runCheck(id: string, c: HealthCheck): Promise<string | undefined> {
    const { prober } = this.deps;
    switch (c.type) {
      case 'tcp':
        await prober.tcp(id, c.port, c.timeout);
        return undefined;
      case 'http': {
        const code = await prober.http(id, c.port, c.path, c.timeout);
        if (code >= c.expectStatus.min && code <= c.expectStatus.max) return undefined;
        return `HTTP ${code} from ${c.path} (expected ${c.expectStatus.min}..${c.expectStatus.max})`;
      }
      case 'exec': {
        const code = await prober.exec(id, c.command, c.timeout);
        return code === 0 ? undefined : `${c.command[0]} exited with ${code}`;
      }
    }
  }

  private settle(e: Entry, startedProbeAt: number, error: string | undefined): void {
    const { clock, log } = this.deps;
    const h = e.health;
    const now = clock.now();
    h.lastCheckAt = now;
    h.checks++;
    let next: HealthStatus = h.status;
    if (error === undefined) {
      h.failures = 0;
      h.lastError = null;
      next = 'healthy';
    } else {
      h.lastError = error;
      const grace = h.status === 'starting' && startedProbeAt - e.startedAt < e.check.startPeriod;
      if (!grace) h.failures++;
      log.debug(
        { workload: e.id, err: error, failures: h.failures, grace },
        grace ? 'health: probe failed (start period)' : 'health: probe failed',
      );
      if (h.failures >= e.check.retries) next = 'unhealthy';
    }
    e.timer = clock.setTimer(e.check.interval, () => this.probe(e));
    if (next === h.status) return;
    const prev = h.status;
    h.status = next;
    h.since = now;
    const fields = { workload: e.id, from: prev, to: next, failures: h.failures, err: h.lastError };
    if (next === 'unhealthy') log.warn(fields, 'health: workload unhealthy');
    else log.info(fields, `health: workload ${next}`);
    for (const cb of [...this.listeners]) {
      try {
        cb(e.id, next, h.lastError);
      } catch (err) {
        log.error({ workload: e.id, err: reasonOf(err) }, 'health: change listener threw');
      }
    }
  }
}
