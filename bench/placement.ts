import os from 'node:os';
import { SeededRandom } from '../allocator/bench-helpers.ts';
import { emptyLedger, reserve } from '../allocator/ledger.ts';
import { plan } from '../allocator/plan.ts';
import type { Allocation, Host } from '../allocator/types.ts';
import { GiB, MiB } from '../allocator/units.ts';
import type { DeployIntent } from '../crdt/types.ts';
import { withSystemKeys } from '../node/core/rollout.ts';
import type { HostFacts } from '../node/host.ts';
import { SimCluster, type SimClusterOptions } from '../sim/cluster.ts';
import {
  type AgentProc,
  agentCpuSeconds,
  allLines,
  ClusterProcs,
  type LogLine,
  sleep,
  waitFor,
} from '../test/cluster-procs.ts';
// Types only: a value import of './index.ts' would be circular with its top-level `await main()`.
import { type Bench, type BenchResult, summarize } from './stats.ts';

/**
 * `npm run bench -- placement [--only sim,procs,quality] [--seed 1] [--deploys N] [--agents N]
 *   [--wave N] [--wave-gap MS] [--procs N] [--proc-deploys N] [--proc-replicas N] [--concurrency N]
 *   [--rate N] [--repeat N] [--sweep 50,100,150] [--cpu-prof DIR] [--proc-node-args "FLAGS"] [--proc-log-level info|debug] [--warmup N] [--quality-agents N] [--quality-deploys N] [--quality-wave 1,4]`
 *
 * Three parts, each optional (docs/placement.md, "Placement benchmark"):
 *
 * (a) sim — `--agents` (100) real agent cores in one process on the simulated network (SimCluster,
 *     seeded, default link model). `--deploys` deploys of 1–4 replicas (mixed strategies and
 *     shapes from a seeded generator) are submitted at random agents in waves of `--wave` every
 *     `--wave-gap` virtual ms. Measured: replicas decided per wall second and per virtual second,
 *     submit→decided latency per replica in virtual ms (`Placement.onDecided`), the overcommit
 *     check after every 10 virtual ms and the exactly-once check at rest.
 * (b) procs — `--procs` (10) real agent processes on 127.0.0.1 (`--cpu 16 --memory 64GiB --engine sim`, logs at
 *     `--proc-log-level`, info by default). `--proc-deploys` deploys of 1–3 replicas are POSTed to random agents with at most
 *     `--concurrency` requests in flight, back to back (closed loop), or `--rate` per second (open
 *     loop). t0 = just before the POST; decided = the pino `time` of the winning host's
 *     `placement: award accepted` line (same machine clock). Also reported: HTTP round trip, CPU
 *     the agents used, their counters per decision, machine load.
 * (c) quality — one seeded binpack workload on `--quality-agents` (50) heterogeneous hosts, placed
 *     (1) by the protocol in the sim, `--quality-wave` deploys at a time (each listed size), each wave decided and
 *     gossiped everywhere before the next, and (2) by `allocator.plan` over the same hosts, one
 *     deploy after another with each plan reserved on the books. Compared: hosts used and the
 *     allocation ratio (allocated ÷ capacity over the used hosts) per dimension.
 */

type Part = 'sim' | 'procs' | 'quality' | 'core';
type NumericOption = Exclude<
  keyof Options,
  'only' | 'qualityWaves' | 'cpuProf' | 'procLogLevel' | 'procNodeArgs' | 'procAgentArgs' | 'sweep'
>;
const PARTS: readonly Part[] = ['sim', 'procs', 'quality', 'core'];
const STRATEGIES = ['binpack', 'spread', 'auto', 'global'] as const;

interface Options {
  only: Part[];
  seed: number;
  agents: number;
  deploys: number;
  wave: number;
  waveGapMs: number;
  procs: number;
  procDeploys: number;
  /** (b): replicas of every deploy; 0 = 1–3 (seeded). */
  procReplicas: number;
  concurrency: number;
  /** (b): POST this many deploys per second (open loop, at most `concurrency` in flight); 0 = closed loop. */
  rate: number;
  qualityAgents: number;
  qualityDeploys: number;
  qualityWaves: number[];
  /** (b): write a V8 CPU profile of every agent into this directory (`--cpu-prof`, clean exit). */
  cpuProf: string | undefined;
  /**
   * (b): after the measured burst, one burst of `procDeploys` deploys per listed rate (deploys/s,
   * open loop, the previous burst deleted first) on the same warm cluster: the latency at each
   * offered load, and the highest decisions/s whose p99 met 100 ms. Empty: none.
   */
  sweep: number[];
  /**
   * (b): the closed-loop burst this many times in all (each after deleting the previous one's
   * deploys), reported one by one and as medians — one 1.5 s burst is at the mercy of a shared
   * machine's noise (±15% run to run).
   */
  repeat: number;
  /** (b): extra Node flags for every agent process (`--proc-node-args "--perf-basic-prof"`, space-separated). */
  procNodeArgs: string[];
  /** (b): extra `shoal agent` flags for every agent (`--proc-agent-args "--direct-awards off"`). */
  procAgentArgs: string[];
  /** (b): the agents' log level (the bench reads their info lines; debug adds a line per message). */
  procLogLevel: 'info' | 'debug';
  /**
   * (b): deploys placed and then deleted before the measured burst, so that the agents' code is
   * compiled (V8 optimises what runs hot) as in an agent that has been up for a while; 0 = none.
   */
  warmup: number;
  /** (d): rounds of `procDeploys` deploys (the first two are the warm-up, not counted). */
  coreRounds: number;
  /** (d): deploys submitted per virtual second. */
  coreRate: number;
}

const USAGE =
  '--only sim,procs,quality --seed 1 --agents 100 --deploys 150 --wave 25 --wave-gap 50 ' +
  '--procs 10 --proc-deploys 300 --proc-replicas 0 --concurrency 16 --rate 0 --quality-agents 50 --quality-deploys 100 --quality-wave 1,4 ' +
  '--core-rounds 12 --core-rate 300';

