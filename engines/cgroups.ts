/**
 * cgroup v1 and v2 control for the process engine: one group per workload under
 * `<root>/.../shoal/<host>/<workload>`, with CPU quota + shares (weight), cpuset and memory limits,
 * usage counters and the OOM-kill counter. Root only; `detectCgroups` returns undefined when no
 * hierarchy is writable (limits are then reported as not enforced).
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EngineLogger } from './engine.ts';
import { formatCpuset } from './util.ts';

export interface CgroupLimits {
  cpuMilli?: number;
  cpuset?: number[];
  memoryBytes?: number;
}

export interface CgroupUsage {
  cpuNs: number;
  memoryBytes: number;
}

export interface Cgroups {
  readonly version: 1 | 2;
  readonly enforces: { cpu: boolean; cpuset: boolean; memory: boolean };
  /** Create the group (idempotent) and apply the limits. */
  apply(group: string, limits: CgroupLimits): void;
  /** `cgroup.procs` files a process must write its pid into to join the group. */
  procsFiles(group: string): string[];
  usage(group: string): CgroupUsage | undefined;
  /** Times the kernel's OOM killer fired inside the group. */
  oomKills(group: string): number;
  pids(group: string): number[];
  /** Remove the group (it must have no live processes). */
  remove(group: string): void;
}

