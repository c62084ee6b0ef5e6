import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Prng } from '../node/core/random.ts';
import { LARGE_SCALE, SimCluster } from '../sim/cluster.ts';
import type { Bench, BenchResult } from './stats.ts';

/**
 * The simulator at scale: N real agent cores (Agent + Membership + StateSync + Placement, the
 * classes `shoal agent` runs) on SimNetwork and virtual time, in this one process.
 *
 *   npm run bench -- sim-scale --size 1000 --virtual-s 3600
 *   npm run bench -- sim-1k            (= --size 1000)
 *   npm run bench -- sim-10k           (= --size 10000)
 *
 * Phases: (1) start N agents and run until every agent sees every other alive (join storm
 * through one seed); (2) a capacity change at one agent: virtual time until 99.9% of agents hold
 * the new record version; (3) a deploy workload for `--virtual-s`: `--rate` deploys per virtual
 * second of `--replicas` replicas each, each removed again after `--lifetime-s` (departures).
 * Prints wall time, virtual/wall speed-up, loop events/s, peak RSS, replica placements and bytes
 * per host per second; `--wall-budget-s` stops phase 3 early (reported, never hidden).
 */

const MiB = 2 ** 20;

function rssMiB(): number {
  return Math.round(process.memoryUsage().rss / MiB);
}

