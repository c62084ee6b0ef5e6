import type { MembershipConfig } from '../node/core/membership.ts';
import { MembershipSim } from '../sim/membership-sim.ts';
import type { BenchResult } from './stats.ts';

/**
 * `npm run bench -- sim-scale --membership-only --size N`: the membership protocol alone (Agent +
 * Membership and its wire on SimNetwork, no StateSync or Placement) at N agents.
 *
 * Phases: (1) start N agents at once, all joining through agent 0, until every live agent sees
 * every other alive; (2) until every agent's retransmit queue is empty (each agent re-gossips
 * every member it learned, λ·log N times); (3) idle for `--idle-s` virtual seconds: CPU per agent
 * per virtual second, loop events, bytes per host per second; (4) crash one agent: virtual time
 * until 99.9% of live agents see it `suspect`, then `dead`; (5) one agent announces a new
 * incarnation: time until it reaches 99.9%; (6) the crashed agent restarts: time until 99.9% see
 * it alive again.
 */

const MiB = 2 ** 20;

export interface MembersBenchOptions {
  size: number;
  /** Start as a formed cluster (no join storm; the join and drain phases are then empty). */
  formed?: boolean;
  seed: number;
  idleS: number;
  joinMaxMs: number;
  maxRssMiB: number;
  force: boolean;
  membership?: Partial<MembershipConfig>;
}

