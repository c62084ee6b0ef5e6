/** Linux procfs helpers for the process engine: liveness with pid-reuse protection, usage. */
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second for /proc/<pid>/stat times (USER_HZ: 100 on every mainstream Linux). */
export const CLK_TCK = 100;
export const PAGE_SIZE = 4096;

export interface ProcStat {
  pid: number;
  /** R, S, D, Z (zombie), T, X (dead), ... */
  state: string;
  ppid: number;
  pgrp: number;
  /** Start time in clock ticks after boot: with the boot id, identifies a process across pid reuse. */
  startTime: number;
  utimeTicks: number;
  stimeTicks: number;
  rssPages: number;
}

export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) is in parentheses and may contain spaces or ')': split after the LAST ')'.
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const f = text
    .slice(close + 2)
    .trim()
    .split(' ');
  // f[0] is field 3 (state): field n is f[n - 3].
  const num = (n: number) => Number(f[n - 3]);
  return {
    pid,
    state: f[0] ?? '?',
    ppid: num(4),
    pgrp: num(5),
    utimeTicks: num(14),
    stimeTicks: num(15),
    startTime: num(22),
    rssPages: num(24),
  };
}

let cachedBootId: string | undefined;
export function bootId(): string {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      cachedBootId = 'unknown';
    }
  }
  return cachedBootId;
}

/** A recorded process identity: alive only if the same pid still has the same start time, on the same boot. */
export interface ProcIdentity {
  pid: number;
  startTime?: number;
  bootId?: string;
}

export function isAlive(p: ProcIdentity): boolean {
  if (p.bootId !== undefined && p.bootId !== bootId()) return false;
  const st = readProcStat(p.pid);
  if (st === undefined || st.state === 'Z' || st.state === 'X') return false;
  return p.startTime === undefined || st.startTime === p.startTime;
}

/** Every live process whose process group is `pgid`. */
export function processGroup(pgid: number): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readProcStat(Number(name));
    if (st && st.pgrp === pgid && st.state !== 'Z') out.push(st);
  }
  return out;
}

/** Send a signal; false when the target does not exist. */
export function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/**
 * Whether a container's PID 1 (host pid) is past its start-up: no longer runc's init, and — for
 * docker-init/tini — already running its child. Before that, a SIGTERM can be lost (the kernel
 * drops default-disposition signals to a PID-namespace init). Undefined when /proc cannot tell
 * (dockerd on another machine).
 */
export function containerInitReady(pid: number): boolean | undefined {
  let name: string;
  try {
    name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
  if (name.startsWith('runc')) return false;
  if (name !== 'docker-init' && name !== 'tini') return true;
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim() !== '';
  } catch {
    return undefined;
  }
}
