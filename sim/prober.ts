import type { Prober } from '../node/core/health.ts';
import type { Clock } from '../node/core/io.ts';

/**
 * A deterministic, scriptable Prober for tests and the simulator. Each workload has a queue of
 * outcomes; a probe takes the next one (the last one repeats once the queue is down to it) and
 * settles after its latency on the virtual clock. An outcome slower than the probe's timeout
 * rejects at the timeout, as a real prober does; `hang` never settles (a broken prober: the
 * monitor's own deadline must handle it). Unscripted workloads pass after `defaultLatencyMs`.
 */

export type SimProbeOutcome =
  /** tcp connects, http answers 200, exec exits 0. */
  | { result: 'pass'; latencyMs?: number }
  /** http answers `code` / exec exits with `code` / tcp connects. */
  | { result: 'code'; code: number; latencyMs?: number }
  /** The probe rejects with `reason` (default "connection refused"). */
  | { result: 'error'; reason?: string; latencyMs?: number }
  /** Never settles, ignoring the timeout. */
  | { result: 'hang' };

/** Shorthands: 'pass', 'fail' (= error "connection refused"), 'hang'. */
export type SimProbeScript = SimProbeOutcome | 'pass' | 'fail' | 'hang';

export interface SimProbeCall {
  workloadId: string;
  kind: 'tcp' | 'http' | 'exec';
  /** Clock time the probe started. */
  at: number;
  /** Clock time it settled; undefined while running (or forever for `hang`). */
  settledAt?: number;
  port?: number;
  path?: string;
  argv?: string[];
  timeoutMs: number;
}

function norm(s: SimProbeScript): SimProbeOutcome {
  if (s === 'pass') return { result: 'pass' };
  if (s === 'fail') return { result: 'error' };
  if (s === 'hang') return { result: 'hang' };
  return s;
}

export class SimProber implements Prober {
  /** Every probe, in start order. */
  readonly calls: SimProbeCall[] = [];
  private readonly scripts = new Map<string, SimProbeOutcome[]>();
  private readonly running = new Map<string, number>();
  /** Highest number of probes of one workload running at the same time (the monitor keeps it 1). */
  maxConcurrent = 0;
  private readonly defaultLatencyMs: number;

  constructor(
    private readonly clock: Clock,
    opts: { defaultLatencyMs?: number } = {},
  ) {
    this.defaultLatencyMs = opts.defaultLatencyMs ?? 1;
  }

  /** Replace the queue of outcomes of a workload. */
  script(workloadId: string, ...outcomes: SimProbeScript[]): this {
    if (outcomes.length === 0) throw new RangeError('SimProber.script: give at least one outcome');
    this.scripts.set(workloadId, outcomes.map(norm));
    return this;
  }

  /** Probes of one workload currently running. */
  inFlight(workloadId: string): number {
    return this.running.get(workloadId) ?? 0;
  }

  tcp(workloadId: string, port: number, timeoutMs: number): Promise<void> {
    return this.run({ workloadId, kind: 'tcp', at: this.clock.now(), port, timeoutMs }).then(() => undefined);
  }

  http(workloadId: string, port: number, path: string, timeoutMs: number): Promise<number> {
    return this.run({ workloadId, kind: 'http', at: this.clock.now(), port, path, timeoutMs });
  }

  exec(workloadId: string, argv: string[], timeoutMs: number): Promise<number> {
    return this.run({ workloadId, kind: 'exec', at: this.clock.now(), argv: [...argv], timeoutMs });
  }

  private next(workloadId: string): SimProbeOutcome {
    const q = this.scripts.get(workloadId);
    if (!q) return { result: 'pass' };
    return (q.length > 1 ? q.shift() : q[0]) as SimProbeOutcome;
  }

  private run(call: SimProbeCall): Promise<number> {
    this.calls.push(call);
    const id = call.workloadId;
    const n = (this.running.get(id) ?? 0) + 1;
    this.running.set(id, n);
    this.maxConcurrent = Math.max(this.maxConcurrent, n);
    const o = this.next(id);
    if (o.result === 'hang') return new Promise<number>(() => {});
    const latency = o.latencyMs ?? this.defaultLatencyMs;
    return new Promise<number>((resolve, reject) => {
      const settle = (fn: () => void) => {
        call.settledAt = this.clock.now();
        this.running.set(id, (this.running.get(id) ?? 1) - 1);
        fn();
      };
      if (latency > call.timeoutMs) {
        this.clock.setTimer(call.timeoutMs, () =>
          settle(() => reject(new Error(`timed out after ${call.timeoutMs} ms`))),
        );
        return;
      }
      this.clock.setTimer(latency, () =>
        settle(() => {
          if (o.result === 'error') reject(new Error(o.reason ?? 'connection refused'));
          else if (o.result === 'code') resolve(o.code);
          else resolve(call.kind === 'http' ? 200 : 0);
        }),
      );
    });
  }
}
