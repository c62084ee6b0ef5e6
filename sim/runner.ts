import { IntentSpecError } from '../node/core/placement-adapter.ts';
import { Prng } from '../node/core/random.ts';
import { LARGE_SCALE, type SimAgent, SimCluster } from './cluster.ts';
import { EventLog, InvariantChecker, type Violation } from './invariants.ts';
import { Metrics, type MetricsSummary, round } from './metrics.ts';
import type { Fault, Scenario } from './scenario.ts';
import {
  type SimHostSpec,
  scenarioHosts,
  scenarioTasks,
  type Task,
  taskSpec,
  typicalShapes,
} from './workload.ts';

/**
 * Runs one scenario on a SimCluster: the real agent core (membership, state sync, placement,
 * reconcile loop on the sim engine) for every host, the workload as deploy submissions at random
 * live agents and removals, the faults, the invariant checker, and the metrics. The summary is a
 * pure function of (scenario, seed): virtual time only, no wall-clock figures.
 */

export interface RunOptions {
  seed?: number;
  /** Replace the scenario's hosts (plan varies the host count). */
  hosts?: SimHostSpec[];
  /** Keep SimCluster's full trace (every log line and network event); its tail goes into a violation's excerpt. */
  trace?: boolean;
  /** Called after every driver step. */
  onProgress?: (p: { virtualMs: number; totalMs: number; events: number }) => void;
  /** Skip the metrics sampling (fuzz: invariants only). */
  metrics?: boolean;
  /** Called once the cluster has formed, before the workload starts (tests inject faults or bugs here). */
  afterStart?: (cluster: SimCluster) => void;
}

export interface Summary {
  scenario: string;
  seed: number;
  hosts: number;
  durationS: number;
  result: 'ok' | 'violation';
  violation: (Violation & { seed: number; excerpt: string[] }) | null;
  /** Virtual ms the cluster took to form before the workload started. */
  joinMs: number;
  /** Virtual ms after faults stopped until the cluster was at rest (null: violation). */
  restAfterMs: number | null;
  events: number;
  invariantChecks: number;
  faults: { atMs: number; kind: string; detail: string }[];
  metrics: MetricsSummary | null;
  series: Metrics['series'] | null;
}

export interface RunResult {
  summary: Summary;
  cluster: SimCluster;
}

interface Action {
  at: number;
  seq: number;
  run: () => void | Promise<void>;
}

