import { execFileSync } from 'node:child_process';
import { statfsSync } from 'node:fs';
import os from 'node:os';

/**
 * What this host offers, detected from the machine and overridden by flags. Detection is I/O and
 * lives here (node/), never in the core: the core is handed a HostFacts value.
 */
export interface GpuFacts {
  index: number;
  model: string;
  memoryBytes: number;
}

export interface HostFacts {
  cores: number;
  cpuMilli: number;
  memoryBytes: number;
  diskBytes: number;
  gpus: GpuFacts[];
  labels: Record<string, string>;
  /** The machine's host name, advertised as label `shoal.hostname` (Compose `node.hostname`). */
  hostname?: string;
}

export interface HostOverrides {
  /** Cores, e.g. "4" or "2.5" (fractional cores give millicores; bound cores = floor). */
  cpu?: string;
  /** Bytes with unit, e.g. "8GiB", "512MiB", "2G", or plain bytes. */
  memory?: string;
  disk?: string;
  /** GPUs: "none", or a comma list of `<model>[:<memory>]`, with `Nx` repeat: "2xA100:80GiB,T4:16GiB". */
  gpu?: string;
  /** `k=v` pairs; later ones win. */
  labels?: string[];
}

export class HostConfigError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'HostConfigError';
  }
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  ki: 2 ** 10,
  kib: 2 ** 10,
  mi: 2 ** 20,
  mib: 2 ** 20,
  gi: 2 ** 30,
  gib: 2 ** 30,
  ti: 2 ** 40,
  tib: 2 ** 40,
};

/** "8GiB" → 8589934592. Throws HostConfigError naming `field` on bad input. */
export function parseBytes(input: string, field = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(input);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new HostConfigError(
      field,
      `cannot read "${input}" as a size (examples: 512MiB, 8GiB, 2G, 1073741824)`,
    );
  }
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new HostConfigError(field, `"${input}" is too large`);
  return bytes;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 10 ? 0 : 1)} ${units[i]}`;
}

const LABEL_KEY = /^[a-zA-Z0-9][a-zA-Z0-9._\-/]{0,62}$/;
const MAX_LABEL_VALUE = 256;

/** Check one label; throws HostConfigError naming `field` (e.g. `--label` or `labels.zone`). */
export function checkLabel(key: string, value: string, field: string): void {
  if (!LABEL_KEY.test(key)) {
    throw new HostConfigError(
      field,
      `"${key}" is not a label key (letters, digits, . _ - /; starts with a letter or digit; max 63)`,
    );
  }
  if (value.length > MAX_LABEL_VALUE) {
    throw new HostConfigError(field, `value of "${key}" is longer than ${MAX_LABEL_VALUE} characters`);
  }
}

/** `["zone=a", "disk=ssd"]` → `{ zone: "a", disk: "ssd" }`; later pairs win. */
export function parseLabels(pairs: string[], field = '--label'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new HostConfigError(field, `"${p}" is not k=v (e.g. zone=a)`);
    const k = p.slice(0, eq).trim();
    const v = p.slice(eq + 1);
    checkLabel(k, v, field);
    out[k] = v;
  }
  return out;
}

/** A label map from untrusted input (API): every key and value checked, errors name `field.key`. */
export function checkLabelMap(labels: Record<string, string>, field = 'labels'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) {
    checkLabel(k, v, `${field}.${k}`);
    out[k] = v;
  }
  return out;
}

export function parseGpus(spec: string, field = '--gpu'): GpuFacts[] {
  const s = spec.trim();
  if (s === '' || s === 'none' || s === '0') return [];
  const gpus: GpuFacts[] = [];
  for (const part of s.split(',')) {
    const m = /^\s*(?:(\d+)x)?([A-Za-z0-9._-]+)(?::([0-9.]+[a-zA-Z]*))?\s*$/.exec(part);
    if (!m)
      throw new HostConfigError(field, `cannot read "${part}" (examples: A100:80GiB, 2xT4:16GiB, none)`);
    const count = m[1] ? Number(m[1]) : 1;
    if (count < 1 || count > 64) throw new HostConfigError(field, `"${part}": count must be 1..64`);
    const memoryBytes = m[3] ? parseBytes(m[3], field) : 0;
    for (let i = 0; i < count; i++) gpus.push({ index: gpus.length, model: m[2]!, memoryBytes });
  }
  return gpus;
}

/** GPUs as nvidia-smi reports them; [] when there is no nvidia-smi or it fails. */
export function detectGpus(): GpuFacts[] {
  try {
    const out = execFileSync(
      'nvidia-smi',
      ['--query-gpu=index,name,memory.total', '--format=csv,noheader,nounits'],
      { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] },
    );
    return out
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .map((l) => {
        const [index, name, mem] = l.split(',').map((x) => x.trim());
        return {
          index: Number(index),
          model: (name ?? 'unknown').replace(/^NVIDIA\s+/, '').replace(/\s+/g, '-'),
          memoryBytes: Math.round(Number(mem) * 2 ** 20),
        };
      })
      .filter((g) => Number.isInteger(g.index));
  } catch {
    return [];
  }
}

export function detectDisk(dir: string): number {
  try {
    const s = statfsSync(dir);
    return Number(s.blocks) * Number(s.bsize);
  } catch {
    return 0;
  }
}

/** Cores as a string ("4", "2.5") → { cpuMilli, cores (bound cores = floor) }. */
export function parseCpu(input: string, field = '--cpu'): { cpuMilli: number; cores: number } {
  const s = input.trim();
  const c = /^\d+(?:\.\d+)?$/.test(s) ? Number(s) : Number.NaN;
  if (!Number.isFinite(c) || c <= 0 || c > 4096) {
    throw new HostConfigError(field, `"${input}" is not a core count (e.g. 4 or 2.5; 0 < cores <= 4096)`);
  }
  const cpuMilli = Math.round(c * 1000);
  if (cpuMilli < 1) throw new HostConfigError(field, `"${input}" is less than one millicore`);
  return { cpuMilli, cores: Math.floor(c) };
}

/** The overrides, parsed: only what was given. Throws HostConfigError naming the flag. */
export interface ParsedOverrides {
  cpu?: { cpuMilli: number; cores: number };
  memoryBytes?: number;
  diskBytes?: number;
  gpus?: GpuFacts[];
  labels: Record<string, string>;
}

/** Validate flag overrides without touching the machine (the CLI calls this before anything else). */
export function parseOverrides(o: HostOverrides): ParsedOverrides {
  const out: ParsedOverrides = { labels: parseLabels(o.labels ?? [], '--label') };
  if (o.cpu !== undefined) out.cpu = parseCpu(o.cpu, '--cpu');
  if (o.memory !== undefined) out.memoryBytes = parseBytes(o.memory, '--memory');
  if (o.disk !== undefined) out.diskBytes = parseBytes(o.disk, '--disk');
  if (o.gpu !== undefined) out.gpus = parseGpus(o.gpu, '--gpu');
  return out;
}

export function detectHost(dataDir: string, o: HostOverrides = {}): HostFacts {
  const p = parseOverrides(o);
  const detectedCores = os.availableParallelism();
  return {
    cores: p.cpu?.cores ?? detectedCores,
    cpuMilli: p.cpu?.cpuMilli ?? detectedCores * 1000,
    memoryBytes: p.memoryBytes ?? os.totalmem(),
    diskBytes: p.diskBytes ?? detectDisk(dataDir),
    gpus: p.gpus ?? detectGpus(),
    labels: p.labels,
    hostname: os.hostname(),
  };
}

/** A duration for humans, coarse like kubectl's ages: 45s, 90s, 5m, 3h, 2d. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}
