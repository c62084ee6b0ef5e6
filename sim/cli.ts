import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { type Command, InvalidArgumentError } from 'commander';
import { type FuzzOutcome, fuzzOne, replayCommand } from './fuzz.ts';
import { planSearch } from './plan.ts';
import { SimPool } from './pool.ts';
import { renderReport } from './report.ts';
import { runScenario } from './runner.ts';
import { loadScenario, ScenarioError, scenarioJsonSchema } from './scenario.ts';

/**
 * `shoal sim …`: run scenarios (summary.json + report.html), plan a cluster size, fuzz fault
 * schedules. Wired into the main CLI with `registerSimCommands(program)`.
 */

function intArg(name: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min)
      throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}`);
    return n;
  };
}

function ratioArg(v: string): number {
  const n = Number(v);
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError('--target must be in (0, 1]');
  return n;
}

function fail(err: unknown): never {
  if (err instanceof ScenarioError) {
    console.error(`error: ${err.message}`);
    process.exit(2);
  }
  throw err;
}

function progressBar(enabled: boolean, format: string): cliProgress.SingleBar | undefined {
  if (!enabled || !process.stderr.isTTY) return undefined;
  return new cliProgress.SingleBar(
    { format, stream: process.stderr, etaBuffer: 50, fps: 5, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
}

export function registerSimCommands(program: Command): void {
  const sim = program
    .command('sim')
    .description('simulate a cluster running the real agent core on virtual time');

  sim
    .command('run')
    .description('run a scenario; writes DIR/summary.json (deterministic) and DIR/report.html')
    .argument('<scenario>', 'scenario YAML file (examples in sim/scenarios/)')
    .option('--seed <n>', 'seed (default: the scenario’s)', intArg('--seed'))
    .option('--out <dir>', 'output directory', 'sim-out')
    .option(
      '--trace',
      'keep the full simulator trace (DIR/trace.log; its tail goes into a violation excerpt)',
    )
    .option('--no-progress', 'no progress bar')
    .action(async (file: string, o: { seed?: number; out: string; trace?: boolean; progress: boolean }) => {
      let s: ReturnType<typeof loadScenario>;
      try {
        s = loadScenario(file);
      } catch (err) {
        fail(err);
      }
      const seed = o.seed ?? s.seed;
      const bar = progressBar(
        o.progress,
        'sim {bar} {percentage}% | virtual {vt}/{total} s | {eps} events/s | ETA {eta_formatted}',
      );
      const wall0 = performance.now();
      const cpu0 = process.cpuUsage();
      let lastT = wall0;
      let lastEvents = 0;
      let eps = 0;
      bar?.start(1, 0, { vt: '0', total: '?', eps: 0 });
      let result: Awaited<ReturnType<typeof runScenario>>;
      try {
        result = await runScenario(s, {
          seed,
          trace: o.trace,
          onProgress: (p) => {
            if (!bar) return;
            const t = performance.now();
            if (t - lastT >= 500) {
              eps = Math.round(((p.events - lastEvents) * 1000) / (t - lastT));
              lastT = t;
              lastEvents = p.events;
            }
            bar.setTotal(p.totalMs);
            bar.update(p.virtualMs, {
              vt: (p.virtualMs / 1000).toFixed(0),
              total: (p.totalMs / 1000).toFixed(0),
              eps,
            });
          },
        });
      } catch (err) {
        bar?.stop();
        fail(err);
      }
      bar?.update(bar.getTotal());
      bar?.stop();
      const { summary, cluster } = result;
      const wallMs = Math.round(performance.now() - wall0);
      const cpu = process.cpuUsage(cpu0);
      mkdirSync(o.out, { recursive: true });
      writeFileSync(join(o.out, 'summary.json'), `${JSON.stringify(summary, null, 1)}\n`);
      writeFileSync(join(o.out, 'report.html'), renderReport(summary));
      const wall = {
        wallMs,
        cpuMs: Math.round((cpu.user + cpu.system) / 1000),
        events: summary.events,
        eventsPerS: Math.round((summary.events * 1000) / Math.max(1, wallMs)),
        virtualPerWall: +((cluster.loop.now / Math.max(1, wallMs)) as number).toFixed(2),
      };
      writeFileSync(join(o.out, 'wall.json'), `${JSON.stringify(wall, null, 1)}\n`);
      if (o.trace && cluster.trace) writeFileSync(join(o.out, 'trace.log'), `${cluster.trace.join('\n')}\n`);
      const m = summary.metrics;
      console.log(
        `${summary.scenario} seed ${seed}: ${summary.hosts} hosts, ${summary.events} events in ${(wallMs / 1000).toFixed(1)} s wall (${wall.eventsPerS} events/s)`,
      );
      if (m) {
        console.log(
          `  placed ${m.placed}/${m.replicas} replicas; success within ${s.plan.deadline_s} s: ${m.successRatio === null ? '–' : `${(m.successRatio * 100).toFixed(2)}%`}; latency p50 ${m.placementLatencyMs.p50} ms p99 ${m.placementLatencyMs.p99} ms; ${m.gossip.bytesPerHostPerS.total} B/host/s`,
        );
      }
      if (summary.violation) {
        const v = summary.violation;
        console.log(`VIOLATION (${v.kind}) at ${(v.atMs / 1000).toFixed(3)} s, seed ${seed}: ${v.message}`);
        console.log(v.details.slice(0, 10).join('\n'));
        console.log('--- trace excerpt ---');
        console.log(v.excerpt.join('\n'));
        console.log(`replay: npx shoal sim run ${file} --seed ${seed} --out ${o.out} --trace`);
        process.exitCode = 1;
      } else {
        console.log(
          `  invariants held (${summary.invariantChecks} book checks; at rest ${summary.restAfterMs} ms after faults stopped)`,
        );
      }
      console.log(
        `  wrote ${join(o.out, 'summary.json')}, ${join(o.out, 'report.html')}, ${join(o.out, 'wall.json')}`,
      );
    });

  sim
    .command('plan')
    .description(
      'smallest cluster (same host mix) whose placement success meets a target; one sim per worker thread',
    )
    .argument('<scenario>', 'scenario YAML file')
    .option('--target <ratio>', 'placement success target', ratioArg, 0.99)
    .option('--seed <n>', 'seed (default: the scenario’s)', intArg('--seed'))
    .option('--min <hosts>', 'smallest host count to consider', intArg('--min', 1), 1)
    .option('--max <hosts>', 'largest host count to consider', intArg('--max', 1), 2000)
    .option(
      '--workers <n>',
      'worker threads (default: cores)',
      intArg('--workers', 1),
      availableParallelism(),
    )
    .action(
      async (
        file: string,
        o: { target: number; seed?: number; min: number; max: number; workers: number },
      ) => {
        let s: ReturnType<typeof loadScenario>;
        try {
          s = loadScenario(file);
        } catch (err) {
          fail(err);
        }
        const pool = new SimPool(o.workers);
        const t0 = performance.now();
        try {
          const r = await planSearch(file, {
            target: o.target,
            seed: o.seed ?? s.seed,
            min: o.min,
            max: o.max,
            pool,
            onProbe: (p) =>
              console.log(
                `  ${String(p.hosts).padStart(5)} hosts: success ${p.successRatio === null ? '–' : `${(p.successRatio * 100).toFixed(2)}%`}${p.violation ? `  VIOLATION ${p.violation}` : ''}`,
              ),
          });
          const secs = ((performance.now() - t0) / 1000).toFixed(1);
          if (r.hosts === null) {
            console.log(
              `no cluster up to ${o.max} hosts meets ${o.target} (${r.probes.length} runs, ${secs} s)`,
            );
            process.exitCode = 1;
          } else {
            console.log(
              `smallest cluster meeting ${(o.target * 100).toFixed(2)}% placement success within ${s.plan.deadline_s} s: ${r.hosts} hosts (${r.probes.length} runs on ${pool.size} workers, ${secs} s)`,
            );
          }
          if (r.probes.some((p) => p.violation)) process.exitCode = 1;
        } finally {
          await pool.close();
        }
      },
    );

  sim
    .command('fuzz')
    .description(
      'random small clusters under random fault schedules; prints each failing seed with a replay command',
    )
    .option('--seeds <n>', 'number of seeds', intArg('--seeds', 1), 20)
    .option('--from <seed>', 'first seed', intArg('--from'), 1)
    .option(
      '--workers <n>',
      'worker threads (default: cores; 1 = in this process)',
      intArg('--workers', 1),
      availableParallelism(),
    )
    .option('--verbose', 'print every seed, and the full excerpt of failures')
    .option('--no-progress', 'no progress bar')
    .action(
      async (o: { seeds: number; from: number; workers: number; verbose?: boolean; progress: boolean }) => {
        const seeds = Array.from({ length: o.seeds }, (_, i) => o.from + i);
        const t0 = performance.now();
        const bar = o.verbose
          ? undefined
          : progressBar(
              o.progress,
              'fuzz {bar} {value}/{total} seeds | {failed} failed | ETA {eta_formatted}',
            );
        bar?.start(seeds.length, 0, { failed: 0 });
        const failures: FuzzOutcome[] = [];
        const report = (r: FuzzOutcome) => {
          if (!r.ok) failures.push(r);
          bar?.increment(1, { failed: failures.length });
          if (o.verbose || !r.ok) {
            const line = r.ok
              ? `seed ${r.seed}: ok (${r.hosts} hosts, ${r.events} events, ${r.wallMs} ms)`
              : `FAIL seed ${r.seed}: ${r.message}\n  replay: ${replayCommand(r.seed)}`;
            console.log(line);
            if (!r.ok && o.verbose) console.log(r.excerpt.map((l) => `    ${l}`).join('\n'));
          }
        };
        const workers = Math.min(o.workers, seeds.length);
        if (workers <= 1) {
          for (const seed of seeds) report(await fuzzOne(seed, o.verbose === true));
        } else {
          const pool = new SimPool(workers);
          try {
            await Promise.all(
              seeds.map((seed) => pool.run<FuzzOutcome>({ kind: 'fuzz', seed }).then(report)),
            );
          } finally {
            await pool.close();
          }
        }
        bar?.stop();
        const secs = ((performance.now() - t0) / 1000).toFixed(1);
        console.log(
          `fuzz: ${seeds.length} seeds (${o.from}…${o.from + seeds.length - 1}), ${failures.length} failed, ${secs} s wall on ${workers} worker(s)`,
        );
        for (const f of failures.sort((a, b) => a.seed - b.seed))
          console.log(`  seed ${f.seed}: ${replayCommand(f.seed)}`);
        if (failures.length > 0) process.exitCode = 1;
      },
    );

  sim
    .command('schema')
    .description('print the JSON Schema of scenario files')
    .action(() => {
      console.log(JSON.stringify(scenarioJsonSchema(), null, 2));
    });
}