function parseArgs(args: string[]): Options {
  const o: Options = {
    only: [...PARTS],
    seed: 1,
    agents: 100,
    deploys: 150,
    wave: 25,
    waveGapMs: 50,
    procs: 10,
    procDeploys: 300,
    procReplicas: 0,
    concurrency: 16,
    rate: 0,
    qualityAgents: 50,
    qualityDeploys: 100,
    qualityWaves: [1, 4],
    cpuProf: undefined,
    procLogLevel: 'info',
    procNodeArgs: [],
    procAgentArgs: [],
    sweep: [],
    repeat: 1,
    coreRounds: 12,
    coreRate: 300,
    warmup: 6000,
  };
  const num: Record<string, NumericOption> = {
    '--seed': 'seed',
    '--agents': 'agents',
    '--deploys': 'deploys',
    '--wave': 'wave',
    '--wave-gap': 'waveGapMs',
    '--procs': 'procs',
    '--proc-deploys': 'procDeploys',
    '--proc-replicas': 'procReplicas',
    '--concurrency': 'concurrency',
    '--rate': 'rate',
    '--warmup': 'warmup',
    '--repeat': 'repeat',
    '--quality-agents': 'qualityAgents',
    '--quality-deploys': 'qualityDeploys',
    '--core-rounds': 'coreRounds',
    '--core-rate': 'coreRate',
  };
  for (let i = 0; i < args.length; i += 2) {
    const a = args[i]!;
    const v = args[i + 1];
    if (v === undefined) throw new Error(`${a}: missing value (${USAGE})`);
    if (a === '--only') {
      const parts = v.split(',');
      for (const p of parts)
        if (!(PARTS as readonly string[]).includes(p)) throw new Error(`--only: unknown part "${p}"`);
      o.only = parts as Part[];
      continue;
    }
    if (a === '--cpu-prof') {
      o.cpuProf = v;
      continue;
    }
    if (a === '--sweep') {
      o.sweep = v.split(',').map(Number);
      if (!o.sweep.every((n) => Number.isSafeInteger(n) && n >= 1))
        throw new Error(`--sweep: expected deploys per second as positive integers, got ${v}`);
      continue;
    }
    if (a === '--proc-node-args') {
      o.procNodeArgs = v.split(' ').filter((x) => x.length > 0);
      continue;
    }
    if (a === '--proc-agent-args') {
      o.procAgentArgs = v.split(' ').filter((x) => x.length > 0);
      continue;
    }
    if (a === '--proc-log-level') {
      if (v !== 'info' && v !== 'debug')
        throw new Error(`--proc-log-level: expected info or debug, got ${v}`);
      o.procLogLevel = v;
      continue;
    }
    if (a === '--quality-wave') {
      o.qualityWaves = v.split(',').map(Number);
      if (!o.qualityWaves.every((n) => Number.isSafeInteger(n) && n >= 1))
        throw new Error(`--quality-wave: expected positive integers, got ${v}`);
      continue;
    }
    const key = num[a];
    if (!key) throw new Error(`unknown argument ${a} (${USAGE})`);
    const n = Number(v);
    if (
      !Number.isSafeInteger(n) ||
      n < (key === 'seed' || key === 'procReplicas' || key === 'rate' || key === 'warmup' ? 0 : 1)
    )
      throw new Error(`${a}: expected a positive integer, got ${v}`);
    o[key] = n;
  }
  if (o.agents < 2 || o.procs < 2 || o.qualityAgents < 2) throw new Error('clusters need at least 2 agents');
  if (o.coreRounds < 3) throw new Error('--core-rounds: at least 3 (the first two warm up)');
  return o;
}

// ───────────────────────────── workload ─────────────────────────────

interface DeploySpec {
  id: string;
  replicas: number;
  strategy: (typeof STRATEGIES)[number];
  cpuMilli: number;
  memoryBytes: number;
}

