import { Readable } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { StreamError, type StreamProtocol } from '../gossip/streams.ts';
import type { Logger } from './core/io.ts';
import type { MemberStatus } from './core/membership.ts';

/**
 * Agent-to-agent forwarding: serve an API call that only another agent can answer (the logs of a
 * workload it runs, an exec in it, a node-local operation) by running the call on that agent and
 * streaming its response back (gossip/streams.ts carries it over libp2p).
 *
 * The target runs a forwarded call against `Forwarder.local`: a fastify instance that is never
 * bound to a socket and holds ONLY the routes meant to be forwarded (register them there).
 * Anything else answers 404 — a forwarded call cannot reach the rest of the API. No user token
 * travels between agents: the caller already passed the answering agent's API (and its auth);
 * the target trusts the forwarding agent because it is an authenticated cluster member (noise
 * peer id, optional pnet key; the stream server refuses non-members).
 */

export type ForwardMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
const METHODS: readonly ForwardMethod[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

export interface ForwardRequest {
  method: ForwardMethod;
  /** Path under /v1/, without a query string, e.g. `/v1/workloads/web-1.0/logs`. */
  path: string;
  query?: Record<string, string>;
  /** JSON body (POST/PUT/PATCH). */
  body?: unknown;
}

export interface ForwardedResponse {
  status: number;
  /** Response headers that travel: content-type only (hop-by-hop and length do not). */
  headers: Record<string, string>;
  body: AsyncIterable<Uint8Array>;
  /** Stop reading; the target stops producing (idempotent). */
  cancel(): void;
}

/** A call that could not be forwarded: 502 (unreachable/dead/refused/failed) or 504 (timeout). */
export class ForwardError extends Error {
  constructor(
    readonly status: 502 | 504 | 413,
    readonly code: string,
    readonly node: string,
    message: string,
  ) {
    super(message);
    this.name = 'ForwardError';
  }
}

export interface ForwarderDeps {
  /** This agent's id. */
  self: string;
  /** The libp2p stream protocol; absent = this agent cannot forward (only local calls work). */
  streams?: StreamProtocol;
  /** Membership status of a node as this agent sees it. */
  memberStatus(id: string): MemberStatus | undefined;
  log?: Logger;
}

/** Bytes per response message on the wire (body chunks are split to this). */
const CHUNK_BYTES = 64 * 1024;
/** Default budget for the response head (dial included). */
const DEFAULT_TIMEOUT_MS = 10_000;
const PATH_RE = /^\/v1\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/;

export class Forwarder {
  readonly self: string;
  /** Routes reachable by forwarded calls (and only those). Not listening on any socket. */
  readonly local: FastifyInstance;
  readonly #deps: ForwarderDeps;
  #started = false;

  constructor(deps: ForwarderDeps) {
    this.#deps = deps;
    this.self = deps.self;
    this.local = Fastify({ logger: false });
    this.local.setNotFoundHandler((req, reply) => {
      reply.code(404).send({
        error: 'not-found',
        message: `${req.method} ${req.url.split('?')[0]} is not a forwardable route`,
      });
    });
    this.local.setErrorHandler((err: { statusCode?: number; message?: string }, _req, reply) => {
      const status = typeof err.statusCode === 'number' && err.statusCode >= 400 ? err.statusCode : 500;
      reply
        .code(status)
        .send({ error: status >= 500 ? 'internal' : 'bad-request', message: String(err.message) });
    });
  }

  /** Freeze the local routes and serve forwarded calls from cluster members. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    await this.local.ready();
    await this.#deps.streams?.handle((from, request, signal) => this.#serve(from, request, signal));
  }

  async stop(): Promise<void> {
    await this.#deps.streams?.stop();
    await this.local.close();
  }

  /**
   * Run `req` on `node` (this agent included: then it runs on `local` directly) and return its
   * response as it streams. Throws ForwardError naming the node when it cannot be reached.
   */
  async forwardTo(
    node: string,
    req: ForwardRequest,
    opts: { signal?: AbortSignal; timeoutMs?: number } = {},
  ): Promise<ForwardedResponse> {
    const bad = checkRequest(req);
    if (bad !== undefined) throw new Error(`forwardTo: ${bad}`);
    if (node === this.self) return this.#runLocal(req, opts.signal);
    const status = this.#deps.memberStatus(node);
    if (status === undefined) {
      throw new ForwardError(
        502,
        'unknown-node',
        node,
        `node ${node} is not a member of this cluster (as seen by ${this.self})`,
      );
    }
    if (status === 'dead' || status === 'left') {
      throw new ForwardError(
        502,
        'node-down',
        node,
        `node ${node} is ${status} (as seen by ${this.self}); cannot reach it`,
      );
    }
    const streams = this.#deps.streams;
    if (streams === undefined) {
      throw new ForwardError(
        502,
        'unreachable',
        node,
        `this agent (${this.self}) cannot forward to node ${node}`,
      );
    }
    const payload = new TextEncoder().encode(JSON.stringify(req));
    let response: Awaited<ReturnType<StreamProtocol['request']>>;
    try {
      response = await streams.request(node, payload, {
        timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        signal: opts.signal,
      });
    } catch (err) {
      throw toForwardError(node, err);
    }
    let head: { status: number; headers: Record<string, string> };
    try {
      head = parseHead(response.head);
    } catch (err) {
      response.cancel();
      throw new ForwardError(
        502,
        'bad-response',
        node,
        `node ${node} answered malformed: ${(err as Error).message}`,
      );
    }
    return {
      status: head.status,
      headers: head.headers,
      cancel: () => response.cancel(),
      body: (async function* () {
        try {
          for await (const chunk of response) yield chunk;
        } catch (err) {
          throw toForwardError(node, err);
        }
      })(),
    };
  }

  /** forwardTo + read the whole body as JSON (for small answers: drain, reasons, ...). */
  async json<T = unknown>(
    node: string,
    req: ForwardRequest,
    opts: { signal?: AbortSignal; timeoutMs?: number; maxBytes?: number } = {},
  ): Promise<{ status: number; body: T }> {
    const res = await this.forwardTo(node, req, opts);
    const max = opts.maxBytes ?? 4 * 1024 * 1024;
    const parts: Uint8Array[] = [];
    let total = 0;
    for await (const chunk of res.body) {
      total += chunk.byteLength;
      if (total > max) {
        res.cancel();
        throw new ForwardError(502, 'too-large', node, `answer from node ${node} exceeds ${max} bytes`);
      }
      parts.push(chunk);
    }
    const text = Buffer.concat(parts).toString('utf8');
    try {
      return { status: res.status, body: (text === '' ? undefined : JSON.parse(text)) as T };
    } catch {
      throw new ForwardError(502, 'bad-response', node, `answer from node ${node} is not JSON`);
    }
  }

  /**
   * Answer an HTTP request with `node`'s answer to `req`, streamed. The client disconnecting
   * cancels the forwarded call (and so the target's work, e.g. a log follow).
   */
  async proxy(
    reply: FastifyReply,
    node: string,
    req: ForwardRequest,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ) {
    const ctrl = new AbortController();
    const onClose = () => ctrl.abort();
    reply.raw.once('close', onClose);
    // `opts.signal`: the serving app is closing — end the stream.
    if (opts.signal?.aborted) ctrl.abort();
    else opts.signal?.addEventListener('abort', onClose, { once: true, signal: ctrl.signal });
    let res: ForwardedResponse;
    try {
      res = await this.forwardTo(node, req, { signal: ctrl.signal, timeoutMs: opts.timeoutMs });
    } catch (err) {
      reply.raw.off('close', onClose);
      if (err instanceof ForwardError) {
        return reply.code(err.status).send({ error: err.code, message: err.message, node: err.node });
      }
      throw err;
    }
    ctrl.signal.addEventListener('abort', () => res.cancel(), { once: true });
    reply.code(res.status);
    for (const [k, v] of Object.entries(res.headers)) reply.header(k, v);
    if (node !== this.self) reply.header('x-shoal-served-by', node);
    if (res.headers['content-type'] === 'application/x-ndjson') reply.header('connection', 'close');
    const body = res.body;
    return reply.send(
      Readable.from(
        flushFirst(
          reply,
          (async function* () {
            try {
              for await (const chunk of body)
                yield Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
            } catch (err) {
              // Headers are gone already: end the body with one NDJSON/text line saying why.
              const message = err instanceof Error ? err.message : String(err);
              yield Buffer.from(`${JSON.stringify({ error: 'forward-broken', message })}\n`);
            }
          })(),
        ),
        { objectMode: false },
      ),
    );
  }

  // ---- target side --------------------------------------------------------------------------

  async *#serve(from: string, request: Uint8Array, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    let req: ForwardRequest;
    try {
      req = JSON.parse(new TextDecoder().decode(request)) as ForwardRequest;
    } catch {
      throw new Error('forwarded request: not JSON');
    }
    const bad = checkRequest(req);
    if (bad !== undefined) throw new Error(`forwarded request: ${bad}`);
    this.#deps.log?.debug({ from, method: req.method, path: req.path }, 'serving forwarded call');
    const res = await this.#runLocal(req, signal, from);
    yield new TextEncoder().encode(JSON.stringify({ status: res.status, headers: res.headers }));
    for await (const chunk of res.body) {
      for (let at = 0; at < chunk.byteLength; at += CHUNK_BYTES) {
        yield chunk.subarray(at, Math.min(chunk.byteLength, at + CHUNK_BYTES));
      }
    }
  }

  async #runLocal(req: ForwardRequest, signal?: AbortSignal, from?: string): Promise<ForwardedResponse> {
    if (!this.#started) await this.start();
    const qs = new URLSearchParams(req.query ?? {}).toString();
    const hasBody = req.body !== undefined && req.method !== 'GET' && req.method !== 'DELETE';
    const res = await this.local.inject({
      method: req.method,
      url: qs === '' ? req.path : `${req.path}?${qs}`,
      payloadAsStream: true,
      headers: {
        ...(hasBody ? { 'content-type': 'application/json' } : {}),
        ...(from === undefined ? {} : { 'x-shoal-forwarded-from': from }),
      },
      ...(hasBody ? { payload: JSON.stringify(req.body) } : {}),
    });
    const raw = (res.raw as { res: { destroy(): void } }).res;
    const stream = res.stream();
    let cancelled = false;
    const cancel = () => {
      if (cancelled) return;
      cancelled = true;
      // Closing the response makes the route see 'close' (its work stops) and fastify destroy
      // the body stream it was piping.
      raw.destroy();
      stream.destroy();
    };
    if (signal?.aborted) cancel();
    else signal?.addEventListener('abort', cancel, { once: true });
    const contentType = res.headers['content-type'];
    return {
      status: res.statusCode,
      headers: typeof contentType === 'string' ? { 'content-type': contentType } : {},
      cancel,
      body: (async function* () {
        try {
          for await (const chunk of stream) {
            const b = chunk as Buffer;
            yield new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
          }
        } catch (err) {
          if (!cancelled) throw err;
        } finally {
          signal?.removeEventListener('abort', cancel);
          if (!stream.readableEnded) cancel();
        }
      })(),
    };
  }
}

