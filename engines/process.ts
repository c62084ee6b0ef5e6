/**
 * ProcessEngine: workloads as supervised local processes — the embedded default on a host
 * without Docker.
 *
 * Layout, one directory per workload (`<dataDir>/process/<safe id>/`):
 *   spec.json   the spec (resources kept current by `update`) and createdAt
 *   run.json    the wrapper's pid + start time + boot id, the workload's pid + start time, startedAt
 *   child.pid   the workload's pid, written by the wrapper
 *   stdout.log, stderr.log
 *   exit        the exit code, written atomically by the wrapper when the workload ends
 *
 * Every workload runs under a tiny `/bin/sh` wrapper in its own session (detached from the agent,
 * so it outlives agent restarts). The wrapper starts the command in a *separate* session/process
 * group (`setsid`), waits for it and records its exit status in `exit` (tmp + rename). Signals
 * from `stop` go to the workload's process group only, never to the wrapper, so SIGKILL cannot
 * lose the exit code. A restarted agent re-adopts running workloads from the directory: a pid
 * counts as the same process only if its /proc start time and the boot id match the record.
 *
 * Limits: cgroups (v1 or v2) when running as root with a writable hierarchy; otherwise the
 * requested resources are recorded and `enforced` says they are not enforced.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { constants as osConstants } from 'node:os';
import { delimiter, join } from 'node:path';
import { type Cgroups, detectCgroups } from './cgroups.ts';
import {
  type Enforcement,
  type Engine,
  type EngineCapabilities,
  EngineError,
  type EngineEvent,
  type EngineEventListener,
  type EngineLogger,
  type ExecResult,
  type LogLine,
  type LogOptions,
  notFound,
  type Resources,
  type Stats,
  silentLogger,
  type WorkloadInfo,
  type WorkloadSpec,
  type WorkloadState,
  workloadLabels,
} from './engine.ts';
import { bootId, CLK_TCK, isAlive, PAGE_SIZE, processGroup, readProcStat, signal } from './proc.ts';
import {
  AsyncQueue,
  LineSplitter,
  mergeResources,
  normalizeResources,
  safeName,
  sleep,
  validateResources,
  validateSpec,
} from './util.ts';

export interface ProcessEngineOptions {
  hostId: string;
  /** The agent's data dir; workloads live in `<dataDir>/process/`. */
  dataDir: string;
  logger?: EngineLogger;
  /** false: never use cgroups; undefined: detect (root + writable hierarchy). */
  cgroups?: Cgroups | false;
  /** How often exits of adopted workloads are polled while someone waits or listens. */
  pollMs?: number;
  stopTimeoutMs?: number;
}

/**
 * The wrapper. $1 = state dir, $2 = ':'-separated cgroup.procs files ('' when none), rest = argv.
 * The inner sh joins the cgroups with its own pid, then execs the command (same pid), so the
 * workload is confined before its first instruction while the wrapper stays outside.
 */
const WRAPPER = `d=$1; cg=$2; shift 2
setsid sh -c 'IFS=:; for f in $0; do echo $$ > "$f" || exit 125; done; unset IFS; exec "$@"' "$cg" "$@" &
c=$!
echo "$c" > "$d/child.pid.tmp" && mv -f "$d/child.pid.tmp" "$d/child.pid"
wait "$c"
s=$?
echo "$s" > "$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"
`;

/** Joins the cgroups given as $0 then execs argv (used by exec). */
const JOIN_AND_EXEC = `IFS=:; for f in $0; do echo $$ > "$f" || exit 125; done; unset IFS; exec "$@"`;

interface SpecFile {
  spec: WorkloadSpec;
  createdAt: number;
}

interface RunFile {
  startedAt: number;
  bootId: string;
  wrapperPid?: number;
  wrapperStart?: number;
  childPid?: number;
  childStart?: number;
}

interface Observed {
  state: WorkloadState;
  exitCode?: number;
  lost?: boolean;
  finishedAt?: number;
  childPid?: number;
}

