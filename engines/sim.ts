/**
 * SimEngine: a deterministic simulated engine for the simulator. No real timers, no Math.random,
 * no Date.now: time comes from an injected clock, chance from an injected seeded PRNG, so a run
 * depends only on inputs and the seed (invariant 4).
 *
 * A `SimMachine` is what "docker on one machine" would be: its workloads outlive any agent, so an
 * agent crash + restart is modelled by closing a SimEngine and opening a new one on the same
 * machine (re-adoption). Several hosts may share a machine; each engine sees only its host's.
 *
 * Behaviour of a workload:
 * - `command: simProgram({...})` runs a scripted program (what it prints, how long it runs, its
 *   exit code, whether it ignores SIGTERM, its CPU / memory use).
 * - any other command gets a random behaviour: with `failureProbability` it crashes after a
 *   lifetime drawn from `lifetimeMs` with an exit code from `crashExitCodes`; else it runs until
 *   stopped. Its CPU / memory use are drawn once.
 * - a memory use above the memory limit (at start or after an `update`) is an OOM kill (137).
 */
import {
  type Engine,
  type EngineCapabilities,
  EngineError,
  type EngineEvent,
  type EngineEventListener,
  type ExecResult,
  imageNotFound,
  type LogLine,
  type LogOptions,
  notFound,
  type Resources,
  type Stats,
  type WorkloadInfo,
  type WorkloadSpec,
  type WorkloadState,
  workloadLabels,
} from './engine.ts';
import { AsyncQueue, mergeResources, normalizeResources, validateResources, validateSpec } from './util.ts';

/** Structural twins of node/core/io.ts Clock and Random (engines/ must not import node/). */
export interface SimClock {
  now(): number;
  setTimer(delayMs: number, fn: () => void): { cancel(): void };
}
export interface SimRandom {
  next(): number;
  int(maxExclusive: number): number;
}

/** A scripted workload (JSON-encoded into the command by `simProgram`). */
export interface SimProgram {
  stdout?: string[];
  stderr?: string[];
  /** Run this long, then print the *AtExit lines and exit with exitCode. Absent = until stopped. */
  runMs?: number;
  stdoutAtExit?: string[];
  stderrAtExit?: string[];
  exitCode?: number;
  ignoreTerm?: boolean;
  cpuMilli?: number;
  memoryBytes?: number;
}

export const SIM_PROGRAM = 'sim:program';

/** The command that makes the sim engine run `p` (also usable with `exec`). */
export function simProgram(p: SimProgram): string[] {
  return [SIM_PROGRAM, JSON.stringify(p)];
}

type Range = readonly [min: number, max: number];

export interface SimMachineOptions {
  clock: SimClock;
  random: SimRandom;
  /** Images present; undefined = every image is present. */
  images?: readonly string[];
  /** Commands (argv[0]) that do not exist. */
  missingCommands?: readonly string[];
  /** Delay of `start` (uniform in the range, ms). Default [50, 250]. */
  startDelayMs?: Range;
  /** Time to die after SIGTERM for a program that honours it. Default [1, 20]. */
  termDelayMs?: Range;
  /** Latency of `exec`. Default [2, 10]. */
  execDelayMs?: Range;
  /** Probability that a non-scripted workload crashes. Default 0. */
  failureProbability?: number;
  /** Lifetime of a crashing workload. Default [1_000, 60_000]. */
  lifetimeMs?: Range;
  crashExitCodes?: readonly number[];
  /** Memory use of a non-scripted workload. Default [4 MiB, 64 MiB]. */
  memoryUseBytes?: Range;
  /** CPU use of a non-scripted workload. Default [10, 500]. */
  cpuUseMilli?: Range;
}