export async function runMembershipOnly(o: MembersBenchOptions): Promise<BenchResult> {
  const out = (s: string) => process.stdout.write(`${s}\n`);
  const rss = () => Math.round(process.memoryUsage().rss / MiB);
  let peakRss = rss();
  const sample = () => {
    peakRss = Math.max(peakRss, rss());
    if (peakRss > o.maxRssMiB && !o.force)
      throw new Error(`sim-scale: RSS ${peakRss} MiB exceeds --max-rss-mib ${o.maxRssMiB}; stopped`);
  };
  const cpuS = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  const wall0 = performance.now();
  const cpu0 = cpuS();
  const c = new MembershipSim({
    seed: o.seed,
    size: o.size,
    network: { routeById: true },
    membership: o.membership,
    persistIntervalMs: 10_000,
    formed: o.formed,
  });
  await c.start();
  sample();
  out(
    `sim-scale (membership only): ${o.size} agents created in ${((performance.now() - wall0) / 1000).toFixed(1)} s wall, RSS ${rss()} MiB`,
  );

  // SHOAL_PROFILE_PHASE=join|drain|idle|crash: a V8 CPU profile of that phase alone (SHOAL_PROFILE_OUT).
  const profilePhase = process.env.SHOAL_PROFILE_PHASE;
  let phaseNo = 0;
  const phaseNames = ['join', 'drain', 'idle', 'crash', 'incarnation', 'restart'];
  const phase = async <T>(fn: () => Promise<T>) => {
    const name = phaseNames[phaseNo++];
    let session: import('node:inspector/promises').Session | undefined;
    if (name !== undefined && name === profilePhase) {
      const { Session } = await import('node:inspector/promises');
      session = new Session();
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
    }
    const w = performance.now();
    const cpu = cpuS();
    const e = c.loop.fired;
    const v = c.loop.now;
    const value = await fn();
    if (session) {
      const { profile } = await session.post('Profiler.stop');
      const file = process.env.SHOAL_PROFILE_OUT ?? `/tmp/sim-members-${name}.cpuprofile`;
      (await import('node:fs')).writeFileSync(file, JSON.stringify(profile));
      out(`profile of phase ${name}: ${file}`);
      session.disconnect();
    }
    return {
      value,
      wallMs: Math.round(performance.now() - w),
      cpuS: cpuS() - cpu,
      events: c.loop.fired - e,
      virtualMs: c.loop.now - v,
    };
  };

  // (1) join storm
  const join = await phase(() =>
    c.runUntil(
      () => {
        sample();
        const up = c.upCount();
        return c.countViews((a) => a.agent.membership.aliveCount === up - 1) === up;
      },
      o.joinMaxMs,
      250,
    ),
  );
  const counters = () => {
    let full = 0;
    let digestOnly = 0;
    for (const a of c.agents) {
      full += a.agent.membership.counters.pushPullsFull;
      digestOnly += a.agent.membership.counters.pushPullsDigestOnly;
    }
    return { full, digestOnly };
  };
  const joinPP = counters();
  out(`join: ${joinPP.full} full push-pull answers, ${joinPP.digestOnly} digest-only`);
  out(
    `join: ${join.value < 0 ? `NOT settled within ${o.joinMaxMs / 1000} s virtual` : `${(join.value / 1000).toFixed(2)} s virtual`}, ` +
      `${(join.wallMs / 1000).toFixed(1)} s wall, ${join.cpuS.toFixed(1)} CPU-s, ${join.events} events, RSS ${rss()} MiB`,
  );

  // (2) the join's retransmit queues drain (every agent re-gossips every member it learned)
  const drain = await phase(() =>
    c.runUntil(
      () => {
        sample();
        return c.countViews((a) => a.agent.membership.queueLength === 0) === c.upCount();
      },
      600_000,
      1000,
    ),
  );
  out(
    `drain: retransmit queues empty ${drain.value < 0 ? 'NOT within 600 s' : `${(drain.value / 1000).toFixed(0)} s`} virtual after the join, ` +
      `${(drain.wallMs / 1000).toFixed(1)} s wall, ${drain.cpuS.toFixed(1)} CPU-s, ${drain.events} events, RSS ${rss()} MiB`,
  );

  // (3) idle, at rest
  c.net.resetStats();
  const idle = await phase(async () => {
    for (let s = 0; s < o.idleS; s++) {
      await c.run(1000);
      sample();
    }
  });
  const traffic = c.net.totalStats();
  const idleBytesPerHostS = Math.round(traffic.sentBytes / o.size / (idle.virtualMs / 1000));
  const idleMsgsPerHostS = Math.round((traffic.sent / o.size / (idle.virtualMs / 1000)) * 10) / 10;
  const cpuUsPerAgentS = Math.round((idle.cpuS * 1e6) / o.size / (idle.virtualMs / 1000));
  out(
    `idle: ${(idle.virtualMs / 1000).toFixed(0)} s virtual in ${(idle.wallMs / 1000).toFixed(1)} s wall ` +
      `(×${(idle.virtualMs / idle.wallMs).toFixed(2)}), ${idle.events} events (${Math.round(idle.events / (idle.wallMs / 1000))}/s), ` +
      `${cpuUsPerAgentS} µs CPU per agent per virtual s (${((idle.cpuS * 1e6) / idle.events).toFixed(2)} µs per event), ${idleMsgsPerHostS} msgs and ${idleBytesPerHostS} B per host per s, RSS ${rss()} MiB`,
  );

  // (4) crash one agent
  const victim = c.get(Math.floor(o.size / 2));
  c.crash(victim.index);
  const need = () => Math.ceil(0.999 * c.upCount());
  const statusIs = (id: string, ok: (s: string | undefined) => boolean) => () =>
    c.countViews((a) => ok(a.agent.membership.get(id)?.status)) >= need();
  const crash = await phase(async () => {
    const suspectMs = await c.runUntil(
      statusIs(victim.id, (s) => s === 'suspect' || s === 'dead'),
      60_000,
      20,
    );
    const deadMs = await c.runUntil(
      statusIs(victim.id, (s) => s === 'dead'),
      60_000,
      20,
    );
    return { suspectMs, deadMs: deadMs < 0 || suspectMs < 0 ? -1 : suspectMs + deadMs };
  });
  out(
    `crash: 99.9% of agents see it suspect after ${crash.value.suspectMs} ms, dead after ${crash.value.deadMs} ms virtual ` +
      `(${(crash.wallMs / 1000).toFixed(1)} s wall)`,
  );

  // (5) a new incarnation
  const announcer = c.get(Math.floor(o.size / 3));
  announcer.agent.membership.refreshSelf();
  const inc = announcer.agent.membership.incarnation;
  const incarnation = await phase(() =>
    c.runUntil(
      () =>
        c.countViews(
          (a) => a === announcer || (a.agent.membership.get(announcer.id)?.incarnation ?? 0) >= inc,
        ) >= need(),
      60_000,
      20,
    ),
  );
  out(
    `convergence: a membership change (new incarnation) reached 99.9% of agents in ${incarnation.value} ms virtual ` +
      `(${(incarnation.wallMs / 1000).toFixed(1)} s wall)`,
  );

  // (6) the crashed agent restarts
  await c.restart(victim.index);
  const back = await phase(() =>
    c.runUntil(
      statusIs(victim.id, (s) => s === 'alive'),
      60_000,
      20,
    ),
  );
  out(
    `restart: 99.9% of agents see it alive again after ${back.value} ms virtual (${(back.wallMs / 1000).toFixed(1)} s wall)`,
  );
  sample();

  const wallMs = performance.now() - wall0;
  const res = process.resourceUsage();
  peakRss = Math.max(peakRss, Math.round(res.maxRSS / 1024));
  const result = {
    mode: 'membership-only',
    size: o.size,
    seed: o.seed,
    membership: o.membership ?? {},
    virtualMs: c.loop.now,
    wallMs: Math.round(wallMs),
    cpuS: Math.round((cpuS() - cpu0) * 10) / 10,
    speedup: Math.round((c.loop.now / wallMs) * 100) / 100,
    events: c.loop.fired,
    eventsPerSec: Math.round(c.loop.fired / (wallMs / 1000)),
    peakRssMiB: peakRss,
    join: {
      virtualMs: join.value,
      wallMs: join.wallMs,
      cpuS: Math.round(join.cpuS * 10) / 10,
      events: join.events,
      pushPullsFull: joinPP.full,
      pushPullsDigestOnly: joinPP.digestOnly,
    },
    drain: {
      virtualMs: drain.value,
      wallMs: drain.wallMs,
      cpuS: Math.round(drain.cpuS * 10) / 10,
      events: drain.events,
    },
    idle: {
      virtualMs: idle.virtualMs,
      wallMs: idle.wallMs,
      speedup: Math.round((idle.virtualMs / idle.wallMs) * 100) / 100,
      events: idle.events,
      eventsPerSec: Math.round(idle.events / (idle.wallMs / 1000)),
      cpuUsPerAgentS,
      cpuUsPerEvent: Math.round(((idle.cpuS * 1e6) / idle.events) * 100) / 100,
      msgsPerHostPerS: idleMsgsPerHostS,
      bytesPerHostPerS: idleBytesPerHostS,
    },
    crash: { suspectP999Ms: crash.value.suspectMs, deadP999Ms: crash.value.deadMs, wallMs: crash.wallMs },
    convergence: { membershipP999Ms: incarnation.value },
    restart: { aliveP999Ms: back.value },
  };
  out(
    `total: ${(wallMs / 1000).toFixed(1)} s wall for ${(c.loop.now / 1000).toFixed(0)} s virtual (×${result.speedup}), ` +
      `${result.events} events (${result.eventsPerSec}/s), ${result.cpuS} CPU-s, peak RSS ${peakRss} MiB`,
  );
  await c.stop();
  return result;
}