/** A seeded sequence of deploys; `strategies` and `maxReplicas` narrow it per part. */
function workload(
  seed: number,
  n: number,
  prefix: string,
  opts: {
    maxReplicas: number;
    strategies: readonly DeploySpec['strategy'][];
    cpu: number[];
    memMiB: number[];
  },
): DeploySpec[] {
  const rnd = new SeededRandom(seed);
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${String(i).padStart(4, '0')}`,
    replicas: 1 + rnd.int(opts.maxReplicas),
    strategy: rnd.pick(opts.strategies),
    cpuMilli: rnd.pick(opts.cpu),
    memoryBytes: rnd.pick(opts.memMiB) * MiB,
  }));
}

/**
 * The intent of a deploy. Real agents also run what they are awarded: `command: ['true']` with
 * `restart: 'no'` is one short process per replica that exits 0 and stays exited, so the engine
 * does real but bounded work (a spec the engine cannot run is retried on every reconcile pass).
 */
function intentOf(d: DeploySpec, engine = false): Omit<DeployIntent, 'id' | 'revision'> {
  const resources = { cpu: { milli: d.cpuMilli }, memoryBytes: d.memoryBytes };
  return {
    name: 'bench',
    replicas: d.replicas,
    strategy: d.strategy,
    spec: engine ? { resources, command: ['true'], restart: 'no' } : { resources },
  };
}

const round1 = (x: number) => Math.round(x * 10) / 10;
const round3 = (x: number) => Math.round(x * 1000) / 1000;
const sumOf = (xs: readonly DeploySpec[]) => xs.reduce((n, d) => n + d.replicas, 0);

/** Records the first decision of every replica (deploy, slot) and how many came twice. */
class Decisions {
  readonly first = new Map<string, { at: number; wallMs: number }>();
  duplicates = 0;
  record(deployId: string, replicas: readonly number[], at: number): void {
    const wallMs = performance.now();
    for (const r of replicas) {
      const k = `${deployId}.${r}`;
      if (this.first.has(k)) this.duplicates++;
      else this.first.set(k, { at, wallMs });
    }
  }
  get size(): number {
    return this.first.size;
  }
  /** Latency of each decided replica from its deploy's submit time. */
  latencies(submitted: ReadonlyMap<string, number>): number[] {
    const out: number[] = [];
    for (const [k, v] of this.first) {
      const t0 = submitted.get(k.slice(0, k.lastIndexOf('.')));
      if (t0 !== undefined) out.push(v.at - t0);
    }
    return out;
  }
  lastAt(): number {
    let t = Number.NEGATIVE_INFINITY;
    for (const v of this.first.values()) t = Math.max(t, v.at);
    return t;
  }
  lastWallMs(): number {
    let t = Number.NEGATIVE_INFINITY;
    for (const v of this.first.values()) t = Math.max(t, v.wallMs);
    return t;
  }
}

async function simCluster(
  seed: number,
  size: number,
  host: (i: number) => HostFacts,
  extra: Partial<SimClusterOptions> = {},
): Promise<SimCluster> {
  const c = new SimCluster({ seed, size, host, ...extra });
  await c.start();
  const joined = await c.runUntil(() => c.converged() && c.membershipSettled(), 120_000, 100);
  if (joined < 0) throw new Error(`${size} simulated agents did not converge within 120 virtual s`);
  return c;
}

// ───────────────────────────── (a) 100 agents in memory ─────────────────────────────

async function simPart(o: Options) {
  const hostFacts = (i: number): HostFacts => ({
    cores: 16,
    cpuMilli: 16_000,
    memoryBytes: 64 * GiB,
    diskBytes: 500 * GiB,
    gpus: [],
    labels: { zone: ['a', 'b', 'c'][i % 3]! },
  });
  const tBoot = performance.now();
  const c = await simCluster(o.seed, o.agents, hostFacts);
  const bootWallMs = Math.round(performance.now() - tBoot);
  const deploys = workload(o.seed, o.deploys, 'sim', {
    maxReplicas: 4,
    strategies: STRATEGIES,
    cpu: [100, 250, 500, 1000],
    memMiB: [128, 256, 512, 1024, 2048],
  });
  const total = sumOf(deploys);
  const decisions = new Decisions();
  for (const a of c.agents) a.placement.onDecided = (d, r, at) => decisions.record(d, r, at);
  const submitted = new Map<string, number>();
  const rnd = new SeededRandom(o.seed ^ 0x5a5a);
  const overcommit = new Set<string>();
  let checks = 0;
  const check = () => {
    checks++;
    for (const v of c.placementViolations(false)) overcommit.add(v);
  };
  const rounds0 = c.agents.reduce((n, a) => n + a.placement.counters.rounds, 0);
  const net0 = c.net.totalStats();
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  const virt0 = c.get(0).clock.now();
  for (let w = 0; w * o.wave < deploys.length; w++) {
    for (const d of deploys.slice(w * o.wave, (w + 1) * o.wave)) {
      const a = c.get(rnd.int(c.agents.length));
      submitted.set(d.id, a.clock.now());
      a.placement.submit(d.id, intentOf(d));
    }
    for (let t = 0; t < o.waveGapMs; t += 10) {
      await c.run(10);
      check();
    }
  }
  const decidedIn = await c.runUntil(
    () => {
      check();
      return decisions.size >= total;
    },
    60_000,
    10,
  );
  const cpuDecided = process.cpuUsage(cpu0);
  const net1 = c.net.totalStats();
  const perDecision = (x: number) => round1(x / Math.max(1, decisions.size));
  const traffic = {
    directMessages: perDecision(net1.sent - net0.sent),
    directBytes: Math.round((net1.sentBytes - net0.sentBytes) / Math.max(1, decisions.size)),
    publishes: perDecision(net1.published - net0.published),
    topicDeliveries: perDecision(net1.topicRecv - net0.topicRecv),
    topicBytes: Math.round((net1.topicRecvBytes - net0.topicRecvBytes) / Math.max(1, decisions.size)),
  };
  const wallDecided = decisions.lastWallMs() - wall0;
  const virtDecided = decisions.lastAt() - virt0;
  const atRest = await c.runUntil(() => c.placementViolations(true).length === 0, 30_000, 50);
  check();
  const restViolations = c.placementViolations(true);
  const lat = summarize(decisions.latencies(submitted));
  const placed = c.agents.reduce((n, a) => n + a.placement.workloads().length, 0);
  const rounds = c.agents.reduce((n, a) => n + a.placement.counters.rounds, 0) - rounds0;
  const refused = c.agents.reduce((n, a) => n + a.placement.counters.awardsRefused, 0);
  await c.stop();
  return {
    agents: o.agents,
    deploys: deploys.length,
    replicas: total,
    decided: decisions.size,
    duplicateDecisions: decisions.duplicates,
    allDecided: decidedIn >= 0,
    bootWallMs,
    decisionsPerWallSec: round1((decisions.size / wallDecided) * 1000),
    /** CPU of the whole simulation (all agents, one process) until the last decision, per decision. */
    cpuMsPerDecision: round1((cpuDecided.user + cpuDecided.system) / 1000 / Math.max(1, decisions.size)),
    /** Network traffic until the last decision, per decision (all agents; direct = sends, requests, responses). */
    trafficPerDecision: traffic,
    decisionsPerVirtualSec: round1((decisions.size / virtDecided) * 1000),
    wallMsToLastDecision: Math.round(wallDecided),
    virtualMsToLastDecision: virtDecided,
    latencyVirtualMs: lat,
    rounds,
    awardsRefused: refused,
    overcommitChecks: checks,
    overcommitViolations: overcommit.size,
    atRestAfterVirtualMs: atRest,
    atRestViolations: restViolations.length,
    replicasRunning: placed,
    firstViolations: [...overcommit, ...restViolations].slice(0, 5),
  };
}

// ───────────────────────────── (b) real agent processes ─────────────────────────────

async function startProcs(
  c: ClusterProcs,
  n: number,
  cpuProf: string | undefined,
  logLevel: 'info' | 'debug',
  procNodeArgs: readonly string[] = [],
  procAgentArgs: readonly string[] = [],
): Promise<number> {
  const t0 = Date.now();
  const key = c.keygen();
  // The simulated engine: this part measures placement decisions, not process spawning.
  const flags = ['--cpu', '16', '--memory', '64GiB', '--engine', 'sim', ...procAgentArgs];
  const nodeArgs = [...(cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : []), ...procNodeArgs];
  const common = {
    clusterKey: key,
    logLevel,
    readyTimeoutMs: 120_000,
    extraArgs: flags,
    nodeArgs,
  };
  const seed = await c.spawn({ ...common, labels: ['zone=z0'] });
  // Batches of 3: tsx compiling for 9 processes at once on 2 cores starves the running agents.
  for (let i = 1; i < n; i += 3) {
    await c.spawnMany(Math.min(3, n - i), (k) => ({
      ...common,
      join: [seed.addrs[0]!],
      labels: [`zone=z${(i + k) % 3}`],
    }));
  }
  // Every agent (whichever coordinates a deploy) must see all hosts alive with capacity.
  await waitFor(
    async () => {
      for (const i of c.runningIndices()) {
        const rows = await c.nodes(i);
        if (rows.filter((r) => r.status === 'alive' && r.capacity).length !== n) return false;
      }
      return true;
    },
    60_000,
    250,
    `${n} agents alive with capacity everywhere`,
  );
  return Date.now() - t0;
}

/** Sum of every agent's `shoal_*_total` counters (GET /metrics), by metric name. */
async function clusterCounters(c: ClusterProcs): Promise<Map<string, number>> {
  const sums = new Map<string, number>();
  await Promise.all(
    c.runningIndices().map(async (i) => {
      try {
        const res = await fetch(`${c.get(i).api}/metrics`, {
          headers: { authorization: `Bearer ${c.token(i)}` },
          signal: AbortSignal.timeout(10_000),
        });
        for (const line of (await res.text()).split('\n')) {
          const m = /^(shoal_[a-z_]+_total)(?:\{[^}]*\})? ([0-9.e+]+)$/.exec(line);
          if (m) sums.set(m[1]!, (sums.get(m[1]!) ?? 0) + Number(m[2]));
        }
      } catch {
        // an agent that does not answer: its counters are missing from the sums
      }
    }),
  );
  return sums;
}

/** Counters that grew between two scrapes, per decision (short names: shoal_ and _total dropped). */
function growthPerDecision(before: Map<string, number>, after: Map<string, number>, decisions: number) {
  const out: Record<string, number> = {};
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    if (d > 0)
      out[k.replace(/^shoal_/, '').replace(/_total$/, '')] =
        Math.round((d / Math.max(1, decisions)) * 100) / 100;
  }
  return out;
}

interface DeployListRow {
  id: string;
  replicas: number;
  placed: number;
  instances: { replica: number; host: string | null }[];
}

/**
 * The agents' log lines not yet looked at by this cursor, over all agents. The bench polls for
 * decisions every 100 ms while the agents run; rescanning every line ever logged (tens of
 * thousands after the warm-up) on each poll took CPU from the agents it measures.
 */
function lineCursor(c: ClusterProcs): () => Generator<LogLine> {
  const at = new Map<AgentProc, { lines: LogLine[]; next: number }>();
  return function* fresh() {
    for (const p of c.procs) {
      let cur = at.get(p);
      if (cur === undefined) {
        // Lines of earlier runs (an agent restarted) once, then the current run's as they come.
        for (const run of p.previousRuns) yield* run;
        cur = { lines: p.lines, next: 0 };
        at.set(p, cur);
      } else if (cur.lines !== p.lines) {
        // Restarted since: the rest of the old run's lines, then the new run's from its start.
        for (let i = cur.next; i < cur.lines.length; i++) yield cur.lines[i]!;
        cur.lines = p.lines;
        cur.next = 0;
      }
      while (cur.next < cur.lines.length) yield cur.lines[cur.next++]!;
    }
  };
}

/** (b)'s deploys, measured and warm-up alike: 1–3 replicas of small shapes. */
const PROC_SHAPES = {
  maxReplicas: 3,
  strategies: STRATEGIES,
  cpu: [50, 100, 250],
  memMiB: [64, 128, 256],
};

/**
 * The warm-up: `--warmup` deploys of the measured kind (other ids), POSTed the same way, placed,
 * then deleted, and the cluster left to settle. A freshly started agent runs its hot paths in
 * V8's interpreter and spends much of a first burst compiling them (measured with `perf`: about
 * a quarter of the agents' CPU in TurboFan during a cold 4 s burst); an agent that has been up
 * for a while does not. Returns what the cold burst achieved (coarse: polled placement).
 */
async function warmUp(c: ClusterProcs, o: Options) {
  const all = workload(o.seed + 7, o.warmup, 'pw', PROC_SHAPES);
  const rnd = new SeededRandom(o.seed ^ 0x5a5a);
  const each = async (list: DeploySpec[], f: (d: DeploySpec) => Promise<unknown>) => {
    let next = 0;
    const worker = async () => {
      while (next < list.length) await f(list[next++]!).catch(() => undefined);
    };
    await Promise.all(Array.from({ length: Math.min(o.concurrency, list.length) }, worker));
  };
  const listed = async (ids: Set<string>) =>
    (await c.http<DeployListRow[]>(0, 'GET', '/v1/deploys', undefined, 10_000)).filter((r) => ids.has(r.id));
  const rounds: {
    replicas: number;
    msToAllPlaced: number;
    allPlaced: boolean;
    agentCpuMsPerDecision: number;
  }[] = [];
  // In chunks of about half what the cluster holds (30 deploys per agent of 16 cores: 300 for 10
  // agents), each deleted after: a chunk the cluster cannot hold would wait out every round.
  const chunkSize = 30 * o.procs;
  for (let from = 0; from < all.length; from += chunkSize) {
    const chunk = all.slice(from, from + chunkSize);
    const ids = new Set(chunk.map((d) => d.id));
    const replicas = sumOf(chunk);
    const t0 = Date.now();
    const cpu0 = agentCpuSeconds(c);
    await each(chunk, (d) =>
      c.http(rnd.int(o.procs), 'POST', '/v1/deploys', { id: d.id, ...intentOf(d, true) }, 10_000),
    );
    const placed = await waitFor(
      async () => {
        const mine = await listed(ids);
        return mine.length === chunk.length && mine.every((r) => r.placed === r.replicas) ? true : undefined;
      },
      60_000,
      100,
      'warm-up placed',
    ).catch(() => false);
    const ms = Date.now() - t0;
    rounds.push({
      replicas,
      msToAllPlaced: ms,
      allPlaced: placed === true,
      agentCpuMsPerDecision: round1(((agentCpuSeconds(c) - cpu0) * 1000) / replicas),
    });
    await each(chunk, (d) => c.http(rnd.int(o.procs), 'DELETE', `/v1/deploys/${d.id}`, undefined, 10_000));
    await waitFor(
      async () => ((await listed(ids)).length === 0 ? true : undefined),
      60_000,
      250,
      'warm-up deleted',
    ).catch(() => undefined);
  }
  await sleep(3_000);
  const first = rounds[0]!;
  const cold = {
    decisionsPerSec: round1((first.replicas * 1000) / first.msToAllPlaced),
    agentCpuMsPerDecision: first.agentCpuMsPerDecision,
  };
  process.stdout.write(
    `(b) warm-up: ${all.length} deploys in ${rounds.length} rounds, each placed then deleted; per round ` +
      rounds
        .map((r) => `${round1((r.replicas * 1000) / r.msToAllPlaced)}/s ${r.agentCpuMsPerDecision} ms`)
        .join(', ') +
      ' (decisions/s and agent CPU per decision, polled: coarse)\n',
  );
  return { deploys: all.length, rounds, cold };
}

interface BurstRow {
  /** Offered deploys per second (open loop); 0 = closed loop with `--concurrency` in flight. */
  deploysPerSec: number;
  decisionsPerSec: number;
  latencyMs: ReturnType<typeof summarize>;
  agentCpuMsPerDecision: number;
  decided: number;
  replicas: number;
}

/**
 * More bursts on the warm cluster, each after deleting the previous one's deploys: one per
 * `rates` entry — deploys per second (open loop), or 0 for a closed loop with `--concurrency`
 * POSTs in flight.
 */
async function moreBursts(
  c: ClusterProcs,
  o: Options,
  first: readonly DeploySpec[],
  rates: readonly number[],
  label: string,
): Promise<{ rows: BurstRow[]; last: readonly DeploySpec[] }> {
  const rows: BurstRow[] = [];
  const rnd = new SeededRandom(o.seed ^ 0x0f0f ^ label.length);
  let previous: readonly DeploySpec[] = first;
  for (const [n, rate] of rates.entries()) {
    // The previous burst leaves: each burst starts from the same (empty) cluster.
    for (const d of previous)
      await c
        .http(rnd.int(o.procs), 'DELETE', `/v1/deploys/${d.id}`, undefined, 10_000)
        .catch(() => undefined);
    const gone = new Set(previous.map((d) => d.id));
    await waitFor(
      async () =>
        (await c.http<DeployListRow[]>(0, 'GET', '/v1/deploys', undefined, 10_000)).some((r) =>
          gone.has(r.id),
        )
          ? undefined
          : true,
      60_000,
      250,
      `${label}: previous burst deleted`,
    ).catch(() => undefined);
    await sleep(2_000);
    const deploys = workload(o.seed + 100 + n, o.procDeploys, `p${label[0]}${n}`, PROC_SHAPES).map((d) =>
      o.procReplicas > 0 ? { ...d, replicas: o.procReplicas } : d,
    );
    const total = sumOf(deploys);
    const sentAt = new Map<string, number>();
    const cpu0 = agentCpuSeconds(c);
    const start = Date.now();
    const post = (d: DeploySpec): Promise<unknown> => {
      sentAt.set(d.id, Date.now());
      return c
        .http(rnd.int(o.procs), 'POST', '/v1/deploys', { id: d.id, ...intentOf(d, true) }, 10_000)
        .catch(() => undefined);
    };
    if (rate > 0) {
      const inFlight = new Set<Promise<unknown>>();
      for (const [k, d] of deploys.entries()) {
        const due = start + (k * 1000) / rate;
        if (due > Date.now()) await sleep(due - Date.now());
        while (inFlight.size >= Math.max(o.concurrency, 256)) await Promise.race(inFlight);
        const p: Promise<unknown> = post(d).finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      await Promise.all(inFlight);
    } else {
      let next = 0;
      const worker = async () => {
        while (next < deploys.length) await post(deploys[next++]!);
      };
      await Promise.all(Array.from({ length: Math.min(o.concurrency, deploys.length) }, worker));
    }
    const decisions = new Decisions();
    const fresh = lineCursor(c);
    const collect = () => {
      for (const l of fresh()) {
        if (l.msg !== 'placement: award accepted') continue;
        if (sentAt.has(String(l.deploy)) && Array.isArray(l.replicas))
          decisions.record(String(l.deploy), l.replicas as number[], Number(l.time));
      }
      return decisions.size >= total;
    };
    await waitFor(collect, 60_000, 100, `${label}: ${total} replicas decided`).catch(() => undefined);
    const windowMs = Math.max(1, decisions.lastAt() - start);
    const cpu = agentCpuSeconds(c) - cpu0;
    const row: BurstRow = {
      deploysPerSec: rate,
      decisionsPerSec: round1((decisions.size / windowMs) * 1000),
      latencyMs: summarize(decisions.latencies(sentAt)),
      agentCpuMsPerDecision: round1((cpu * 1000) / Math.max(1, decisions.size)),
      decided: decisions.size,
      replicas: total,
    };
    rows.push(row);
    process.stdout.write(
      `(b) ${label} ${rate > 0 ? `${rate} deploys/s` : `closed loop, ${o.concurrency} in flight`}: ` +
        `${row.decided}/${total} replicas, ${row.decisionsPerSec} decisions/s; ` +
        `latency p50 ${row.latencyMs.p50} ms, p99 ${row.latencyMs.p99} ms; ${row.agentCpuMsPerDecision} agent CPU ms per decision\n`,
    );
    previous = deploys;
  }
  return { rows, last: previous };
}

/** One open-loop burst per `--sweep` rate: the latency at each offered load. */
async function rateSweep(c: ClusterProcs, o: Options, first: readonly DeploySpec[]) {
  const { rows } = await moreBursts(c, o, first, o.sweep, 'sweep');
  const ok = rows.filter((r) => r.decided === r.replicas && r.latencyMs.p99 <= 100);
  const best = ok.length > 0 ? Math.max(...ok.map((r) => r.decisionsPerSec)) : 0;
  process.stdout.write(`(b) sweep: highest decisions/s with p99 ≤ 100 ms: ${best || 'none'}\n`);
  return { rows, bestDecisionsPerSecAtP99Target: best };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : round1((s[m - 1]! + s[m]!) / 2);
}

async function procsPart(o: Options, setCurrent: (c: ClusterProcs | undefined) => void) {
  const c = new ClusterProcs({ prefix: 'shoal-bench-place-' });
  setCurrent(c);
  try {
    process.stdout.write(`(b) starting ${o.procs} agent processes…\n`);
    const bootMs = await startProcs(c, o.procs, o.cpuProf, o.procLogLevel, o.procNodeArgs, o.procAgentArgs);
    process.stdout.write(`(b) all ${o.procs} alive with capacity after ${bootMs} ms; settling 8 s\n`);
    // Agents that just booted still compile and warm up for a few seconds (measured: ~1 core of
    // the cluster 1 s after the last one is ready, ~0.3 after 5 s): let that pass first.
    await sleep(5_000);
    const warm = o.warmup > 0 ? await warmUp(c, o) : undefined;
    // The cluster's idle CPU rate (timers, heartbeats), to separate what the burst itself costs.
    const idleCpu0 = agentCpuSeconds(c);
    const idleT0 = Date.now();
    await sleep(3_000);
    const idleCores = (agentCpuSeconds(c) - idleCpu0) / ((Date.now() - idleT0) / 1000);
    // Small shapes: 300 deploys × 2 replicas × ~130 milli ≈ half of 10 × 16 cores, so capacity is
    // never what limits placement.
    const deploys = workload(o.seed + 1, o.procDeploys, 'pb', PROC_SHAPES).map((d) =>
      o.procReplicas > 0 ? { ...d, replicas: o.procReplicas } : d,
    );
    const total = sumOf(deploys);
    const rnd = new SeededRandom(o.seed ^ 0xa5a5);
    const targets = deploys.map(() => rnd.int(o.procs));
    const sentAt = new Map<string, number>();
    const http: number[] = [];
    const errors: string[] = [];
    const counters0 = await clusterCounters(c);
    const cpu0 = agentCpuSeconds(c);
    const load0 = os.loadavg()[0]!;
    const start = Date.now();
    // CLOCK_MONOTONIC, the clock of V8's profile timestamps: lets a profile be cut to the burst.
    const monoStartUs = Number(process.hrtime.bigint() / 1000n);
    let next = 0;
    const post = async (k: number) => {
      const d = deploys[k]!;
      const t0 = Date.now();
      sentAt.set(d.id, t0);
      try {
        await c.http(targets[k]!, 'POST', '/v1/deploys', { id: d.id, ...intentOf(d, true) }, 10_000);
        http.push(Date.now() - t0);
      } catch (err) {
        errors.push(`${d.id}: ${String((err as Error)?.message ?? err).split('\n')[0]}`);
      }
    };
    if (o.rate > 0) {
      // Open loop: deploy k is due at start + k/rate (latency at a given load); a POST waits only
      // when `concurrency` are already in flight (then the offered rate is not met: reported).
      const inFlight = new Set<Promise<void>>();
      for (let k = 0; k < deploys.length; k++) {
        const due = start + (k * 1000) / o.rate;
        if (due > Date.now()) await sleep(due - Date.now());
        while (inFlight.size >= o.concurrency) await Promise.race(inFlight);
        const p: Promise<void> = post(k).finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      await Promise.all(inFlight);
    } else {
      const worker = async () => {
        while (next < deploys.length) await post(next++);
      };
      await Promise.all(Array.from({ length: Math.min(o.concurrency, deploys.length) }, worker));
    }
    const submitMs = Date.now() - start;
    // A decision is an award committed on the winning host's books (its `placement: award
    // accepted` line). The coordinator's `placement: decided` line comes when the ack is back; an
    // ack lost or late (a loaded machine) leaves a placed replica without one, and a re-award
    // after a timeout logs a second one (`duplicateDecisions`).
    const decisions = new Decisions();
    const coordinator = new Decisions();
    const fresh = lineCursor(c);
    const collect = () => {
      for (const l of fresh()) {
        if (l.msg !== 'placement: decided' && l.msg !== 'placement: award accepted') continue;
        if (!sentAt.has(String(l.deploy)) || !Array.isArray(l.replicas)) continue;
        const d = l.msg === 'placement: decided' ? coordinator : decisions;
        d.record(String(l.deploy), l.replicas as number[], Number(l.time));
      }
      return decisions.size >= total;
    };
    let allDecided = true;
    try {
      await waitFor(collect, 60_000, 100, `all ${total} replicas decided`);
    } catch {
      allDecided = false;
    }
    // The coordinators' acks lag the commits; give them a moment (they may never all come).
    await waitFor(() => collect() && coordinator.size >= total, 3_000, 100, 'acks').catch(() => undefined);
    const lastAt = decisions.lastAt();
    const windowMs = lastAt - start;
    const monoEndUs = Number(process.hrtime.bigint() / 1000n);
    const agentCpu = agentCpuSeconds(c) - cpu0;
    const elapsedS = (Date.now() - start) / 1000;
    const agentCores = round1(agentCpu / elapsedS);
    // Marginal CPU of a decision: what the burst used beyond the idle rate, per decided replica.
    const marginalMs = ((agentCpu - idleCores * elapsedS) * 1000) / Math.max(1, decisions.size);
    const load1 = os.loadavg()[0]!;
    const counters1 = await clusterCounters(c);
    // At rest: every deploy placed exactly once, as agent 0 sees it.
    let placedOk = 0;
    let misplaced: string[] = [];
    try {
      const rows = await waitFor(
        async () => {
          const list = await c.http<DeployListRow[]>(0, 'GET', '/v1/deploys', undefined, 10_000);
          const mine = list.filter((r) => sentAt.has(r.id));
          return mine.every((r) => r.placed === r.replicas) ? mine : undefined;
        },
        20_000,
        250,
        'every deploy placed (agent 0 view)',
      );
      placedOk = rows.length;
    } catch (err) {
      const list = await c.http<DeployListRow[]>(0, 'GET', '/v1/deploys', undefined, 10_000).catch(() => []);
      const mine = list.filter((r) => sentAt.has(r.id));
      placedOk = mine.filter((r) => r.placed === r.replicas).length;
      misplaced = mine
        .filter((r) => r.placed !== r.replicas)
        .slice(0, 5)
        .map((r) => `${r.id}: placed ${r.placed}/${r.replicas}`);
      misplaced.unshift(String((err as Error).message));
    }
    const engineFailures = c.procs.flatMap((p) =>
      allLines(p).filter((l) => l.msg === 'reconcile: action failed'),
    );
    const engineStarted = c.procs.reduce(
      (n, p) => n + allLines(p).filter((l) => l.msg === 'reconcile: started').length,
      0,
    );
    // More closed-loop bursts (`--repeat`), then the open-loop sweep, on the same warm cluster.
    const more =
      o.repeat > 1
        ? await moreBursts(c, o, deploys, new Array<number>(o.repeat - 1).fill(0), 'repeat')
        : { rows: [], last: deploys };
    let repeat:
      | { medians: { decisionsPerSec: number; p99Ms: number; agentCpuMsPerDecision: number } }
      | undefined;
    if (more.rows.length > 0) {
      const all = [
        {
          decisionsPerSec: round1((decisions.size / windowMs) * 1000),
          p99: summarize(decisions.latencies(sentAt)).p99,
          cpu: round1((agentCpu * 1000) / Math.max(1, decisions.size)),
        },
        ...more.rows.map((r) => ({
          decisionsPerSec: r.decisionsPerSec,
          p99: r.latencyMs.p99,
          cpu: r.agentCpuMsPerDecision,
        })),
      ];
      repeat = {
        medians: {
          decisionsPerSec: median(all.map((r) => r.decisionsPerSec)),
          p99Ms: median(all.map((r) => r.p99)),
          agentCpuMsPerDecision: median(all.map((r) => r.cpu)),
        },
      };
      process.stdout.write(
        `(b) repeat: medians of ${all.length} closed-loop bursts: ${repeat.medians.decisionsPerSec} decisions/s, ` +
          `p99 ${repeat.medians.p99Ms} ms, ${repeat.medians.agentCpuMsPerDecision} agent CPU ms per decision\n`,
      );
    }
    const sweep = o.sweep.length > 0 ? await rateSweep(c, o, more.last) : undefined;
    return {
      agents: o.procs,
      warmup: warm,
      ...(repeat ? { repeat: { ...repeat, bursts: more.rows } } : {}),
      ...(sweep ? { sweep } : {}),
      bootMs,
      deploys: deploys.length,
      replicas: total,
      concurrency: o.concurrency,
      /** Offered deploys per second (0: closed loop) and what the submission achieved. */
      rate: o.rate,
      submittedPerSec: round1((deploys.length / Math.max(1, submitMs)) * 1000),
      submitErrors: errors.length,
      firstSubmitErrors: errors.slice(0, 3),
      submitWindowMs: submitMs,
      decided: decisions.size,
      /** Replicas committed on a host more than once (re-awarded: the older copy is dropped). */
      duplicateCommits: decisions.duplicates,
      /** As the coordinators saw it (`placement: decided`, when the award ack is back). */
      coordinatorDecided: coordinator.size,
      duplicateDecisions: coordinator.duplicates,
      coordinatorLatencyMs: summarize(coordinator.latencies(sentAt)),
      allDecided,
      msFirstPostToLastDecision: windowMs,
      decisionsPerSec: round1((decisions.size / windowMs) * 1000),
      latencyMs: summarize(decisions.latencies(sentAt)),
      httpRoundTripMs: summarize(http),
      deploysPlacedAtRest: placedOk,
      notPlaced: misplaced,
      agentCoresUsed: agentCores,
      /** Agent CPU (all processes, submit window + settling) per decided replica: robust to machine load. */
      agentCpuMsPerDecision: round1((agentCpu * 1000) / Math.max(1, decisions.size)),
      /** Cluster CPU at rest before the burst (cores, all agents). */
      idleAgentCores: round3(idleCores),
      /** Agent CPU per decision beyond the idle rate (less sensitive to how long a loaded machine stretched the run). */
      marginalCpuMsPerDecision: round1(marginalMs),
      loadAvg1mBeforeAfter: [round1(load0), round1(load1)],
      /** Agent counters (GET /metrics, all agents) grown during the burst, per decision. */
      countersPerDecision: growthPerDecision(counters0, counters1, decisions.size),
      engineStarted,
      engineActionFailures: engineFailures.length,
      firstEngineFailure: engineFailures[0] ? String(engineFailures[0].err) : null,
      /** With --cpu-prof: the burst (first POST → all decided) in the profiles' clock (µs, monotonic). */
      ...(o.cpuProf ? { profileWindowUs: [monoStartUs, monoEndUs] } : {}),
    };
  } finally {
    if (o.cpuProf) {
      // A profile is written on a clean exit only: SIGTERM (the agent leaves and exits 0) first.
      for (const i of c.runningIndices()) c.get(i).child.kill('SIGTERM');
      await Promise.race([Promise.all(c.procs.map((p) => p.exited)), sleep(15_000)]);
      process.stdout.write(`(b) CPU profiles in ${o.cpuProf}\n`);
    }
    await c.stopAll();
    setCurrent(undefined);
  }
}