interface SimWorkload {
  spec: WorkloadSpec;
  state: WorkloadState;
  createdAt: number;
  startedAt?: number;
  finishedAt?: number;
  exitCode?: number;
  oomKilled: boolean;
  program: SimProgram;
  logs: LogLine[];
  logFollowers: Set<AsyncQueue<LogLine>>;
  waiters: Array<(code: number) => void>;
  timers: Array<{ cancel(): void }>;
  termPending: boolean;
}

interface MachineListener {
  hostId: string;
  fn: EngineEventListener;
}

const MiB = 1024 * 1024;

/** The simulated container runtime of one machine. */
export class SimMachine {
  readonly clock: SimClock;
  readonly random: SimRandom;
  private readonly opts: SimMachineOptions;
  /** key: `${hostId}\0${id}` */
  private readonly workloads = new Map<string, SimWorkload>();
  private readonly listeners = new Set<MachineListener>();

  constructor(opts: SimMachineOptions) {
    this.opts = opts;
    this.clock = opts.clock;
    this.random = opts.random;
  }

  private draw([min, max]: Range): number {
    return max <= min ? min : min + this.random.int(max - min + 1);
  }

  private key(hostId: string, id: string): string {
    return `${hostId}\0${id}`;
  }

  get(hostId: string, id: string): SimWorkload {
    const w = this.workloads.get(this.key(hostId, id));
    if (!w) throw notFound(id);
    return w;
  }

  all(hostId: string): SimWorkload[] {
    return [...this.workloads.values()]
      .filter((w) => w.spec.hostId === hostId)
      .sort((a, b) => (a.spec.id < b.spec.id ? -1 : a.spec.id > b.spec.id ? 1 : 0));
  }

