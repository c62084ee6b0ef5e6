import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SimCluster } from '../sim/cluster.ts';

/**
 * Property: over random clusters, deploys and fault schedules (loss, delay spikes, partitions,
 * crashes and restarts), the placement invariants hold — no host overcommits at any instant, and
 * once faults stop every replica of every deploy runs on exactly one live host, with all agents
 * converged. A failure prints a one-line replay command.
 *
 * Replay: SHOAL_PROP_SEED=<seed> [SHOAL_PROP_PATH=<path>] npx vitest run test/placement-props.test.ts
 */

const STRATEGIES = ['binpack', 'spread', 'auto', 'global', 'fill', 'each'] as const;

const deployArb = fc.record({
  at: fc.integer({ min: 0, max: 8_000 }),
  agent: fc.nat(),
  replicas: fc.integer({ min: 1, max: 4 }),
  cpu: fc.constantFrom(250, 500, 1000, 2000),
  memGiB: fc.integer({ min: 1, max: 6 }),
  strategy: fc.constantFrom(...STRATEGIES),
  scaleTo: fc.option(fc.integer({ min: 0, max: 5 }), { nil: undefined }),
  remove: fc.boolean(),
  hostLimit: fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
});

const faultArb = fc.oneof(
  fc.record({
    kind: fc.constant('crash' as const),
    at: fc.integer({ min: 0, max: 10_000 }),
    agent: fc.nat(),
    downMs: fc.integer({ min: 500, max: 8_000 }),
  }),
  fc.record({
    kind: fc.constant('partition' as const),
    at: fc.integer({ min: 0, max: 10_000 }),
    split: fc.integer({ min: 1, max: 6 }),
    forMs: fc.integer({ min: 500, max: 10_000 }),
  }),
  fc.record({
    kind: fc.constant('loss' as const),
    at: fc.integer({ min: 0, max: 10_000 }),
    loss: fc.double({ min: 0.01, max: 0.3, noNaN: true }),
    forMs: fc.integer({ min: 500, max: 8_000 }),
  }),
  fc.record({
    kind: fc.constant('delay' as const),
    at: fc.integer({ min: 0, max: 10_000 }),
    extraMs: fc.integer({ min: 20, max: 400 }),
    forMs: fc.integer({ min: 500, max: 5_000 }),
  }),
);

const scenarioArb = fc.record({
  seed: fc.integer({ min: 1, max: 2 ** 30 }),
  size: fc.integer({ min: 3, max: 7 }),
  deploys: fc.array(deployArb, { minLength: 1, maxLength: 10 }),
  faults: fc.array(faultArb, { maxLength: 5 }),
  /** State publishes paced as the real agent paces them (StateSyncConfig.publishGapMs), or not. */
  publishGapMs: fc.constantFrom(0, 50),
  /** Deploys awarded from the coordinator's view (the default) or always auctioned. */
  directAward: fc.boolean(),
});

type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

const GiB = 2 ** 30;

