import os from 'node:os';
import { agentCpuSeconds, allLines, ClusterProcs, sleep, waitFor } from '../test/cluster-procs.ts';
// Types only: a value import of './index.ts' would be circular with its top-level `await main()`
// (index.ts imports this module while still evaluating) and Node exits with code 13.
import { type Bench, type BenchResult, summarize } from './stats.ts';

/**
 * `npm run bench -- propagation [--n 5,10] [--k 30] [--spacing 150] [--reps 3] [--seed 1]`
 *
 * Real agent processes on 127.0.0.1 (one cluster key, all joined through agent 0, debug logs):
 *
 * 1. Propagation: K host-record changes (`PATCH /v1/node`, alternately labels and cpu/memory) at
 *    random agents, one every `spacing` ms. For each change: t0 = the time the HTTP request was
 *    sent (the agent logs no line when it publishes its own record, so the request is the
 *    earliest precise point; the HTTP round trip is reported separately), t_last = the latest
 *    `time` of the `host record applied` lines for that host and version over all other agents
 *    (pino `time`, same machine clock). Reported: p50/p99/max of t_last − t0, and of the first
 *    agent reached.
 * 2. Dead detection: kill -9 a random non-seed agent; time until every other agent's
 *    `/v1/nodes` shows it `dead` (polled every 50 ms), and from the agents' own `member … dead`
 *    log lines (exact, no polling error); restart it and wait until it is alive everywhere
 *    before the next repetition.
 */

interface Options {
  sizes: number[];
  k: number;
  spacingMs: number;
  reps: number;
  seed: number;
}

function parseArgs(args: string[]): Options {
  const o: Options = { sizes: [5, 10], k: 30, spacingMs: 150, reps: 3, seed: 1 };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const v = args[i + 1];
    if (v === undefined) throw new Error(`${a}: missing value`);
    if (a === '--n') o.sizes = v.split(',').map(Number);
    else if (a === '--k') o.k = Number(v);
    else if (a === '--spacing') o.spacingMs = Number(v);
    else if (a === '--reps') o.reps = Number(v);
    else if (a === '--seed') o.seed = Number(v);
    else throw new Error(`unknown argument ${a} (--n 5,10 --k 30 --spacing 150 --reps 3 --seed 1)`);
    i++;
  }
  if (o.sizes.some((n) => !(n >= 2)) || !(o.k >= 1) || !(o.reps >= 0)) throw new Error('bad arguments');
  return o;
}

/** mulberry32: a tiny seeded PRNG so the choice of agents is the same run to run. */
function prng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

const round = (x: number) => Math.round(x * 10) / 10;

/** Start N agents (agent 0 the seed, the rest join through it) and wait until they agree. */
async function startCluster(c: ClusterProcs, n: number): Promise<number> {
  const t0 = Date.now();
  const key = c.keygen();
  const seed = await c.spawn({ clusterKey: key, logLevel: 'debug', readyTimeoutMs: 120_000 });
  const join = [seed.addrs[0]!];
  // Boot in batches of 3: tsx compiling for 9 processes at once on 2 cores takes as long and
  // starves the agents already running.
  for (let i = 1; i < n; i += 3) {
    await c.spawnMany(Math.min(3, n - i), () => ({
      clusterKey: key,
      join,
      logLevel: 'debug',
      readyTimeoutMs: 120_000,
    }));
  }
  await waitFor(
    async () => {
      for (const i of c.runningIndices()) {
        const rows = await c.nodes(i);
        if (rows.filter((r) => r.status === 'alive').length !== n) return false;
      }
      const hashes = await Promise.all(c.runningIndices().map(async (i) => (await c.state(i)).hash));
      return hashes.every((h) => h === hashes[0]);
    },
    60_000,
    250,
    `${n} agents alive and converged`,
  );
  return Date.now() - t0;
}

interface Change {
  k: number;
  agent: number;
  host: string;
  sentAt: number;
  repliedAt: number;
  version: number;
}

