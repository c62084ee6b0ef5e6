import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { HostRecord, WorkloadRecord } from '../crdt/types.ts';
import { type Engine, isEngineError } from '../engines/engine.ts';
import type { MemberStatus } from './core/membership.ts';
import { type Forwarder, flushFirst } from './forward.ts';

/**
 * Workload routes (issue #5): every replica cluster-wide from the gossiped host records, and the
 * logs of / an exec in one workload — answered by the agent whose engine runs it, forwarded there
 * (node/forward.ts) when the caller asked another agent.
 *
 *   GET  /v1/workloads?deploy=<id>&host=<id>
 *   GET  /v1/workloads/:wid
 *   GET  /v1/workloads/:wid/logs?follow=1&tail=N&since=<epoch ms>   → application/x-ndjson
 *   POST /v1/workloads/:wid/exec {command: string[], timeoutMs?}     → {exitCode, stdout, stderr}
 *
 * Registered twice per agent: on the public API (`local: false`: forwards to the host), and on
 * `Forwarder.local` (`local: true`: logs/exec only, against this agent's own engine; never
 * forwards again, so a call cannot bounce between agents).
 */

export interface WorkloadsDeps {
  /** This agent's id. */
  self: string;
  /** Every host record known (gossip). */
  hosts(): HostRecord[];
  /** Membership status of a host as this agent sees it (self: 'alive'). */
  memberStatus(id: string): MemberStatus | undefined;
  /** This host's engine (absent: this agent runs no workloads). */
  engine?: Engine;
  /** Forwarding to other agents (absent: only this agent's workloads can be read). */
  forwarder?: Forwarder;
}

export interface WorkloadView {
  id: string;
  deployId: string;
  replica: number;
  gen: number;
  host: string;
  /** The host's membership status as seen by the answering agent. */
  hostStatus: MemberStatus | 'unknown';
  status: WorkloadRecord['status'];
  exitCode: number | null;
  health: WorkloadRecord['health'];
  startedAt: number | null;
  /**
   * This record is the replica's current claim (live host, highest generation, then lowest host
   * id); a superseded copy (a double award being resolved, a dead host's) shows `false`.
   */
  current: boolean;
}

/** Exec timeout bounds (ms). */
const EXEC_DEFAULT_TIMEOUT_MS = 30_000;
const EXEC_MAX_TIMEOUT_MS = 10 * 60_000;
const MAX_TAIL = 1_000_000;