export const bench: Bench = {
  name: 'sim-scale',
  description: 'N real agent cores in the simulator: join, 99.9% convergence, placements with departures',
  async run(argv: string[]): Promise<BenchResult> {
    const { values } = parseArgs({
      args: argv,
      options: {
        size: { type: 'string', default: '1000' },
        'shared-state': { type: 'boolean', default: false },
        profile: { type: 'string' },
        seed: { type: 'string', default: '1' },
        'virtual-s': { type: 'string', default: '60' },
        rate: { type: 'string', default: '2' },
        replicas: { type: 'string', default: '10' },
        'lifetime-s': { type: 'string', default: '30' },
        'wall-budget-s': { type: 'string', default: '600' },
        'join-max-s': { type: 'string', default: '120' },
        'max-rss-mib': { type: 'string', default: '8192' },
        force: { type: 'boolean', default: false },
        'membership-only': { type: 'boolean', default: false },
        'idle-s': { type: 'string', default: '60' },
        'probe-interval-ms': { type: 'string' },
        formed: { type: 'boolean', default: false },
      },
    });
    const num = (k: keyof typeof values): number => {
      const v = Number(values[k]);
      if (!Number.isFinite(v) || v < 0)
        throw new Error(`sim-scale: --${k} must be a number ≥ 0, got ${values[k]}`);
      return v;
    };
    const size = num('size');
    const seed = num('seed');
    const virtualS = num('virtual-s');
    const rate = num('rate');
    const replicas = num('replicas');
    const lifetimeS = num('lifetime-s');
    const wallBudgetMs = num('wall-budget-s') * 1000;
    const joinMaxMs = num('join-max-s') * 1000;
    if (size < 2 || !Number.isInteger(size))
      throw new Error(`sim-scale: --size must be an integer ≥ 2, got ${size}`);
    const maxRss = num('max-rss-mib');
    if (values['membership-only']) {
      // Membership alone (no StateSync/Placement): bench/sim-members.ts.
      const { runMembershipOnly } = await import('./sim-members.ts');
      return runMembershipOnly({
        size,
        seed,
        idleS: num('idle-s'),
        joinMaxMs,
        maxRssMiB: maxRss,
        force: values.force,
        formed: values.formed,
        membership:
          values['probe-interval-ms'] === undefined
            ? undefined
            : { probeIntervalMs: num('probe-interval-ms') },
      });
    }
    // Measured: ≈ 2.2 GiB peak at 1,000 agents, dominated by per-agent tables of N entries (N²).
    // The shared-state stand-in has no per-agent state tables: no projection, the RSS check stops it.
    const projectedMiB = Math.round(2250 * (size / 1000) ** 2);
    if (projectedMiB > maxRss && !values.force && !values['shared-state']) {
      throw new Error(
        `sim-scale: ${size} agents would need ≈ ${projectedMiB} MiB (2.2 GiB at 1,000, growing with N²; ` +
          `docs/simulator.md, Performance) > --max-rss-mib ${maxRss}. Not started; --force to try anyway.`,
      );
    }

    let peakRss = rssMiB();
    const sample = () => {
      peakRss = Math.max(peakRss, rssMiB());
      if (peakRss > maxRss && !values.force)
        throw new Error(`sim-scale: RSS ${peakRss} MiB exceeds --max-rss-mib ${maxRss}; stopped`);
    };
    const wall0 = performance.now();
    const sharedState = values['shared-state'];
    const formed = values.formed;
    const membership =
      values['probe-interval-ms'] === undefined ? undefined : { probeIntervalMs: num('probe-interval-ms') };
    const c = new SimCluster({ ...LARGE_SCALE, seed, size, sharedState, formed, membership });
    await c.start();
    sample();
    const startWallMs = performance.now() - wall0;
    process.stdout.write(
      `sim-scale: ${size} agents${sharedState ? ' (shared-state stand-in)' : ''}${formed ? ', formed' : ''} created in ` +
        `${(startWallMs / 1000).toFixed(1)} s wall, RSS ${rssMiB()} MiB\n`,
    );

    // ── phase 1: join storm ──
    let w = performance.now();
    let e0 = c.loop.fired;
    const joinVirtualMs = await c.runUntil(
      () => {
        sample();
        return c.membershipSettled('dead', true);
      },
      joinMaxMs,
      500,
    );
    const joinWallMs = performance.now() - w;
    const joinEvents = c.loop.fired - e0;
    process.stdout.write(
      `join: ${joinVirtualMs < 0 ? `NOT settled within ${joinMaxMs / 1000} s virtual` : `${(joinVirtualMs / 1000).toFixed(1)} s virtual`}, ` +
        `${(joinWallMs / 1000).toFixed(1)} s wall, ${joinEvents} events, RSS ${rssMiB()} MiB\n`,
    );

    // ── phase 2: convergence of one capacity change ──
    c.net.resetStats();
    const quiet0 = c.loop.now;
    await c.run(2000); // idle traffic baseline (membership probes, anti-entropy, placement scans)
    const idle = c.net.totalStats();
    const idleS = (c.loop.now - quiet0) / 1000;
    const changer = c.get(Math.floor(size / 2));
    const facts = changer.sync.hostFacts();
    changer.sync.setHost({ ...facts, cpuMilli: facts.cpuMilli - 1000 });
    const newVersion = changer.sync.state.hosts.versionOf(changer.id)!;
    const need = Math.ceil(0.999 * c.upAgents().length);
    const reached = () => {
      let n = 0;
      for (const a of c.agents)
        if (a.up && (a.sync.state.hosts.versionOf(changer.id) ?? 0) >= newVersion) n++;
      return n;
    };
    const convergeMs = await c.runUntil(() => reached() >= need, 30_000, 5);
    const converge100Ms = await c.runUntil(() => reached() >= c.upAgents().length, 30_000, 50);
    // The same for a membership change (SWIM piggyback/gossip: fanout 3 every 200 ms, the model
    // Serf's convergence simulator describes) — a new incarnation announced by one agent.
    const announcer = c.get(Math.floor(size / 3));
    announcer.agent.membership.refreshSelf();
    const inc = announcer.agent.membership.incarnation;
    const seenInc = () => {
      let n = 0;
      for (const a of c.agents)
        if (a.up && (a === announcer || (a.agent.membership.get(announcer.id)?.incarnation ?? 0) >= inc)) n++;
      return n;
    };
    const memberConvergeMs = await c.runUntil(() => seenInc() >= need, 30_000, 20);
    sample();
    process.stdout.write(
      `convergence: a membership change (new incarnation) reached 99.9% of agents in ${memberConvergeMs < 0 ? 'NOT within 30 s' : `${memberConvergeMs} ms`} virtual\n`,
    );
    process.stdout.write(
      `convergence: a capacity change reached 99.9% of agents in ${convergeMs < 0 ? 'NOT within 30 s' : `${convergeMs} ms`} virtual ` +
        `(100%: ${converge100Ms < 0 ? 'not within 30 s more' : `+${converge100Ms} ms`})\n`,
    );

    // ── phase 3: deploys with departures ──
    // `--profile DIR`: a V8 CPU profile of this phase alone (DIR/sim-scale-<N>-workload.cpuprofile).
    let session: Session | undefined;
    if (values.profile) {
      session = new Session();
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
    }
    const rng = new Prng(`sim-scale-workload-${seed}`);
    const removals: { at: number; id: string; by: number }[] = [];
    c.net.resetStats();
    const awards0 = c.agents.reduce((n, a) => n + a.placement.counters.awardsAccepted, 0);
    w = performance.now();
    e0 = c.loop.fired;
    const v0 = c.loop.now;
    let submitted = 0;
    let removed = 0;
    let lastWall = w;
    let lastFired = e0;
    let stoppedEarly = false;
    const stepMs = 1000;
    while (c.loop.now - v0 < virtualS * 1000) {
      if (performance.now() - w > wallBudgetMs) {
        stoppedEarly = true;
        break;
      }
      // Poisson-ish arrivals: `rate` per second on average, each at a random agent.
      const n = Math.floor(rate) + (rng.next() < rate - Math.floor(rate) ? 1 : 0);
      for (let k = 0; k < n; k++) {
        const by = rng.int(size);
        const a = c.get(by);
        if (!a.up) continue;
        const id = `d${submitted++}`;
        a.placement.submit(id, {
          name: id,
          replicas,
          strategy: rng.next() < 0.5 ? 'spread' : 'binpack',
          spec: { resources: { cpu: { milli: 100 }, memoryBytes: 128 * MiB } },
        });
        removals.push({ at: c.loop.now + lifetimeS * 1000, id, by });
      }
      while (removals.length > 0 && removals[0]!.at <= c.loop.now) {
        const r = removals.shift()!;
        c.get(r.by).sync.removeIntent(r.id);
        removed++;
      }
      await c.run(stepMs);
      sample();
      // Progress on stderr every 300 s virtual: is the rate steady over the run?
      if ((c.loop.now - v0) % 300_000 < stepMs) {
        const now = performance.now();
        process.stderr.write(
          `  workload ${((c.loop.now - v0) / 1000).toFixed(0)} s virtual: last 300 s took ` +
            `${((now - lastWall) / 1000).toFixed(1)} s wall, ${c.loop.fired - lastFired} events, RSS ${rssMiB()} MiB\n`,
        );
        lastWall = now;
        lastFired = c.loop.fired;
      }
    }
    const workWallMs = performance.now() - w;
    if (session && values.profile) {
      const { profile } = await session.post('Profiler.stop');
      mkdirSync(values.profile, { recursive: true });
      const file = join(values.profile, `sim-scale-${size}-workload.cpuprofile`);
      writeFileSync(file, JSON.stringify(profile));
      session.disconnect();
      process.stdout.write(`profile of the workload phase: ${file}\n`);
    }
    const workVirtualMs = c.loop.now - v0;
    const workEvents = c.loop.fired - e0;
    const placements = c.agents.reduce((n, a) => n + a.placement.counters.awardsAccepted, 0) - awards0;
    const traffic = c.net.totalStats();
    const D = 6; // gossipsub mesh degree: a topic message reaches a host about D times
    const perHostS = (bytes: number, s: number) => Math.round(bytes / size / s);
    const idleOut = perHostS(idle.sentBytes + idle.topicRecvBytes * D, idleS);
    const workOut = perHostS(traffic.sentBytes + traffic.topicRecvBytes * D, workVirtualMs / 1000);
    const totalWallMs = performance.now() - wall0;
    const totalVirtualMs = c.loop.now;
    const res = process.resourceUsage();
    peakRss = Math.max(peakRss, Math.round(res.maxRSS / 1024));
    const out = {
      size,
      seed,
      sharedState,
      formed,
      membership: membership ?? {},
      virtualMs: totalVirtualMs,
      wallMs: Math.round(totalWallMs),
      speedup: Math.round((totalVirtualMs / totalWallMs) * 100) / 100,
      events: c.loop.fired,
      eventsPerSec: Math.round(c.loop.fired / (totalWallMs / 1000)),
      peakRssMiB: peakRss,
      startWallMs: Math.round(startWallMs),
      join: { virtualMs: joinVirtualMs, wallMs: Math.round(joinWallMs), events: joinEvents },
      convergence: {
        p999Ms: convergeMs,
        allMs: converge100Ms < 0 ? -1 : convergeMs + converge100Ms,
        membershipP999Ms: memberConvergeMs,
      },
      workload: {
        virtualMs: workVirtualMs,
        wallMs: Math.round(workWallMs),
        speedup: Math.round((workVirtualMs / workWallMs) * 100) / 100,
        events: workEvents,
        eventsPerSec: Math.round(workEvents / (workWallMs / 1000)),
        deploys: submitted,
        removed,
        placements,
        stoppedEarly,
      },
      bytesPerHostPerSec: { idle: idleOut, workload: workOut, meshDegreeAssumed: D },
      cpuUserS: Math.round(res.userCPUTime / 1e6),
    };
    process.stdout.write(
      `workload: ${submitted} deploys × ${replicas} replicas, ${removed} removed, ${placements} replica placements in ` +
        `${(workVirtualMs / 1000).toFixed(0)} s virtual / ${(workWallMs / 1000).toFixed(1)} s wall` +
        `${stoppedEarly ? ' (STOPPED at the wall budget)' : ''}\n` +
        `total: ${(totalWallMs / 1000).toFixed(1)} s wall for ${(totalVirtualMs / 1000).toFixed(0)} s virtual ` +
        `(speed-up ×${out.speedup}), ${out.events} events (${out.eventsPerSec}/s), peak RSS ${peakRss} MiB\n` +
        `bytes/host/s (direct + topic × D=${D}): idle ${idleOut}, under workload ${workOut}\n`,
    );
    await c.stop();
    return out;
  },
};

/** `sim-scale` with a preset size and arguments (later flags still win). */
export function sized(size: number, preset: string[] = []): Bench {
  return {
    name: `sim-${size >= 1000 ? `${size / 1000}k` : size}`,
    description: `sim-scale with ${size} agents${preset.length > 0 ? ` (${preset.join(' ')})` : ''}`,
    run: (args) => bench.run(['--size', String(size), ...preset, ...args]),
  };
}
