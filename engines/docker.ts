/**
 * DockerEngine: workloads as containers of a real dockerd, over dockerode.
 *
 * - Every container carries the labels shoal.workload / shoal.deploy / shoal.host (plus the
 *   original spec in `shoal.spec`), and is named `shoal-<host>-<workload>` (sanitised).
 * - Limits are applied by Docker: CFS quota + shares for cpuMilli, CpusetCpus for bound cores,
 *   Memory (= MemorySwap: no swap) for memoryBytes, DeviceRequests (nvidia) for GPUs.
 * - `HostConfig.Init: true` so PID 1 gets SIGTERM handling; `NetworkMode: 'host'` when the workload
 *   publishes ports (it listens on the host's ports itself), else `'none'`.
 * - Never pulls: an absent image fails `create` at once with `image-not-found`.
 * - Stop is SIGTERM → wait `timeoutMs` (ms precision) → SIGKILL.
 */
import { Readable, Writable } from 'node:stream';
import Dockerode from 'dockerode';
import {
  type Engine,
  type EngineCapabilities,
  EngineError,
  type EngineEvent,
  type EngineEventListener,
  type EngineLogger,
  type ExecResult,
  imageNotFound,
  LABEL_HOST,
  LABEL_WORKLOAD,
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
import { containerInitReady } from './proc.ts';
import {
  AsyncQueue,
  formatCpuset,
  LineSplitter,
  mergeResources,
  normalizeResources,
  parseCpuset,
  safeName,
  sleep,
  validateResources,
  validateSpec,
} from './util.ts';

export const DEFAULT_DOCKER_SOCKET = '/tmp/shoal-docker/docker.sock';
const LABEL_SPEC = 'shoal.spec';
const CPU_PERIOD_US = 100_000;
/** Docker refuses memory limits below 6 MiB. */
const DOCKER_MIN_MEMORY = 6 * 1024 * 1024;

export interface DockerEngineOptions {
  hostId: string;
  /** Default: $SHOAL_DOCKER_SOCKET, else /tmp/shoal-docker/docker.sock (scripts/docker-up.sh). */
  socketPath?: string;
  /** Bring your own client (tests, remote engines). */
  docker?: Dockerode;
  logger?: EngineLogger;
  /** Default stop grace period. */
  stopTimeoutMs?: number;
}

/** The parts of a dockerode error we look at. */
interface DockerErrorShape {
  statusCode?: number;
  code?: string;
  reason?: string;
  json?: { message?: string } | null;
  message?: string;
}

function dockerMessage(err: unknown): string {
  const e = (err ?? {}) as DockerErrorShape;
  return e.json?.message ?? e.message ?? String(err);
}

function statusOf(err: unknown): number | undefined {
  return (err as DockerErrorShape | null)?.statusCode;
}

const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

/** Map a dockerode failure to an EngineError (EngineErrors pass through). */
function mapError(err: unknown, id: string | undefined, op: string): EngineError {
  if (err instanceof EngineError) return err;
  const e = (err ?? {}) as DockerErrorShape;
  const msg = dockerMessage(err);
  if (e.code && UNAVAILABLE_CODES.has(e.code))
    return new EngineError('unavailable', `docker engine unavailable during ${op}: ${msg}`, {
      id,
      cause: err,
    });
  switch (e.statusCode) {
    case 404:
      return id !== undefined ? notFound(id) : new EngineError('not-found', msg, { cause: err });
    case 409:
      if (/is not running|is paused|not running/i.test(msg))
        return new EngineError('not-running', `workload ${id} is not running`, { id, cause: err });
      return new EngineError('conflict', `${op}: ${msg}`, { id, cause: err });
    case 400:
    case 500:
      if (/executable file not found|no such file or directory|exec format error/i.test(msg))
        return new EngineError('command-not-found', `${op}: ${msg}`, { id, cause: err });
      if (/could not select device driver|nvidia|device request/i.test(msg))
        return new EngineError('unsupported', `${op}: GPUs requested but not available: ${msg}`, {
          id,
          cause: err,
        });
      if (e.statusCode === 400)
        return new EngineError('invalid-spec', `${op}: docker rejected the request: ${msg}`, {
          id,
          cause: err,
        });
      return new EngineError('internal', `${op}: ${msg}`, { id, cause: err });
    default:
      return new EngineError('internal', `${op}: ${msg}`, { id, cause: err });
  }
}

const ZERO_TIME = '0001-01-01T00:00:00Z';
const parseTime = (s: string | undefined): number | undefined =>
  s === undefined || s === '' || s.startsWith('0001-') || s === ZERO_TIME ? undefined : Date.parse(s);

function mapState(status: string): WorkloadState {
  if (status === 'created') return 'created';
  if (status === 'running' || status === 'paused' || status === 'restarting') return 'running';
  return 'exited';
}

/** Host config for the limits (create: absent = unlimited). */
function resourcesToHostConfig(r: Resources): Dockerode.HostConfig {
  const hc: Dockerode.HostConfig = {};
  if (r.cpuMilli) {
    hc.CpuPeriod = CPU_PERIOD_US;
    hc.CpuQuota = Math.max(1000, Math.round((r.cpuMilli * CPU_PERIOD_US) / 1000));
    hc.CpuShares = Math.max(2, Math.round((r.cpuMilli * 1024) / 1000));
  }
  if (r.cpuset && r.cpuset.length > 0) hc.CpusetCpus = formatCpuset(r.cpuset);
  if (r.memoryBytes) {
    hc.Memory = r.memoryBytes;
    hc.MemorySwap = r.memoryBytes;
  }
  if (r.gpus && r.gpus.length > 0) {
    hc.DeviceRequests = [
      { Driver: 'nvidia', DeviceIDs: [...new Set(r.gpus.map((g) => g.device))], Capabilities: [['gpu']] },
    ];
  }
  return hc;
}

function hostConfigToResources(hc: Dockerode.HostConfig, requested: Resources): Resources {
  const r: Resources = {};
  if (hc.CpuQuota && hc.CpuQuota > 0 && hc.CpuPeriod)
    r.cpuMilli = Math.round((hc.CpuQuota * 1000) / hc.CpuPeriod);
  else if (hc.NanoCpus) r.cpuMilli = Math.round(hc.NanoCpus / 1e6);
  if (hc.CpusetCpus) r.cpuset = parseCpuset(hc.CpusetCpus);
  if (hc.Memory && hc.Memory > 0) r.memoryBytes = hc.Memory;
  const devices = (hc.DeviceRequests ?? []).flatMap((d) => d.DeviceIDs ?? []);
  if (devices.length > 0) {
    // Docker knows devices, not milli: keep the requested shares for the devices it has.
    const asked = new Map((requested.gpus ?? []).map((g) => [g.device, g.milli]));
    r.gpus = devices.map((device) => ({ device, milli: asked.get(device) ?? 1000 }));
  }
  return normalizeResources(r);
}

function specFromLabel(raw: Dockerode.ContainerInspectInfo): Omit<WorkloadSpec, 'resources'> {
  const labels = raw.Config.Labels ?? {};
  try {
    const parsed = JSON.parse(labels[LABEL_SPEC] ?? '') as Omit<WorkloadSpec, 'resources'>;
    if (parsed && typeof parsed.id === 'string') return parsed;
  } catch {
    // fall through: reconstruct from the container itself
  }
  const entry = raw.Config.Entrypoint;
  return {
    id: labels[LABEL_WORKLOAD] ?? raw.Name.replace(/^\//, ''),
    deployId: labels['shoal.deploy'] ?? '',
    hostId: labels[LABEL_HOST] ?? '',
    image: raw.Config.Image,
    command: Array.isArray(entry) ? entry : entry ? [entry] : undefined,
    args: raw.Config.Cmd ?? undefined,
  };
}

interface DockerEventMessage {
  Type?: string;
  Action?: string;
  status?: string;
  id?: string;
  time?: number;
  timeNano?: number;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
}

export class DockerEngine implements Engine {
  readonly hostId: string;
  readonly capabilities: EngineCapabilities = {
    kind: 'docker',
    images: true,
    // GPUs need the nvidia runtime in dockerd; without it `create` fails with `unsupported`.
    enforces: { cpu: true, cpuset: true, memory: true, gpus: true },
  };
  readonly docker: Dockerode;
  readonly socketPath: string;
  private readonly log: EngineLogger;
  private readonly stopTimeoutMs: number;
  private readonly listeners = new Set<EngineEventListener>();
  private eventStream: NodeJS.ReadableStream | undefined;
  private eventsSinceMs = 0;
  private closed = false;
  private readonly lastCpu = new Map<string, { cpuNs: number; atMs: number }>();
  private readonly oomSeen = new Set<string>();
  private ncpu: number | undefined;

  constructor(opts: DockerEngineOptions) {
    this.hostId = opts.hostId;
    this.socketPath = opts.socketPath ?? (process.env.SHOAL_DOCKER_SOCKET || DEFAULT_DOCKER_SOCKET);
    this.docker = opts.docker ?? new Dockerode({ socketPath: this.socketPath });
    this.log = opts.logger ?? silentLogger;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
  }

  /** Container name for a workload of this host. */
  containerName(id: string): string {
    return `shoal-${safeName(this.hostId)}-${safeName(id)}`;
  }

  /** Resolves when the daemon answers; `unavailable` otherwise. */
  async ping(): Promise<void> {
    try {
      await this.docker.ping();
    } catch (err) {
      throw new EngineError('unavailable', `no docker engine at ${this.socketPath}: ${dockerMessage(err)}`, {
        cause: err,
      });
    }
  }

  private container(id: string): Dockerode.Container {
    return this.docker.getContainer(this.containerName(id));
  }

  /** Raw inspect of one of this host's containers (`not-found` for another host's). */
  private async raw(id: string, op = 'inspect'): Promise<Dockerode.ContainerInspectInfo> {
    let info: Dockerode.ContainerInspectInfo;
    try {
      info = await this.container(id).inspect();
    } catch (err) {
      throw mapError(err, id, op);
    }
    if (info.Config.Labels?.[LABEL_HOST] !== this.hostId) throw notFound(id);
    return info;
  }

  private toInfo(raw: Dockerode.ContainerInspectInfo): WorkloadInfo {
    const labels = raw.Config.Labels ?? {};
    const base = specFromLabel(raw);
    const requested = (() => {
      try {
        return (JSON.parse(labels['shoal.resources'] ?? '{}') as Resources) ?? {};
      } catch {
        return {};
      }
    })();
    const resources = hostConfigToResources(raw.HostConfig, requested);
    const state = mapState(raw.State.Status);
    // Ports are published only if the container really runs with host networking.
    if (raw.HostConfig.NetworkMode !== 'host') delete base.ports;
    const info: WorkloadInfo = {
      id: labels[LABEL_WORKLOAD] ?? base.id,
      deployId: labels['shoal.deploy'] ?? base.deployId,
      hostId: labels[LABEL_HOST] ?? base.hostId,
      labels: { ...labels },
      state,
      createdAt: Date.parse(raw.Created),
      spec: { ...base, resources },
      enforced: {
        cpu: resources.cpuMilli !== undefined,
        cpuset: resources.cpuset !== undefined,
        memory: resources.memoryBytes !== undefined,
        gpus: resources.gpus !== undefined,
        notes: resources.gpus?.some((g) => g.milli < 1000)
          ? ['fractional GPU shares are not enforced by docker: the whole device is visible']
          : [],
      },
      ref: raw.Id,
    };
    delete info.labels[LABEL_SPEC];
    delete info.labels['shoal.resources'];
    const startedAt = parseTime(raw.State.StartedAt);
    if (startedAt !== undefined) info.startedAt = startedAt;
    if (state === 'running' && raw.State.Pid > 0) info.pid = raw.State.Pid;
    if (state === 'exited') {
      info.exitCode = raw.State.ExitCode;
      info.oomKilled = raw.State.OOMKilled;
      const finishedAt = parseTime(raw.State.FinishedAt);
      if (finishedAt !== undefined) info.finishedAt = finishedAt;
    }
    return info;
  }

  async create(spec: WorkloadSpec): Promise<WorkloadInfo> {
    validateSpec(spec, this.hostId);
    if (spec.image === undefined)
      throw new EngineError('invalid-spec', 'invalid workload spec: image is required by the docker engine', {
        id: spec.id,
      });
    const resources = normalizeResources(spec.resources ?? {});
    if (resources.memoryBytes !== undefined && resources.memoryBytes < DOCKER_MIN_MEMORY)
      throw new EngineError('invalid-spec', 'invalid workload spec: resources.memoryBytes must be >= 6 MiB', {
        id: spec.id,
      });
    const { resources: _r, ...rest } = spec;
    const labels = {
      ...workloadLabels(spec),
      [LABEL_SPEC]: JSON.stringify(rest),
      'shoal.resources': JSON.stringify(resources),
    };
    const body: Dockerode.ContainerCreateOptions = {
      name: this.containerName(spec.id),
      Image: spec.image,
      Labels: labels,
      Env: Object.entries(spec.env ?? {}).map(([k, v]) => `${k}=${v}`),
      HostConfig: {
        Init: true,
        // Published ports: host networking (the workload listens on the host's ports itself;
        // `--bridge=none --iptables=false` engines have no port mapping). Otherwise no network.
        NetworkMode: spec.ports !== undefined && spec.ports.length > 0 ? 'host' : 'none',
        RestartPolicy: { Name: 'no' },
        ...resourcesToHostConfig(resources),
      },
    };
    if (spec.command) {
      body.Entrypoint = spec.command;
      body.Cmd = spec.args ?? [];
    } else if (spec.args) {
      body.Cmd = spec.args;
    }
    if (spec.workdir) body.WorkingDir = spec.workdir;
    if (spec.user) body.User = spec.user;
    if (spec.mounts && spec.mounts.length > 0) {
      body.HostConfig!.Mounts = spec.mounts.map((m) =>
        m.type === 'tmpfs'
          ? {
              Type: 'tmpfs' as const,
              Source: '',
              Target: m.target,
              ReadOnly: m.readOnly === true,
              ...(m.sizeBytes ? { TmpfsOptions: { SizeBytes: m.sizeBytes, Mode: 0o1777 } } : {}),
            }
          : {
              Type: m.type,
              Source: m.source ?? '', // '' = an anonymous volume
              Target: m.target,
              ReadOnly: m.readOnly === true,
            },
      );
    }
    try {
      await this.docker.createContainer(body);
    } catch (err) {
      const status = statusOf(err);
      const msg = dockerMessage(err);
      if (status === 404 && /no such image|not found|pull access/i.test(msg))
        throw imageNotFound(spec.image, spec.id);
      if (status === 409)
        throw new EngineError('conflict', `workload ${spec.id} already exists on this host`, {
          id: spec.id,
          cause: err,
        });
      throw mapError(err, spec.id, 'create');
    }
    if (spec.command) {
      const found = await this.commandExists(spec.id, spec.command[0] as string).catch(() => true);
      if (!found) {
        await this.container(spec.id)
          .remove({ force: true })
          .catch(() => {});
        throw new EngineError(
          'command-not-found',
          `command ${spec.command[0]} not found in image ${spec.image} (PATH of the image)`,
          { id: spec.id },
        );
      }
    }
    this.log.debug({ id: spec.id, image: spec.image }, 'docker: created');
    return this.inspect(spec.id);
  }

  /**
   * Whether `cmd` resolves inside the created container's filesystem (HEAD on its archive API,
   * no process started). Needed because with `Init: true` a missing command only shows up as
   * docker-init exiting 127 after a successful start.
   */
  private async commandExists(id: string, cmd: string): Promise<boolean> {
    const raw = await this.raw(id, 'create');
    const c = this.container(id);
    const exists = async (path: string) => {
      try {
        await c.infoArchive({ path });
        return true;
      } catch (err) {
        if (statusOf(err) === 404) return false;
        throw err;
      }
    };
    if (cmd.includes('/')) {
      const wd = raw.Config.WorkingDir || '/';
      return exists(cmd.startsWith('/') ? cmd : `${wd.replace(/\/$/, '')}/${cmd}`);
    }
    const pathVar = (raw.Config.Env ?? []).find((e) => e.startsWith('PATH='))?.slice(5);
    const dirs = (pathVar ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':');
    for (const dir of dirs) if (dir && (await exists(`${dir.replace(/\/$/, '')}/${cmd}`))) return true;
    return false;
  }

  async start(id: string): Promise<void> {
    const raw = await this.raw(id, 'start');
    const state = mapState(raw.State.Status);
    if (state === 'running') return;
    if (state === 'exited')
      throw new EngineError('conflict', `workload ${id} has exited; create a new workload to run it again`, {
        id,
      });
    try {
      await this.container(id).start();
    } catch (err) {
      if (statusOf(err) === 304) return;
      throw mapError(err, id, 'start');
    }
  }

  async stop(id: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = opts.timeoutMs ?? this.stopTimeoutMs;
    const c = this.container(id);
    const raw = await this.raw(id, 'stop');
    if (raw.State.Running && raw.State.Pid > 0) await this.initReady(raw.State.Pid);
    const exited = this.waitRaw(id, 'not-running');
    exited.catch(() => {});
    if (!(await this.kill(id, 'SIGTERM'))) {
      await exited.catch(() => undefined);
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const first = await Promise.race([exited.then(() => 'exited' as const), timedOut]).finally(() =>
      clearTimeout(timer),
    );
    if (first === 'timeout') {
      this.log.info({ id, timeoutMs }, 'docker: stop grace period over, killing');
      await this.kill(id, 'SIGKILL');
      try {
        await c.wait({ condition: 'not-running' });
      } catch (err) {
        throw mapError(err, id, 'stop');
      }
    }
  }

  /**
   * Right after start, the container's PID 1 may not handle signals yet: a SIGTERM sent then is
   * dropped by the kernel (PID-namespace init protection) and stop would always run into its
   * timeout. When dockerd is local (its pids are visible in /proc), wait up to 1 s for PID 1 to
   * be ready (see containerInitReady).
   */
  private async initReady(pid: number): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if (containerInitReady(pid) !== false) return;
      await sleep(10);
    }
  }

  /** Send a signal; false when the container was not running. */
  private async kill(id: string, signal: string): Promise<boolean> {
    try {
      await this.container(id).kill({ signal });
      return true;
    } catch (err) {
      const mapped = mapError(err, id, 'kill');
      if (mapped.code === 'not-running' || statusOf(err) === 304 || statusOf(err) === 409) return false;
      throw mapped;
    }
  }

  private async waitRaw(id: string, condition: 'not-running' | 'next-exit'): Promise<number> {
    try {
      const res = (await this.container(id).wait({ condition })) as { StatusCode?: number };
      return res.StatusCode ?? -1;
    } catch (err) {
      throw mapError(err, id, 'wait');
    }
  }

  async remove(id: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.raw(id, 'remove');
    try {
      await this.container(id).remove({ force: opts.force ?? false, v: true });
    } catch (err) {
      const mapped = mapError(err, id, 'remove');
      if (mapped.code === 'conflict' || statusOf(err) === 409)
        throw new EngineError('conflict', `workload ${id} is running; stop it or remove with force`, {
          id,
          cause: err,
        });
      throw mapped;
    }
    this.lastCpu.delete(id);
  }

  async inspect(id: string): Promise<WorkloadInfo> {
    return this.toInfo(await this.raw(id));
  }

  async list(): Promise<WorkloadInfo[]> {
    let summaries: Dockerode.ContainerInfo[];
    try {
      summaries = await this.docker.listContainers({
        all: true,
        filters: { label: [`${LABEL_HOST}=${this.hostId}`] },
      });
    } catch (err) {
      throw mapError(err, undefined, 'list');
    }
    const infos = await Promise.all(
      summaries.map(async (s) => {
        try {
          return this.toInfo(await this.docker.getContainer(s.Id).inspect());
        } catch (err) {
          if (statusOf(err) === 404) return undefined; // removed meanwhile
          throw mapError(err, s.Labels?.[LABEL_WORKLOAD], 'list');
        }
      }),
    );
    return infos.filter((i): i is WorkloadInfo => i !== undefined).sort((a, b) => a.id.localeCompare(b.id));
  }

  logs(id: string, opts: LogOptions = {}): AsyncIterable<LogLine> {
    let source: NodeJS.ReadableStream | undefined;
    const queue = new AsyncQueue<LogLine>(() => {
      (source as Readable | undefined)?.destroy?.();
      opts.signal?.removeEventListener('abort', onAbort);
    });
    const onAbort = () => queue.end();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const since = opts.since;
    const push = (stream: 'stdout' | 'stderr', raw: string) => {
      // With timestamps: "2024-05-01T10:00:00.123456789Z line"
      const sp = raw.indexOf(' ');
      const ts = sp > 0 ? Date.parse(raw.slice(0, sp)) : Number.NaN;
      const line = Number.isNaN(ts) ? raw : raw.slice(sp + 1);
      const at = Number.isNaN(ts) ? Date.now() : ts;
      if (since !== undefined && at < since) return;
      queue.push({ stream, line, ts: at });
    };
    const sink = (stream: 'stdout' | 'stderr') => {
      const split = new LineSplitter();
      const w = new Writable({
        write(chunk: Buffer, _enc, cb) {
          for (const l of split.push(chunk)) push(stream, l);
          cb();
        },
      });
      return { w, flush: () => ((s) => s !== undefined && push(stream, s))(split.flush()) };
    };
    const run = async () => {
      await this.raw(id, 'logs');
      const base = {
        stdout: true,
        stderr: true,
        timestamps: true,
        ...(opts.tail !== undefined ? { tail: opts.tail } : {}),
        ...(since !== undefined ? { since: Math.floor(since / 1000) } : {}),
      };
      const c = this.container(id);
      if (opts.follow) {
        source = await c.logs({ ...base, follow: true });
      } else {
        source = Readable.from([await c.logs({ ...base, follow: false })]);
      }
      if (queue.isEnded) {
        (source as Readable).destroy?.();
        return;
      }
      const out = sink('stdout');
      const err = sink('stderr');
      this.docker.modem.demuxStream(source, out.w, err.w);
      await new Promise<void>((resolve, reject) => {
        source?.on('end', resolve);
        source?.on('close', resolve);
        source?.on('error', reject);
      });
      out.flush();
      err.flush();
    };
    run().then(
      () => queue.end(),
      (err) => queue.fail(mapError(err, id, 'logs')),
    );
    return queue;
  }

  private async cpuSample(id: string): Promise<{ cpuNs: number; memoryBytes: number; atMs: number }> {
    let s: Dockerode.ContainerStats;
    try {
      s = await this.container(id).stats({ stream: false, 'one-shot': true });
    } catch (err) {
      throw mapError(err, id, 'stats');
    }
    const mem = s.memory_stats ?? {};
    const inner = (mem.stats ?? {}) as Record<string, number | undefined>;
    const cache = inner.total_inactive_file ?? inner.inactive_file ?? 0;
    return {
      cpuNs: s.cpu_stats?.cpu_usage?.total_usage ?? 0,
      memoryBytes: Math.max(0, (mem.usage ?? 0) - cache),
      atMs: performance.now(),
    };
  }

  async stats(id: string): Promise<Stats> {
    const raw = await this.raw(id, 'stats');
    if (mapState(raw.State.Status) !== 'running') return { cpuMilli: 0, memoryBytes: 0 };
    let prev = this.lastCpu.get(id);
    if (prev === undefined) {
      const first = await this.cpuSample(id);
      prev = { cpuNs: first.cpuNs, atMs: first.atMs };
      await sleep(100);
    }
    const cur = await this.cpuSample(id);
    this.lastCpu.set(id, { cpuNs: cur.cpuNs, atMs: cur.atMs });
    const wallNs = (cur.atMs - prev.atMs) * 1e6;
    const cpuMilli = wallNs > 0 ? Math.max(0, Math.round(((cur.cpuNs - prev.cpuNs) / wallNs) * 1000)) : 0;
    return { cpuMilli, memoryBytes: cur.memoryBytes };
  }

  async exec(id: string, cmd: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const raw = await this.raw(id, 'exec');
    if (mapState(raw.State.Status) !== 'running')
      throw new EngineError('not-running', `workload ${id} is not running`, { id });
    let exec: Dockerode.Exec;
    let stream: NodeJS.ReadWriteStream;
    try {
      exec = await this.container(id).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
      stream = (await exec.start({ hijack: true, stdin: false })) as NodeJS.ReadWriteStream;
    } catch (err) {
      throw mapError(err, id, 'exec');
    }
    const chunks = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
    const collect = (into: Buffer[]) =>
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          into.push(chunk);
          cb();
        },
      });
    this.docker.modem.demuxStream(stream, collect(chunks.stdout), collect(chunks.stderr));
    let timer: NodeJS.Timeout | undefined;
    const done = new Promise<'done'>((resolve, reject) => {
      stream.on('end', () => resolve('done'));
      stream.on('close', () => resolve('done'));
      stream.on('error', reject);
    });
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const outcome = await Promise.race([done, timedOut]).finally(() => clearTimeout(timer));
    if (outcome === 'timeout') {
      (stream as unknown as Readable).destroy?.();
      try {
        const info = (await exec.inspect()) as { Pid?: number };
        // The exec's pid is a host pid: kill it when dockerd runs on this machine (best effort).
        if (info.Pid) process.kill(info.Pid, 'SIGKILL');
      } catch {
        // not on this machine, or already gone
      }
      throw new EngineError('timeout', `exec in ${id} did not finish within ${timeoutMs} ms`, { id });
    }
    let exitCode: number | null = null;
    for (let i = 0; i < 50; i++) {
      const info = await exec.inspect();
      if (!info.Running) {
        exitCode = info.ExitCode;
        break;
      }
      await sleep(10);
    }
    return {
      exitCode: exitCode ?? -1,
      stdout: Buffer.concat(chunks.stdout).toString('utf8'),
      stderr: Buffer.concat(chunks.stderr).toString('utf8'),
    };
  }

  async update(id: string, patch: Resources): Promise<WorkloadInfo> {
    validateResources(patch, { id }, 'update');
    const current = await this.inspect(id);
    const cur = current.spec.resources ?? {};
    const next = mergeResources(cur, patch);
    if (JSON.stringify(next.gpus ?? []) !== JSON.stringify(cur.gpus ?? []))
      throw new EngineError('unsupported', 'GPUs cannot be changed on a live container; recreate it', { id });
    const body: Dockerode.HostConfig = {};
    if (patch.cpuMilli !== undefined) {
      if (next.cpuMilli) Object.assign(body, resourcesToHostConfig({ cpuMilli: next.cpuMilli }));
      else Object.assign(body, { CpuQuota: -1, CpuShares: 1024 });
    }
    if (patch.cpuset !== undefined) {
      body.CpusetCpus = next.cpuset ? formatCpuset(next.cpuset) : `0-${(await this.cpuCount()) - 1}`;
    }
    if (patch.memoryBytes !== undefined) {
      if (!next.memoryBytes) {
        if (cur.memoryBytes)
          throw new EngineError('unsupported', 'docker cannot lift a memory limit live; set a larger one', {
            id,
          });
      } else {
        if (next.memoryBytes < DOCKER_MIN_MEMORY)
          throw new EngineError('invalid-spec', 'invalid update: memoryBytes must be >= 6 MiB', { id });
        body.Memory = next.memoryBytes;
        body.MemorySwap = next.memoryBytes;
      }
    }
    if (Object.keys(body).length > 0) {
      try {
        await this.container(id).update(body);
      } catch (err) {
        throw mapError(err, id, 'update');
      }
    }
    return this.inspect(id);
  }

  private async cpuCount(): Promise<number> {
    if (this.ncpu === undefined) {
      const info = (await this.docker.info()) as { NCPU?: number };
      this.ncpu = info.NCPU ?? 1;
    }
    return this.ncpu;
  }

  async wait(id: string): Promise<number> {
    const raw = await this.raw(id, 'wait');
    const state = mapState(raw.State.Status);
    if (state === 'exited') return raw.State.ExitCode;
    // A created container: wait for its next exit; a running one: for it to stop.
    const code = await this.waitRaw(id, state === 'created' ? 'next-exit' : 'not-running');
    return code;
  }

  subscribe(listener: EngineEventListener): () => void {
    this.listeners.add(listener);
    if (this.listeners.size === 1 && this.eventStream === undefined) {
      // Replay from "now": the event stream is opened asynchronously, docker's `since` closes the gap.
      this.eventsSinceMs = Date.now();
      void this.openEvents();
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.closeEvents();
    };
  }

  private closeEvents(): void {
    const s = this.eventStream as Readable | undefined;
    this.eventStream = undefined;
    s?.destroy?.();
  }

  private async openEvents(): Promise<void> {
    if (this.closed || this.listeners.size === 0) return;
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.getEvents({
        since: Math.floor(this.eventsSinceMs / 1000),
        filters: {
          type: ['container'],
          label: [`${LABEL_HOST}=${this.hostId}`],
          event: ['start', 'die', 'oom', 'destroy'],
        },
      });
    } catch (err) {
      this.log.warn({ err: dockerMessage(err) }, 'docker: events stream failed to open; retrying');
      setTimeout(() => void this.openEvents(), 1000).unref();
      return;
    }
    if (this.closed || this.listeners.size === 0) {
      (stream as Readable).destroy?.();
      return;
    }
    this.eventStream = stream;
    const split = new LineSplitter();
    stream.on('data', (chunk: Buffer) => {
      for (const line of split.push(chunk)) {
        if (line.trim() === '') continue;
        try {
          this.onDockerEvent(JSON.parse(line) as DockerEventMessage);
        } catch (err) {
          this.log.warn({ err: String(err), line }, 'docker: unparsable event');
        }
      }
    });
    const reopen = () => {
      if (this.eventStream !== stream) return; // closed on purpose
      this.eventStream = undefined;
      if (!this.closed && this.listeners.size > 0) {
        this.log.warn({}, 'docker: events stream ended; reconnecting');
        setTimeout(() => void this.openEvents(), 500).unref();
      }
    };
    stream.on('end', reopen);
    stream.on('error', reopen);
  }

  private onDockerEvent(m: DockerEventMessage): void {
    const tsNs = m.timeNano ?? (m.time ?? 0) * 1e9;
    const ts = Math.floor(tsNs / 1e6);
    if (ts < this.eventsSinceMs) return; // replayed from before we subscribed
    this.eventsSinceMs = ts; // a reconnect resumes from here (may repeat this second's events)
    const attrs = m.Actor?.Attributes ?? {};
    const id = attrs[LABEL_WORKLOAD];
    if (id === undefined || attrs[LABEL_HOST] !== this.hostId) return;
    const action = m.Action ?? m.status;
    let event: EngineEvent | undefined;
    switch (action) {
      case 'start':
        this.oomSeen.delete(id);
        event = { type: 'started', id, ts };
        break;
      case 'oom':
        this.oomSeen.add(id);
        event = { type: 'oom', id, ts };
        break;
      case 'die': {
        const code = Number.parseInt(attrs.exitCode ?? '', 10);
        event = {
          type: 'exited',
          id,
          ts,
          exitCode: Number.isNaN(code) ? -1 : code,
          oomKilled: this.oomSeen.has(id),
        };
        this.oomSeen.delete(id);
        break;
      }
      case 'destroy':
        event = { type: 'removed', id, ts };
        break;
    }
    if (event === undefined) return;
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch (err) {
        this.log.error({ err: String(err) }, 'engine event listener threw');
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    this.closeEvents();
  }
}
