import type { FastifyInstance } from 'fastify';
import { ForwardError, type Forwarder } from './forward.ts';

/**
 * POST /v1/nodes/:id/drain {drain: boolean} on every agent. Draining is written by the host itself
 * (its own record, single writer), so a request for another node is forwarded to it over the
 * cluster's libp2p connections (node/forward.ts); the node answers with its state.
 * docs/deploys.md "Draining a host" describes what follows.
 */

export interface DrainDeps {
  self: string;
  setDraining(on: boolean): void;
  /** This host's record: draining flag and replica count. */
  status(): { draining: boolean; workloads: number };
  forwarder: Forwarder;
}

function readBody(body: unknown): boolean | string {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    return 'body: expected {"drain": true|false}';
  const o = body as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'drain') return `${k}: unknown field (expected drain)`;
  if (typeof o.drain !== 'boolean') return 'drain: expected true or false';
  return o.drain;
}

/** `local`: the instance that serves forwarded calls (only this node's own drain). */
export function registerDrainRoutes(
  app: FastifyInstance,
  deps: DrainDeps,
  opts: { local?: boolean } = {},
): void {
  app.post<{ Params: { id: string }; Body: unknown }>('/v1/nodes/:id/drain', async (req, reply) => {
    const drain = readBody(req.body);
    if (typeof drain === 'string') return reply.code(400).send({ error: 'bad-request', message: drain });
    const id = req.params.id;
    if (id === deps.self) {
      deps.setDraining(drain);
      return { id, ...deps.status() };
    }
    if (opts.local) return reply.code(404).send({ error: 'not-found', message: `this is not node ${id}` });
    try {
      const r = await deps.forwarder.json(id, {
        method: 'POST',
        path: `/v1/nodes/${id}/drain`,
        body: { drain },
      });
      return reply.code(r.status).send(r.body);
    } catch (err) {
      if (err instanceof ForwardError) {
        return reply.code(err.status).send({ error: err.code, message: err.message, node: err.node });
      }
      throw err;
    }
  });
}