export function registerWorkloadRoutes(
  app: FastifyInstance,
  deps: WorkloadsDeps,
  opts: { local?: boolean } = {},
): void {
  const local = opts.local === true;
  // Closing the app ends every stream it serves (a follow would otherwise hold close() — and an
  // agent's shutdown — until its client goes away).
  const closing = new AbortController();
  app.addHook('preClose', (done) => {
    closing.abort();
    done();
  });
  const status = (id: string): MemberStatus | 'unknown' =>
    id === deps.self ? 'alive' : (deps.memberStatus(id) ?? 'unknown');

  if (!local) {
    app.get<{ Querystring: Record<string, string> }>('/v1/workloads', async (req, reply) => {
      const q = req.query;
      for (const k of Object.keys(q)) {
        if (k !== 'deploy' && k !== 'host') {
          return badRequest(reply, `${k}: unknown query parameter (expected deploy, host)`);
        }
      }
      return workloadViews(deps.hosts(), status).filter(
        (w) =>
          (q.deploy === undefined || w.deployId === q.deploy) && (q.host === undefined || w.host === q.host),
      );
    });
    app.get<{ Params: { wid: string } }>('/v1/workloads/:wid', async (req, reply) => {
      const w = locate(deps.hosts(), status, req.params.wid);
      if (w === undefined) return notFound(reply, req.params.wid);
      return w;
    });
  }

  app.get<{ Params: { wid: string }; Querystring: Record<string, string> }>(
    '/v1/workloads/:wid/logs',
    async (req, reply) => {
      const parsed = readLogQuery(req.query);
      if (typeof parsed === 'string') return badRequest(reply, parsed);
      const wid = req.params.wid;
      if (!local) {
        const w = locate(deps.hosts(), status, wid);
        if (w === undefined) return notFound(reply, wid);
        if (w.host !== deps.self) {
          return remote(reply, w, { method: 'GET', path: req.url.split('?')[0]!, query: req.query });
        }
      }
      const engine = deps.engine;
      if (engine === undefined) return notFound(reply, wid, `this agent (${deps.self}) runs no engine`);
      try {
        await engine.inspect(wid);
      } catch (err) {
        if (isEngineError(err, 'not-found')) return notFound(reply, wid, `not on host ${deps.self}`);
        throw err;
      }
      // The client (or the forwarding agent) going away stops the engine's follow.
      const ctrl = new AbortController();
      reply.raw.once('close', () => ctrl.abort());
      if (closing.signal.aborted) ctrl.abort();
      else closing.signal.addEventListener('abort', () => ctrl.abort(), { once: true, signal: ctrl.signal });
      const lines = engine.logs(wid, { ...parsed, signal: ctrl.signal });
      // A stream's connection is not reused: once it ends, the socket closes, so closing the
      // server (agent shutdown) is not held by an idle keep-alive connection.
      reply.code(200).header('content-type', 'application/x-ndjson').header('connection', 'close');
      return reply.send(Readable.from(flushFirst(reply, ndjson(lines, ctrl)), { objectMode: false }));
    },
  );

  app.post<{ Params: { wid: string }; Body: unknown }>('/v1/workloads/:wid/exec', async (req, reply) => {
    const body = readExecBody(req.body);
    if (typeof body === 'string') return badRequest(reply, body);
    const wid = req.params.wid;
    if (!local) {
      const w = locate(deps.hosts(), status, wid);
      if (w === undefined) return notFound(reply, wid);
      if (w.host !== deps.self) {
        return remote(
          reply,
          w,
          { method: 'POST', path: req.url.split('?')[0]!, body },
          body.timeoutMs + 10_000,
        );
      }
    }
    const engine = deps.engine;
    if (engine === undefined) return notFound(reply, wid, `this agent (${deps.self}) runs no engine`);
    try {
      return await engine.exec(wid, body.command, { timeoutMs: body.timeoutMs });
    } catch (err) {
      if (!isEngineError(err)) throw err;
      const code =
        err.code === 'not-found'
          ? 404
          : err.code === 'not-running' || err.code === 'conflict'
            ? 409
            : err.code === 'timeout'
              ? 504
              : err.code === 'invalid-spec' || err.code === 'unsupported'
                ? 400
                : 500;
      return reply.code(code).send({ error: err.code, message: err.message });
    }
  });

  function remote(
    reply: FastifyReply,
    w: WorkloadView,
    req: Parameters<Forwarder['forwardTo']>[1],
    timeoutMs?: number,
  ): Promise<FastifyReply> | FastifyReply {
    if (deps.forwarder === undefined) {
      return reply.code(502).send({
        error: 'unreachable',
        message: `workload ${w.id} runs on node ${w.host}, and this agent cannot forward`,
        node: w.host,
      });
    }
    return deps.forwarder.proxy(reply, w.host, req, { timeoutMs, signal: closing.signal });
  }
}

/** Every workload record of every host, newest claims flagged `current`. */
export function workloadViews(
  hosts: readonly HostRecord[],
  status: (id: string) => MemberStatus | 'unknown',
): WorkloadView[] {
  const live = (id: string) => {
    const s = status(id);
    return s === 'alive' || s === 'suspect';
  };
  const best = new Map<string, { host: string; gen: number }>();
  for (const rec of hosts) {
    if (!live(rec.id)) continue;
    for (const w of rec.workloads) {
      const cur = best.get(w.id);
      if (!cur || w.gen > cur.gen || (w.gen === cur.gen && rec.id < cur.host))
        best.set(w.id, { host: rec.id, gen: w.gen });
    }
  }
  const out: WorkloadView[] = [];
  for (const rec of hosts) {
    for (const w of rec.workloads) {
      const b = best.get(w.id);
      out.push({
        id: w.id,
        deployId: w.deployId,
        replica: w.replica,
        gen: w.gen,
        host: rec.id,
        hostStatus: status(rec.id),
        status: w.status,
        exitCode: w.exitCode,
        health: w.health,
        startedAt: w.startedAt,
        current: b !== undefined && b.host === rec.id && b.gen === w.gen,
      });
    }
  }
  out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  return out;
}

