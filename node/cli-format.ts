import type { DeployView, HistoryEntry, WorkloadView } from './client.ts';
import { formatAge } from './host.ts';

/** Pure helpers of the user CLI (node/cli.ts): argument parsing, tables, deploy progress. */

/** A malformed command line (exit code 2). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function formatTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** `web` or `web/2` → deploy id and optional replica. */
export function parseTarget(s: string, field = 'target'): { deploy: string; replica?: number } {
  const m = /^([a-z0-9][a-z0-9-]{0,62})(?:\/(\d+))?$/.exec(s);
  if (!m) throw new UsageError(`${field}: expected <deploy> or <deploy>/<replica>, got "${s}"`);
  return m[2] === undefined ? { deploy: m[1]! } : { deploy: m[1]!, replica: Number(m[2]) };
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "5m", "1h30m", "2d", "250ms" → ms. */
export function parseDuration(s: string, field: string): number {
  const t = s.trim();
  if (t !== '' && /^(\d+(?:\.\d+)?(ms|s|m|h|d))+$/.test(t)) {
    let ms = 0;
    for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
    return Math.round(ms);
  }
  throw new UsageError(`${field}: expected a duration like 30s, 5m, 1h30m or 2d, got "${s}"`);
}

/** `--since`: a duration back from now, or an ISO date/time → epoch ms. */
export function parseSince(s: string, now: number): number {
  if (/^\d{4}-\d\d-\d\d/.test(s)) {
    const t = Date.parse(s);
    if (Number.isFinite(t)) return t;
  }
  try {
    return now - parseDuration(s, '--since');
  } catch {
    throw new UsageError(
      `--since: expected a duration like 10m or a date like 2025-01-31T12:00:00Z, got "${s}"`,
    );
  }
}

/** A non-negative integer argument. */
export function parseCount(s: string, field: string, max = 10_000): number {
  if (!/^\d+$/.test(s) || Number(s) > max) {
    throw new UsageError(`${field}: expected an integer from 0 to ${max}, got "${s}"`);
  }
  return Number(s);
}

/** Seconds (e.g. --timeout 90) → ms; 0 = no limit. */
export function parseSeconds(s: string, field: string): number {
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new UsageError(`${field}: expected seconds (a number ≥ 0), got "${s}"`);
  }
  return Math.round(n * 1000);
}

/** Repeatable K=V flags → a map. */
export function parseEnvPairs(pairs: string[], field: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const i = p.indexOf('=');
    const k = i > 0 ? p.slice(0, i) : '';
    if (!/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(k)) {
      throw new UsageError(`${field}: expected KEY=VALUE with a variable name as KEY, got "${p}"`);
    }
    out[k] = p.slice(i + 1);
  }
  return out;
}

/** Peer ids are long; tables show their tail (as the agents' logs do) unless --wide. */
export function shortId(id: string | null | undefined, wide = false): string {
  if (!id) return '-';
  return wide || id.length <= 12 ? id : `…${id.slice(-8)}`;
}

/** `shoal ps` rows: one per replica; then one line per deploy with pending replicas and why. */
export function formatPs(deploys: DeployView[], now: number, wide = false): string {
  const rows = [['DEPLOY', 'REPLICA', 'HOST', 'STATUS', 'HEALTH', 'GEN/VERSION', 'AGE']];
  for (const d of deploys) {
    if (d.instances.length === 0) {
      rows.push([d.id, '-', '-', d.replicas === 0 ? 'scaled to 0' : 'unplaced', '-', '-', '-']);
      continue;
    }
    for (const i of d.instances) {
      const status = i.host === null ? 'unplaced' : (i.status ?? 'placed');
      const exit =
        i.exitCode !== undefined && i.exitCode !== null && status !== 'running' ? ` (${i.exitCode})` : '';
      const gen = i.gen === null || i.gen === undefined ? '-' : String(i.gen);
      const version = i.version ?? d.version;
      rows.push([
        d.id,
        String(i.replica),
        shortId(i.host, wide),
        `${status}${exit}`,
        i.health ?? '-',
        version === undefined ? gen : `${gen}/v${version}`,
        typeof i.startedAt === 'number' ? formatAge(now - i.startedAt) : '-',
      ]);
    }
  }
  // Why replicas are not placed (the coordinator's reasons, e.g. `port 80/tcp: in use`).
  const pending = deploys
    .filter((d) => d.pending && d.pending.pending > 0 && d.pending.reasons.length > 0)
    .map((d) => `${d.id}: ${d.pending!.pending} pending: ${d.pending!.reasons.join('; ')}`);
  return formatTable(rows) + pending.map((l) => `\n${l}`).join('');
}