  listen(l: MachineListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  private emit(hostId: string, e: EngineEvent): void {
    for (const l of [...this.listeners]) if (l.hostId === hostId) l.fn(e);
  }

  commandExists(cmd: string): boolean {
    return !(this.opts.missingCommands ?? []).includes(cmd);
  }

  private programFor(spec: WorkloadSpec): SimProgram {
    const argv = [...(spec.command ?? []), ...(spec.args ?? [])];
    if (argv[0] === SIM_PROGRAM) return parseProgram(argv[1], spec.id);
    const p: SimProgram = {
      stdout: [`${spec.id} started`],
      memoryBytes: this.draw(this.opts.memoryUseBytes ?? [4 * MiB, 64 * MiB]),
      cpuMilli: this.draw(this.opts.cpuUseMilli ?? [10, 500]),
    };
    if (this.random.next() < (this.opts.failureProbability ?? 0)) {
      const codes = this.opts.crashExitCodes ?? [1, 2, 137];
      p.runMs = this.draw(this.opts.lifetimeMs ?? [1_000, 60_000]);
      p.exitCode = codes[this.random.int(codes.length)] ?? 1;
      p.stderrAtExit = [`${spec.id} crashed`];
    }
    return p;
  }

  create(spec: WorkloadSpec): SimWorkload {
    const k = this.key(spec.hostId, spec.id);
    if (this.workloads.has(k))
      throw new EngineError('conflict', `workload ${spec.id} already exists on this host`, { id: spec.id });
    if (spec.image !== undefined && this.opts.images !== undefined && !this.opts.images.includes(spec.image))
      throw imageNotFound(spec.image, spec.id);
    const argv0 = spec.command?.[0] ?? spec.args?.[0];
    if (argv0 !== undefined && !this.commandExists(argv0))
      throw new EngineError('command-not-found', `command ${argv0} not found`, { id: spec.id });
    const w: SimWorkload = {
      spec: { ...spec, resources: normalizeResources(spec.resources ?? {}) },
      state: 'created',
      createdAt: this.clock.now(),
      oomKilled: false,
      program: this.programFor(spec),
      logs: [],
      logFollowers: new Set(),
      waiters: [],
      timers: [],
      termPending: false,
    };
    this.workloads.set(k, w);
    return w;
  }

  private later(w: SimWorkload, ms: number, fn: () => void): void {
    w.timers.push(this.clock.setTimer(Math.max(0, ms), fn));
  }

  private print(w: SimWorkload, stream: 'stdout' | 'stderr', lines: readonly string[] | undefined): void {
    for (const line of lines ?? []) {
      const l: LogLine = { stream, line, ts: this.clock.now() };
      w.logs.push(l);
      for (const f of w.logFollowers) f.push(l);
    }
  }

  /** Resolves once running (after the start delay). */
  start(w: SimWorkload): Promise<void> {
    return new Promise((resolve) => {
      this.later(w, this.draw(this.opts.startDelayMs ?? [50, 250]), () => {
        if (w.state !== 'created') return resolve();
        w.state = 'running';
        w.startedAt = this.clock.now();
        this.emit(w.spec.hostId, { type: 'started', id: w.spec.id, ts: w.startedAt });
        this.print(w, 'stdout', w.program.stdout);
        this.print(w, 'stderr', w.program.stderr);
        resolve();
        if (this.overMemory(w)) return this.oomKill(w);
        const runMs = w.program.runMs;
        if (runMs !== undefined)
          this.later(w, runMs, () => {
            if (w.state !== 'running') return;
            this.print(w, 'stdout', w.program.stdoutAtExit);
            this.print(w, 'stderr', w.program.stderrAtExit);
            this.exit(w, w.program.exitCode ?? 0);
          });
      });
    });
  }

  overMemory(w: SimWorkload): boolean {
    const limit = w.spec.resources?.memoryBytes;
    return limit !== undefined && (w.program.memoryBytes ?? 0) > limit;
  }

  oomKill(w: SimWorkload): void {
    this.emit(w.spec.hostId, { type: 'oom', id: w.spec.id, ts: this.clock.now() });
    w.oomKilled = true;
    this.exit(w, 137);
  }

  exit(w: SimWorkload, code: number): void {
    if (w.state !== 'running') return;
    for (const t of w.timers) t.cancel();
    w.timers = [];
    w.state = 'exited';
    w.exitCode = code;
    w.finishedAt = this.clock.now();
    for (const f of w.logFollowers) f.end();
    w.logFollowers.clear();
    const waiters = w.waiters;
    w.waiters = [];
    this.emit(w.spec.hostId, {
      type: 'exited',
      id: w.spec.id,
      ts: w.finishedAt,
      exitCode: code,
      oomKilled: w.oomKilled,
    });
    for (const resolve of waiters) resolve(code);
  }

  /** SIGTERM, then SIGKILL after timeoutMs; resolves once exited. */
  stop(w: SimWorkload, timeoutMs: number): Promise<void> {
    if (w.state !== 'running') return Promise.resolve();
    const exited = new Promise<void>((resolve) => w.waiters.push(() => resolve()));
    if (timeoutMs <= 0) {
      this.exit(w, 137);
      return exited;
    }
    if (!w.program.ignoreTerm && !w.termPending) {
      w.termPending = true;
      this.later(w, this.draw(this.opts.termDelayMs ?? [1, 20]), () => this.exit(w, 143));
    }
    this.later(w, timeoutMs, () => this.exit(w, 137));
    return exited;
  }

  remove(w: SimWorkload): void {
    for (const t of w.timers) t.cancel();
    for (const f of w.logFollowers) f.end();
    this.workloads.delete(this.key(w.spec.hostId, w.spec.id));
    this.emit(w.spec.hostId, { type: 'removed', id: w.spec.id, ts: this.clock.now() });
  }

  exec(w: SimWorkload, cmd: string[]): Promise<ExecResult> {
    return new Promise((resolve) => {
      this.later(w, this.draw(this.opts.execDelayMs ?? [2, 10]), () => {
        if (cmd[0] === SIM_PROGRAM) {
          const p = parseProgram(cmd[1], w.spec.id);
          const text = (ls: string[]) => ls.map((l) => `${l}\n`).join('');
          resolve({
            exitCode: p.exitCode ?? 0,
            stdout: text([...(p.stdout ?? []), ...(p.stdoutAtExit ?? [])]),
            stderr: text([...(p.stderr ?? []), ...(p.stderrAtExit ?? [])]),
          });
        } else if (cmd[0] === undefined || !this.commandExists(cmd[0])) {
          resolve({ exitCode: 127, stdout: '', stderr: `${cmd[0]}: not found\n` });
        } else {
          resolve({ exitCode: 0, stdout: '', stderr: '' });
        }
      });
    });
  }
}

function parseProgram(json: string | undefined, id: string): SimProgram {
  try {
    const p = JSON.parse(json ?? '{}') as SimProgram;
    if (p && typeof p === 'object') return p;
  } catch {
    // fall through
  }
  throw new EngineError('invalid-spec', `invalid workload spec: ${SIM_PROGRAM} needs a JSON program`, { id });
}

export interface SimEngineOptions {
  hostId: string;
  /** The machine the workloads live on (shared by successive engine objects = agent restarts). */
  machine: SimMachine;
  stopTimeoutMs?: number;
}

export class SimEngine implements Engine {
  readonly hostId: string;
  readonly capabilities: EngineCapabilities = {
    kind: 'sim',
    images: true,
    enforces: { cpu: true, cpuset: true, memory: true, gpus: true },
  };
  readonly machine: SimMachine;
  private readonly stopTimeoutMs: number;
  private readonly unsubscribers = new Set<() => void>();
  private killed = false;