/**
 * Send the response head as soon as the body starts, not with its first chunk: fastify pipes a
 * stream body after only *setting* the headers, so a quiet `logs -f` would leave the client (and
 * a forwarding agent waiting for the head) without even a status until the first line.
 */
export async function* flushFirst<T>(reply: FastifyReply, body: AsyncIterable<T>): AsyncGenerator<T> {
  if (!reply.raw.headersSent) reply.raw.flushHeaders();
  yield* body;
}

/** Why `req` is not a valid forward request, or undefined. */
function checkRequest(req: unknown): string | undefined {
  if (typeof req !== 'object' || req === null || Array.isArray(req)) return 'expected an object';
  const r = req as Record<string, unknown>;
  if (!METHODS.includes(r.method as ForwardMethod)) return `method: expected one of ${METHODS.join(', ')}`;
  if (typeof r.path !== 'string' || !PATH_RE.test(r.path) || r.path.includes('/../')) {
    return `path: expected an absolute /v1/… path without a query string, got ${JSON.stringify(r.path)}`;
  }
  if (r.query !== undefined) {
    if (typeof r.query !== 'object' || r.query === null || Array.isArray(r.query))
      return 'query: expected an object';
    for (const [k, v] of Object.entries(r.query)) {
      if (typeof v !== 'string') return `query.${k}: expected a string`;
    }
  }
  return undefined;
}

