import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { ResourceRequest, TypicalShape } from '../allocator/types.ts';
import type { JsonObject } from '../crdt/types.ts';
import { simProgram } from '../engines/sim.ts';
import { Prng } from '../node/core/random.ts';
import type { HostFacts } from '../node/host.ts';
import { type HostGroup, type Scenario, ScenarioError, type Shape, type Synthetic } from './scenario.ts';

/**
 * Workloads of a scenario: hosts (groups or a CSV), tasks (a synthetic generator and/or a CSV
 * trace). Everything is a pure function of the scenario and the seed. Formats: docs/simulator.md,
 * "Trace files".
 */

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** One deploy the run submits: `replicas` copies of one shape, from `atMs` until `endMs` (null = the end). */
export interface Task {
  id: string;
  atMs: number;
  endMs: number | null;
  replicas: number;
  strategy: string;
  cpuMilli: number;
  memoryMiB: number;
  /** Total GPU milli: whole devices × 1000, or a fraction (< 1000) of one device. */
  gpuMilli: number;
  /** Allowed GPU models (empty = any). */
  gpuModels: string[];
}

// ───────────────────────────── CSV ─────────────────────────────

/** RFC 4180-ish CSV: header row, comma separated, "quoted" fields with "" escapes, # comments. */
export function parseCsv(
  text: string,
  file: string,
): { header: string[]; rows: { line: number; cells: string[] }[] } {
  const records: { line: number; cells: string[] }[] = [];
  let cells: string[] = [];
  let cell = '';
  let quoted = false;
  let line = 1;
  let startLine = 1;
  let atStart = true;
  const endRecord = () => {
    cells.push(cell);
    if (!(cells.length === 1 && cells[0]!.trim() === '') && !cells[0]!.trimStart().startsWith('#'))
      records.push({ line: startLine, cells });
    cells = [];
    cell = '';
    atStart = true;
  };
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (atStart) {
      startLine = line;
      atStart = false;
    }
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          cell += '"';
          i++;
        } else quoted = false;
      } else {
        if (ch === '\n') line++;
        cell += ch;
      }
    } else if (ch === '"' && cell.trim() === '') {
      quoted = true;
      cell = '';
    } else if (ch === ',') {
      cells.push(cell);
      cell = '';
    } else if (ch === '\n') {
      endRecord();
      line++;
    } else if (ch !== '\r') cell += ch;
  }
  if (quoted) throw new ScenarioError(file, `line ${startLine}`, 'unterminated quoted field');
  if (!atStart) endRecord();
  const head = records.shift();
  if (!head) throw new ScenarioError(file, 'header', 'empty file (expected a header row)');
  const header = head.cells.map((h) => h.trim().toLowerCase());
  for (const r of records) {
    if (r.cells.length !== header.length)
      throw new ScenarioError(
        file,
        `line ${r.line}`,
        `${r.cells.length} fields, header has ${header.length}`,
      );
  }
  return { header, rows: records };
}

class Row {
  constructor(
    private readonly file: string,
    private readonly line: number,
    private readonly header: string[],
    private readonly cells: string[],
  ) {}
  private idx(col: string): number {
    return this.header.indexOf(col);
  }
  err(col: string, problem: string): ScenarioError {
    return new ScenarioError(this.file, `line ${this.line}: ${col}`, problem);
  }
  str(col: string, dflt?: string): string {
    const i = this.idx(col);
    const v = i < 0 ? undefined : this.cells[i]!.trim();
    if (v === undefined || v === '') {
      if (dflt !== undefined) return dflt;
      throw this.err(col, 'missing');
    }
    return v;
  }
  /** A number; empty → `dflt` (undefined dflt = required; null = optional). */
  num(col: string, dflt?: number | null, integer = true): number | null {
    const raw = this.str(col, dflt === undefined ? undefined : '');
    if (raw === '') return dflt ?? null;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n)))
      throw this.err(col, `"${raw}" is not a non-negative ${integer ? 'integer' : 'number'}`);
    return n;
  }
}