// ───────────────────────────── (c) quality vs centralized best fit ─────────────────────────────

interface Usage {
  hostsUsed: number;
  replicas: number;
  cpuRatio: number;
  memoryRatio: number;
}

function usageOf(hosts: readonly Host[], allocs: ReadonlyMap<string, readonly Allocation[]>): Usage {
  let used = 0;
  let replicas = 0;
  let cpuAlloc = 0;
  let cpuCap = 0;
  let memAlloc = 0;
  let memCap = 0;
  for (const h of hosts) {
    const list = allocs.get(h.id) ?? [];
    if (list.length === 0) continue;
    used++;
    replicas += list.length;
    cpuCap += h.capacity.cpu.cores * 1000;
    memCap += h.capacity.memoryBytes;
    for (const a of list) {
      cpuAlloc += a.cpu.sharedMilli + a.cpu.cores.reduce((n, g) => n + g.milli, 0);
      memAlloc += a.memoryBytes;
    }
  }
  return {
    hostsUsed: used,
    replicas,
    cpuRatio: round3(cpuAlloc / cpuCap),
    memoryRatio: round3(memAlloc / memCap),
  };
}

function qualityFacts(seed: number): (i: number) => HostFacts {
  return (i) => {
    const r = new SeededRandom(seed * 7919 + i);
    const cores = r.pick([4, 8, 16, 32]);
    return {
      cores,
      cpuMilli: cores * 1000,
      memoryBytes: cores * r.pick([2, 4, 8]) * GiB,
      diskBytes: 500 * GiB,
      gpus: [],
      labels: { zone: ['a', 'b', 'c'][i % 3]! },
    };
  };
}