function writeAtomic(path: string, data: string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function readInt(path: string): number | undefined {
  try {
    const n = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isNaN(n) ? undefined : n;
  } catch {
    return undefined;
  }
}

/** Resolve argv[0] like execvp would; undefined when it does not exist / is not executable. */
function resolveCommand(cmd: string, pathVar: string, cwd: string): string | undefined {
  const executable = (p: string) => {
    try {
      accessSync(p, constants.X_OK);
      return statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (cmd.includes('/')) {
    const p = cmd.startsWith('/') ? cmd : join(cwd, cmd);
    return executable(p) ? p : undefined;
  }
  for (const dir of pathVar.split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, cmd);
    if (executable(p)) return p;
  }
  return undefined;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class ProcessEngine implements Engine {
  readonly hostId: string;
  readonly capabilities: EngineCapabilities;
  readonly root: string;
  private readonly log: EngineLogger;
  private readonly cg: Cgroups | undefined;
  private readonly pollMs: number;
  private readonly stopTimeoutMs: number;
  private readonly listeners = new Set<EngineEventListener>();
  private readonly waiters = new Map<string, Array<(code: number) => void>>();
  /** Workloads seen running, watched for their exit. */
  private readonly watched = new Set<string>();
  private readonly children = new Map<string, ChildProcess>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly lastCpu = new Map<string, { cpuNs: number; atMs: number }>();
  private poller: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(opts: ProcessEngineOptions) {
    this.hostId = opts.hostId;
    this.root = join(opts.dataDir, 'process');
    mkdirSync(this.root, { recursive: true });
    this.log = opts.logger ?? silentLogger;
    this.cg = opts.cgroups === false ? undefined : (opts.cgroups ?? detectCgroups({ logger: this.log }));
    this.pollMs = opts.pollMs ?? 250;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
    this.capabilities = {
      kind: 'process',
      images: false,
      enforces: {
        cpu: this.cg?.enforces.cpu ?? false,
        cpuset: this.cg?.enforces.cpuset ?? false,
        memory: this.cg?.enforces.memory ?? false,
        gpus: false,
      },
    };
  }

  // ---- paths and records -------------------------------------------------------------------

  private dir(id: string): string {
    return join(this.root, safeName(id));
  }

  private group(id: string): string {
    return `${safeName(this.hostId)}/${safeName(id)}`;
  }

  /** The spec record of one of this host's workloads, or `not-found`. */
  private load(id: string): SpecFile {
    const rec = readJson<SpecFile>(join(this.dir(id), 'spec.json'));
    if (rec === undefined || rec.spec.id !== id || rec.spec.hostId !== this.hostId) throw notFound(id);
    return rec;
  }

  /** Serialise state-changing calls per workload. */
  private locked<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(id, tail);
    void tail.then(() => {
      if (this.locks.get(id) === tail) this.locks.delete(id);
    });
    return next;
  }

  /** What the directory and /proc say about a workload right now. */
  private observe(id: string): Observed {
    const d = this.dir(id);
    const exitAt = (): Observed | undefined => {
      const code = readInt(join(d, 'exit'));
      if (code === undefined) return undefined;
      let finishedAt: number | undefined;
      try {
        finishedAt = statSync(join(d, 'exit')).mtimeMs;
      } catch {
        finishedAt = undefined;
      }
      return { state: 'exited', exitCode: code, finishedAt };
    };
    const run = readJson<RunFile>(join(d, 'run.json'));
    if (run === undefined) return { state: 'created' };
    const done = exitAt();
    if (done) return done;
    const childPid = run.childPid ?? readInt(join(d, 'child.pid'));
    const wrapperAlive =
      run.wrapperPid !== undefined &&
      isAlive({ pid: run.wrapperPid, startTime: run.wrapperStart, bootId: run.bootId });
    if (wrapperAlive) return { state: 'running', childPid };
    // The wrapper is gone: someone killed it, or the host rebooted. An orphaned workload may run on.
    if (childPid !== undefined && run.childStart !== undefined) {
      if (isAlive({ pid: childPid, startTime: run.childStart, bootId: run.bootId }))
        return { state: 'running', childPid };
    }
    // Re-check: the wrapper may have written `exit` and left between the two reads.
    const late = exitAt();
    if (late) return late;
    if (run.wrapperPid === undefined && Date.now() - run.startedAt < 5_000) return { state: 'running' }; // starting
    return { state: 'exited', exitCode: -1, lost: true };
  }

  private enforcement(resources: Resources, cgroupOk: boolean): Enforcement {
    const notes: string[] = [];
    const e = this.capabilities.enforces;
    const on = (asked: boolean, can: boolean, what: string) => {
      if (asked && !(can && cgroupOk))
        notes.push(
          `${what} not enforced: ${this.cg ? 'controller unavailable' : 'no writable cgroup hierarchy (not root?)'}`,
        );
      return asked && can && cgroupOk;
    };
    const enforced: Enforcement = {
      cpu: on(resources.cpuMilli !== undefined, e.cpu, 'cpu limit'),
      cpuset: on(resources.cpuset !== undefined, e.cpuset, 'cpuset'),
      memory: on(resources.memoryBytes !== undefined, e.memory, 'memory limit'),
      gpus: false,
      notes,
    };
    if (resources.gpus) notes.push('GPUs are only made visible (CUDA_VISIBLE_DEVICES), not enforced');
    return enforced;
  }

  private info(id: string, rec: SpecFile = this.load(id), obs: Observed = this.observe(id)): WorkloadInfo {
    const run = readJson<RunFile>(join(this.dir(id), 'run.json'));
    const resources = normalizeResources(rec.spec.resources ?? {});
    const info: WorkloadInfo = {
      id,
      deployId: rec.spec.deployId,
      hostId: rec.spec.hostId,
      labels: workloadLabels(rec.spec),
      state: obs.state,
      createdAt: rec.createdAt,
      spec: { ...rec.spec, resources },
      enforced: this.enforcement(resources, this.cg !== undefined),
      ref: this.dir(id),
    };
    if (run) info.startedAt = run.startedAt;
    if (obs.state === 'running' && obs.childPid !== undefined) info.pid = obs.childPid;
    if (obs.state === 'exited') {
      info.exitCode = obs.exitCode ?? -1;
      if (obs.finishedAt !== undefined) info.finishedAt = obs.finishedAt;
      if (obs.lost) info.lost = true;
      info.oomKilled = this.cg ? this.cg.oomKills(this.group(id)) > 0 : false;
    }
    return info;
  }

  private env(spec: WorkloadSpec): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? DEFAULT_PATH };
    if (process.env.HOME) env.HOME = process.env.HOME;
    if (spec.resources?.gpus?.length) {
      const devices = [...new Set(spec.resources.gpus.map((g) => g.device))].join(',');
      env.CUDA_VISIBLE_DEVICES = devices;
      env.NVIDIA_VISIBLE_DEVICES = devices;
    }
    return { ...env, ...(spec.env ?? {}) };
  }

  // ---- Engine ----------------------------------------------------------------------------------

  async create(spec: WorkloadSpec): Promise<WorkloadInfo> {
    validateSpec(spec, this.hostId);
    if (spec.image !== undefined)
      throw new EngineError('unsupported', 'the process engine runs commands, not images (use docker)', {
        id: spec.id,
      });
    if (spec.user !== undefined)
      throw new EngineError(
        'unsupported',
        'the process engine runs workloads as the agent’s user (user is docker-only)',
        {
          id: spec.id,
        },
      );
    if (spec.mounts !== undefined && spec.mounts.length > 0)
      throw new EngineError('unsupported', 'the process engine cannot mount volumes (use docker)', {
        id: spec.id,
      });
    const argv = [...(spec.command ?? []), ...(spec.args ?? [])];
    const cwd = spec.workdir ?? '/';
    if (spec.workdir !== undefined && !(existsSync(cwd) && statSync(cwd).isDirectory()))
      throw new EngineError('invalid-spec', `invalid workload spec: workdir ${cwd} does not exist`, {
        id: spec.id,
      });
    const pathVar = this.env(spec).PATH ?? DEFAULT_PATH;
    if (resolveCommand(argv[0] as string, pathVar, cwd) === undefined)
      throw new EngineError('command-not-found', `command ${argv[0]} not found (PATH=${pathVar})`, {
        id: spec.id,
      });
    return this.locked(spec.id, async () => {
      const d = this.dir(spec.id);
      if (existsSync(join(d, 'spec.json')))
        throw new EngineError('conflict', `workload ${spec.id} already exists on this host`, { id: spec.id });
      mkdirSync(d, { recursive: true });
      const rec: SpecFile = {
        spec: { ...spec, resources: normalizeResources(spec.resources ?? {}) },
        createdAt: Date.now(),
      };
      if (this.cg) this.cg.apply(this.group(spec.id), rec.spec.resources ?? {});
      writeAtomic(join(d, 'spec.json'), JSON.stringify(rec));
      this.log.debug({ id: spec.id }, 'process: created');
      return this.info(spec.id, rec, { state: 'created' });
    });
  }

  async start(id: string): Promise<void> {
    return this.locked(id, async () => {
      const rec = this.load(id);
      const obs = this.observe(id);
      if (obs.state === 'running') return;
      if (obs.state === 'exited')
        throw new EngineError(
          'conflict',
          `workload ${id} has exited; create a new workload to run it again`,
          { id },
        );
      const d = this.dir(id);
      const spec = rec.spec;
      const argv = [...(spec.command ?? []), ...(spec.args ?? [])];
      // Record the attempt first: a crash right after spawn must never look like "never started".
      const run: RunFile = { startedAt: Date.now(), bootId: bootId() };
      writeAtomic(join(d, 'run.json'), JSON.stringify(run));
      const out = openSync(join(d, 'stdout.log'), 'a');
      const err = openSync(join(d, 'stderr.log'), 'a');
      const procs = this.cg ? this.cg.procsFiles(this.group(id)).join(':') : '';
      let child: ChildProcess;
      try {
        child = spawn('/bin/sh', ['-c', WRAPPER, 'shoal-wrapper', d, procs, ...argv], {
          cwd: spec.workdir ?? '/',
          env: this.env(spec),
          detached: true,
          stdio: ['ignore', out, err],
        });
      } finally {
        closeSync(out);
        closeSync(err);
      }
      if (child.pid === undefined) {
        rmSync(join(d, 'run.json'), { force: true });
        throw new EngineError('internal', `could not spawn the wrapper for ${id}`, { id });
      }
      child.unref();
      this.children.set(id, child);
      child.on('exit', () => {
        this.children.delete(id);
        this.check(id);
      });
      child.on('error', (e) => this.log.error({ id, err: String(e) }, 'process: wrapper error'));
      run.wrapperPid = child.pid;
      run.wrapperStart = readProcStat(child.pid)?.startTime;
      writeAtomic(join(d, 'run.json'), JSON.stringify(run));
      // Wait (bounded) for the workload's own pid, then record its start time for re-adoption.
      for (let i = 0; i < 1000 && !existsSync(join(d, 'child.pid')) && !existsSync(join(d, 'exit')); i++)
        await sleep(2);
      const childPid = readInt(join(d, 'child.pid'));
      if (childPid !== undefined) {
        run.childPid = childPid;
        run.childStart = readProcStat(childPid)?.startTime;
        writeAtomic(join(d, 'run.json'), JSON.stringify(run));
      }
      this.watched.add(id);
      this.emit({ type: 'started', id, ts: run.startedAt });
      this.log.debug({ id, pid: childPid }, 'process: started');
      this.check(id);
    });
  }

  /** Signal the workload's process group (and, for SIGKILL, everything in its cgroup). */
  private signalWorkload(id: string, obs: Observed, sig: NodeJS.Signals): void {
    if (obs.childPid !== undefined) {
      const run = readJson<RunFile>(join(this.dir(id), 'run.json'));
      const same =
        run?.childStart === undefined ||
        isAlive({ pid: obs.childPid, startTime: run.childStart, bootId: run.bootId });
      if (same && !signal(-obs.childPid, sig)) signal(obs.childPid, sig);
    }
    if (sig === 'SIGKILL' && this.cg) for (const pid of this.cg.pids(this.group(id))) signal(pid, sig);
  }

  private async exitedWithin(id: string, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.observe(id).state === 'exited') return true;
      if (Date.now() >= deadline) return false;
      await sleep(Math.min(10, Math.max(1, deadline - Date.now())));
    }
  }

  async stop(id: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = opts.timeoutMs ?? this.stopTimeoutMs;
    return this.locked(id, async () => {
      this.load(id);
      let obs = this.observe(id);
      // A start in flight: wait for the workload pid to be known.
      for (let i = 0; i < 500 && obs.state === 'running' && obs.childPid === undefined; i++) {
        await sleep(2);
        obs = this.observe(id);
      }
      if (obs.state !== 'running') return;
      if (timeoutMs > 0) {
        this.signalWorkload(id, obs, 'SIGTERM');
        if (await this.exitedWithin(id, timeoutMs)) return this.check(id);
        this.log.info({ id, timeoutMs }, 'process: stop grace period over, killing');
      }
      this.signalWorkload(id, this.observe(id), 'SIGKILL');
      if (!(await this.exitedWithin(id, 5_000)))
        throw new EngineError('timeout', `workload ${id} did not exit after SIGKILL`, { id });
      this.check(id);
    });
  }

  async remove(id: string, opts: { force?: boolean } = {}): Promise<void> {
    this.load(id);
    if (this.observe(id).state === 'running') {
      if (!opts.force)
        throw new EngineError('conflict', `workload ${id} is running; stop it or remove with force`, { id });
      await this.stop(id, { timeoutMs: 0 });
    }
    await this.locked(id, async () => {
      this.load(id);
      rmSync(this.dir(id), { recursive: true, force: true });
      if (this.cg) {
        try {
          this.cg.remove(this.group(id));
        } catch (err) {
          this.log.warn({ id, err: String(err) }, 'process: could not remove cgroup');
        }
      }
      this.watched.delete(id);
      this.lastCpu.delete(id);
      this.emit({ type: 'removed', id, ts: Date.now() });
    });
  }

  async inspect(id: string): Promise<WorkloadInfo> {
    return this.info(id);
  }

  async list(): Promise<WorkloadInfo[]> {
    const out: WorkloadInfo[] = [];
    for (const name of readdirSync(this.root)) {
      const rec = readJson<SpecFile>(join(this.root, name, 'spec.json'));
      if (rec === undefined || rec.spec.hostId !== this.hostId || safeName(rec.spec.id) !== name) continue;
      const info = this.info(rec.spec.id, rec);
      if (info.state === 'running') this.watched.add(info.id); // adopted: watch for its exit
      out.push(info);
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  logs(id: string, opts: LogOptions = {}): AsyncIterable<LogLine> {
    const state = { stopped: false };
    const queue = new AsyncQueue<LogLine>(() => {
      state.stopped = true;
      opts.signal?.removeEventListener('abort', onAbort);
    });
    const onAbort = () => queue.end();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const run = async () => {
      this.load(id);
      const d = this.dir(id);
      const files = (['stdout', 'stderr'] as const).map((stream) => ({
        stream,
        path: join(d, `${stream}.log`),
        offset: 0,
        split: new LineSplitter(),
      }));
      // History: whole lines, stamped with the file's mtime (no per-line time is recorded).
      for (const f of files) {
        let text = '';
        let mtime = Date.now();
        try {
          const buf = readFileSync(f.path);
          f.offset = buf.length;
          mtime = statSync(f.path).mtimeMs;
          text = buf.toString('utf8');
        } catch {
          f.offset = 0;
        }
        let lines = f.split.push(text);
        if (!opts.follow) {
          const rest = f.split.flush();
          if (rest !== undefined) lines.push(rest);
        }
        if (opts.since !== undefined && mtime < opts.since) lines = [];
        if (opts.tail !== undefined) lines = opts.tail > 0 ? lines.slice(-opts.tail) : [];
        for (const line of lines) queue.push({ stream: f.stream, line, ts: mtime });
      }
      if (!opts.follow) return;
      // Follow: poll the files for new bytes until the workload has exited and they are drained.
      const pump = (final: boolean) => {
        for (const f of files) {
          let fd: number;
          try {
            fd = openSync(f.path, 'r');
          } catch {
            continue;
          }
          try {
            const buf = Buffer.alloc(64 * 1024);
            for (;;) {
              const n = readSync(fd, buf, 0, buf.length, f.offset);
              if (n <= 0) break;
              f.offset += n;
              const now = Date.now();
              for (const line of f.split.push(buf.subarray(0, n)))
                queue.push({ stream: f.stream, line, ts: now });
            }
          } finally {
            closeSync(fd);
          }
          if (final) {
            const rest = f.split.flush();
            if (rest !== undefined) queue.push({ stream: f.stream, line: rest, ts: Date.now() });
          }
        }
      };
      while (!state.stopped) {
        let exited: boolean;
        try {
          exited = this.observe(id).state === 'exited';
        } catch {
          exited = true;
        }
        pump(exited);
        if (exited) return;
        await sleep(50);
      }
    };
    run().then(
      () => queue.end(),
      (err) => queue.fail(err),
    );
    return queue;
  }

  async stats(id: string): Promise<Stats> {
    this.load(id);
    const obs = this.observe(id);
    if (obs.state !== 'running') return { cpuMilli: 0, memoryBytes: 0 };
    const sample = (): { cpuNs: number; memoryBytes: number } => {
      const u = this.cg?.usage(this.group(id));
      if (u) return u;
      // No cgroup: sum over the workload's process group.
      const members = obs.childPid !== undefined ? processGroup(obs.childPid) : [];
      let ticks = 0;
      let rss = 0;
      for (const p of members) {
        ticks += p.utimeTicks + p.stimeTicks;
        rss += p.rssPages * PAGE_SIZE;
      }
      return { cpuNs: (ticks * 1e9) / CLK_TCK, memoryBytes: rss };
    };
    let prev = this.lastCpu.get(id);
    if (prev === undefined) {
      prev = { cpuNs: sample().cpuNs, atMs: performance.now() };
      await sleep(100);
    }
    const cur = sample();
    const atMs = performance.now();
    this.lastCpu.set(id, { cpuNs: cur.cpuNs, atMs });
    const wallNs = (atMs - prev.atMs) * 1e6;
    const cpuMilli = wallNs > 0 ? Math.max(0, Math.round(((cur.cpuNs - prev.cpuNs) / wallNs) * 1000)) : 0;
    return { cpuMilli, memoryBytes: cur.memoryBytes };
  }

  async exec(id: string, cmd: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const rec = this.load(id);
    if (this.observe(id).state !== 'running')
      throw new EngineError('not-running', `workload ${id} is not running`, { id });
    if (cmd.length === 0) throw new EngineError('invalid-spec', 'exec needs a command', { id });
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const procs = this.cg ? this.cg.procsFiles(this.group(id)).join(':') : '';
    const [file, args] = procs
      ? ['/bin/sh', ['-c', JOIN_AND_EXEC, procs, ...cmd]]
      : [cmd[0] as string, cmd.slice(1)];
    return new Promise<ExecResult>((resolve, reject) => {
      const child = spawn(file, args, {
        cwd: rec.spec.workdir ?? '/',
        env: this.env(rec.spec),
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout?.on('data', (b: Buffer) => out.push(b));
      child.stderr?.on('data', (b: Buffer) => err.push(b));
      const timer = setTimeout(() => {
        if (child.pid !== undefined && !signal(-child.pid, 'SIGKILL')) signal(child.pid, 'SIGKILL');
        reject(new EngineError('timeout', `exec in ${id} did not finish within ${timeoutMs} ms`, { id }));
      }, timeoutMs);
      child.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (e.code === 'ENOENT') resolve({ exitCode: 127, stdout: '', stderr: `${cmd[0]}: not found\n` });
        else reject(new EngineError('internal', `exec in ${id} failed: ${e.message}`, { id, cause: e }));
      });
      child.on('close', (code, sig) => {
        clearTimeout(timer);
        resolve({
          exitCode: code ?? 128 + (sig ? (osConstants.signals[sig] ?? 0) : 0),
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        });
      });
    });
  }

  async update(id: string, patch: Resources): Promise<WorkloadInfo> {
    validateResources(patch, { id }, 'update');
    return this.locked(id, async () => {
      const rec = this.load(id);
      const cur = rec.spec.resources ?? {};
      const next = mergeResources(cur, patch);
      if (JSON.stringify(next.gpus ?? []) !== JSON.stringify(cur.gpus ?? []))
        throw new EngineError('unsupported', 'GPUs cannot be changed on a running process; recreate it', {
          id,
        });
      if (this.cg) {
        try {
          this.cg.apply(this.group(id), next);
        } catch (err) {
          throw new EngineError('internal', `cgroup update for ${id} failed: ${String(err)}`, {
            id,
            cause: err,
          });
        }
      }
      rec.spec = { ...rec.spec, resources: next };
      writeAtomic(join(this.dir(id), 'spec.json'), JSON.stringify(rec));
      return this.info(id, rec);
    });
  }

  async wait(id: string): Promise<number> {
    this.load(id);
    const obs = this.observe(id);
    if (obs.state === 'exited') return obs.exitCode ?? -1;
    return new Promise<number>((resolve) => {
      const list = this.waiters.get(id) ?? [];
      list.push(resolve);
      this.waiters.set(id, list);
      this.watched.add(id);
      this.ensurePoller();
    });
  }

  subscribe(listener: EngineEventListener): () => void {
    this.listeners.add(listener);
    this.ensurePoller();
    return () => {
      this.listeners.delete(listener);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    if (this.poller) clearInterval(this.poller);
    this.poller = undefined;
    for (const c of this.children.values()) c.removeAllListeners('exit');
    this.children.clear();
  }

  // ---- exit detection ------------------------------------------------------------------------

  private emit(event: EngineEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch (err) {
        this.log.error({ err: String(err) }, 'engine event listener threw');
      }
    }
  }

  private ensurePoller(): void {
    if (this.poller || this.closed) return;
    this.poller = setInterval(() => {
      for (const id of [...this.watched, ...this.waiters.keys()]) this.check(id);
      if (this.listeners.size === 0 && this.waiters.size === 0 && this.poller) {
        clearInterval(this.poller);
        this.poller = undefined;
      }
    }, this.pollMs);
    this.poller.unref();
  }

  /** Notice an exit: resolve waiters and emit `exited` once. */
  private check(id: string): void {
    let obs: Observed;
    try {
      obs = this.observe(id);
    } catch {
      return;
    }
    if (!existsSync(join(this.dir(id), 'spec.json'))) {
      this.watched.delete(id);
      return;
    }
    if (obs.state === 'running' || obs.state === 'created') return;
    const code = obs.exitCode ?? -1;
    const waiting = this.waiters.get(id);
    this.waiters.delete(id);
    for (const w of waiting ?? []) w(code);
    if (this.watched.delete(id)) {
      const oomKilled = this.cg ? this.cg.oomKills(this.group(id)) > 0 : false;
      if (oomKilled) this.emit({ type: 'oom', id, ts: obs.finishedAt ?? Date.now() });
      this.emit({ type: 'exited', id, ts: obs.finishedAt ?? Date.now(), exitCode: code, oomKilled });
    }
  }
}