const CPU_PERIOD_US = 100_000;
const read = (p: string): string | undefined => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
};
const write = (p: string, v: string): void => writeFileSync(p, v);
const statField = (text: string | undefined, key: string): number | undefined => {
  const m = text?.match(new RegExp(`^${key} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : undefined;
};
const parsePids = (text: string | undefined): number[] =>
  (text ?? '')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map(Number);

/** rmdir a group, then its parent (the per-host level) if that became empty. */
function removeWithEmptyParent(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  try {
    rmdirSync(join(dir, '..'));
  } catch {
    // still has other workloads' groups (EBUSY / ENOTEMPTY): keep it
  }
}

function shares(cpuMilli: number | undefined): number {
  return cpuMilli ? Math.max(2, Math.round((cpuMilli * 1024) / 1000)) : 1024;
}

/** Creates `dir` and its missing parents below `base`, calling `init` on each new level. */
function mkdirLevels(base: string, rel: string, init: (dir: string, parent: string) => void): string {
  let cur = base;
  for (const part of rel.split('/')) {
    const next = join(cur, part);
    if (!existsSync(next)) {
      mkdirSync(next);
      init(next, cur);
    }
    cur = next;
  }
  return cur;
}

class CgroupsV1 implements Cgroups {
  readonly version = 1 as const;
  readonly enforces: { cpu: boolean; cpuset: boolean; memory: boolean };

  constructor(
    private readonly root: string,
    private readonly prefix: string,
    private readonly ctl: { cpu?: string; cpuacct?: string; cpuset?: string; memory?: string },
  ) {
    this.enforces = {
      cpu: ctl.cpu !== undefined,
      cpuset: ctl.cpuset !== undefined,
      memory: ctl.memory !== undefined,
    };
  }

  private dirs(group: string): string[] {
    const ds = [this.ctl.cpu, this.ctl.cpuacct, this.ctl.cpuset, this.ctl.memory].filter(
      (d): d is string => d !== undefined,
    );
    return [...new Set(ds)].map((d) => join(this.root, d, this.prefix, group));
  }

  private ensure(group: string): void {
    for (const c of [...new Set([this.ctl.cpu, this.ctl.cpuacct, this.ctl.memory])]) {
      if (c !== undefined) mkdirLevels(join(this.root, c), join(this.prefix, group), () => {});
    }
    if (this.ctl.cpuset !== undefined) {
      // A new cpuset group starts with no cpus/mems: copy the parent's before anything can join.
      mkdirLevels(join(this.root, this.ctl.cpuset), join(this.prefix, group), (dir, parent) => {
        write(join(dir, 'cpuset.cpus'), (read(join(parent, 'cpuset.cpus')) ?? '').trim() || '0');
        write(join(dir, 'cpuset.mems'), (read(join(parent, 'cpuset.mems')) ?? '').trim() || '0');
      });
    }
  }

  apply(group: string, limits: CgroupLimits): void {
    this.ensure(group);
    const at = (c: string | undefined, f: string) => join(this.root, c as string, this.prefix, group, f);
    if (this.ctl.cpu !== undefined) {
      write(at(this.ctl.cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
      write(
        at(this.ctl.cpu, 'cpu.cfs_quota_us'),
        limits.cpuMilli ? String(Math.max(1000, Math.round((limits.cpuMilli * CPU_PERIOD_US) / 1000))) : '-1',
      );
      write(at(this.ctl.cpu, 'cpu.shares'), String(shares(limits.cpuMilli)));
    }
    if (this.ctl.cpuset !== undefined) {
      const parent = join(this.root, this.ctl.cpuset, this.prefix, group, '..');
      const cpus =
        limits.cpuset && limits.cpuset.length > 0
          ? formatCpuset(limits.cpuset)
          : (read(join(parent, 'cpuset.cpus')) ?? '0').trim();
      write(at(this.ctl.cpuset, 'cpuset.cpus'), cpus);
    }
    if (this.ctl.memory !== undefined) {
      write(
        at(this.ctl.memory, 'memory.limit_in_bytes'),
        limits.memoryBytes ? String(limits.memoryBytes) : '-1',
      );
    }
  }

  procsFiles(group: string): string[] {
    return this.dirs(group).map((d) => join(d, 'cgroup.procs'));
  }

  usage(group: string): CgroupUsage | undefined {
    const acct = this.ctl.cpuacct ?? this.ctl.cpu;
    const cpu = acct ? read(join(this.root, acct, this.prefix, group, 'cpuacct.usage')) : undefined;
    const memDir = this.ctl.memory ? join(this.root, this.ctl.memory, this.prefix, group) : undefined;
    const mem = memDir ? read(join(memDir, 'memory.usage_in_bytes')) : undefined;
    if (cpu === undefined && mem === undefined) return undefined;
    const inactive = memDir ? (statField(read(join(memDir, 'memory.stat')), 'total_inactive_file') ?? 0) : 0;
    return { cpuNs: Number(cpu ?? 0), memoryBytes: Math.max(0, Number(mem ?? 0) - inactive) };
  }

  oomKills(group: string): number {
    if (this.ctl.memory === undefined) return 0;
    return (
      statField(
        read(join(this.root, this.ctl.memory, this.prefix, group, 'memory.oom_control')),
        'oom_kill',
      ) ?? 0
    );
  }

  pids(group: string): number[] {
    const pids = new Set<number>();
    for (const f of this.procsFiles(group)) for (const p of parsePids(read(f))) pids.add(p);
    return [...pids];
  }

  remove(group: string): void {
    for (const d of this.dirs(group)) removeWithEmptyParent(d);
  }
}

class CgroupsV2 implements Cgroups {
  readonly version = 2 as const;
  readonly enforces: { cpu: boolean; cpuset: boolean; memory: boolean };

  constructor(
    private readonly root: string,
    private readonly prefix: string,
    controllers: Set<string>,
  ) {
    this.enforces = {
      cpu: controllers.has('cpu'),
      cpuset: controllers.has('cpuset'),
      memory: controllers.has('memory'),
    };
  }

  private dir(group: string): string {
    return join(this.root, this.prefix, group);
  }

  private ensure(group: string): void {
    const want = (['cpu', 'cpuset', 'memory'] as const).filter((c) => this.enforces[c]).map((c) => `+${c}`);
    const enable = (dir: string) => {
      if (want.length > 0) write(join(dir, 'cgroup.subtree_control'), want.join(' '));
    };
    enable(this.root);
    // Enable the controllers on every intermediate level (they hold no processes themselves).
    const levels = join(this.prefix, group).split('/');
    let cur = this.root;
    levels.forEach((part, i) => {
      cur = join(cur, part);
      if (!existsSync(cur)) mkdirSync(cur);
      if (i < levels.length - 1) enable(cur);
    });
  }

  apply(group: string, limits: CgroupLimits): void {
    this.ensure(group);
    const d = this.dir(group);
    if (this.enforces.cpu) {
      const quota = limits.cpuMilli
        ? Math.max(1000, Math.round((limits.cpuMilli * CPU_PERIOD_US) / 1000))
        : 'max';
      write(join(d, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
      const weight = Math.min(
        10_000,
        Math.max(1, 1 + Math.round(((shares(limits.cpuMilli) - 2) * 9999) / 262142)),
      );
      write(join(d, 'cpu.weight'), String(weight));
    }
    if (this.enforces.cpuset) {
      write(
        join(d, 'cpuset.cpus'),
        limits.cpuset && limits.cpuset.length > 0 ? formatCpuset(limits.cpuset) : '',
      );
    }
    if (this.enforces.memory) {
      write(join(d, 'memory.max'), limits.memoryBytes ? String(limits.memoryBytes) : 'max');
      if (existsSync(join(d, 'memory.swap.max')))
        write(join(d, 'memory.swap.max'), limits.memoryBytes ? '0' : 'max');
    }
  }

  procsFiles(group: string): string[] {
    return [join(this.dir(group), 'cgroup.procs')];
  }

  usage(group: string): CgroupUsage | undefined {
    const d = this.dir(group);
    const usec = statField(read(join(d, 'cpu.stat')), 'usage_usec');
    const mem = read(join(d, 'memory.current'));
    if (usec === undefined && mem === undefined) return undefined;
    const inactive = statField(read(join(d, 'memory.stat')), 'inactive_file') ?? 0;
    return { cpuNs: (usec ?? 0) * 1000, memoryBytes: Math.max(0, Number(mem ?? 0) - inactive) };
  }

  oomKills(group: string): number {
    return statField(read(join(this.dir(group), 'memory.events')), 'oom_kill') ?? 0;
  }

  pids(group: string): number[] {
    return parsePids(read(join(this.dir(group), 'cgroup.procs')));
  }

  remove(group: string): void {
    removeWithEmptyParent(this.dir(group));
  }
}

/** Probe a hierarchy by creating (and keeping) the `prefix` directory; false if not writable. */
function writable(dir: string, prefix: string): boolean {
  try {
    mkdirSync(join(dir, prefix), { recursive: true });
    return true;
  } catch {
    return false;
  }
}

/**
 * Find a usable cgroup hierarchy: v2 when `<root>/cgroup.controllers` lists controllers (pure v2),
 * else v1 controllers mounted at `<root>/<name>`. Undefined when not root or nothing is writable.
 */
export function detectCgroups(
  opts: { root?: string; prefix?: string; logger?: EngineLogger } = {},
): Cgroups | undefined {
  const root = opts.root ?? '/sys/fs/cgroup';
  const prefix = opts.prefix ?? 'shoal';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    opts.logger?.info({}, 'process engine: not root, cgroup limits are not enforced');
    return undefined;
  }
  const controllersFile = read(join(root, 'cgroup.controllers'));
  if (controllersFile !== undefined) {
    const controllers = new Set(controllersFile.trim().split(/\s+/));
    if (controllers.has('memory') || controllers.has('cpu')) {
      if (writable(root, prefix)) return new CgroupsV2(root, prefix, controllers);
      opts.logger?.warn({ root }, 'process engine: cgroup v2 hierarchy not writable');
      return undefined;
    }
  }
  const pick = (name: string, file: string) => {
    const dir = join(root, name);
    return existsSync(join(dir, file)) && writable(dir, prefix) ? name : undefined;
  };
  const cpu = pick('cpu', 'cpu.cfs_quota_us') ?? pick('cpu,cpuacct', 'cpu.cfs_quota_us');
  const cpuacct =
    pick('cpuacct', 'cpuacct.usage') ??
    (cpu && existsSync(join(root, cpu, 'cpuacct.usage')) ? cpu : undefined);
  const cpuset = pick('cpuset', 'cpuset.cpus');
  const memory = pick('memory', 'memory.limit_in_bytes');
  if (!cpu && !cpuset && !memory) {
    opts.logger?.warn({ root }, 'process engine: no writable cgroup hierarchy, limits are not enforced');
    return undefined;
  }
  if (cpuset) {
    // The shared prefix level needs cpus/mems before any child group can be populated.
    const d = join(root, cpuset, prefix);
    if ((read(join(d, 'cpuset.cpus')) ?? '').trim() === '')
      write(join(d, 'cpuset.cpus'), (read(join(root, cpuset, 'cpuset.cpus')) ?? '0').trim());
    if ((read(join(d, 'cpuset.mems')) ?? '').trim() === '')
      write(join(d, 'cpuset.mems'), (read(join(root, cpuset, 'cpuset.mems')) ?? '0').trim());
  }
  return new CgroupsV1(root, prefix, { cpu, cpuacct, cpuset, memory });
}