  constructor(opts: SimEngineOptions) {
    this.hostId = opts.hostId;
    this.machine = opts.machine;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
  }

  private w(id: string): SimWorkload {
    return this.machine.get(this.hostId, id);
  }

  private info(w: SimWorkload): WorkloadInfo {
    const resources = normalizeResources(w.spec.resources ?? {});
    const info: WorkloadInfo = {
      id: w.spec.id,
      deployId: w.spec.deployId,
      hostId: w.spec.hostId,
      labels: workloadLabels(w.spec),
      state: w.state,
      createdAt: w.createdAt,
      spec: { ...w.spec, resources },
      enforced: {
        cpu: resources.cpuMilli !== undefined,
        cpuset: resources.cpuset !== undefined,
        memory: resources.memoryBytes !== undefined,
        gpus: resources.gpus !== undefined,
        notes: [],
      },
      ref: `sim:${w.spec.hostId}/${w.spec.id}`,
    };
    if (w.startedAt !== undefined) info.startedAt = w.startedAt;
    if (w.state === 'exited') {
      info.exitCode = w.exitCode ?? -1;
      info.oomKilled = w.oomKilled;
      if (w.finishedAt !== undefined) info.finishedAt = w.finishedAt;
    }
    return info;
  }

  async create(spec: WorkloadSpec): Promise<WorkloadInfo> {
    if (this.killed) return hang();
    validateSpec(spec, this.hostId);
    return this.info(this.machine.create(spec));
  }

  async start(id: string): Promise<void> {
    if (this.killed) return hang();
    const w = this.w(id);
    if (w.state === 'running') return;
    if (w.state === 'exited')
      throw new EngineError('conflict', `workload ${id} has exited; create a new workload to run it again`, {
        id,
      });
    await this.machine.start(w);
  }

  async stop(id: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.killed) return hang();
    await this.machine.stop(this.w(id), opts.timeoutMs ?? this.stopTimeoutMs);
  }

  async remove(id: string, opts: { force?: boolean } = {}): Promise<void> {
    if (this.killed) return hang();
    const w = this.w(id);
    if (w.state === 'running') {
      if (!opts.force)
        throw new EngineError('conflict', `workload ${id} is running; stop it or remove with force`, { id });
      await this.machine.stop(w, 0);
    }
    this.machine.remove(w);
  }

  async inspect(id: string): Promise<WorkloadInfo> {
    if (this.killed) return hang();
    return this.info(this.w(id));
  }

