import { countFits } from '../allocator/fit.ts';
import { ledgerFrom } from '../allocator/ledger.ts';
import type { HostLedger, TypicalShape } from '../allocator/types.ts';
import { hostCapacity } from '../node/core/placement-adapter.ts';
import type { SimAgent, SimCluster } from './cluster.ts';
import type { Task } from './workload.ts';

/**
 * What a scenario run measures, on virtual time only (so that the summary is a pure function of
 * the scenario and the seed): placement latency and success, utilisation and fragmentation over
 * time, pending placements and their reasons, gossip dissemination time, bytes per host per
 * second, convergence time after heals, membership events.
 */

export interface Quantiles {
  count: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
  /** CDF points [value, fraction ≤ value], at most 101. */
  cdf: [number, number][];
}

export function quantiles(values: number[]): Quantiles {
  const v = [...values].sort((a, b) => a - b);
  const q = (p: number): number | null =>
    v.length === 0 ? null : v[Math.min(v.length - 1, Math.ceil(p * v.length) - 1)]!;
  const cdf: [number, number][] = [];
  if (v.length > 0) {
    const steps = Math.min(100, v.length);
    for (let i = 0; i <= steps; i++) {
      const k = Math.max(0, Math.ceil((i / steps) * v.length) - 1);
      cdf.push([v[k]!, round((k + 1) / v.length)]);
    }
  }
  return { count: v.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: v.at(-1) ?? null, cdf };
}

export function round(x: number, digits = 4): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

interface Tracked {
  task: Task;
  submitAt: number;
  removedAt: number | null;
  placedAt: (number | null)[];
  lastReasons: string[];
}

export interface Series {
  t: number[];
  upHosts: number[];
  cpu: number[];
  memory: number[];
  gpu: number[];
  fragCpu: number[];
  fragMemory: number[];
  fragGpu: number[];
  wanted: number[];
  held: number[];
  pendingDeploys: number[];
  bytesPerHostPerS: number[];
  /** Membership transitions observed in the interval, by `from->to`. */
  membership: Record<string, number[]>;
}

export class Metrics {
  private readonly tracked = new Map<string, Tracked>();
  private readonly dissem = new Map<string, { start: number; need: Set<string> }>();
  private readonly dissemMs: number[] = [];
  private dissemIncomplete = 0;
  readonly series: Series = {
    t: [],
    upHosts: [],
    cpu: [],
    memory: [],
    gpu: [],
    fragCpu: [],
    fragMemory: [],
    fragGpu: [],
    wanted: [],
    held: [],
    pendingDeploys: [],
    bytesPerHostPerS: [],
    membership: {},
  };
  private memberBin = new Map<string, number>();
  readonly memberTotals: Record<string, number> = {};
  private lastBytes = 0;
  private lastSampleAt = 0;
  readonly healConvergence: { healAt: number; convergedAfterMs: number | null }[] = [];
  private openHeals: { healAt: number }[] = [];

  constructor(
    private readonly cluster: SimCluster,
    private readonly typical: readonly TypicalShape[],
    private readonly now: () => number,
  ) {}

  submitted(task: Task, at: number, upIds: string[]): void {
    this.tracked.set(task.id, {
      task,
      submitAt: at,
      removedAt: null,
      placedAt: new Array(task.replicas).fill(null),
      lastReasons: [],
    });
    this.dissem.set(task.id, { start: at, need: new Set(upIds) });
  }

  removed(id: string, at: number): void {
    const t = this.tracked.get(id);
    if (t) t.removedAt = at;
  }

  /** Agent `a` wrote its own record: note replicas it holds for the first time. */
  hostChanged(a: SimAgent): void {
    const now = this.now();
    for (const w of a.placement.workloads()) {
      const t = this.tracked.get(w.deployId);
      if (!t || t.removedAt !== null || w.replica >= t.placedAt.length) continue;
      if (t.placedAt[w.replica] === null) t.placedAt[w.replica] = now;
    }
  }

