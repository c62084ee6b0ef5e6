import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TOKEN_FILE_NAME } from './auth.ts';

/**
 * HTTP client of the agent API, used by the CLI (node/cli.ts). Errors are one readable line:
 * unreachable agents name the address, API errors carry the agent's message (which names the
 * offending field), 401s say where the token comes from.
 *
 * The types below are the API contract the CLI codes against (docs/api.md); fields marked
 * "contract" may not be served by every agent version yet.
 */

export interface ReplicaView {
  replica: number;
  host: string | null;
  gen: number | null;
  status?: string;
  exitCode?: number | null;
  health?: string | null;
  /** Version (history number) of the template this replica runs. */
  version?: number;
  /** Runs the deploy's current template. */
  updated?: boolean;
  restarts?: number;
  /** Why it is not running (e.g. the image does not exist). */
  error?: string;
  /** contract: epoch ms when it started. */
  startedAt?: number | null;
}

export interface RolloutView {
  /** rolling: in progress; done: finished; rolled-back / paused: ended without success (`reason`). */
  state: 'rolling' | 'done' | 'rolled-back' | 'paused';
  updated: number;
  total: number;
  version: number;
  reason?: string;
  /** What the rollout did differently than asked (e.g. start-first not possible). */
  notes?: string[];
}

export interface HistoryEntry {
  version: number;
  at: number;
  image?: string;
  [key: string]: unknown;
}

export interface DeployView {
  id: string;
  name: string;
  replicas: number;
  strategy: string;
  spec: Record<string, unknown>;
  placed: number;
  instances: ReplicaView[];
  coordinator?: string;
  pending?: { pending: number; reasons: string[]; retryAt: number };
  /** contract: current spec version. */
  version?: number;
  /** contract: present while (and after) a rolling update. */
  rollout?: RolloutView;
  /** contract: earlier versions, oldest first. */
  history?: HistoryEntry[];
}

export interface WorkloadView {
  id: string;
  deployId: string;
  replica: number;
  host: string | null;
  status?: string;
  gen?: number;
  [key: string]: unknown;
}

export interface LogLine {
  stream: 'stdout' | 'stderr' | string;
  line: string;
  ts: number;
  replica?: number;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface JobStatus {
  id: string;
  status: 'succeeded' | 'failed' | 'running' | 'pending';
  exitCode: number | null;
  attempts?: number;
  host?: string | null;
}

/** An error answer of the API (or an unreachable agent: status 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface ClientOptions {
  /** host:port or a base URL (http://host:port). */
  addr: string;
  token?: string;
  /** Per-request timeout (not for streams). Default 10 s. */
  timeoutMs?: number;
}

export interface RequestOptions {
  body?: unknown;
  /** Raw body text with its content type (e.g. a Compose file as application/yaml). */
  raw?: { contentType: string; text: string };
  query?: Record<string, string | number | boolean | undefined>;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Base URL of an --addr value. */
export function baseUrl(addr: string): string {
  return /^https?:\/\//.test(addr) ? addr.replace(/\/+$/, '') : `http://${addr}`;
}

/**
 * The token the CLI sends: `--token`/SHOAL_TOKEN when given, else the local agent's
 * `<data-dir>/token` when readable (a CLI on the agent's host needs no flag), else none.
 */
export function resolveToken(opts: { token?: string; dataDir?: string }): string | undefined {
  if (opts.token !== undefined && opts.token !== '') return opts.token;
  if (opts.dataDir) {
    const file = join(opts.dataDir, TOKEN_FILE_NAME);
    if (existsSync(file)) {
      try {
        const t = readFileSync(file, 'utf8').split('\n')[0]?.trim();
        if (t) return t;
      } catch {
        // not readable by this user: fall through to no token (the agent answers 401)
      }
    }
  }
  return undefined;
}

/** The innermost useful reason of a fetch failure (ECONNREFUSED 127.0.0.1:1, timeout, …). */
function reason(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && err.name === 'TimeoutError') return `no answer within ${timeoutMs / 1000} s`;
  const cause = err instanceof Error ? err.cause : undefined;
  if (cause instanceof Error) {
    const code = (cause as Error & { code?: unknown }).code;
    return typeof code === 'string' && !cause.message.includes(code)
      ? `${code} ${cause.message}`
      : cause.message;
  }
  return err instanceof Error ? err.message : String(err);
}

