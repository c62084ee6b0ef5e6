import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { writeSwarmKeyFile } from '../gossip/swarm-key.ts';

/**
 * Real agent OS processes for multi-process tests and benchmarks.
 *
 *   const c = new ClusterProcs();
 *   try {
 *     const key = c.keygen();
 *     const a = await c.spawn({ clusterKey: key });
 *     const b = await c.spawn({ clusterKey: key, join: [a.addrs[0]!] });
 *     await waitFor(async () => (await c.nodes(1)).length === 2, 10_000, 100);
 *   } finally {
 *     await c.stopAll();
 *   }
 *
 * Each agent is `node node/bin/shoal.js agent …` with its own temp data dir, p2p on
 * 127.0.0.1:0 and the API on 127.0.0.1:0 the first time (the kernel picks a free port, so two
 * agents can never race for one); a restart asks for the port it had before so its URL stays the
 * same, and falls back to a fresh one if that port was taken meanwhile. Every stdout line is kept
 * parsed (pino JSON) per process, with the time it was read.
 *
 * Cleanup: `stopAll()` kills everything and removes the temp dirs; every spawned child is also
 * SIGKILLed when the parent process exits (test failure, thrown error, Ctrl-C of a bench), so no
 * agent outlives its test.
 */

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SHOAL_BIN = join(REPO_ROOT, 'node', 'bin', 'shoal.js');

export type Status = 'alive' | 'suspect' | 'dead' | 'left';

/** One parsed stdout line of an agent (pino JSON); `recvAt` is when the parent read it. */
export interface LogLine {
  level?: number;
  time?: number;
  msg?: string;
  recvAt: number;
  [key: string]: unknown;
}

export interface NodeRow {
  id: string;
  status: Status;
  incarnation: number;
  addrs: string[];
  capacity: { cpuMilli: number; memory: number; labels: Record<string, string> } | null;
  allocated: unknown;
  labels: Record<string, string>;
  statusAgeMs: number;
  self: boolean;
}

export interface StateRow {
  hash: string;
  [key: string]: unknown;
}

export interface SpawnOptions {
  /** Join addresses (multiaddrs). */
  join?: string[];
  /** Path of a cluster key file; absent = open cluster. */
  clusterKey?: string;
  labels?: string[];
  logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** More `shoal agent` flags, verbatim. */
  extraArgs?: string[];
  /** Reuse a data dir (default: a fresh one under the cluster's temp root). */
  dataDir?: string;
  /** How long to wait for the ready line. */
  readyTimeoutMs?: number;
  /** Extra environment; SHOAL_* variables of the parent are never passed on. */
  env?: Record<string, string>;
  /** Node flags before the script, e.g. ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'] (written on a clean exit). */
  nodeArgs?: string[];
}

export interface AgentProc {
  /** Index in the cluster (stable across restarts). */
  readonly index: number;
  /** Peer id (from the ready line; the same after a restart with the same data dir). */
  id: string;
  /** Multiaddrs incl. /p2p/<id> (change on restart: p2p listens on port 0). */
  addrs: string[];
  /** API base URL, e.g. http://127.0.0.1:41234 */
  api: string;
  readonly dataDir: string;
  /** Options the process was spawned with (restart reuses them). */
  readonly opts: SpawnOptions;
  child: ChildProcess;
  pid: number;
  /** Lines of the current run. */
  lines: LogLine[];
  /** Lines of earlier runs (before restarts), oldest first. */
  previousRuns: LogLine[][];
  /** Last stderr output (bounded), for error messages. */
  stderr: string;
  running: boolean;
  /** Resolves with the exit code/signal of the current run. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Every child spawned by this module and not yet reaped: killed on parent exit. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

/** Poll `pred` until it returns a truthy value (returned), or throw after `timeoutMs`. */
export async function waitFor<T>(
  pred: () => T | Promise<T>,
  timeoutMs: number,
  intervalMs = 100,
  what = 'condition',
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await pred();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      const why = lastErr ? ` (last error: ${String((lastErr as Error)?.message ?? lastErr)})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A currently free TCP port on 127.0.0.1 (the kernel's pick; free at return, not reserved). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

export class ClusterProcs {
  readonly root: string;
  readonly procs: AgentProc[] = [];
  private stopped = false;

  constructor(opts: { prefix?: string } = {}) {
    installExitHook();
    this.root = mkdtempSync(join(tmpdir(), opts.prefix ?? 'shoal-procs-'));
  }

  /** Write a fresh cluster key file under the temp root; returns its path. */
  keygen(name = 'cluster.key'): string {
    const path = join(this.root, name);
    writeSwarmKeyFile(path, { force: true });
    return path;
  }

  get(i: number): AgentProc {
    const p = this.procs[i];
    if (!p) throw new Error(`no agent #${i}`);
    return p;
  }

