import http from 'node:http';
import net from 'node:net';
import type { Engine, ExecResult } from '../../engines/engine.ts';
import type { Prober } from '../core/health.ts';

/**
 * The real `Prober` (node/core/health.ts) for one host's Engine.
 *
 * - `host` mode (default for the process engine, whose workloads share the host's network): TCP
 *   and HTTP probes connect to `127.0.0.1:<port>` from the agent (node:net / node:http, no
 *   redirects followed, the body is not read). The workload must be running (one `inspect`), so
 *   another process holding the port cannot make an exited workload look healthy.
 * - `exec` mode (default for docker and sim: containers run with `NetworkMode: none`, so the port
 *   is only reachable from inside): the probe runs inside the workload through `Engine.exec`.
 *   HTTP: `wget -Y off -S -O /dev/null http://127.0.0.1:PORT/PATH`; the status is the first
 *   `HTTP/x.y NNN` line wget prints (busybox wget exits 1 on >= 400 but still prints it).
 *   Not `-T`: the static busybox 1.35 wget of shoal/busybox segfaults with it; the exec timeout
 *   bounds the probe instead. TCP: the first of `nc 127.0.0.1 PORT -e true` (busybox nc has no
 *   `-z`; `-e` must come last), `bash -c 'exec 3<>/dev/tcp/127.0.0.1/PORT'`, and a wget
 *   connect that works in the image is remembered per workload.
 * - exec checks always run through `Engine.exec`.
 */

export type ProbeMode = 'host' | 'exec';

export interface EngineProberOptions {
  /** Where TCP/HTTP probes run. Default: 'host' for the process engine, else 'exec'. */
  mode?: ProbeMode;
  /** Address host-mode probes connect to. Default 127.0.0.1. */
  host?: string;
}

class ProbeError extends Error {
  override readonly name = 'ProbeError';
}

type TcpMethod = 'nc' | 'bash' | 'wget';
const TCP_METHODS: readonly TcpMethod[] = ['nc', 'bash', 'wget'];
/** Remembered TCP methods (per workload id); cleared wholesale past this size. */
const MAX_REMEMBERED = 4_096;

const STATUS_RE = /HTTP\/\d(?:\.\d)?\s+(\d{3})/;

function lastLine(s: string): string {
  const l = s.split('\n').filter((x) => x.trim() !== '');
  const one = (l.at(-1) ?? '').trim();
  return one.length > 200 ? `${one.slice(0, 199)}…` : one;
}

/**
 * The command is missing from the image (Docker: exit 126 and the OCI error on *stdout*; shells
 * and the process engine: 127). Not a bare "not found": that is also how a 404 reads.
 */
function missingCommand(r: ExecResult): boolean {
  return r.exitCode === 126 || r.exitCode === 127 || /executable file not found/i.test(r.stdout + r.stderr);
}

/** The command is missing or does not take these arguments (try another method). */
function unavailable(r: ExecResult): boolean {
  return missingCommand(r) || /invalid option|unrecognized option|usage:/i.test(r.stderr);
}

export class EngineProber implements Prober {
  readonly mode: ProbeMode;
  private readonly host: string;
  private readonly tcpMethod = new Map<string, TcpMethod>();

  constructor(
    private readonly engine: Engine,
    opts: EngineProberOptions = {},
  ) {
    this.mode = opts.mode ?? (engine.capabilities.kind === 'process' ? 'host' : 'exec');
    this.host = opts.host ?? '127.0.0.1';
  }

  async tcp(workloadId: string, port: number, timeoutMs: number): Promise<void> {
    if (this.mode === 'host') {
      await this.mustRun(workloadId);
      return hostTcp(this.host, port, timeoutMs);
    }
    return this.execTcp(workloadId, port, timeoutMs);
  }

  async http(workloadId: string, port: number, path: string, timeoutMs: number): Promise<number> {
    if (this.mode === 'host') {
      await this.mustRun(workloadId);
      return hostHttp(this.host, port, path, timeoutMs);
    }
    const url = `http://127.0.0.1:${port}${path}`;
    const r = await this.exec0(workloadId, ['wget', '-Y', 'off', '-S', '-O', '/dev/null', url], timeoutMs);
    const m = STATUS_RE.exec(r.stderr) ?? STATUS_RE.exec(r.stdout);
    if (m) return Number(m[1]);
    if (unavailable(r))
      throw new ProbeError(
        `no usable wget in workload ${workloadId} (${lastLine(r.stderr) || lastLine(r.stdout) || `exit ${r.exitCode}`}); ` +
          'http checks of container workloads run wget inside the container — use an exec check',
      );
    throw new ProbeError(`GET ${url}: ${lastLine(r.stderr) || `wget exited with ${r.exitCode}, no status`}`);
  }