export async function runScenario(s: Scenario, opts: RunOptions = {}): Promise<RunResult> {
  const seed = opts.seed ?? s.seed;
  const hosts = opts.hosts ?? scenarioHosts(s);
  const tasks = scenarioTasks(s, seed);
  const net = s.network;
  const c = new SimCluster({
    seed,
    size: hosts.length,
    link: { baseMs: net.base_ms, jitterMs: net.jitter_ms, loss: net.loss },
    membership: s.protocol.membership,
    sync: s.protocol.sync,
    placement: s.protocol.placement,
    engine: s.engine ? {} : undefined,
    host: (i) => structuredClone(hosts[i]!.facts),
    trace: opts.trace,
    ...(s.scale.large ? LARGE_SCALE : {}),
    sharedState: s.scale.shared_state,
    formed: s.scale.formed,
  });
  const rng = new Prng(seed).fork('scenario-driver');
  const log = new EventLog();
  let t0 = 0;
  const now = () => c.loop.now - t0;
  const stamp = () => (now() / 1000).toFixed(3).padStart(9);
  const checker = new InvariantChecker(c, now);
  const metrics = new Metrics(c, typicalShapes(tasks), now);
  const withMetrics = opts.metrics ?? true;
  const skews = new Map<number, number>();

  const attach = (a: SimAgent) => {
    const prev = a.sync.onChange;
    a.sync.onChange = (ch) => {
      prev?.(ch);
      if (ch.hosts.includes(a.id)) {
        checker.checkHost(a);
        metrics.hostChanged(a);
      }
      for (const d of ch.intents) metrics.intentSeen(a.id, d);
    };
    a.agent.membership.onChange((m, prevStatus) => {
      if (prevStatus !== m.status) metrics.member(prevStatus, m.status);
    });
  };

  await c.start();
  for (const a of c.agents) attach(a);
  const joinMs = await c.runUntil(() => c.membershipSettled('dead', true) && c.converged(), 120_000, 100);
  t0 = c.loop.now;
  log.add(`${stamp()} cluster formed: ${hosts.length} agents (${joinMs} ms)`);
  opts.afterStart?.(c);

  // ── actions: workload and faults ──
  const actions: Action[] = [];
  let seq = 0;
  let head = 0;
  let sorted = false;
  const at = (ms: number, run: Action['run']) => {
    const a = { at: ms, seq: seq++, run };
    if (!sorted) return void actions.push(a);
    // Keep [head, end) sorted by (at, seq): a later seq goes after equal times.
    let lo = head;
    let hi = actions.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (actions[mid]!.at <= ms) lo = mid + 1;
      else hi = mid;
    }
    actions.splice(lo, 0, a);
  };
  const upIdx = () => c.agents.filter((a) => a.up).map((a) => a.index);
  const pickAgent = (): SimAgent | undefined => {
    const up = upIdx();
    return up.length === 0 ? undefined : c.get(up[rng.int(up.length)]!);
  };
  const submit = (t: Task) => {
    const a = pickAgent();
    if (!a) {
      log.add(`${stamp()} submit ${t.id}: no live agent (skipped)`);
      return;
    }
    // Tracked first: the submitting agent sees its own intent synchronously inside submit().
    metrics.submitted(
      t,
      now(),
      c.agents.filter((x) => x.up).map((x) => x.id),
    );
    try {
      a.placement.submit(t.id, { name: t.id, replicas: t.replicas, strategy: t.strategy, spec: taskSpec(t) });
    } catch (err) {
      if (err instanceof IntentSpecError) throw new Error(`task ${t.id}: ${err.message}`);
      throw err;
    }
    log.add(
      `${stamp()} submit ${t.id} at ${a.id}: ${t.replicas}× cpu ${t.cpuMilli}m mem ${t.memoryMiB}MiB gpu ${t.gpuMilli}m`,
    );
  };
  for (const t of tasks) {
    at(t.atMs, () => submit(t));
    if (t.endMs !== null && t.endMs < s.duration_s * 1000)
      at(t.endMs, () => {
        const a = pickAgent();
        if (!a) return;
        a.sync.removeIntent(t.id);
        metrics.removed(t.id, now());
        log.add(`${stamp()} remove ${t.id} at ${a.id}`);
      });
  }

  const faultLog: Summary['faults'] = [];
  const noteFault = (kind: string, detail: string) => {
    faultLog.push({ atMs: round(now(), 3), kind, detail });
    log.add(`${stamp()} fault ${kind}: ${detail}`);
  };
  const down = new Map<number, { permanent: boolean }>();
  const heals = new Set<() => void>();
  const losses: number[] = [];
  const delays: { extra: number; jitter: number }[] = [];
  const baseLink = c.net.getDefaultLink();
  const applyLoss = () => c.net.setLoss(Math.max(net.loss, ...losses));
  const applyDelay = () => {
    const extra = Math.max(0, ...delays.map((d) => d.extra));
    const jitter = Math.max(0, ...delays.map((d) => d.jitter));
    c.net.setDefaultLink({ baseMs: baseLink.baseMs + extra, jitterMs: baseLink.jitterMs + jitter });
  };

  const select = (
    f: Extract<Fault, { kind: 'crash' | 'partition' | 'skew' }>,
    liveOnly: boolean,
  ): number[] => {
    const pool = c.agents.filter((a) => !liveOnly || a.up);
    let picked: SimAgent[] = [];
    const explicit = f.hosts !== undefined || f.zone !== undefined || f.label !== undefined;
    if (explicit) {
      picked = pool.filter((a) => {
        const labels = a.sync.hostFacts().labels;
        if (
          f.hosts &&
          !f.hosts.some((h) =>
            typeof h === 'number' ? h === a.index : h === a.id || h === hosts[a.index]?.name,
          )
        )
          return false;
        if (f.zone !== undefined && labels.zone !== f.zone) return false;
        if (f.label && Object.entries(f.label).some(([k, v]) => labels[k] !== v)) return false;
        return true;
      });
    }
    if (f.kind === 'partition' && f.fraction !== undefined && !explicit) {
      const k = Math.max(1, Math.round(pool.length * f.fraction));
      return sampleIdx(pool, k).map((a) => a.index);
    }
    if (!explicit || f.count !== undefined) {
      const from = explicit ? picked : pool;
      picked = sampleIdx(from, Math.min(from.length, f.count ?? 1));
    }
    return picked.map((a) => a.index).sort((x, y) => x - y);
  };
  const sampleIdx = (from: SimAgent[], k: number): SimAgent[] => {
    const arr = [...from];
    for (let i = arr.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [arr[i], arr[j]] = [arr[j]!, arr[i]!];
    }
    return arr.slice(0, k);
  };
  const restart = async (i: number) => {
    if (!down.has(i)) return;
    down.delete(i);
    const fresh = await c.restart(i);
    attach(fresh);
    const skew = skews.get(i);
    if (skew !== undefined) fresh.clock.setSkew(skew);
    noteFault('restart', fresh.id);
  };

  for (const f of s.faults) {
    const t = f.at_s * 1000;
    switch (f.kind) {
      case 'crash':
        at(t, () => {
          let victims = select(f, true);
          // Keep one agent alive: a cluster with no live agent cannot be driven.
          const alive = upIdx().length;
          if (victims.length >= alive) victims = victims.slice(0, alive - 1);
          for (const i of victims) {
            c.crash(i);
            down.set(i, { permanent: f.permanent });
          }
          noteFault(
            'crash',
            `${victims.map((i) => c.get(i).id).join(',') || '(none)'}${f.permanent ? ' (permanent)' : ''}`,
          );
          if (f.down_s !== undefined && !f.permanent)
            for (const i of victims) at(t + f.down_s * 1000, () => restart(i));
        });
        break;
      case 'partition':
        at(t, () => {
          const ids = select(f, false).map((i) => c.get(i).id);
          const heal = c.net.partition(ids);
          heals.add(heal);
          noteFault(
            'partition',
            `${ids.length} hosts [${ids.slice(0, 8).join(',')}${ids.length > 8 ? ',…' : ''}] vs the rest`,
          );
          at(t + f.for_s * 1000, () => {
            if (!heals.delete(heal)) return;
            heal();
            metrics.healed();
            noteFault('heal', `${ids.length} hosts rejoined`);
          });
        });
        break;
      case 'loss':
        at(t, () => {
          losses.push(f.p);
          applyLoss();
          noteFault('loss', `p=${f.p}`);
          at(t + f.for_s * 1000, () => {
            losses.splice(losses.indexOf(f.p), 1);
            applyLoss();
            noteFault('loss-end', `p=${f.p}`);
          });
        });
        break;
      case 'delay':
        at(t, () => {
          const d = { extra: f.extra_ms, jitter: f.jitter_ms };
          delays.push(d);
          applyDelay();
          noteFault('delay', `+${f.extra_ms} ms (+${f.jitter_ms} jitter)`);
          at(t + f.for_s * 1000, () => {
            delays.splice(delays.indexOf(d), 1);
            applyDelay();
            noteFault('delay-end', `+${f.extra_ms} ms`);
          });
        });
        break;
      case 'skew':
        at(t, () => {
          const who = select(f, true);
          for (const i of who) {
            skews.set(i, f.ms);
            c.get(i).clock.setSkew(f.ms);
          }
          noteFault('skew', `${f.ms} ms on ${who.map((i) => c.get(i).id).join(',')}`);
        });
        break;
    }
  }

  // ── drive ──
  const durationMs = s.duration_s * 1000;
  const settleMs = s.settle_s * 1000;
  const totalMs = durationMs + settleMs;
  const checkMs = s.invariants.sample_ms;
  const sampleMs = s.sample_s * 1000;
  let nextCheck = checkMs;
  let nextSample = 0;
  const popDue = (): Action | undefined =>
    head < actions.length && actions[head]!.at <= now() ? actions[head++] : undefined;
  const nextActionAt = () => (head < actions.length ? actions[head]!.at : Number.POSITIVE_INFINITY);
  actions.sort((a, b) => a.at - b.at || a.seq - b.seq);
  sorted = true;

  const step = async (until: number) => {
    const target = Math.min(
      until,
      nextCheck,
      withMetrics ? nextSample : Number.POSITIVE_INFINITY,
      nextActionAt(),
    );
    if (target > now()) await c.run(target - now());
    if (now() >= nextCheck) {
      checker.sample();
      if (withMetrics && metrics.convergencePending) metrics.checkConvergence();
      nextCheck += checkMs;
    }
    if (withMetrics && now() >= nextSample) {
      metrics.sample();
      nextSample += sampleMs;
    }
    opts.onProgress?.({ virtualMs: now(), totalMs, events: c.loop.fired });
  };

  while (!checker.violation && now() < durationMs) {
    for (let a = popDue(); a && !checker.violation; a = popDue()) await a.run();
    if (checker.violation) break;
    await step(durationMs);
  }

  // ── faults stop: heal, restore the links, restart every crashed agent that may come back ──
  let restAfterMs: number | null = null;
  if (!checker.violation) {
    actions.length = 0;
    head = 0;
    for (const h of heals) h();
    if (heals.size > 0) metrics.healed();
    heals.clear();
    if (losses.length > 0) {
      losses.length = 0;
      applyLoss();
    }
    if (delays.length > 0) {
      delays.length = 0;
      applyDelay();
    }
    for (const [i, d] of [...down]) if (!d.permanent) await restart(i);
    noteFault('faults-stop', `${down.size} host(s) stay down`);
    const stopAt = now();
    const tolerateSuspect = net.loss > 0;
    let problems: string[] = [];
    while (!checker.violation) {
      problems = checker.restProblems(tolerateSuspect);
      if (problems.length === 0) {
        restAfterMs = round(now() - stopAt, 3);
        log.add(`${stamp()} at rest`);
        break;
      }
      if (now() - stopAt >= settleMs) {
        checker.notAtRest(settleMs, problems);
        break;
      }
      await step(Math.min(stopAt + settleMs, now() + 250));
    }
  }
  if (withMetrics && !checker.violation) metrics.sample();

  const endAt = now();
  const hostSeconds = (metrics.series.upHosts.reduce((n, x) => n + x, 0) * sampleMs) / 1000;
  const v = checker.violation;
  const excerpt = v
    ? [...log.tail(), ...(c.trace ? ['--- sim trace (tail) ---', ...c.trace.slice(-60)] : [])]
    : [];
  const summary: Summary = {
    scenario: s.name,
    seed,
    hosts: hosts.length,
    durationS: s.duration_s,
    result: v ? 'violation' : 'ok',
    violation: v ? { ...v, atMs: round(v.atMs, 3), seed, excerpt } : null,
    joinMs: round(joinMs, 3),
    restAfterMs,
    events: c.loop.fired,
    invariantChecks: checker.checks,
    faults: faultLog,
    metrics: withMetrics ? metrics.finish(endAt, s.plan.deadline_s * 1000, hostSeconds) : null,
    series: withMetrics ? metrics.series : null,
  };
  await c.stop();
  return { summary, cluster: c };
}