async function propagation(c: ClusterProcs, o: Options, rnd: (n: number) => number) {
  const n = c.procs.length;
  const hosts = c.procs.map((p) => p.id);
  // Baseline: the newest version of each host's record applied anywhere (all agree: converged).
  const applied = () =>
    c.procs.flatMap((p) =>
      allLines(p)
        .filter((l) => l.msg === 'host record applied')
        .map((l) => ({
          at: p.index,
          host: String(l.host),
          version: Number(l.version),
          time: Number(l.time),
        })),
    );
  const version = new Map<string, number>();
  for (const a of applied()) version.set(a.host, Math.max(version.get(a.host) ?? 0, a.version));

  const changes: Change[] = [];
  const inflight: Promise<void>[] = [];
  const cpu0 = agentCpuSeconds(c);
  const load0 = os.loadavg()[0]!;
  const start = Date.now();
  for (let k = 0; k < o.k; k++) {
    // Keep the cadence: the k-th change is sent at start + k·spacing, whatever the replies do.
    const wait = start + k * o.spacingMs - Date.now();
    if (wait > 0) await sleep(wait);
    const agent = rnd(n);
    const host = hosts[agent]!;
    const v = (version.get(host) ?? 0) + 1;
    version.set(host, v);
    const body =
      k % 2 === 0
        ? { labels: { bench: `change-${k}`, zone: `z${k % 3}` } }
        : { cpu: String(1 + (k % 8)), memory: `${4 + (k % 5)}GiB` };
    const ch: Change = { k, agent, host, sentAt: Date.now(), repliedAt: 0, version: v };
    changes.push(ch);
    inflight.push(
      c.patchNode(agent, body).then(() => {
        ch.repliedAt = Date.now();
      }),
    );
  }
  await Promise.all(inflight);
  const burstMs = Date.now() - start;
  // Cores the agents kept busy during the burst, and the machine's load (other work included).
  const agentCores = round((agentCpuSeconds(c) - cpu0) / (burstMs / 1000));
  const loadAvg1m = [round(load0), round(os.loadavg()[0]!)];

  // Wait until every other agent has logged each change (or a newer version of that host).
  const reachedAt = (ch: Change, at: number, lines: ReturnType<typeof applied>) => {
    let t = Number.POSITIVE_INFINITY;
    for (const a of lines)
      if (a.at === at && a.host === ch.host && a.version >= ch.version) t = Math.min(t, a.time);
    return t;
  };
  let lines = applied();
  const complete = () =>
    changes.every((ch) =>
      c.procs.every((p) => p.index === ch.agent || Number.isFinite(reachedAt(ch, p.index, lines))),
    );
  try {
    await waitFor(
      () => {
        lines = applied();
        return complete();
      },
      15_000,
      100,
      'every change applied at every agent',
    );
  } catch {
    // Report what arrived; the misses are counted below.
  }
  const toLast: number[] = [];
  const toFirst: number[] = [];
  const http: number[] = [];
  let missing = 0;
  let exact = 0;
  for (const ch of changes) {
    const times = c.procs
      .filter((p) => p.index !== ch.agent)
      .map((p) => {
        // Did this agent log exactly this version (not only a newer one)?
        if (lines.some((a) => a.at === p.index && a.host === ch.host && a.version === ch.version)) exact++;
        return reachedAt(ch, p.index, lines);
      });
    if (times.some((t) => !Number.isFinite(t))) {
      missing++;
      continue;
    }
    toLast.push(Math.max(...times) - ch.sentAt);
    toFirst.push(Math.min(...times) - ch.sentAt);
    http.push(ch.repliedAt - ch.sentAt);
  }
  return {
    changes: changes.length,
    missing,
    exactVersionLines: `${exact}/${changes.length * (n - 1)}`,
    toAllMs: summarize(toLast),
    toFirstMs: summarize(toFirst),
    httpRoundTripMs: summarize(http),
    within100ms: toLast.filter((x) => x <= 100).length,
    agentCoresDuringBurst: agentCores,
    loadAvg1mBeforeAfter: loadAvg1m,
  };
}