  /** Start one agent process and wait for its ready line. */
  async spawn(opts: SpawnOptions = {}): Promise<AgentProc> {
    if (this.stopped) throw new Error('cluster stopped');
    const index = this.procs.length;
    const dataDir = opts.dataDir ?? join(this.root, `agent-${index}`);
    const proc = {
      index,
      dataDir,
      opts: { ...opts },
      id: '',
      addrs: [],
      api: '',
      lines: [],
      previousRuns: [],
      stderr: '',
      running: false,
    } as unknown as AgentProc;
    this.procs.push(proc);
    await this.launch(proc, '127.0.0.1:0');
    return proc;
  }

  /** Start `n` agents concurrently; `opts(i)` gives the options of the i-th new one. */
  async spawnMany(n: number, opts: (i: number) => SpawnOptions = () => ({})): Promise<AgentProc[]> {
    return Promise.all(Array.from({ length: n }, (_, i) => this.spawn(opts(i))));
  }

  /** Send a signal to agent `i` and wait until the process has exited. */
  async kill(i: number, signal: NodeJS.Signals = 'SIGKILL', timeoutMs = 10_000): Promise<void> {
    const p = this.get(i);
    if (!p.running) return;
    p.child.kill(signal);
    const t = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
    await p.exited;
    clearTimeout(t);
  }

  /**
   * Restart agent `i` with the same data dir and flags (the API asks for its previous port).
   * `override` changes spawn options for this and later runs (e.g. `{ join: [] }`).
   */
  async restart(i: number, override: Partial<SpawnOptions> = {}): Promise<AgentProc> {
    const p = this.get(i);
    if (p.running) await this.kill(i, 'SIGKILL');
    Object.assign(p.opts, override);
    if (p.lines.length > 0) p.previousRuns.push(p.lines);
    p.lines = [];
    const port = p.api ? new URL(p.api).port : '0';
    try {
      await this.launch(p, `127.0.0.1:${port}`);
    } catch (err) {
      if (port === '0') throw err;
      // The old port was taken meanwhile: take a fresh one.
      if (p.lines.length > 0) p.previousRuns.push(p.lines);
      p.lines = [];
      await this.launch(p, '127.0.0.1:0');
    }
    return p;
  }

