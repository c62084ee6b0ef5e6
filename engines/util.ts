/** Small helpers shared by the engines (no I/O beyond what each function says). */
import { createHash } from 'node:crypto';
import { EngineError, type Resources, type WorkloadSpec } from './engine.ts';

const SAFE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$/;

/** A name safe for a container name or a directory: the id itself when it is safe, else a
 * sanitised prefix plus a hash of the id (distinct ids never collide). */
export function safeName(id: string): string {
  if (SAFE.test(id)) return id;
  const cleaned = id
    .replace(/[^A-Za-z0-9_.-]/g, '_')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 60);
  const hash = createHash('sha256').update(id).digest('hex').slice(0, 12);
  return `${cleaned || 'w'}-${hash}`;
}

const RESERVED_LABELS = ['shoal.workload', 'shoal.deploy', 'shoal.host'];

function invalid(spec: { id?: unknown }, field: string, why: string): EngineError {
  const id = typeof spec.id === 'string' ? spec.id : undefined;
  return new EngineError('invalid-spec', `invalid workload spec: ${field} ${why}`, { id });
}

const isNonNegInt = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

export function validateResources(r: Resources, spec: { id?: unknown }, prefix = 'resources'): void {
  if (r.cpuMilli !== undefined && !isNonNegInt(r.cpuMilli))
    throw invalid(spec, `${prefix}.cpuMilli`, 'must be a non-negative integer');
  if (r.memoryBytes !== undefined && !isNonNegInt(r.memoryBytes))
    throw invalid(spec, `${prefix}.memoryBytes`, 'must be a non-negative integer');
  if (r.cpuset !== undefined) {
    if (!Array.isArray(r.cpuset) || !r.cpuset.every(isNonNegInt))
      throw invalid(spec, `${prefix}.cpuset`, 'must be a list of core numbers');
    if (new Set(r.cpuset).size !== r.cpuset.length) throw invalid(spec, `${prefix}.cpuset`, 'has duplicates');
  }
  if (r.gpus !== undefined) {
    if (!Array.isArray(r.gpus)) throw invalid(spec, `${prefix}.gpus`, 'must be a list');
    r.gpus.forEach((g, i) => {
      if (typeof g.device !== 'string' || g.device === '')
        throw invalid(spec, `${prefix}.gpus[${i}].device`, 'must be a non-empty string');
      if (!Number.isInteger(g.milli) || g.milli < 1 || g.milli > 1000)
        throw invalid(spec, `${prefix}.gpus[${i}].milli`, 'must be an integer in 1..1000');
    });
  }
}

/** Structural checks common to every engine. Engine-specific rules come on top. */
export function validateSpec(spec: WorkloadSpec, hostId: string): void {
  const nonEmpty = (v: unknown) => typeof v === 'string' && v.length > 0 && v.length <= 256;
  if (!nonEmpty(spec.id)) throw invalid(spec, 'id', 'must be a non-empty string (<= 256 chars)');
  if (!nonEmpty(spec.deployId)) throw invalid(spec, 'deployId', 'must be a non-empty string');
  if (spec.hostId !== hostId) throw invalid(spec, 'hostId', `must be this engine's host id (${hostId})`);
  const strList = (v: unknown) => Array.isArray(v) && v.every((s) => typeof s === 'string');
  if (spec.command !== undefined && (!strList(spec.command) || spec.command.length === 0))
    throw invalid(spec, 'command', 'must be a non-empty list of strings');
  if (spec.args !== undefined && !strList(spec.args))
    throw invalid(spec, 'args', 'must be a list of strings');
  if (spec.image !== undefined && !nonEmpty(spec.image))
    throw invalid(spec, 'image', 'must be a non-empty string');
  if (spec.image === undefined && spec.command === undefined)
    throw invalid(spec, 'image', 'or command is required');
  for (const [k, v] of Object.entries(spec.env ?? {})) {
    if (k === '' || k.includes('=') || k.includes('\0'))
      throw invalid(spec, `env.${k}`, 'is not a valid variable name');
    if (typeof v !== 'string') throw invalid(spec, `env.${k}`, 'must be a string');
  }
  if (spec.workdir !== undefined && !(typeof spec.workdir === 'string' && spec.workdir.startsWith('/')))
    throw invalid(spec, 'workdir', 'must be an absolute path');
  for (const [k, v] of Object.entries(spec.labels ?? {})) {
    if (typeof v !== 'string') throw invalid(spec, `labels.${k}`, 'must be a string');
    if (RESERVED_LABELS.includes(k) || k === 'shoal.spec') throw invalid(spec, `labels.${k}`, 'is reserved');
  }
  if (spec.user !== undefined && !nonEmpty(spec.user))
    throw invalid(spec, 'user', 'must be a non-empty string');
  for (const [i, m] of (spec.mounts ?? []).entries()) {
    if (!['bind', 'volume', 'tmpfs'].includes(m.type))
      throw invalid(spec, `mounts[${i}].type`, 'must be bind, volume or tmpfs');
    if (typeof m.target !== 'string' || !m.target.startsWith('/'))
      throw invalid(spec, `mounts[${i}].target`, 'must be an absolute path');
    if (m.type === 'bind' && !(typeof m.source === 'string' && m.source.startsWith('/')))
      throw invalid(spec, `mounts[${i}].source`, 'must be an absolute host path for a bind mount');
    if (m.type === 'tmpfs' && m.source !== undefined)
      throw invalid(spec, `mounts[${i}].source`, 'a tmpfs has no source');
  }
  if (spec.ports !== undefined) {
    if (!Array.isArray(spec.ports)) throw invalid(spec, 'ports', 'must be a list of {port, protocol}');
    const seen = new Set<string>();
    spec.ports.forEach((p, i) => {
      if (!Number.isInteger(p?.port) || p.port < 1 || p.port > 65_535)
        throw invalid(spec, `ports[${i}].port`, 'must be an integer in 1..65535');
      if (p.protocol !== 'tcp' && p.protocol !== 'udp')
        throw invalid(spec, `ports[${i}].protocol`, 'must be tcp or udp');
      const k = `${p.port}/${p.protocol}`;
      if (seen.has(k)) throw invalid(spec, `ports[${i}]`, `publishes ${k} twice`);
      seen.add(k);
    });
  }
  validateResources(spec.resources ?? {}, spec);
}

