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

export function parseLabels(pairs: string[], field = '--label'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    const k = eq > 0 ? p.slice(0, eq).trim() : '';
    if (!/^[a-zA-Z0-9][a-zA-Z0-9._\-/]{0,62}$/.test(k)) {
      throw new HostConfigError(field, `"${p}" is not k=v with a key of letters, digits, . _ - / (max 63)`);
    }
    const v = p.slice(eq + 1);
    if (v.length > 256) throw new HostConfigError(field, `value of "${k}" is longer than 256 characters`);
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

export function detectHost(dataDir: string, o: HostOverrides = {}): HostFacts {
  let cores = os.availableParallelism();
  let cpuMilli = cores * 1000;
  if (o.cpu !== undefined) {
    const c = Number(o.cpu);
    if (!Number.isFinite(c) || c <= 0 || c > 4096) {
      throw new HostConfigError('--cpu', `"${o.cpu}" is not a core count (e.g. 4 or 2.5)`);
    }
    cpuMilli = Math.round(c * 1000);
    cores = Math.floor(c);
  }
  const memoryBytes = o.memory !== undefined ? parseBytes(o.memory, '--memory') : os.totalmem();
  const diskBytes = o.disk !== undefined ? parseBytes(o.disk, '--disk') : detectDisk(dataDir);
  const gpus = o.gpu !== undefined ? parseGpus(o.gpu) : detectGpus();
  const labels = parseLabels(o.labels ?? []);
  return { cores, cpuMilli, memoryBytes, diskBytes, gpus, labels };
}