  intentSeen(agentId: string, deployId: string): void {
    const d = this.dissem.get(deployId);
    if (!d?.need.delete(agentId)) return;
    if (d.need.size === 0) {
      this.dissemMs.push(round(this.now() - d.start, 3));
      this.dissem.delete(deployId);
    }
  }

  member(from: string | undefined, to: string): void {
    const k = `${from ?? 'new'}->${to}`;
    this.memberBin.set(k, (this.memberBin.get(k) ?? 0) + 1);
    this.memberTotals[k] = (this.memberTotals[k] ?? 0) + 1;
  }

  healed(): void {
    this.openHeals.push({ healAt: this.now() });
  }

  /** Called at a fine step while heals are open: records the first instant of one state hash. */
  checkConvergence(): void {
    if (this.openHeals.length === 0) return;
    if (!this.cluster.converged()) return;
    for (const h of this.openHeals)
      this.healConvergence.push({
        healAt: round(h.healAt, 3),
        convergedAfterMs: round(this.now() - h.healAt, 3),
      });
    this.openHeals = [];
  }

  get convergencePending(): boolean {
    return this.openHeals.length > 0;
  }

  sample(): void {
    const now = this.now();
    const s = this.series;
    let capCpu = 0;
    let capMem = 0;
    let capGpu = 0;
    let useCpu = 0;
    let useMem = 0;
    let useGpu = 0;
    let up = 0;
    const free = { cpu: 0, memory: 0, gpu: 0 };
    const stranded = { cpu: 0, memory: 0, gpu: 0 };
    const totalWeight = this.typical.reduce((n, x) => n + x.weight, 0);
    const heldKeys = new Set<string>();
    for (const a of this.cluster.agents) {
      if (!a.up) continue;
      const rec = a.sync.self();
      if (!rec) continue;
      up++;
      const cpu = rec.capacity.cores * 1000;
      const mem = rec.capacity.memory;
      const gpu = rec.capacity.gpus.length * 1000;
      const ws = a.placement.workloads();
      const capacity = hostCapacity(rec.capacity);
      const ledger: HostLedger = ledgerFrom(
        capacity,
        ws.map((w) => w.allocation),
      );
      const uc = ledger.cpu.sharedMilli + ledger.cpu.cores.reduce((n, x) => n + x, 0);
      const um = ledger.memoryBytes;
      const ug = ledger.gpus.reduce((n, g) => n + g.milli, 0);
      capCpu += cpu;
      capMem += mem;
      capGpu += gpu;
      useCpu += uc;
      useMem += um;
      useGpu += ug;
      const fc = Math.max(0, cpu - uc);
      const fm = Math.max(0, mem - um);
      const fg = Math.max(0, gpu - ug);
      free.cpu += fc;
      free.memory += fm;
      free.gpu += fg;
      // Fragmentation: free capacity on this host that the typical request (by weight) cannot use.
      for (const shape of this.typical) {
        if (countFits(capacity, ledger, shape.resources) > 0) continue;
        const wgt = shape.weight / totalWeight;
        stranded.cpu += fc * wgt;
        stranded.memory += fm * wgt;
        stranded.gpu += fg * wgt;
      }
      for (const w of ws) heldKeys.add(`${w.deployId}.${w.replica}`);
    }
    let wanted = 0;
    let held = 0;
    for (const [id, t] of this.tracked) {
      if (t.removedAt !== null) continue;
      wanted += t.task.replicas;
      for (let r = 0; r < t.task.replicas; r++) if (heldKeys.has(`${id}.${r}`)) held++;
    }
    const pending = new Set<string>();
    for (const a of this.cluster.agents) {
      if (!a.up) continue;
      for (const p of a.placement.pending()) {
        const t = this.tracked.get(p.deployId);
        if (!t || t.removedAt !== null) continue;
        pending.add(p.deployId);
        t.lastReasons = p.reasons;
      }
    }
    const tot = this.cluster.net.totalStats();
    const bytes = tot.sentBytes + tot.topicRecvBytes;
    const dt = (now - this.lastSampleAt) / 1000;
    s.t.push(round(now / 1000, 3));
    s.upHosts.push(up);
    s.cpu.push(capCpu ? round(useCpu / capCpu) : 0);
    s.memory.push(capMem ? round(useMem / capMem) : 0);
    s.gpu.push(capGpu ? round(useGpu / capGpu) : 0);
    s.fragCpu.push(free.cpu ? round(stranded.cpu / free.cpu) : 0);
    s.fragMemory.push(free.memory ? round(stranded.memory / free.memory) : 0);
    s.fragGpu.push(free.gpu ? round(stranded.gpu / free.gpu) : 0);
    s.wanted.push(wanted);
    s.held.push(held);
    s.pendingDeploys.push(pending.size);
    s.bytesPerHostPerS.push(dt > 0 && up > 0 ? Math.round((bytes - this.lastBytes) / up / dt) : 0);
    const keys = new Set([...Object.keys(s.membership), ...this.memberBin.keys()]);
    for (const k of [...keys].sort()) {
      s.membership[k] ??= new Array(s.t.length - 1).fill(0);
      s.membership[k]!.push(this.memberBin.get(k) ?? 0);
    }
    this.memberBin = new Map();
    this.lastBytes = bytes;
    this.lastSampleAt = now;
  }

