import type { Engine } from '../../engines/engine.ts';
import { argvAt, intAt, isObject, objectAt, SpecFieldError } from './health.ts';
import type { Clock, Timer } from './io.ts';

/**
 * Lifecycle hooks (sans-IO): commands run inside a workload through `Engine.exec`.
 *
 * - `afterStart` runs right after `engine.start` resolved. Without `force` a failure is logged
 *   and the workload keeps running. With `force` the start counts as failed: the reconciler stops
 *   and removes the instance and the restart policy decides, with backoff, as if it had exited
 *   non-zero (a workload that cannot be initialised is not "running").
 * - `beforeStop` runs right before `engine.stop`, while the workload still runs. It can never veto
 *   the stop: stops happen because a deploy was removed or replaced, or because this host lost a
 *   double award — refusing them would break "exactly once at rest" and keep resources that
 *   another host may already hold. With `force` a failure is escalated (logged as an error and
 *   counted) instead of logged as a warning; the stop is performed either way. A workload that is
 *   not running is stopped without its hook.
 *
 * A hook has a timeout (default 10 s); a hook that times out has failed. The engine kills the
 * command where it can; with a Clock the timeout is also enforced on it (the sim engine ignores
 * exec timeouts), so a simulated run is deterministic.
 */

export interface Hook {
  /** argv run inside the workload (no shell). */
  command: string[];
  /** A failure fails the operation (afterStart) / is escalated (beforeStop). Default false. */
  force: boolean;
  /** Default 10000. */
  timeoutMs: number;
}

export interface Hooks {
  afterStart?: Hook;
  beforeStop?: Hook;
}

export type HookName = keyof Hooks;

export const DEFAULT_HOOK_TIMEOUT_MS = 10_000;
/** Ten minutes: a hook holds up the reconcile of its workload while it runs. */
export const MAX_HOOK_TIMEOUT_MS = 600_000;

const HOOK_NAMES: readonly HookName[] = ['afterStart', 'beforeStop'];

/**
 * `spec.hooks` of an intent spec, validated and with defaults; undefined when absent. Errors name
 * the field (`spec.hooks.afterStart.command[0]`). Pure.
 */
export function parseHooks(spec: unknown, path = 'spec'): Hooks | undefined {
  if (!isObject(spec)) throw new SpecFieldError(path, 'expected an object');
  const raw = spec.hooks;
  if (raw === undefined || raw === null) return undefined;
  const p = `${path}.hooks`;
  const o = objectAt(raw, p, HOOK_NAMES, '{afterStart?, beforeStop?}');
  const out: Hooks = {};
  for (const name of HOOK_NAMES) {
    if (o[name] === undefined || o[name] === null) continue;
    const hp = `${p}.${name}`;
    const h = objectAt(o[name], hp, ['command', 'force', 'timeoutMs'], '{command, force?, timeoutMs?}');
    if (h.force !== undefined && typeof h.force !== 'boolean')
      throw new SpecFieldError(`${hp}.force`, 'expected true or false');
    out[name] = {
      command: argvAt(h.command, `${hp}.command`),
      force: h.force === true,
      timeoutMs: intAt(h.timeoutMs, `${hp}.timeoutMs`, 1, MAX_HOOK_TIMEOUT_MS, DEFAULT_HOOK_TIMEOUT_MS),
    };
  }
  return out;
}

export interface HookResult {
  /** The command ran and exited 0 within its timeout. */
  ok: boolean;
  /** `!ok && hook.force`: afterStart → fail the start; beforeStop → escalate (still stop). */
  fatal: boolean;
  /** null when the command did not finish (timeout, exec error). */
  exitCode: number | null;
  /** Output, each capped at 4 KiB (the tail is kept). */
  stdout: string;
  stderr: string;
  /** Why it failed (non-zero exit, timeout, engine error); absent when ok. */
  error?: string;
  timedOut: boolean;
  /** Clock ms the hook took (0 without a clock). */
  durationMs: number;
}

const MAX_OUTPUT_CHARS = 4_096;

function tail(s: string): string {
  return s.length > MAX_OUTPUT_CHARS ? `…${s.slice(s.length - MAX_OUTPUT_CHARS + 1)}` : s;
}

function lastLine(s: string): string {
  const lines = s.split('\n').filter((l) => l.trim() !== '');
  const l = lines.at(-1)?.trim() ?? '';
  return l.length > 200 ? `${l.slice(0, 199)}…` : l;
}

/**
 * Run `hook` inside workload `workloadId`. Never throws: every failure (non-zero exit, timeout,
 * `not-running`, engine unreachable) is reported in the result. With a `clock`, the timeout is
 * also enforced on it and `durationMs` is measured on it.
 */
export async function runHook(
  engine: Engine,
  workloadId: string,
  hook: Hook,
  clock?: Clock,
): Promise<HookResult> {
  const t0 = clock?.now() ?? 0;
  const took = () => (clock ? clock.now() - t0 : 0);
  const fail = (
    error: string,
    timedOut: boolean,
    exitCode: number | null,
    stdout = '',
    stderr = '',
  ): HookResult => ({
    ok: false,
    fatal: hook.force,
    exitCode,
    stdout: tail(stdout),
    stderr: tail(stderr),
    error,
    timedOut,
    durationMs: took(),
  });
  let timer: Timer | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    if (clock) timer = clock.setTimer(hook.timeoutMs, () => resolve('timeout'));
  });
  try {
    const outcome = await Promise.race([
      engine.exec(workloadId, hook.command, { timeoutMs: hook.timeoutMs }),
      timeout,
    ]);
    if (outcome === 'timeout') return fail(`timed out after ${hook.timeoutMs} ms`, true, null);
    if (outcome.exitCode !== 0) {
      const detail = lastLine(outcome.stderr) || lastLine(outcome.stdout);
      return fail(
        `${hook.command[0]} exited with ${outcome.exitCode}${detail ? `: ${detail}` : ''}`,
        false,
        outcome.exitCode,
        outcome.stdout,
        outcome.stderr,
      );
    }
    return {
      ok: true,
      fatal: false,
      exitCode: 0,
      stdout: tail(outcome.stdout),
      stderr: tail(outcome.stderr),
      timedOut: false,
      durationMs: took(),
    };
  } catch (err) {
    const code = (err as { code?: unknown })?.code;
    const msg = err instanceof Error ? err.message : String(err);
    if (code === 'timeout') return fail(`timed out after ${hook.timeoutMs} ms`, true, null);
    return fail(msg, false, null);
  } finally {
    timer?.cancel();
  }
}