  /** Kill every process (SIGKILL) and remove the temp dirs. Idempotent; never throws. */
  async stopAll(opts: { keepFiles?: boolean } = {}): Promise<void> {
    this.stopped = true;
    await Promise.all(
      this.procs.map(async (p) => {
        if (!p.child || !p.running) return;
        try {
          p.child.kill('SIGKILL');
        } catch {
          // already gone
        }
        await Promise.race([p.exited, sleep(5_000)]);
      }),
    );
    if (!opts.keepFiles) {
      try {
        rmSync(this.root, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  }

  // ───────────────────────────── logs ─────────────────────────────

  /** Lines of agent `i` (current run) matching `msg` (and an optional predicate). */
  logs(i: number, msg?: string, pred: (l: LogLine) => boolean = () => true): LogLine[] {
    return this.get(i).lines.filter((l) => (msg === undefined || l.msg === msg) && pred(l));
  }

  /** Wait for a log line of agent `i` (current run) satisfying `pred`. */
  waitForLine(i: number, pred: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine> {
    return waitFor(() => this.get(i).lines.find(pred), timeoutMs, 25, `a log line of agent #${i}`);
  }

  // ───────────────────────────── HTTP ─────────────────────────────

  async http<T = unknown>(
    i: number,
    method: string,
    path: string,
    body?: unknown,
    timeoutMs = 5_000,
  ): Promise<T> {
    const p = this.get(i);
    const headers: Record<string, string> = { authorization: `Bearer ${this.token(i)}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${p.api}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`agent #${i} ${method} ${path}: HTTP ${res.status}: ${text}`);
    return JSON.parse(text) as T;
  }

  /**
   * Agent `i`'s API token (node/auth.ts): the file given with `--token-file` in extraArgs, else
   * `<data-dir>/token`, which the agent makes on first start.
   */
  token(i: number): string {
    const p = this.get(i);
    const args = p.opts.extraArgs ?? [];
    const k = args.indexOf('--token-file');
    const file = k >= 0 && args[k + 1] ? args[k + 1]! : join(p.dataDir, 'token');
    return readFileSync(file, 'utf8').trim();
  }

  nodes(i: number): Promise<NodeRow[]> {
    return this.http<NodeRow[]>(i, 'GET', '/v1/nodes');
  }

  state(i: number): Promise<StateRow> {
    return this.http<StateRow>(i, 'GET', '/v1/state');
  }

  health(i: number): Promise<Record<string, unknown>> {
    return this.http(i, 'GET', '/v1/health');
  }

  patchNode(i: number, body: Record<string, unknown>): Promise<NodeRow> {
    return this.http<NodeRow>(i, 'PATCH', '/v1/node', body);
  }

  /** Indices of the agents whose process is running. */
  runningIndices(): number[] {
    return this.procs.filter((p) => p.running).map((p) => p.index);
  }

  /** Status of member `id` as agent `i` sees it (undefined: not listed). */
  async statusOf(i: number, id: string): Promise<Status | undefined> {
    return (await this.nodes(i)).find((n) => n.id === id)?.status;
  }

  // ───────────────────────────── process plumbing ─────────────────────────────

  private args(p: AgentProc, api: string): string[] {
    const o = p.opts;
    const a = [
      ...(o.nodeArgs ?? []),
      SHOAL_BIN,
      'agent',
      '--data-dir',
      p.dataDir,
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--api',
      api,
    ];
    for (const j of o.join ?? []) a.push('--join', j);
    if (o.clusterKey) a.push('--cluster-key', o.clusterKey);
    for (const l of o.labels ?? []) a.push('--label', l);
    a.push('--log-level', o.logLevel ?? 'info');
    a.push(...(o.extraArgs ?? []));
    return a;
  }

  private launch(p: AgentProc, api: string): Promise<void> {
    const env: NodeJS.ProcessEnv = { ...process.env };
    // Flags only: no inherited SHOAL_* setting may change what the test asked for.
    for (const k of Object.keys(env)) if (k.startsWith('SHOAL_')) delete env[k];
    Object.assign(env, p.opts.env ?? {});
    const child = spawn(process.execPath, this.args(p, api), {
      cwd: REPO_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(child);
    p.child = child;
    p.pid = child.pid ?? -1;
    p.running = true;
    p.stderr = '';
    const lines = p.lines;
    p.exited = new Promise((res) => {
      child.once('exit', (code, signal) => {
        live.delete(child);
        if (p.child === child) p.running = false;
        res({ code, signal });
      });
    });
    createInterface({ input: child.stdout! }).on('line', (raw) => {
      const recvAt = Date.now();
      try {
        const o = JSON.parse(raw) as LogLine;
        o.recvAt = recvAt;
        lines.push(o);
      } catch {
        lines.push({ msg: raw, raw: true, recvAt });
      }
    });
    child.stderr!.on('data', (b: Buffer) => {
      p.stderr = (p.stderr + b.toString()).slice(-8_000);
    });
    const timeoutMs = p.opts.readyTimeoutMs ?? 45_000;
    return new Promise<void>((res, rej) => {
      let done = false;
      const finish = (err?: Error) => {
        if (done) return;
        done = true;
        clearInterval(poll);
        clearTimeout(timer);
        if (err) {
          child.kill('SIGKILL');
          rej(err);
        } else res();
      };
      const poll = setInterval(() => {
        const ready = lines.find((l) => l.msg === 'shoal agent ready');
        if (!ready) return;
        p.id = String(ready.id);
        p.addrs = (ready.addrs as string[]).slice();
        p.api = String(ready.api);
        finish();
      }, 20);
      const timer = setTimeout(
        () => finish(new Error(`agent #${p.index} not ready after ${timeoutMs} ms\n${this.tail(p)}`)),
        timeoutMs,
      );
      void p.exited.then(({ code, signal }) =>
        finish(
          new Error(
            `agent #${p.index} exited (code ${code}, signal ${signal}) before ready\n${this.tail(p)}`,
          ),
        ),
      );
    });
  }

  private tail(p: AgentProc): string {
    const out = p.lines
      .slice(-10)
      .map((l) => JSON.stringify(l))
      .join('\n');
    return `--- stdout (last lines) ---\n${out}\n--- stderr ---\n${p.stderr.slice(-2_000)}`;
  }
}

/** Every log line of an agent, over all its runs (restarts included). */
export function allLines(p: AgentProc): LogLine[] {
  return [...p.previousRuns.flat(), ...p.lines];
}

/** CPU seconds (user + system) used so far by the running agents (Linux /proc; 0 elsewhere). */
export function agentCpuSeconds(c: ClusterProcs): number {
  let ticks = 0;
  for (const i of c.runningIndices()) {
    try {
      const stat = readFileSync(`/proc/${c.get(i).pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // not Linux, or the process just exited
    }
  }
  return ticks / 100; // USER_HZ
}