/** The protocol in the sim: waves of `wave` deploys, each decided and gossiped everywhere first. */
async function decentralized(o: Options, wave: number, deploys: readonly DeploySpec[]) {
  const c = await simCluster(o.seed + 2, o.qualityAgents, qualityFacts(o.seed));
  // The very hosts the agents advertise, as the allocator sees them (same adapter, same ids).
  const hosts: Host[] = c.agents.map((a) => {
    const capacity = a.placement.capacity();
    return { id: a.id, labels: a.sync.self()!.capacity.labels, capacity, ledger: emptyLedger(capacity) };
  });
  const decisions = new Decisions();
  for (const a of c.agents) a.placement.onDecided = (d, r, at) => decisions.record(d, r, at);
  const rnd = new SeededRandom(o.seed ^ 0x3c3c);
  const overcommit = new Set<string>();
  const wall0 = performance.now();
  let stuckWave = -1;
  let expected = 0;
  for (let w = 0; w * wave < deploys.length; w++) {
    const batch = deploys.slice(w * wave, (w + 1) * wave);
    for (const d of batch) c.get(rnd.int(c.agents.length)).placement.submit(d.id, intentOf(d));
    expected += sumOf(batch);
    const t = await c.runUntil(
      () => {
        for (const v of c.placementViolations(false)) overcommit.add(v);
        return decisions.size >= expected && c.converged();
      },
      30_000,
      5,
    );
    if (t < 0 && stuckWave < 0) stuckWave = w;
  }
  const wallMs = Math.round(performance.now() - wall0);
  const rest = await c.runUntil(() => c.placementViolations(true).length === 0, 30_000, 50);
  const restViolations = c.placementViolations(true).length;
  const placed = new Map<string, Allocation[]>();
  for (const a of c.agents)
    placed.set(
      a.id,
      a.placement.workloads().map((w) => w.allocation),
    );
  const refused = c.agents.reduce((n, a) => n + a.placement.counters.awardsRefused, 0);
  await c.stop();
  const usage = usageOf(hosts, placed);
  return {
    hosts,
    result: {
      wave,
      ...usage,
      unplaced: sumOf(deploys) - usage.replicas,
      duplicateDecisions: decisions.duplicates,
      awardsRefused: refused,
      wallMs,
      firstStuckWave: stuckWave,
      overcommitViolations: overcommit.size,
      atRestAfterVirtualMs: rest,
      atRestViolations: restViolations,
    },
  };
}