  async list(): Promise<WorkloadInfo[]> {
    if (this.killed) return hang();
    return this.machine.all(this.hostId).map((w) => this.info(w));
  }

  logs(id: string, opts: LogOptions = {}): AsyncIterable<LogLine> {
    let w: SimWorkload | undefined;
    let queue: AsyncQueue<LogLine> | undefined;
    const onAbort = () => queue?.end();
    queue = new AsyncQueue<LogLine>(() => {
      if (w && queue) w.logFollowers.delete(queue);
      opts.signal?.removeEventListener('abort', onAbort);
    });
    try {
      w = this.w(id);
    } catch (err) {
      queue.fail(err);
      return queue;
    }
    let history = w.logs.filter((l) => opts.since === undefined || l.ts >= opts.since);
    if (opts.tail !== undefined) history = opts.tail > 0 ? history.slice(-opts.tail) : [];
    for (const l of history) queue.push(l);
    if (opts.follow && w.state !== 'exited' && !opts.signal?.aborted) {
      w.logFollowers.add(queue);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    } else {
      queue.end();
    }
    return queue;
  }

  async stats(id: string): Promise<Stats> {
    if (this.killed) return hang();
    const w = this.w(id);
    if (w.state !== 'running') return { cpuMilli: 0, memoryBytes: 0 };
    const r = w.spec.resources ?? {};
    const cpuCap = r.cpuMilli ?? (r.cpuset ? r.cpuset.length * 1000 : Number.POSITIVE_INFINITY);
    return {
      cpuMilli: Math.min(w.program.cpuMilli ?? 0, cpuCap),
      memoryBytes: w.program.memoryBytes ?? 0,
    };
  }

  async exec(id: string, cmd: string[], _opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    if (this.killed) return hang();
    const w = this.w(id);
    if (w.state !== 'running') throw new EngineError('not-running', `workload ${id} is not running`, { id });
    return this.machine.exec(w, cmd);
  }

  async update(id: string, patch: Resources): Promise<WorkloadInfo> {
    if (this.killed) return hang();
    validateResources(patch, { id }, 'update');
    const w = this.w(id);
    const cur = w.spec.resources ?? {};
    const next = mergeResources(cur, patch);
    if (JSON.stringify(next.gpus ?? []) !== JSON.stringify(cur.gpus ?? []))
      throw new EngineError('unsupported', 'GPUs cannot be changed on a live workload; recreate it', { id });
    w.spec = { ...w.spec, resources: next };
    if (w.state === 'running' && this.machine.overMemory(w)) this.machine.oomKill(w);
    return this.info(w);
  }

  async wait(id: string): Promise<number> {
    if (this.killed) return hang();
    const w = this.w(id);
    if (w.state === 'exited') return w.exitCode ?? -1;
    return new Promise((resolve) => w.waiters.push(resolve));
  }

  subscribe(listener: EngineEventListener): () => void {
    const off = this.machine.listen({ hostId: this.hostId, fn: listener });
    this.unsubscribers.add(off);
    return () => {
      off();
      this.unsubscribers.delete(off);
    };
  }

  async close(): Promise<void> {
    for (const off of this.unsubscribers) off();
    this.unsubscribers.clear();
  }

  /**
   * The agent process that held this handle was killed (the simulator's crash): its engine
   * subscriptions end and every later call never completes, as nothing runs in a dead process.
   * The machine (the host's containers) lives on; a restarted agent gets a new handle. Without
   * this, a crashed agent's reconciler was still woken by the machine's events and acted on its
   * stale books (removing the restarted agent's workloads).
   */
  kill(): void {
    this.killed = true;
    for (const off of this.unsubscribers) off();
    this.unsubscribers.clear();
  }
}

/** A promise that never settles: the call of a killed process. */
function hang<T>(): Promise<T> {
  return new Promise<T>(() => {});
}