function parseHead(bytes: Uint8Array): { status: number; headers: Record<string, string> } {
  const head = JSON.parse(new TextDecoder().decode(bytes)) as { status?: unknown; headers?: unknown };
  if (typeof head.status !== 'number' || head.status < 100 || head.status > 599) throw new Error('no status');
  const headers: Record<string, string> = {};
  if (typeof head.headers === 'object' && head.headers !== null) {
    const ct = (head.headers as Record<string, unknown>)['content-type'];
    if (typeof ct === 'string') headers['content-type'] = ct;
  }
  return { status: head.status, headers };
}

function toForwardError(node: string, err: unknown): ForwardError {
  if (err instanceof ForwardError) return err;
  if (err instanceof StreamError) {
    switch (err.code) {
      case 'timeout':
        return new ForwardError(504, 'timeout', node, `node ${node} did not answer in time: ${err.message}`);
      case 'too-large':
        return new ForwardError(413, 'too-large', node, `forwarding to node ${node}: ${err.message}`);
      case 'refused':
        return new ForwardError(
          502,
          'refused',
          node,
          `node ${node} refused the forwarded call: ${err.message}`,
        );
      case 'remote':
        return new ForwardError(502, 'remote-error', node, `node ${node} failed: ${err.message}`);
      case 'truncated':
        return new ForwardError(502, 'truncated', node, `node ${node}: ${err.message}`);
      default:
        return new ForwardError(502, err.code, node, `node ${node} is unreachable: ${err.message}`);
    }
  }
  return new ForwardError(
    502,
    'unreachable',
    node,
    `node ${node}: ${err instanceof Error ? err.message : String(err)}`,
  );
}