async function runScenario(sc: Scenario): Promise<string[]> {
  const c = new SimCluster({
    seed: sc.seed,
    size: sc.size,
    link: { baseMs: 1, jitterMs: 4, loss: 0 },
    sync: { publishGapMs: sc.publishGapMs },
    placement: { directAward: sc.directAward },
  });
  await c.start();
  await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000, 100);
  type Ev = { at: number; run: () => Promise<void> | void };
  const events: Ev[] = [];
  const down = new Set<number>();
  sc.deploys.forEach((d, i) => {
    const id = `d${i}`;
    events.push({
      at: d.at,
      run: () => {
        const a = c.upAgents()[d.agent % c.upAgents().length]!;
        a.placement.submit(id, {
          name: id,
          replicas: d.replicas,
          strategy: d.strategy,
          spec: {
            resources: { cpu: { milli: d.cpu }, memoryBytes: d.memGiB * GiB },
            ...(d.hostLimit !== undefined && (d.strategy === 'fill' || d.strategy === 'each')
              ? { hostLimit: d.hostLimit }
              : {}),
          },
        });
      },
    });
    if (d.scaleTo !== undefined) {
      events.push({
        at: d.at + 1_500,
        run: () => void c.upAgents()[0]!.sync.updateIntent(id, { replicas: d.scaleTo! }),
      });
    }
    if (d.remove) events.push({ at: d.at + 4_000, run: () => c.upAgents().at(-1)!.sync.removeIntent(id) });
  });
  for (const f of sc.faults) {
    if (f.kind === 'crash') {
      const i = f.agent % sc.size;
      events.push({
        at: f.at,
        run: () => {
          if (!down.has(i) && c.upAgents().length > 2) {
            c.crash(i);
            down.add(i);
          }
        },
      });
      events.push({
        at: f.at + f.downMs,
        run: async () => {
          if (down.has(i)) {
            down.delete(i);
            await c.restart(i);
          }
        },
      });
    } else if (f.kind === 'partition') {
      events.push({
        at: f.at,
        run: () => {
          const heal = c.net.partition(c.agents.slice(0, f.split % sc.size || 1).map((a) => a.id));
          events.push({ at: f.at + f.forMs, run: heal });
          events.sort((a, b) => a.at - b.at);
        },
      });
    } else if (f.kind === 'loss') {
      events.push({ at: f.at, run: () => c.net.setLoss(f.loss) });
      events.push({ at: f.at + f.forMs, run: () => c.net.setLoss(0) });
    } else {
      events.push({ at: f.at, run: () => setDelay(c, f.extraMs) });
      events.push({ at: f.at + f.forMs, run: () => setDelay(c, 0) });
    }
  }
  events.sort((a, b) => a.at - b.at);
  const violations: string[] = [];
  const start = c.loop.now;
  while (events.length > 0) {
    const ev = events.shift()!;
    while (c.loop.now - start < ev.at) {
      await c.run(50);
      violations.push(...c.placementViolations(false));
      if (violations.length > 0) return violations;
    }
    await ev.run();
  }
  // Faults stop: heal, no loss, everyone back.
  c.net.heal();
  c.net.setLoss(0);
  setDelay(c, 0);
  for (const i of [...down]) await c.restart(i);
  const ok = await c.runUntil(
    () => {
      violations.push(...c.placementViolations(false));
      return (
        violations.length > 0 ||
        (c.membershipSettled() && c.converged() && c.placementViolations(true).length === 0)
      );
    },
    90_000,
    100,
  );
  if (violations.length > 0) return violations;
  if (ok < 0) {
    return [
      `not at rest 90 s after faults stopped: ${c.placementViolations(true).slice(0, 5).join('; ')}`,
      `membership settled: ${c.membershipSettled()}, converged: ${c.converged()}`,
    ];
  }
  return [];
}

function setDelay(c: SimCluster, extraMs: number): void {
  c.net.clearLinks();
  if (extraMs > 0)
    for (const a of c.agents)
      for (const b of c.agents)
        if (a !== b) c.net.setLink(a.id, b.id, { baseMs: 1 + extraMs, jitterMs: 4 }, true);
}

describe('placement invariants under random faults (fast-check)', () => {
  it('no overcommit ever; exactly once at rest; convergence', { timeout: 600_000 }, async () => {
    const seed = process.env.SHOAL_PROP_SEED ? Number(process.env.SHOAL_PROP_SEED) : Date.now() % 2 ** 31;
    const path = process.env.SHOAL_PROP_PATH;
    const numRuns = Number(process.env.SHOAL_PROP_RUNS ?? (process.env.SHOAL_PROP_SEED ? 1 : 40));
    const result = await fc.check(
      fc.asyncProperty(scenarioArb, async (sc) => {
        const v = await runScenario(sc);
        if (v.length > 0) throw new Error(v.slice(0, 5).join('\n'));
      }),
      { seed, path, numRuns, endOnFailure: true },
    );
    if (result.failed) {
      const replay = `SHOAL_PROP_SEED=${result.seed}${result.counterexamplePath ? ` SHOAL_PROP_PATH=${result.counterexamplePath}` : ''} npx vitest run test/placement-props.test.ts`;
      console.error(
        `placement property failed: ${String(result.errorInstance)}\ncounterexample: ${JSON.stringify(result.counterexample)}\nreplay: ${replay}`,
      );
      expect.fail(`placement invariants violated — replay with: ${replay}`);
    }
    console.log(`[placement-props] ${result.numRuns} random scenarios passed (seed ${seed})`);
  });
});