export function formatHistory(d: DeployView, now: number): string {
  const rows = [['VERSION', 'AGE', 'IMAGE', 'CHANGE']];
  const history: HistoryEntry[] = d.history ?? [];
  for (const h of history) {
    const { version, at, image, ...rest } = h;
    const change = Object.entries(rest)
      .filter(([k]) => k !== 'spec')
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    rows.push([
      `${version}${version === d.version ? ' *' : ''}`,
      typeof at === 'number' ? formatAge(now - at) : '-',
      image ?? '-',
      change || '-',
    ]);
  }
  return formatTable(rows);
}

export interface Progress {
  id: string;
  /** Replicas wanted (per-host strategies: instances known so far). */
  desired: number;
  /** Placed, running, healthy when checked, at the deploy's current version. */
  ready: number;
  /** True when there is nothing more to wait for. */
  done: boolean;
  /** Set when the deploy ended without success (rolled back, failed). */
  failed?: string;
  /** One line for a log or a progress bar's tail. */
  text: string;
  rollout?: { updated: number; total: number };
}

/** How far a deploy is, from its view (`shoal deploy`, `update`, `rollback` wait on `done`). */
export function progressOf(d: DeployView): Progress {
  const perHost = d.strategy === 'fill' || d.strategy === 'each';
  const desired = perHost ? (d.replicas === 0 ? 0 : Math.max(1, d.instances.length)) : d.replicas;
  const current = (v: number | undefined) => d.version === undefined || v === undefined || v === d.version;
  const ready = d.instances.filter(
    (i) =>
      i.host !== null &&
      i.status === 'running' &&
      (i.health === null || i.health === undefined || i.health === 'healthy') &&
      current(i.version),
  ).length;
  const unhealthy = d.instances.filter((i) => i.health === 'unhealthy').length;
  const failedCount = d.instances.filter((i) => i.status === 'failed').length;
  const parts = [`${d.id}: ${ready}/${desired} running`];
  if (unhealthy > 0) parts.push(`${unhealthy} unhealthy`);
  if (failedCount > 0) parts.push(`${failedCount} failed`);
  let done = ready >= desired;
  let failed: string | undefined;
  let rollout: Progress['rollout'];
  const r = d.rollout;
  if (r) {
    rollout = { updated: r.updated, total: r.total };
    if (r.state === 'rolling') {
      parts.push(`updating ${r.updated}/${r.total}`);
      done = false;
    } else if (r.state !== 'done') {
      done = true;
      failed = `rollout ${r.state}${r.reason ? `: ${r.reason}` : ''}`;
      parts.push(failed);
    }
  }
  if (!done && d.pending && d.pending.reasons.length > 0)
    parts.push(`pending: ${d.pending.reasons.join('; ')}`);
  return {
    id: d.id,
    desired,
    ready,
    done,
    text: parts.join(', '),
    ...(failed ? { failed } : {}),
    ...(rollout ? { rollout } : {}),
  };
}

/** The workloads a logs/exec target names, lowest replica first; throws naming what is missing. */
export function pickWorkloads(all: WorkloadView[], deploy: string, replica?: number): WorkloadView[] {
  const mine = all
    .filter((w) => w.deployId === deploy)
    .sort((a, b) => a.replica - b.replica || (a.gen ?? 0) - (b.gen ?? 0));
  if (mine.length === 0) throw new Error(`${deploy}: no workloads (is it deployed and placed? see shoal ps)`);
  if (replica === undefined) return mine;
  const one = mine.filter((w) => w.replica === replica);
  if (one.length === 0) {
    throw new Error(
      `${deploy}/${replica}: no such replica (replicas: ${[...new Set(mine.map((w) => w.replica))].join(', ')})`,
    );
  }
  return one;
}