/** "0-2,5" ⇄ [0,1,2,5]. */
export function formatCpuset(cores: readonly number[]): string {
  const sorted = [...cores].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === (sorted[j] as number) + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

export function parseCpuset(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(',').map((p) => p.trim())) {
    if (part === '') continue;
    const [a, b] = part.split('-').map((x) => Number.parseInt(x, 10));
    if (a === undefined || Number.isNaN(a)) continue;
    const end = b === undefined || Number.isNaN(b) ? a : b;
    for (let c = a; c <= end; c++) out.push(c);
  }
  return out;
}

/** Merge a partial resource update into the current resources (0 / [] lift a limit). */
export function mergeResources(current: Resources, patch: Resources): Resources {
  const out: Resources = { ...current };
  if (patch.cpuMilli !== undefined) out.cpuMilli = patch.cpuMilli;
  if (patch.memoryBytes !== undefined) out.memoryBytes = patch.memoryBytes;
  if (patch.cpuset !== undefined) out.cpuset = [...patch.cpuset];
  if (patch.gpus !== undefined) out.gpus = patch.gpus.map((g) => ({ ...g }));
  return normalizeResources(out);
}

/** Drop unbounded dimensions so equal limits compare equal. */
export function normalizeResources(r: Resources): Resources {
  const out: Resources = {};
  if (r.cpuMilli) out.cpuMilli = r.cpuMilli;
  if (r.cpuset && r.cpuset.length > 0) out.cpuset = [...r.cpuset].sort((a, b) => a - b);
  if (r.memoryBytes) out.memoryBytes = r.memoryBytes;
  if (r.gpus && r.gpus.length > 0) out.gpus = r.gpus.map((g) => ({ ...g }));
  return out;
}

/** Splits a byte stream into lines (handles chunks that cut lines and multi-byte characters). */
export class LineSplitter {
  private pending = '';
  private readonly decoder = new TextDecoder();

  push(chunk: Uint8Array | string): string[] {
    this.pending += typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true });
    const parts = this.pending.split('\n');
    this.pending = parts.pop() ?? '';
    return parts;
  }

  /** The unterminated last line, if any. */
  flush(): string | undefined {
    this.pending += this.decoder.decode();
    const rest = this.pending;
    this.pending = '';
    return rest === '' ? undefined : rest;
  }
}

/**
 * A single-consumer async queue: producers push/end/fail, the consumer iterates. `onClose`
 * runs once, when the consumer stops early or the queue ends — release sources there.
 */
export class AsyncQueue<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  private waiter: { resolve: () => void } | undefined;
  private ended = false;
  private failure: unknown;
  private closed = false;

  constructor(private readonly onClose: () => void = () => {}) {}

  push(item: T): void {
    if (this.ended) return;
    this.items.push(item);
    this.wake();
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  fail(err: unknown): void {
    if (this.ended) return;
    this.failure = err;
    this.ended = true;
    this.wake();
  }

  get isEnded(): boolean {
    return this.ended;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve();
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ended = true;
    this.onClose();
  }

  async next(): Promise<IteratorResult<T>> {
    for (;;) {
      if (this.items.length > 0) return { value: this.items.shift() as T, done: false };
      if (this.ended) {
        this.close();
        if (this.failure !== undefined) {
          const f = this.failure;
          this.failure = undefined;
          throw f;
        }
        return { value: undefined, done: true };
      }
      await new Promise<void>((resolve) => {
        this.waiter = { resolve };
      });
    }
  }

  async return(): Promise<IteratorResult<T>> {
    this.items.length = 0;
    this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