async function deadDetection(c: ClusterProcs, o: Options, rnd: (n: number) => number) {
  const n = c.procs.length;
  const polled: number[] = [];
  const logged: number[] = [];
  const rejoin: number[] = [];
  for (let r = 0; r < o.reps; r++) {
    const victim = 1 + rnd(n - 1);
    const id = c.get(victim).id;
    const others = c.runningIndices().filter((i) => i !== victim);
    const seen = new Set<number>();
    const t0 = Date.now();
    c.get(victim).child.kill('SIGKILL');
    const deadline = t0 + 30_000;
    while (seen.size < others.length && Date.now() < deadline) {
      await Promise.all(
        others
          .filter((i) => !seen.has(i))
          .map(async (i) => {
            try {
              if ((await c.statusOf(i, id)) === 'dead') seen.add(i);
            } catch {
              // a slow answer is retried on the next poll
            }
          }),
      );
      if (seen.size < others.length) await sleep(50);
    }
    const tPolled = Date.now() - t0;
    await c.get(victim).exited;
    // The agents' own log lines: when each marked it dead (pino time, same clock).
    const deadAt = others.map((i) => {
      const l = c
        .get(i)
        .lines.find(
          (x) => x.msg === 'member' && x.member === id && x.status === 'dead' && Number(x.time) >= t0,
        );
      return l ? Number(l.time) - t0 : Number.POSITIVE_INFINITY;
    });
    if (seen.size === others.length) polled.push(tPolled);
    logged.push(Math.max(...deadAt));
    process.stdout.write(
      `  N=${n} rep ${r + 1}: killed #${victim}; dead at all ${others.length} others: polled ${seen.size === others.length ? `${tPolled} ms` : 'NOT within 30 s'}, from logs ${Math.max(...deadAt)} ms (first ${Math.min(...deadAt)} ms)\n`,
    );
    // Bring it back before the next repetition.
    const tr = Date.now();
    await c.restart(victim, { readyTimeoutMs: 120_000 });
    await waitFor(
      async () => {
        for (const i of c.runningIndices()) if ((await c.statusOf(i, id)) !== 'alive') return false;
        return true;
      },
      60_000,
      100,
      'the restarted agent alive everywhere',
    );
    rejoin.push(Date.now() - tr);
  }
  const med = (xs: number[]) => summarize(xs).p50;
  const max = (xs: number[]) => summarize(xs).max;
  return {
    reps: o.reps,
    polledMs: { median: med(polled), max: max(polled), all: polled },
    fromLogsMs: { median: med(logged), max: max(logged), all: logged },
    restartToAliveEverywhereMs: { median: med(rejoin), max: max(rejoin) },
  };
}

let current: ClusterProcs | undefined;

export const bench: Bench = {
  name: 'propagation',
  description: 'capacity change → all of N real agent processes (N=5,10): p50/p99; dead-detection time',
  async run(args: string[]): Promise<BenchResult> {
    const o = parseArgs(args);
    const onSignal = () => {
      process.stderr.write('propagation: interrupted, stopping the agents\n');
      void (current?.stopAll() ?? Promise.resolve()).then(() => process.exit(130));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const rnd = prng(o.seed);
    const out: Record<string, unknown> = {};
    try {
      for (const n of o.sizes) {
        const c = new ClusterProcs({ prefix: `shoal-bench-${n}-` });
        current = c;
        try {
          process.stdout.write(`N=${n}: starting ${n} agent processes…\n`);
          const bootMs = await startCluster(c, n);
          process.stdout.write(`N=${n}: all alive and converged after ${bootMs} ms; settling 2 s\n`);
          await sleep(2_000);
          const prop = await propagation(c, o, rnd);
          process.stdout.write(
            `N=${n}: ${prop.changes} changes every ${o.spacingMs} ms → last of ${n - 1} agents reached: ` +
              `p50 ${round(prop.toAllMs.p50)} ms, p99 ${round(prop.toAllMs.p99)} ms, max ${round(prop.toAllMs.max)} ms ` +
              `(first agent p50 ${round(prop.toFirstMs.p50)} ms; HTTP round trip p50 ${round(prop.httpRoundTripMs.p50)} ms; ` +
              `≤100 ms: ${prop.within100ms}/${prop.changes}; missing ${prop.missing}; ` +
              `agents used ${prop.agentCoresDuringBurst} cores, machine load ${prop.loadAvg1mBeforeAfter.join('→')})\n`,
          );
          const dead = await deadDetection(c, o, rnd);
          process.stdout.write(
            `N=${n}: dead detection over ${dead.reps} kills: polled median ${dead.polledMs.median} ms, max ${dead.polledMs.max} ms; ` +
              `from logs median ${dead.fromLogsMs.median} ms, max ${dead.fromLogsMs.max} ms\n`,
          );
          out[`n${n}`] = { bootMs, propagation: prop, deadDetection: dead };
        } catch (err) {
          // Report the failure in the JSON line and go on with the next size.
          const error = String((err as Error)?.message ?? err).split('\n')[0];
          process.stdout.write(`N=${n}: FAILED: ${error}\n`);
          out[`n${n}`] = { error };
        } finally {
          await c.stopAll();
          current = undefined;
        }
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    return {
      params: { k: o.k, spacingMs: o.spacingMs, reps: o.reps, seed: o.seed, sizes: o.sizes },
      ...out,
      targetP99ToAllMs: 100,
    };
  },
};
