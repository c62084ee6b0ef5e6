import type {
  Allocation,
  Constraint,
  ExistingPlacement,
  PlacementRequest,
  PortRequest,
  ResourceRequest,
  Strategy,
} from '../../allocator/types.ts';
import { validateRequest } from '../../allocator/validate.ts';
import type { AwardItem, BidItem } from './placement.ts';
import {
  arr,
  frameJson,
  nonEmptyStr,
  type Obj,
  obj,
  oneOf,
  parseJson,
  str,
  uint,
  WireError,
} from './wire.ts';

/** Frame tag of the placement protocol (see wire.ts). */
export const TAG_PLACE = 0x04;

export type PlacementMessage =
  | { t: 'bid'; round: string; items: BidItem[] }
  | {
      t: 'bids';
      round: string;
      items: (
        | { deployId: string; ok: true; score: number; allocations: Allocation[]; short?: string }
        /** `busy`: it would fit but for other auctions' reservations (transient: retry soon). */
        | { deployId: string; ok: false; reason: string; busy?: true }
      )[];
    }
  | { t: 'award'; round: string; items: AwardItem[] }
  | {
      t: 'award-ack';
      round: string;
      items: { deployId: string; accepted: number[]; refused: { replica: number; reason: string }[] }[];
    }
  | { t: 'release'; round: string; deployIds: string[] };

const MAX_ITEMS = 1024;
const MAX_REPLICAS = 10_000;
const ID = 256;
const MAX_PORTS = 1024;

export function encodePlacement(msg: PlacementMessage): Uint8Array {
  return frameJson(TAG_PLACE, msg);
}

/** Decode and fully validate an untrusted placement frame; errors name the peer and field. */
export function decodePlacement(peer: string, data: Uint8Array): PlacementMessage {
  if (data[0] !== TAG_PLACE) throw new WireError(peer, '', 'expected a placement frame');
  const o = obj(peer, parseJson(peer, data), '');
  const t = oneOf(peer, o.t, 't', ['bid', 'bids', 'award', 'award-ack', 'release'] as const);
  const round = nonEmptyStr(peer, o.round, 'round', ID);
  const V = new PlacementValidator(peer);
  switch (t) {
    case 'bid':
      return {
        t,
        round,
        items: arr(peer, o.items, 'items', MAX_ITEMS).map((x, i) => V.bidItem(x, `items[${i}]`)),
      };
    case 'bids':
      return {
        t,
        round,
        items: arr(peer, o.items, 'items', MAX_ITEMS).map((x, i) => {
          const p = `items[${i}]`;
          const it = obj(peer, x, p);
          const deployId = nonEmptyStr(peer, it.deployId, `${p}.deployId`, ID);
          if (it.ok === true) {
            if (typeof it.score !== 'number' || !Number.isFinite(it.score)) {
              throw new WireError(peer, `${p}.score`, 'expected a finite number');
            }
            const allocations = arr(peer, it.allocations, `${p}.allocations`, MAX_REPLICAS).map((a, j) =>
              V.allocation(a, `${p}.allocations[${j}]`),
            );
            const ok = { deployId, ok: true as const, score: it.score, allocations };
            return it.short === undefined ? ok : { ...ok, short: str(peer, it.short, `${p}.short`, 4096) };
          }
          if (it.ok !== false) throw new WireError(peer, `${p}.ok`, 'expected a boolean');
          const reason = str(peer, it.reason, `${p}.reason`, 4096);
          if (it.busy === undefined) return { deployId, ok: false as const, reason };
          if (it.busy !== true) throw new WireError(peer, `${p}.busy`, 'expected true or absent');
          return { deployId, ok: false as const, reason, busy: true as const };
        }),
      };
    case 'award':
      return {
        t,
        round,
        items: arr(peer, o.items, 'items', MAX_ITEMS).map((x, i) => {
          const p = `items[${i}]`;
          const it = obj(peer, x, p);
          return {
            deployId: nonEmptyStr(peer, it.deployId, `${p}.deployId`, ID),
            slots: arr(peer, it.slots, `${p}.slots`, MAX_REPLICAS).map((s, j) => {
              const q = `${p}.slots[${j}]`;
              const so = obj(peer, s, q);
              return {
                replica: uint(peer, so.replica, `${q}.replica`, MAX_REPLICAS),
                gen: uint(peer, so.gen, `${q}.gen`),
                allocation: V.allocation(so.allocation, `${q}.allocation`),
              };
            }),
          };
        }),
      };
    case 'award-ack':
      return {
        t,
        round,
        items: arr(peer, o.items, 'items', MAX_ITEMS).map((x, i) => {
          const p = `items[${i}]`;
          const it = obj(peer, x, p);
          return {
            deployId: nonEmptyStr(peer, it.deployId, `${p}.deployId`, ID),
            accepted: arr(peer, it.accepted, `${p}.accepted`, MAX_REPLICAS).map((r, j) =>
              uint(peer, r, `${p}.accepted[${j}]`, MAX_REPLICAS),
            ),
            refused: arr(peer, it.refused, `${p}.refused`, MAX_REPLICAS).map((r, j) => {
              const ro = obj(peer, r, `${p}.refused[${j}]`);
              return {
                replica: uint(peer, ro.replica, `${p}.refused[${j}].replica`, MAX_REPLICAS),
                reason: str(peer, ro.reason, `${p}.refused[${j}].reason`, 4096),
              };
            }),
          };
        }),
      };
    case 'release':
      return {
        t,
        round,
        deployIds: arr(peer, o.deployIds, 'deployIds', MAX_ITEMS).map((d, i) =>
          nonEmptyStr(peer, d, `deployIds[${i}]`, ID),
        ),
      };
  }
}