function readCsv(baseDir: string, rel: string, required: string[]): { file: string; rows: Row[] } {
  const file = resolve(baseDir, rel);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ScenarioError(file, '(file)', `cannot read: ${(err as Error).message}`);
  }
  const { header, rows } = parseCsv(text, file);
  for (const col of required) {
    if (!header.includes(col))
      throw new ScenarioError(file, 'header', `missing column "${col}" (have: ${header.join(', ')})`);
  }
  return { file, rows: rows.map((r) => new Row(file, r.line, header, r.cells)) };
}

// ───────────────────────────── hosts ─────────────────────────────

export interface SimHostSpec {
  /** Name from the CSV (informational; agents are n00000…). */
  name: string;
  facts: HostFacts;
}

function hostFacts(g: Omit<HostGroup, 'count'>, labels: Record<string, string>): HostFacts {
  return {
    cores: g.cpu_milli / 1000,
    cpuMilli: g.cpu_milli,
    memoryBytes: g.memory_mib * MiB,
    diskBytes: g.disk_gib * GiB,
    gpus: Array.from({ length: g.gpu }, (_, index) => ({
      index,
      model: g.gpu_model,
      memoryBytes: g.gpu_memory_mib * MiB,
    })),
    labels: g.gpu > 0 ? { ...labels, gpu_model: g.gpu_model } : { ...labels },
  };
}