/** `allocator.plan` over the same hosts, one deploy after another, each plan reserved on the books. */
function centralized(hosts: readonly Host[], deploys: readonly DeploySpec[]) {
  const wall0 = performance.now();
  const books = hosts.map((h) => ({ ...h, ledger: emptyLedger(h.capacity) }));
  const byId = new Map(books.map((h) => [h.id, h]));
  const placed = new Map<string, Allocation[]>();
  let unplaced = 0;
  for (const d of deploys) {
    const request = {
      deployId: d.id,
      resources: { cpu: { milli: d.cpuMilli }, memoryBytes: d.memoryBytes, diskBytes: 0 },
    };
    const p = plan(books, request, d.replicas, { kind: 'binpack' }, []);
    unplaced += p.unplaced;
    for (const pl of p.placements) {
      const h = byId.get(pl.hostId)!;
      for (const a of pl.allocations) h.ledger = reserve(h.ledger, a);
      placed.set(pl.hostId, [...(placed.get(pl.hostId) ?? []), ...pl.allocations]);
    }
  }
  return { ...usageOf(books, placed), unplaced, wallMs: round1(performance.now() - wall0) };
}

// ───────────────────────────── (d) the agent code alone ─────────────────────────────

/**
 * (d) core — (b)'s cluster and workload with every agent in this one process, on the simulated
 * network with a simulated engine per host (SimCluster: the same Agent, StateSync, Placement and
 * Reconciler classes as `shoal agent --engine sim`, as in (b)). Rounds of `procDeploys` deploys of
 * (b)'s shapes, `coreRate` a virtual second at random agents; each round is decided, then deleted.
 * The CPU per decision of the agents' own code, without processes, libp2p, HTTP, disk or log
 * lines: what (b) spends beyond it is the price of those. Seeded, so far steadier than (b).
 */