/** The replica's current claim; if no live host claims it, the newest claim on any host. */
function locate(
  hosts: readonly HostRecord[],
  status: (id: string) => MemberStatus | 'unknown',
  wid: string,
): WorkloadView | undefined {
  const all = workloadViews(hosts, status).filter((w) => w.id === wid);
  return (
    all.find((w) => w.current) ??
    all.sort((a, b) => b.gen - a.gen || (a.host < b.host ? -1 : a.host > b.host ? 1 : 0))[0]
  );
}

async function* ndjson(
  lines: AsyncIterable<{ stream: string; line: string; ts: number }>,
  ctrl: AbortController,
): AsyncGenerator<Buffer> {
  try {
    for await (const l of lines)
      yield Buffer.from(`${JSON.stringify({ stream: l.stream, line: l.line, ts: l.ts })}\n`);
  } catch (err) {
    // Headers are sent: the error becomes the stream's last line.
    if (!ctrl.signal.aborted) {
      yield Buffer.from(`${JSON.stringify({ error: 'logs-failed', message: (err as Error).message })}\n`);
    }
  } finally {
    ctrl.abort();
  }
}

/** `follow`, `tail`, `since` from the query string, or an error naming the parameter. */
export function readLogQuery(
  q: Record<string, string>,
): { follow: boolean; tail?: number; since?: number } | string {
  for (const k of Object.keys(q)) {
    if (k !== 'follow' && k !== 'tail' && k !== 'since') {
      return `${k}: unknown query parameter (expected follow, tail, since)`;
    }
  }
  const out: { follow: boolean; tail?: number; since?: number } = { follow: false };
  if (q.follow !== undefined) {
    if (!['1', '0', 'true', 'false', ''].includes(q.follow))
      return `follow: expected 1 or 0, got "${q.follow}"`;
    out.follow = q.follow === '1' || q.follow === 'true' || q.follow === '';
  }
  if (q.tail !== undefined) {
    const n = Number(q.tail);
    if (!/^\d+$/.test(q.tail) || n > MAX_TAIL)
      return `tail: expected an integer 0..${MAX_TAIL}, got "${q.tail}"`;
    out.tail = n;
  }
  if (q.since !== undefined) {
    const n = Number(q.since);
    if (!/^\d+$/.test(q.since)) return `since: expected epoch milliseconds, got "${q.since}"`;
    out.since = n;
  }
  return out;
}

/** `{command, timeoutMs?}` or an error naming the field. */
export function readExecBody(body: unknown): { command: string[]; timeoutMs: number } | string {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'body: expected a JSON object';
  const o = body as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (k !== 'command' && k !== 'timeoutMs') return `${k}: unknown field (expected command, timeoutMs)`;
  }
  if (!Array.isArray(o.command) || o.command.length === 0) {
    return 'command: expected a non-empty array of strings, e.g. ["cat", "/etc/hostname"]';
  }
  for (const [i, a] of o.command.entries()) {
    if (typeof a !== 'string') return `command[${i}]: expected a string`;
  }
  let timeoutMs = EXEC_DEFAULT_TIMEOUT_MS;
  if (o.timeoutMs !== undefined) {
    if (
      typeof o.timeoutMs !== 'number' ||
      !Number.isInteger(o.timeoutMs) ||
      o.timeoutMs < 1 ||
      o.timeoutMs > EXEC_MAX_TIMEOUT_MS
    ) {
      return `timeoutMs: expected an integer 1..${EXEC_MAX_TIMEOUT_MS}`;
    }
    timeoutMs = o.timeoutMs;
  }
  return { command: o.command as string[], timeoutMs };
}

function badRequest(reply: FastifyReply, message: string): FastifyReply {
  return reply.code(400).send({ error: 'bad-request', message });
}

function notFound(reply: FastifyReply, wid: string, detail?: string): FastifyReply {
  return reply
    .code(404)
    .send({ error: 'not-found', message: `no workload ${wid}${detail === undefined ? '' : ` (${detail})`}` });
}