  async exec(workloadId: string, argv: string[], timeoutMs: number): Promise<number> {
    return (await this.exec0(workloadId, argv, timeoutMs)).exitCode;
  }

  /** Forget what was learnt about a workload (call when it is removed). */
  forget(workloadId: string): void {
    this.tcpMethod.delete(workloadId);
  }

  private async mustRun(id: string): Promise<void> {
    let state: string;
    try {
      state = (await this.engine.inspect(id)).state;
    } catch (err) {
      throw new ProbeError(`cannot inspect workload ${id}: ${(err as Error).message}`);
    }
    if (state !== 'running') throw new ProbeError(`workload ${id} is not running (${state})`);
  }

  private async exec0(id: string, argv: string[], timeoutMs: number): Promise<ExecResult> {
    try {
      return await this.engine.exec(id, argv, { timeoutMs });
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === 'timeout') throw new ProbeError(`timed out after ${timeoutMs} ms`);
      throw new ProbeError((err as Error).message);
    }
  }

  private async execTcp(id: string, port: number, timeoutMs: number): Promise<void> {
    const known = this.tcpMethod.get(id);
    // The remembered method first; if it went missing (image changed), rediscover at once.
    const methods = known ? [known, ...TCP_METHODS.filter((m) => m !== known)] : TCP_METHODS;
    const tried: string[] = [];
    for (const m of methods) {
      const r = await this.exec0(id, tcpArgv(m, port), timeoutMs);
      const verdict = judgeTcp(m, r);
      if (verdict === 'unavailable') {
        tried.push(`${m}: ${lastLine(r.stderr) || lastLine(r.stdout) || `exit ${r.exitCode}`}`);
        continue;
      }
      if (this.tcpMethod.size >= MAX_REMEMBERED) this.tcpMethod.clear();
      this.tcpMethod.set(id, m);
      if (verdict === 'open') return;
      throw new ProbeError(
        `connect 127.0.0.1:${port}: ${lastLine(r.stderr) || `${m} exited with ${r.exitCode}`}`,
      );
    }
    this.tcpMethod.delete(id);
    throw new ProbeError(
      `no way to open a TCP connection inside workload ${id} (tried ${tried.join('; ')}); ` +
        'tcp checks of container workloads need nc, bash or wget in the image — use an exec check',
    );
  }
}

function tcpArgv(m: TcpMethod, port: number): string[] {
  switch (m) {
    case 'nc':
      return ['nc', '127.0.0.1', String(port), '-e', 'true'];
    case 'bash':
      return ['bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`];
    case 'wget':
      return ['wget', '-Y', 'off', '-O', '/dev/null', `http://127.0.0.1:${port}/`];
  }
}

function judgeTcp(m: TcpMethod, r: ExecResult): 'open' | 'closed' | 'unavailable' {
  const refused = /refused|can't connect|cannot connect|unreachable|connection reset/i.test(r.stderr);
  if (m === 'wget') {
    // wget speaks HTTP: anything but a failed connect (a status, a protocol error) means open.
    if (refused) return 'closed';
    return missingCommand(r) ? 'unavailable' : 'open';
  }
  if (r.exitCode === 0) return 'open';
  if (refused) return 'closed';
  return unavailable(r) ? 'unavailable' : 'closed';
}

/** Resolves once a TCP connection to host:port is established (then closes it). */
export function hostTcp(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new ProbeError(`connect ${host}:${port}: timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve();
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new ProbeError(`connect ${host}:${port}: ${err.code ?? err.message}`));
    });
  });
}

/** GET http://host:port/path; resolves with the status code once the headers arrived. */
export function hostHttp(host: string, port: number, path: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (err: Error | undefined, code?: number): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      if (err) reject(err);
      else resolve(code as number);
    };
    const req = http.request(
      {
        host,
        port,
        path,
        method: 'GET',
        agent: false,
        headers: { 'user-agent': 'shoal-health/1', connection: 'close', accept: '*/*' },
      },
      (res) => {
        res.on('error', () => {});
        done(undefined, res.statusCode ?? 0);
        res.destroy();
      },
    );
    const timer = setTimeout(
      () => done(new ProbeError(`GET http://${host}:${port}${path}: timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    req.on('error', (err: NodeJS.ErrnoException) =>
      done(new ProbeError(`GET http://${host}:${port}${path}: ${err.code ?? err.message}`)),
    );
    req.end();
  });
}