class PlacementValidator {
  constructor(private readonly peer: string) {}

  private fail(path: string, problem: string): never {
    throw new WireError(this.peer, path, problem);
  }

  private int(v: unknown, path: string): number {
    return uint(this.peer, v, path);
  }

  private optInt(o: Obj, k: string, path: string): number | undefined {
    return o[k] === undefined ? undefined : this.int(o[k], `${path}.${k}`);
  }

  bidItem(x: unknown, p: string): BidItem {
    const o = obj(this.peer, x, p);
    return {
      request: this.request(o.request, `${p}.request`),
      strategy: this.strategy(o.strategy, `${p}.strategy`),
      existing: arr(this.peer, o.existing, `${p}.existing`, 100_000).map((e, i) => {
        const q = `${p}.existing[${i}]`;
        const eo = obj(this.peer, e, q);
        const out: ExistingPlacement = {
          hostId: nonEmptyStr(this.peer, eo.hostId, `${q}.hostId`, ID),
          count: this.int(eo.count, `${q}.count`),
        };
        if (eo.labels !== undefined) out.labels = this.labels(eo.labels, `${q}.labels`);
        return out;
      }),
      count: uint(this.peer, o.count, `${p}.count`, MAX_REPLICAS),
    };
  }

  private labels(x: unknown, p: string): Record<string, string> {
    const o = obj(this.peer, x, p);
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(o)) {
      if (k === '__proto__' || k === 'constructor' || k === 'prototype')
        this.fail(`${p}.${k}`, 'forbidden key');
      out[k] = str(this.peer, v, `${p}.${k}`, 256);
    }
    return out;
  }

  private strategy(x: unknown, p: string): Strategy {
    const o = obj(this.peer, x, p);
    const kind = oneOf(this.peer, o.kind, `${p}.kind`, [
      'binpack',
      'spread',
      'auto',
      'global',
      'fill',
      'each',
    ] as const);
    if (kind === 'fill' || kind === 'each') {
      const hostLimit = this.optInt(o, 'hostLimit', p);
      return hostLimit === undefined ? { kind } : { kind, hostLimit };
    }
    return { kind };
  }

  private request(x: unknown, p: string): PlacementRequest {
    const o = obj(this.peer, x, p);
    const r = obj(this.peer, o.resources, `${p}.resources`);
    const cpu = obj(this.peer, r.cpu, `${p}.resources.cpu`);
    const resources: ResourceRequest = {
      cpu: { milli: this.int(cpu.milli, `${p}.resources.cpu.milli`) },
      memoryBytes: this.int(r.memoryBytes, `${p}.resources.memoryBytes`),
    };
    if (cpu.bind === true) resources.cpu.bind = true;
    const mfc = this.optInt(cpu, 'maxFragmentCores', `${p}.resources.cpu`);
    if (mfc !== undefined) resources.cpu.maxFragmentCores = mfc;
    const disk = this.optInt(r, 'diskBytes', `${p}.resources`);
    if (disk !== undefined) resources.diskBytes = disk;
    if (r.volumes !== undefined) {
      resources.volumes = arr(this.peer, r.volumes, `${p}.resources.volumes`, 64).map((v, i) => {
        const q = `${p}.resources.volumes[${i}]`;
        const vo = obj(this.peer, v, q);
        const out = {
          name: nonEmptyStr(this.peer, vo.name, `${q}.name`, ID),
          bytes: this.int(vo.bytes, `${q}.bytes`),
        };
        return vo.pool === undefined
          ? out
          : { ...out, pool: nonEmptyStr(this.peer, vo.pool, `${q}.pool`, ID) };
      });
    }
    if (r.ports !== undefined) resources.ports = this.ports(r.ports, `${p}.resources.ports`);
    if (r.gpu !== undefined) {
      const g = obj(this.peer, r.gpu, `${p}.resources.gpu`);
      resources.gpu = { milli: this.int(g.milli, `${p}.resources.gpu.milli`) };
      if (g.model !== undefined)
        resources.gpu.model = str(this.peer, g.model, `${p}.resources.gpu.model`, ID);
      const gm = this.optInt(g, 'memoryBytes', `${p}.resources.gpu`);
      if (gm !== undefined) resources.gpu.memoryBytes = gm;
    }
    const req: PlacementRequest = {
      deployId: nonEmptyStr(this.peer, o.deployId, `${p}.deployId`, ID),
      resources,
    };
    if (o.limits !== undefined) {
      const l = obj(this.peer, o.limits, `${p}.limits`);
      req.limits = {};
      const lc = this.optInt(l, 'cpuMilli', `${p}.limits`);
      const lm = this.optInt(l, 'memoryBytes', `${p}.limits`);
      if (lc !== undefined) req.limits.cpuMilli = lc;
      if (lm !== undefined) req.limits.memoryBytes = lm;
    }
    if (o.constraints !== undefined) {
      req.constraints = arr(this.peer, o.constraints, `${p}.constraints`, 64).map((c, i) =>
        this.constraint(c, `${p}.constraints[${i}]`),
      );
    }
    if (o.spread !== undefined) {
      const s = obj(this.peer, o.spread, `${p}.spread`);
      req.spread =
        s.label === undefined ? {} : { label: nonEmptyStr(this.peer, s.label, `${p}.spread.label`, ID) };
    }
    const mph = this.optInt(o, 'maxPerHost', p);
    if (mph !== undefined) req.maxPerHost = mph;
    if (o.antiAffinity === true) req.antiAffinity = true;
    const problems = validateRequest(req);
    if (problems.length > 0) this.fail(p, problems.join('; '));
    return req;
  }

  private constraint(x: unknown, p: string): Constraint {
    const o = obj(this.peer, x, p);
    const op = oneOf(this.peer, o.op, `${p}.op`, ['eq', 'ne', 'in', 'notin', 'exists', 'absent'] as const);
    const key = nonEmptyStr(this.peer, o.key, `${p}.key`, ID);
    if (op === 'eq' || op === 'ne') return { op, key, value: str(this.peer, o.value, `${p}.value`, 256) };
    if (op === 'in' || op === 'notin') {
      return {
        op,
        key,
        values: arr(this.peer, o.values, `${p}.values`, 64).map((v, i) =>
          str(this.peer, v, `${p}.values[${i}]`, 256),
        ),
      };
    }
    return { op, key };
  }

  /** Host ports `{port 1..65535, protocol tcp|udp}`, each port/protocol once. */
  private ports(x: unknown, p: string): PortRequest[] {
    const seen = new Set<string>();
    return arr(this.peer, x, p, MAX_PORTS).map((e, i) => {
      const q = `${p}[${i}]`;
      const o = obj(this.peer, e, q);
      for (const k of Object.keys(o))
        if (k !== 'port' && k !== 'protocol') this.fail(`${q}.${k}`, 'unknown field');
      const port = o.port;
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65_535)
        this.fail(`${q}.port`, 'expected an integer in [1, 65535]');
      const protocol = oneOf(this.peer, o.protocol, `${q}.protocol`, ['tcp', 'udp'] as const);
      const k = `${port}/${protocol}`;
      if (seen.has(k)) this.fail(q, `duplicate port ${k}`);
      seen.add(k);
      return { port, protocol };
    });
  }

  allocation(x: unknown, p: string): Allocation {
    const o = obj(this.peer, x, p);
    const cpu = obj(this.peer, o.cpu, `${p}.cpu`);
    const limits = obj(this.peer, o.limits, `${p}.limits`);
    const ports = o.ports === undefined ? undefined : this.ports(o.ports, `${p}.ports`);
    return {
      cpu: {
        sharedMilli: this.int(cpu.sharedMilli, `${p}.cpu.sharedMilli`),
        cores: arr(this.peer, cpu.cores, `${p}.cpu.cores`, 4096).map((c, i) => {
          const co = obj(this.peer, c, `${p}.cpu.cores[${i}]`);
          return {
            index: this.int(co.index, `${p}.cpu.cores[${i}].index`),
            milli: this.int(co.milli, `${p}.cpu.cores[${i}].milli`),
          };
        }),
      },
      memoryBytes: this.int(o.memoryBytes, `${p}.memoryBytes`),
      diskBytes: this.int(o.diskBytes, `${p}.diskBytes`),
      volumes: arr(this.peer, o.volumes, `${p}.volumes`, 64).map((v, i) => {
        const vo = obj(this.peer, v, `${p}.volumes[${i}]`);
        return {
          name: nonEmptyStr(this.peer, vo.name, `${p}.volumes[${i}].name`, ID),
          pool: nonEmptyStr(this.peer, vo.pool, `${p}.volumes[${i}].pool`, ID),
          bytes: this.int(vo.bytes, `${p}.volumes[${i}].bytes`),
        };
      }),
      gpus: arr(this.peer, o.gpus, `${p}.gpus`, 64).map((g, i) => {
        const go = obj(this.peer, g, `${p}.gpus[${i}]`);
        return {
          index: this.int(go.index, `${p}.gpus[${i}].index`),
          milli: this.int(go.milli, `${p}.gpus[${i}].milli`),
          memoryBytes: this.int(go.memoryBytes, `${p}.gpus[${i}].memoryBytes`),
        };
      }),
      ...(ports !== undefined ? { ports } : {}),
      limits: {
        cpuMilli: this.int(limits.cpuMilli, `${p}.limits.cpuMilli`),
        memoryBytes: this.int(limits.memoryBytes, `${p}.limits.memoryBytes`),
      },
    };
  }
}