  /** Final figures. `deadlineMs`: a replica placed within this of its submission counts as a success. */
  finish(endAt: number, deadlineMs: number, hostSeconds: number) {
    const latencies: number[] = [];
    let replicas = 0;
    let placed = 0;
    let eligible = 0;
    let inTime = 0;
    const failedReasons = new Map<string, number>();
    let neverPlaced = 0;
    for (const t of this.tracked.values()) {
      const end = t.removedAt ?? endAt;
      for (const p of t.placedAt) {
        replicas++;
        if (p !== null) {
          placed++;
          latencies.push(round(p - t.submitAt, 3));
        }
        // A replica counts for the success ratio unless its deploy was removed, unplaced, before
        // its deadline (it never had the chance). Unplaced at the end of the run = a failure.
        const ok = p !== null && p - t.submitAt <= deadlineMs;
        if (ok || t.removedAt === null || end - t.submitAt >= deadlineMs) {
          eligible++;
          if (ok) inTime++;
        }
        if (p === null) {
          neverPlaced++;
          const why =
            t.lastReasons.length > 0 ? t.lastReasons : ['no reason recorded (deadline or run ended first)'];
          for (const r of why)
            failedReasons.set(normalizeReason(r), (failedReasons.get(normalizeReason(r)) ?? 0) + 1);
        }
      }
    }
    const tot = this.cluster.net.totalStats();
    return {
      deploys: this.tracked.size,
      replicas,
      placed,
      neverPlaced,
      successRatio: eligible > 0 ? round(inTime / eligible) : null,
      successEligible: eligible,
      placementLatencyMs: quantiles(latencies),
      failedReasons: [...failedReasons.entries()]
        .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
        .slice(0, 20)
        .map(([reason, count]) => ({ reason, count })),
      gossip: {
        disseminationMs: quantiles(this.dissemMs),
        disseminationIncomplete: this.dissem.size + this.dissemIncomplete,
        bytesPerHostPerS: {
          direct: hostSeconds > 0 ? Math.round(tot.sentBytes / hostSeconds) : 0,
          topic: hostSeconds > 0 ? Math.round(tot.topicRecvBytes / hostSeconds) : 0,
          total: hostSeconds > 0 ? Math.round((tot.sentBytes + tot.topicRecvBytes) / hostSeconds) : 0,
        },
        messagesDelivered: this.cluster.net.totals.delivered,
        messagesDropped: this.cluster.net.totals.dropped,
        healConvergence: this.healConvergence,
      },
      membership: Object.fromEntries(
        Object.entries(this.memberTotals).sort((a, b) => (a[0] < b[0] ? -1 : 1)),
      ),
    };
  }
}

/** Group reasons that differ only in host ids and numbers. */
export function normalizeReason(r: string): string {
  return r
    .replace(/n\d{5}/g, 'nX')
    .replace(/\d+(\.\d+)?/g, '#')
    .slice(0, 160);
}

export type MetricsSummary = ReturnType<Metrics['finish']>;