/** `zone=a;rack=r1` → {zone: 'a', rack: 'r1'}. */
export function parseLabelList(s: string, row: Row, col: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s.split(';')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw row.err(col, `"${part}" is not key=value (labels are "k=v;k2=v2")`);
    out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

/** The scenario's hosts, in agent order (agent i runs host i). */
export function scenarioHosts(s: Scenario): SimHostSpec[] {
  const out: SimHostSpec[] = [];
  if (s.cluster.hosts) {
    s.cluster.hosts.forEach((g, gi) => {
      for (let k = 0; k < g.count; k++) out.push({ name: `g${gi}-${k}`, facts: hostFacts(g, g.labels) });
    });
  } else {
    const { rows } = readCsv(s.baseDir, s.cluster.hosts_csv!, ['id', 'cpu_milli', 'memory_mib']);
    const seen = new Set<string>();
    for (const r of rows) {
      const name = r.str('id');
      if (seen.has(name)) throw r.err('id', `duplicate host id "${name}"`);
      seen.add(name);
      const cpu = r.num('cpu_milli')!;
      if (cpu < 1000 || cpu % 1000 !== 0)
        throw r.err('cpu_milli', `${cpu} is not whole cores (multiple of 1000)`);
      const gpu = r.num('gpu', 0)!;
      const model = r.str('gpu_model', 'GPU');
      const labels = parseLabelList(r.str('labels', ''), r, 'labels');
      out.push({
        name,
        facts: hostFacts(
          {
            cpu_milli: cpu,
            memory_mib: r.num('memory_mib')!,
            gpu,
            gpu_model: model,
            gpu_memory_mib: r.num('gpu_memory_mib', 81_920)!,
            disk_gib: r.num('disk_gib', 500)!,
            labels,
          },
          labels,
        ),
      });
    }
    if (out.length === 0)
      throw new ScenarioError(resolve(s.baseDir, s.cluster.hosts_csv!), 'rows', 'no hosts');
  }
  out.forEach((h, i) => {
    if (h.facts.labels.zone === undefined) h.facts.labels.zone = s.cluster.zones[i % s.cluster.zones.length]!;
  });
  return out;
}

/**
 * `n` hosts with the same mix as the scenario's (host i = template ⌊i·T/n⌋): what `plan` varies.
 * Zones are dealt round robin again.
 */
export function resizeHosts(s: Scenario, template: SimHostSpec[], n: number): SimHostSpec[] {
  const out: SimHostSpec[] = [];
  for (let i = 0; i < n; i++) {
    const t = template[Math.floor((i * template.length) / n)]!;
    const labels = { ...t.facts.labels, zone: s.cluster.zones[i % s.cluster.zones.length]! };
    out.push({ name: `${t.name}#${i}`, facts: { ...t.facts, labels } });
  }
  return out;
}

// ───────────────────────────── tasks ─────────────────────────────

function gpuMilliOf(num: number, milli: number, fail: (field: string, p: string) => Error): number {
  if (num === 0) {
    if (milli > 0) throw fail('gpu_milli', `${milli} with num_gpu 0`);
    return 0;
  }
  if (num === 1) return milli === 0 ? 1000 : milli;
  if (milli !== 0 && milli !== 1000)
    throw fail('gpu_milli', `${milli} with num_gpu ${num}: several GPUs must be whole (1000 or empty)`);
  return num * 1000;
}

function modelsOf(spec: string): string[] {
  return spec
    .split('|')
    .map((m) => m.trim())
    .filter(Boolean);
}

/** Tasks of a CSV trace. */
export function traceTasks(s: Scenario): Task[] {
  const t = s.workload.trace!;
  const { rows } = readCsv(s.baseDir, t.pods_csv, ['id', 'cpu_milli', 'memory_mib', 'creation_time']);
  const out: Task[] = [];
  const seen = new Set<string>();
  for (const r of rows.slice(0, t.limit ?? rows.length)) {
    const raw = r.str('id').toLowerCase();
    const id = `t-${raw}`;
    if (!ID_RE.test(id))
      throw r.err('id', `"${raw}" is not usable as a deploy id (a-z, 0-9, '-', ≤ 60 chars)`);
    if (seen.has(id)) throw r.err('id', `duplicate task id "${raw}"`);
    seen.add(id);
    const created = r.num('creation_time', undefined, false)!;
    const deleted = r.num('deletion_time', null, false);
    if (deleted !== null && deleted < created)
      throw r.err('deletion_time', `${deleted} is before creation_time ${created}`);
    const atMs = Math.round((created - t.offset_s) * t.time_scale * 1000);
    if (atMs < 0) throw r.err('creation_time', `${created} is before offset_s (${t.offset_s})`);
    const numGpu = r.num('num_gpu', 0)!;
    const cpuMilli = r.num('cpu_milli')!;
    const memoryMiB = r.num('memory_mib')!;
    if (cpuMilli === 0 && memoryMiB === 0) throw r.err('cpu_milli', 'a task must ask for some CPU or memory');
    out.push({
      id,
      atMs,
      endMs: deleted === null ? null : Math.round((deleted - t.offset_s) * t.time_scale * 1000),
      replicas: 1,
      strategy: t.strategy,
      cpuMilli,
      memoryMiB,
      gpuMilli: gpuMilliOf(numGpu, r.num('gpu_milli', 0)!, (f, p) => r.err(f, p)),
      gpuModels: modelsOf(r.str('gpu_spec', '')),
    });
  }
  return out;
}

function draw(rng: Prng, r: number | { min: number; max: number }): number {
  return typeof r === 'number' ? r : r.min + rng.int(r.max - r.min + 1);
}

function pickShape(rng: Prng, shapes: readonly Shape[]): Shape {
  const total = shapes.reduce((n, s) => n + s.weight, 0);
  let u = rng.next() * total;
  for (const s of shapes) {
    u -= s.weight;
    if (u < 0) return s;
  }
  return shapes.at(-1)!;
}

/** Tasks of the synthetic generator (deterministic in the seed). */
export function syntheticTasks(g: Synthetic, seed: number, durationMs: number, file: string): Task[] {
  const rng = new Prng(seed).fork('synthetic-workload');
  const out: Task[] = [];
  let t = g.start_s * 1000;
  for (let i = 0; i < g.count; i++) {
    if (i > 0 || g.arrival.process === 'poisson') {
      if (g.arrival.process === 'poisson') t += (-Math.log(1 - rng.next()) / g.arrival.rate_per_s) * 1000;
      else if (g.arrival.process === 'uniform') t += g.arrival.interval_s * 1000;
    }
    if (g.arrival.process === 'burst' && i === 0) t = g.arrival.at_s * 1000;
    const atMs = Math.round(t);
    if (atMs >= durationMs) break;
    const shape = pickShape(rng, g.shapes);
    const fail = (f: string, p: string) => new ScenarioError(file, `workload.synthetic.shapes: ${f}`, p);
    const lt = g.lifetime;
    const life =
      lt.dist === 'forever'
        ? null
        : lt.dist === 'exponential'
          ? -Math.log(1 - rng.next()) * lt.mean_s * 1000
          : (lt.min_s + rng.next() * Math.max(0, lt.max_s - lt.min_s)) * 1000;
    out.push({
      id: `s-${String(i).padStart(6, '0')}`,
      atMs,
      endMs: life === null ? null : atMs + Math.max(1, Math.round(life)),
      replicas: draw(rng, g.replicas),
      strategy: g.strategy,
      cpuMilli: shape.cpu_milli,
      memoryMiB: shape.memory_mib,
      gpuMilli: gpuMilliOf(shape.num_gpu, shape.gpu_milli, fail),
      gpuModels: modelsOf(shape.gpu_spec),
    });
  }
  return out;
}

/** Every task of the scenario, ordered by (arrival, id). Tasks arriving at or after duration_s are dropped. */
export function scenarioTasks(s: Scenario, seed: number): Task[] {
  const durationMs = s.duration_s * 1000;
  const out: Task[] = [];
  if (s.workload.synthetic) out.push(...syntheticTasks(s.workload.synthetic, seed, durationMs, s.file));
  if (s.workload.trace) out.push(...traceTasks(s).filter((t) => t.atMs < durationMs));
  return out.sort((a, b) => a.atMs - b.atMs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** The allocator request of a task. */
export function taskRequest(t: Task): ResourceRequest {
  const r: ResourceRequest = { cpu: { milli: t.cpuMilli }, memoryBytes: t.memoryMiB * MiB };
  if (t.gpuMilli > 0) r.gpu = { milli: t.gpuMilli };
  return r;
}

/** The deploy spec a task is submitted with (the sim engine runs it until it is removed). */
export function taskSpec(t: Task): JsonObject {
  const resources: JsonObject = { cpu: { milli: t.cpuMilli }, memoryBytes: t.memoryMiB * MiB };
  if (t.gpuMilli > 0)
    resources.gpu =
      t.gpuModels.length === 1 ? { milli: t.gpuMilli, model: t.gpuModels[0]! } : { milli: t.gpuMilli };
  const spec: JsonObject = {
    image: 'sim/task',
    command: simProgram({
      cpuMilli: Math.floor(t.cpuMilli / 2),
      memoryBytes: Math.min(Math.floor((t.memoryMiB * MiB) / 2), 64 * MiB),
    }),
    resources,
  };
  if (t.gpuModels.length > 1) spec.constraints = [`gpu_model in (${t.gpuModels.join(',')})`];
  return spec;
}

/** Up to 8 most common shapes of the workload (weights = frequency): the "typical request" of the fragmentation metric. */
export function typicalShapes(tasks: readonly Task[]): TypicalShape[] {
  const counts = new Map<string, { task: Task; n: number }>();
  for (const t of tasks) {
    const k = `${t.cpuMilli}/${t.memoryMiB}/${t.gpuMilli}`;
    const c = counts.get(k);
    if (c) c.n += t.replicas;
    else counts.set(k, { task: t, n: t.replicas });
  }
  return [...counts.entries()]
    .sort((a, b) => b[1].n - a[1].n || (a[0] < b[0] ? -1 : 1))
    .slice(0, 8)
    .map(([, c]) => ({ resources: taskRequest(c.task), weight: c.n }));
}