async function corePart(o: Options) {
  const c = await simCluster(
    o.seed,
    o.procs,
    () => ({
      cores: 16,
      cpuMilli: 16_000,
      memoryBytes: 64 * GiB,
      diskBytes: 500 * GiB,
      gpus: [],
      labels: {},
    }),
    { engine: {} },
  );
  const rnd = new SeededRandom(o.seed ^ 0x3c3c);
  const decisions = new Decisions();
  for (const a of c.agents) a.placement.onDecided = (d, r, at) => decisions.record(d, r, at);
  const rounds: { decided: number; cpuMsPerDecision: number; p99VirtualMs: number }[] = [];
  let duplicates = 0;
  let violations = 0;
  for (let round = 0; round < o.coreRounds; round++) {
    const deploys = workload(o.seed + 200 + round, o.procDeploys, `c${round}`, PROC_SHAPES).map((d) =>
      o.procReplicas > 0 ? { ...d, replicas: o.procReplicas } : d,
    );
    const total = sumOf(deploys);
    decisions.first.clear();
    decisions.duplicates = 0;
    const submitted = new Map<string, number>();
    const cpu0 = process.cpuUsage();
    let due = 0;
    for (const d of deploys) {
      const a = c.get(rnd.int(c.agents.length));
      submitted.set(d.id, a.clock.now());
      // As the API submits it (node/deploys-backend.ts): with the rollout record of version 1, so
      // the coordinator does not write it as a second change of the intent.
      const intent = intentOf(d, true);
      a.placement.submit(d.id, { ...intent, spec: withSystemKeys(undefined, intent.spec, a.clock.now()) });
      due += 1000 / o.coreRate;
      if (due >= 1) {
        await c.run(Math.floor(due));
        due -= Math.floor(due);
      }
    }
    const t = await c.runUntil(() => decisions.size >= total, 60_000, 5);
    if (t < 0)
      throw new Error(`(d) round ${round}: ${decisions.size}/${total} replicas decided in 60 virtual s`);
    const cpu = process.cpuUsage(cpu0);
    rounds.push({
      decided: decisions.size,
      cpuMsPerDecision: round3((cpu.user + cpu.system) / 1000 / decisions.size),
      p99VirtualMs: summarize(decisions.latencies(submitted)).p99,
    });
    duplicates += decisions.duplicates;
    violations += c.placementViolations(false).length;
    for (const d of deploys) c.get(rnd.int(c.agents.length)).sync.removeIntent(d.id);
    await c.run(3_000);
  }
  const atRest = await c.runUntil(() => c.placementViolations(true).length === 0, 30_000, 50);
  await c.stop();
  const warm = rounds.slice(2).map((r) => r.cpuMsPerDecision);
  const cpu = summarize(warm);
  return {
    agents: o.procs,
    deploysPerRound: o.procDeploys,
    rounds: rounds.length,
    ratePerVirtualSec: o.coreRate,
    /** CPU of the whole process per decision, rounds 3… (warm): median and range. */
    cpuMsPerDecision: { median: cpu.p50, min: Math.min(...warm), max: Math.max(...warm) },
    perRound: rounds,
    duplicateDecisions: duplicates,
    overcommitViolations: violations,
    atRest: atRest >= 0,
  };
}

async function qualityPart(o: Options) {
  const deploys = workload(o.seed + 3, o.qualityDeploys, 'q', {
    maxReplicas: 4,
    strategies: ['binpack'],
    cpu: [250, 500, 1000, 2000],
    memMiB: [256, 512, 1024, 2048, 4096],
  });
  let hosts: Host[] = [];
  const runs: Awaited<ReturnType<typeof decentralized>>['result'][] = [];
  for (const wave of o.qualityWaves) {
    const r = await decentralized(o, wave, deploys);
    hosts = r.hosts;
    runs.push(r.result);
  }
  const central = centralized(hosts, deploys);
  const cpuDemand = deploys.reduce((n, d) => n + d.replicas * d.cpuMilli, 0);
  const memDemand = deploys.reduce((n, d) => n + d.replicas * d.memoryBytes, 0);
  const cpuCap = hosts.reduce((n, h) => n + h.capacity.cpu.cores * 1000, 0);
  const memCap = hosts.reduce((n, h) => n + h.capacity.memoryBytes, 0);
  return {
    agents: o.qualityAgents,
    deploys: deploys.length,
    replicas: sumOf(deploys),
    demandOfClusterCapacity: { cpu: round3(cpuDemand / cpuCap), memory: round3(memDemand / memCap) },
    centralized: central,
    decentralized: runs.map((d) => ({
      ...d,
      /** decentralized ÷ centralized hosts used: ≤ 1.01 meets the target (at most ~1% more hosts). */
      hostsUsedRatio: round3(d.hostsUsed / central.hostsUsed),
      /** centralized ÷ decentralized hosts used: the share of best-fit quality reached (target ≥ 0.99). */
      qualityVsBestFit: round3(central.hostsUsed / d.hostsUsed),
      cpuRatioVsBestFit: round3(d.cpuRatio / central.cpuRatio),
      memoryRatioVsBestFit: round3(d.memoryRatio / central.memoryRatio),
    })),
  };
}