export class ShoalClient {
  readonly base: string;

  constructor(private readonly opts: ClientOptions) {
    this.base = baseUrl(opts.addr);
  }

  private url(path: string, query?: RequestOptions['query']): string {
    const u = new URL(`${this.base}${path}`);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u.toString();
  }

  private async fetch(method: string, path: string, o: RequestOptions, stream: boolean): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    let body: string | undefined;
    if (o.raw) {
      headers['content-type'] = o.raw.contentType;
      body = o.raw.text;
    } else if (o.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(o.body);
    }
    const timeoutMs = o.timeoutMs ?? this.opts.timeoutMs ?? 10_000;
    const signals = [o.signal, stream ? undefined : AbortSignal.timeout(timeoutMs)].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    let res: Response;
    try {
      res = await fetch(this.url(path, o.query), {
        method,
        headers,
        body,
        signal: signals.length > 0 ? AbortSignal.any(signals) : undefined,
      });
    } catch (err) {
      if (o.signal?.aborted) throw err;
      throw new ApiError(
        0,
        'unreachable',
        `cannot reach an agent at ${this.opts.addr}: ${reason(err, timeoutMs)} (is \`shoal agent\` running there? see --addr)`,
      );
    }
    if (!res.ok) await this.fail(res, method, path);
    return res;
  }

  private async fail(res: Response, method: string, path: string): Promise<never> {
    const text = await res.text().catch(() => '');
    let body: { error?: unknown; message?: unknown } | null = null;
    try {
      body = text === '' ? null : JSON.parse(text);
    } catch {
      // not JSON
    }
    const code = typeof body?.error === 'string' ? body.error : `http-${res.status}`;
    let message =
      typeof body?.message === 'string'
        ? body.message
        : `${method} ${path}: HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`;
    if (res.status === 401) {
      message = this.opts.token
        ? `the agent at ${this.opts.addr} rejected the token (${message}); check --token / SHOAL_TOKEN`
        : `the agent at ${this.opts.addr} wants a token: pass --token or set SHOAL_TOKEN (on the agent host the CLI reads <data-dir>/token; see --data-dir)`;
    } else if (res.status === 404 && code === 'not-found' && /^no route /.test(message)) {
      message = `${message} (the agent at ${this.opts.addr} does not serve this yet; is it an older shoal?)`;
    }
    throw new ApiError(res.status, code, message);
  }

  /** A JSON request; resolves with the parsed body (null for 204). */
  async request<T = unknown>(method: string, path: string, o: RequestOptions = {}): Promise<T> {
    const res = await this.fetch(method, path, o, false);
    const text = await res.text();
    if (text === '') return null as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(
        res.status,
        'not-json',
        `${method} ${path}: HTTP ${res.status}, not JSON: ${text.slice(0, 200)}`,
      );
    }
  }

  /**
   * A streamed `application/x-ndjson` answer: calls `onLine` with each parsed line until the
   * server ends the stream or `signal` aborts (then resolves quietly).
   */
  async ndjson<T = unknown>(
    path: string,
    o: RequestOptions & { signal?: AbortSignal },
    onLine: (v: T) => void,
  ): Promise<void> {
    let res: Response;
    try {
      res = await this.fetch('GET', path, o, true);
    } catch (err) {
      if (o.signal?.aborted) return;
      throw err;
    }
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line !== '') onLine(parseLine<T>(line, path));
          nl = buf.indexOf('\n');
        }
      }
    } catch (err) {
      if (o.signal?.aborted) return;
      throw new ApiError(0, 'stream', `${path}: the stream broke: ${reason(err, 0)}`);
    }
    const rest = buf.trim();
    if (rest !== '') onLine(parseLine<T>(rest, path));
  }
}

function parseLine<T>(line: string, path: string): T {
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new ApiError(0, 'not-json', `${path}: a stream line is not JSON: ${line.slice(0, 200)}`);
  }
}