// ───────────────────────────── the bench ─────────────────────────────

let current: ClusterProcs | undefined;

export const bench: Bench = {
  name: 'placement',
  description:
    'placement: decisions/s + submit→decided p50/p99 (100 sim agents, 10 processes); quality vs best fit',
  async run(args: string[]): Promise<BenchResult> {
    const o = parseArgs(args);
    const onSignal = () => {
      process.stderr.write('placement: interrupted, stopping the agents\n');
      void (current?.stopAll() ?? Promise.resolve()).then(() => process.exit(130));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const out: Record<string, unknown> = {};
    const attempt = async <T>(part: Part, f: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await f();
      } catch (err) {
        const error = String((err as Error)?.message ?? err).split('\n')[0];
        process.stdout.write(`(${part}) FAILED: ${error}\n`);
        out[part] = { error };
        return undefined;
      }
    };
    try {
      if (o.only.includes('sim')) {
        process.stdout.write(
          `(a) ${o.agents} simulated agents, ${o.deploys} deploys in waves of ${o.wave}…\n`,
        );
        const s = await attempt('sim', () => simPart(o));
        if (s) {
          out.sim = s;
          process.stdout.write(
            `(a) sim: ${s.decided}/${s.replicas} replicas of ${s.deploys} deploys decided on ${s.agents} agents: ` +
              `${s.decisionsPerWallSec} decisions/s wall (${s.wallMsToLastDecision} ms; ${s.cpuMsPerDecision} CPU ms, ` +
              `${s.trafficPerDecision.directMessages} direct messages, ${s.trafficPerDecision.publishes} publishes → ` +
              `${s.trafficPerDecision.topicDeliveries} deliveries of ${s.trafficPerDecision.topicBytes} B per decision), ` +
              `${s.decisionsPerVirtualSec}/s virtual; latency p50 ${s.latencyVirtualMs.p50} ms, ` +
              `p99 ${s.latencyVirtualMs.p99} ms, max ${s.latencyVirtualMs.max} ms (virtual); ` +
              `${s.rounds} rounds, ${s.awardsRefused} awards refused; overcommit violations ` +
              `${s.overcommitViolations} over ${s.overcommitChecks} checks; at rest ${s.atRestViolations} violations\n`,
          );
        }
      }
      if (o.only.includes('procs')) {
        const p = await attempt('procs', () =>
          procsPart(o, (c) => {
            current = c;
          }),
        );
        if (p) {
          out.procs = p;
          process.stdout.write(
            `(b) procs: ${p.decided}/${p.replicas} replicas of ${p.deploys} deploys via ${p.agents} agents ` +
              `(${p.concurrency} POSTs in flight): ${p.decisionsPerSec} decisions/s ` +
              `(${p.msFirstPostToLastDecision} ms first POST → last decision); latency p50 ${p.latencyMs.p50} ms, ` +
              `p99 ${p.latencyMs.p99} ms, max ${p.latencyMs.max} ms; HTTP round trip p50 ${p.httpRoundTripMs.p50} ms, ` +
              `p99 ${p.httpRoundTripMs.p99} ms; agents used ${p.agentCoresUsed} cores ` +
              `(${p.agentCpuMsPerDecision} CPU ms per decision, ${p.marginalCpuMsPerDecision} beyond the idle ` +
              `${p.idleAgentCores} cores), machine load ` +
              `${p.loadAvg1mBeforeAfter.join('→')} on ${os.cpus().length} cores; placed at rest ` +
              `${p.deploysPlacedAtRest}/${p.deploys}; submit errors ${p.submitErrors}\n`,
          );
          process.stdout.write(
            `(b) targets: ≥ 2000 decisions/s: ${p.decisionsPerSec >= 2000 ? 'met' : 'NOT met'}; ` +
              `p99 ≤ 100 ms: ${p.latencyMs.p99 <= 100 ? 'met' : 'NOT met'} (closed loop: the agents saturated, ` +
              'latency mostly queueing)\n',
          );
          // Both at once: the highest rate of the open-loop sweep whose p99 met 100 ms.
          if (p.sweep)
            process.stdout.write(
              `(b) targets together (≥ 2000 decisions/s with p99 ≤ 100 ms): ` +
                `${p.sweep.bestDecisionsPerSecAtP99Target >= 2000 ? 'met' : 'NOT met'} — p99 ≤ 100 ms held up to ` +
                `${p.sweep.bestDecisionsPerSecAtP99Target || 'none of the'} decisions/s of the sweep\n`,
            );
        }
      }
      if (o.only.includes('quality')) {
        process.stdout.write(
          `(c) quality: ${o.qualityDeploys} binpack deploys on ${o.qualityAgents} hosts, ` +
            `decentralized in waves of ${o.qualityWaves.join(' and ')}…\n`,
        );
        const q = await attempt('quality', () => qualityPart(o));
        if (q) {
          out.quality = q;
          const k = q.centralized;
          process.stdout.write(
            `(c) quality: ${q.replicas} replicas (demand ${Math.round(q.demandOfClusterCapacity.cpu * 100)}% cpu, ` +
              `${Math.round(q.demandOfClusterCapacity.memory * 100)}% memory of the cluster); centralized best fit: ` +
              `${k.hostsUsed} hosts used, allocation ratio over used hosts cpu ${k.cpuRatio}, memory ${k.memoryRatio}, ` +
              `unplaced ${k.unplaced}\n`,
          );
          for (const d of q.decentralized)
            process.stdout.write(
              `(c) decentralized, waves of ${d.wave}: ${d.hostsUsed} hosts used (ratio ${d.hostsUsedRatio}; ` +
                `${Math.round(d.qualityVsBestFit * 1000) / 10}% of best fit, target ≥ 99%: ` +
                `${d.qualityVsBestFit >= 0.99 ? 'met' : 'NOT met'}); cpu ${d.cpuRatio}, memory ${d.memoryRatio}; ` +
                `unplaced ${d.unplaced}; awards refused ${d.awardsRefused}; violations ${d.overcommitViolations} + ` +
                `${d.atRestViolations} at rest; ${d.wallMs} ms wall\n`,
            );
        }
      }
      if (o.only.includes('core')) {
        process.stdout.write(
          `(d) core: (b)'s workload on ${o.procs} agents in one process (simulated network and engines), ` +
            `${o.coreRounds} rounds of ${o.procDeploys} deploys…\n`,
        );
        const k = await attempt('core', () => corePart(o));
        if (k) {
          out.core = k;
          const procs = out.procs as { agentCpuMsPerDecision?: number } | undefined;
          const b = procs?.agentCpuMsPerDecision;
          process.stdout.write(
            `(d) core: ${k.cpuMsPerDecision.median} CPU ms per decision for all ${k.agents} agents' code ` +
              `(warm rounds ${k.cpuMsPerDecision.min}–${k.cpuMsPerDecision.max})` +
              (b ? `, ${Math.round((k.cpuMsPerDecision.median / b) * 100)}% of (b)'s ${b} ms` : '') +
              `; duplicate decisions ${k.duplicateDecisions}, overcommit violations ${k.overcommitViolations}, ` +
              `at rest ${k.atRest ? 'clean' : 'NOT clean'}\n`,
          );
        }
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    return {
      params: o,
      ...out,
      targets: { decisionsPerSec: 2000, p99Ms: 100, qualityVsBestFit: 0.99 },
    };
  },
};
