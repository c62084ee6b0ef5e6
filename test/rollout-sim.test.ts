import { describe, expect, it } from 'vitest';
import { simProgram } from '../engines/sim.ts';
import { rollbackTarget, specFor, templateHash, templateOf, withSystemKeys } from '../node/core/rollout.ts';
import { deploysBackend } from '../node/deploys-backend.ts';
import { SimCluster } from '../sim/cluster.ts';

/**
 * Rolling updates, automatic rollback, manual rollback and run-to-completion jobs on the real core
 * (placement + reconcile + rollouts) with the sim engine, in virtual time.
 */

const GiB = 2 ** 30;
const V1 = 'shoal/app:1';
const V2 = 'shoal/app:2';

const spec = (image: string, extra: Record<string, unknown> = {}) => ({
  resources: { cpu: { milli: 500 }, memoryBytes: GiB },
  image,
  command: simProgram({}),
  update: { parallelism: 1, monitorMs: 1000 },
  ...extra,
});

async function cluster(seed: number, images?: string[]) {
  const c = new SimCluster({
    seed,
    size: 4,
    engine: { startDelayMs: [20, 80], ...(images ? { images } : {}) },
  });
  await c.start();
  await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000);
  return c;
}

/** Running sim workloads of deploy `d` across the cluster, with their template hash. */
function running(c: SimCluster, d: string) {
  const out: { host: string; id: string; version: string; createdAt: number }[] = [];
  for (const a of c.agents) {
    for (const w of c.machines[a.index]?.all(a.id) ?? []) {
      if (w.spec.deployId === d && w.state === 'running') {
        out.push({
          host: a.id,
          id: w.spec.id,
          version: w.spec.labels?.['shoal.spec-hash'] ?? '',
          createdAt: w.createdAt,
        });
      }
    }
  }
  return out;
}

describe('rolling updates (sim)', () => {
  it('rolls a new image out one replica at a time behind the monitor period, and records history', async () => {
    const c = await cluster(41);
    const api = deploysBackend(c.get(2).sync, c.get(2).placement, c.get(2).agent.membership);
    api.submit('web', { name: 'web', replicas: 4, strategy: 'spread', spec: spec(V1) });
    const v1 = templateHash(templateOf(spec(V1)));
    const v2 = templateHash(templateOf(spec(V2)));
    expect(await c.runUntil(() => running(c, 'web').length === 4, 15_000, 20)).toBeGreaterThanOrEqual(0);
    expect(running(c, 'web').every((w) => w.version === v1)).toBe(true);

    // Edit at another agent: only the template changes; the coordinator rolls it out.
    const api3 = deploysBackend(c.get(3).sync, c.get(3).placement, c.get(3).agent.membership);
    api3.updateSpec('web', { image: V2 });
    let maxDown = 0;
    let lastNew = 0;
    let monotonic = true;
    const t = await c.runUntil(
      () => {
        const r = running(c, 'web');
        maxDown = Math.max(maxDown, 4 - r.length);
        const n = r.filter((w) => w.version === v2).length;
        if (n < lastNew) monotonic = false;
        lastNew = n;
        return n === 4 && api.get('web')?.rollout?.state === 'done';
      },
      60_000,
      20,
    );
    expect(t).toBeGreaterThanOrEqual(0);
    expect(maxDown).toBeLessThanOrEqual(1); // parallelism 1, stop-first
    expect(monotonic).toBe(true);
    // Four batches, each waiting ≥ 1 s of monitoring: the rollout cannot have been instant.
    expect(t).toBeGreaterThanOrEqual(4 * 1000);
    const view = api.get('web')!;
    expect(view.version).toBe(2);
    expect(view.history?.map((h) => [h.version, h.image, h.state])).toEqual([
      [1, V1, 'done'],
      [2, V2, 'done'],
    ]);
    expect(view.instances.every((i) => i.updated && i.runs === v2 && i.version === 2)).toBe(true);

    // `shoal rollback`: back to version 1's template, rolled out the same way (as version 3).
    expect(api3.rollback('web')).toMatchObject({ version: 1 });
    expect(
      await c.runUntil(
        () =>
          running(c, 'web').filter((w) => w.version === v1).length === 4 &&
          api.get('web')?.rollout?.state === 'done',
        60_000,
        20,
      ),
    ).toBeGreaterThanOrEqual(0);
    expect(api.get('web')!.spec.image).toBe(V1);
    expect(api.get('web')!.version).toBe(3);
    expect(c.placementViolations(true)).toEqual([]);
  });

  it('a broken image fails on the first replica and the deploy rolls back by itself; the others are never touched', async () => {
    const c = await cluster(42, [V1]); // V2 does not exist on any host
    const api = deploysBackend(c.get(0).sync, c.get(0).placement, c.get(0).agent.membership);
    api.submit('svc', { name: 'svc', replicas: 3, strategy: 'spread', spec: spec(V1) });
    expect(await c.runUntil(() => running(c, 'svc').length === 3, 15_000, 20)).toBeGreaterThanOrEqual(0);
    const before = new Map(running(c, 'svc').map((w) => [w.id, w.createdAt]));
    api.updateSpec('svc', { image: V2 });
    const t = await c.runUntil(() => api.get('svc')?.rollout?.state === 'rolled-back', 30_000, 20);
    expect(t).toBeGreaterThanOrEqual(0);
    const view = api.get('svc')!;
    expect(view.spec.image).toBe(V1); // the spec users read is the one that runs
    expect(view.rollout?.reason).toMatch(/replica \d on .*: failed/);
    expect(view.rollout?.reason).toMatch(/shoal\/app:2/);
    expect(view.history?.at(-1)).toMatchObject({ version: 2, image: V2, state: 'rolled-back' });
    // Back to three running V1 replicas; exactly one of them was re-created.
    expect(await c.runUntil(() => running(c, 'svc').length === 3, 15_000, 20)).toBeGreaterThanOrEqual(0);
    const after = running(c, 'svc');
    const untouched = after.filter((w) => before.get(w.id) === w.createdAt);
    expect(untouched.length).toBe(2);
    await c.run(3_000);
    expect(running(c, 'svc').length).toBe(3); // and it stays so: no flapping
  });

  it('Placement.submit (no API in front) writes the rollout record with the deploy, and an edit through it rolls out', async () => {
    const c = await cluster(43);
    const a = c.get(1);
    a.placement.submit('p', { name: 'p', replicas: 2, strategy: 'spread', spec: spec(V1) });
    // In the same change as the deploy: nothing is left for the coordinator to write.
    const first = a.sync.state.intents.get('p')!;
    expect(first.spec.rollout).toMatchObject({ version: 1, state: 'done' });
    expect(await c.runUntil(() => running(c, 'p').length === 2, 15_000, 20)).toBeGreaterThanOrEqual(0);
    await c.run(2_000);
    for (const x of c.agents) expect(x.sync.state.intents.get('p')!.revision).toEqual(first.revision);
    // A changed template through submit: the next version, rolled out from the stable one.
    c.get(2).placement.submit('p', { name: 'p', replicas: 2, strategy: 'spread', spec: spec(V2) });
    const ro = c.get(2).sync.state.intents.get('p')!.spec.rollout as {
      version: number;
      stable: { version: number };
    };
    expect([ro.version, ro.stable.version]).toEqual([2, 1]);
    const v2 = templateHash(templateOf(spec(V2)));
    expect(
      await c.runUntil(() => running(c, 'p').filter((w) => w.version === v2).length === 2, 30_000, 20),
    ).toBeGreaterThanOrEqual(0);
    expect(c.placementViolations(true)).toEqual([]);
  });

  it('pure helpers: specFor picks the stable template unless the replica was updated; rollbackTarget', () => {
    const s1 = withSystemKeys(undefined, spec(V1) as never, 1000);
    const intent = { id: 'x', name: 'x', replicas: 2, strategy: 'binpack', revision: [0, 0, 'a'] as const };
    expect(specFor({ ...intent, spec: s1 }, 'h', 0).image).toBe(V1);
    const edited = { ...s1, image: V2 };
    expect(specFor({ ...intent, spec: edited }, 'h', 0).image).toBe(V1); // not yet rolled
    const ro = {
      ...(s1.rollout as object),
      target: templateHash(templateOf(edited)),
      updated: ['1'],
      state: 'rolling',
    };
    const rolling = { ...edited, rollout: ro } as never;
    expect(specFor({ ...intent, spec: rolling }, 'h', 0).image).toBe(V1);
    expect(specFor({ ...intent, spec: rolling }, 'h', 1).image).toBe(V2);
    // start-first: the copy at or below the handoff generation is the old one (stable template).
    const sf = { ...edited, rollout: { ...ro, handoff: { '1': 3 } } } as never;
    expect(specFor({ ...intent, spec: sf }, 'h', 1, 3).image).toBe(V1);
    expect(specFor({ ...intent, spec: sf }, 'h', 1, 4).image).toBe(V2);
    expect(rollbackTarget(rolling)).toMatchObject({ version: 1 });
    expect(rollbackTarget(s1 as never)).toEqual({ error: 'no previous version to roll back to' });
    // Re-submitting keeps the rollout state and history (an update, not a fresh deploy).
    const again = withSystemKeys(rolling, spec(V2) as never, 2000);
    expect(again.rollout).toEqual(ro);
  });
});

describe('jobs (sim)', () => {
  it('a job runs to completion: exit 0 succeeds; exit 3 is retried `retries` times with backoff, then fails with its code', async () => {
    const c = await cluster(43);
    const api = deploysBackend(c.get(1).sync, c.get(1).placement, c.get(1).agent.membership);
    const job = (runMs: number, exitCode: number, retries: number) => ({
      resources: { cpu: { milli: 200 }, memoryBytes: GiB / 4 },
      image: V1,
      command: simProgram({ runMs, exitCode }),
      job: { retries, backoffMs: 200 },
    });
    api.submit('ok', { name: 'ok', replicas: 1, strategy: 'binpack', spec: job(300, 0, 2) });
    api.submit('bad', { name: 'bad', replicas: 1, strategy: 'binpack', spec: job(100, 3, 2) });
    const done = (id: string) => {
      const s = api.get(id)?.job?.status;
      return s === 'succeeded' || s === 'failed';
    };
    expect(await c.runUntil(() => done('ok') && done('bad'), 30_000, 20)).toBeGreaterThanOrEqual(0);
    expect(api.get('ok')!.job).toMatchObject({ status: 'succeeded', exitCode: 0, attempts: 1 });
    expect(api.get('bad')!.job).toMatchObject({ status: 'failed', exitCode: 3, attempts: 3 });
    // Finished jobs stay finished (no restart of exit 0, no 4th attempt).
    await c.run(5_000);
    expect(api.get('ok')!.job!.attempts).toBe(1);
    expect(api.get('bad')!.job!.attempts).toBe(3);
    expect(api.get('bad')!.instances[0]!.status).toBe('failed');
  });
});

describe('draining (sim)', () => {
  it("a drained host's replicas move elsewhere before it stops them (never fewer running), then it takes no new work until undone", async () => {
    const c = await cluster(44);
    const api = deploysBackend(c.get(0).sync, c.get(0).placement, c.get(0).agent.membership);
    api.submit('web', { name: 'web', replicas: 6, strategy: 'spread', spec: spec(V1) });
    expect(await c.runUntil(() => running(c, 'web').length === 6, 15_000, 20)).toBeGreaterThanOrEqual(0);
    const victim = c.agents.find((a) => a.index !== 0 && running(c, 'web').some((w) => w.host === a.id))!;
    const moved = running(c, 'web').filter((w) => w.host === victim.id).length;
    expect(moved).toBeGreaterThan(0);
    victim.sync.setDraining(true);
    let minRunning = 6;
    const t = await c.runUntil(
      () => {
        minRunning = Math.min(minRunning, running(c, 'web').length);
        return (
          running(c, 'web').length === 6 &&
          running(c, 'web').every((w) => w.host !== victim.id) &&
          victim.placement.workloads().length === 0
        );
      },
      30_000,
      20,
    );
    expect(t).toBeGreaterThanOrEqual(0);
    console.log(`[drain] moved in ${t} ms virtual`);
    expect(minRunning).toBe(6); // make before break
    const rec = c.get(0).sync.state.hosts.live(victim.id)!;
    expect(rec.draining).toBe(true);
    expect(rec.workloads).toEqual([]);
    // While drained, new work goes elsewhere; undone, it bids again.
    api.submit('more', { name: 'more', replicas: 4, strategy: 'spread', spec: spec(V1) });
    await c.runUntil(() => running(c, 'more').length === 4, 15_000, 20);
    expect(running(c, 'more').some((w) => w.host === victim.id)).toBe(false);
    victim.sync.setDraining(false);
    api.submit('late', { name: 'late', replicas: 4, strategy: 'spread', spec: spec(V1) });
    await c.runUntil(() => running(c, 'late').length === 4, 15_000, 20);
    expect(running(c, 'late').some((w) => w.host === victim.id)).toBe(true);
    expect(c.placementViolations(true)).toEqual([]);
  });
});

describe('concurrent submissions and edits (sim)', () => {
  it('the same deploy submitted at two agents at once is one deploy; concurrent edits of different fields both survive', async () => {
    const c = await cluster(45);
    const at = (i: number) => deploysBackend(c.get(i).sync, c.get(i).placement, c.get(i).agent.membership);
    // Same id (the name), same virtual instant, different replica counts: one deploy, and every
    // agent agrees on which value won (the larger HLC stamp).
    at(0).submit('api', { name: 'api', replicas: 2, strategy: 'spread', spec: spec(V1) });
    at(3).submit('api', { name: 'api', replicas: 3, strategy: 'spread', spec: spec(V1) });
    await c.runUntil(() => c.converged(), 10_000, 20);
    const views = [0, 1, 2, 3].map((i) =>
      at(i)
        .list()
        .filter((d) => d.id === 'api'),
    );
    expect(views.every((v) => v.length === 1)).toBe(true);
    const replicas = views[0]![0]!.replicas;
    expect([2, 3]).toContain(replicas);
    expect(views.every((v) => v[0]!.replicas === replicas)).toBe(true);
    expect(await c.runUntil(() => running(c, 'api').length === replicas, 20_000, 20)).toBeGreaterThanOrEqual(
      0,
    );
    // Concurrent edits from two agents: scale at agent 1, new env at agent 2 — both apply.
    at(1).scale('api', 4);
    at(2).updateSpec('api', { env: { MODE: 'blue' } });
    await c.runUntil(() => c.converged(), 10_000, 20);
    for (const i of [0, 1, 2, 3]) {
      const d = at(i).get('api')!;
      expect(d.replicas).toBe(4);
      expect(d.spec.env).toEqual({ MODE: 'blue' });
    }
    const v2 = templateHash(templateOf({ ...spec(V1), env: { MODE: 'blue' } }));
    expect(
      await c.runUntil(
        () =>
          running(c, 'api').filter((w) => w.version === v2).length === 4 &&
          at(0).get('api')?.rollout?.state === 'done',
        60_000,
        20,
      ),
    ).toBeGreaterThanOrEqual(0);
    expect(c.placementViolations(true)).toEqual([]);
  });
});

describe('start-first (sim)', () => {
  async function sized(seed: number, size: number) {
    const c = new SimCluster({ seed, size, engine: { startDelayMs: [20, 80] } });
    await c.start();
    await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000);
    return c;
  }
  const startFirst = { update: { parallelism: 1, monitorMs: 1000, order: 'start-first' } };
  const port80 = { ports: [{ target: 80, protocol: 'tcp' }] };

  /** Rolls web from V1 to V2; returns the fewest and most running copies seen, and the time. */
  async function roll(c: SimCluster, api: ReturnType<typeof deploysBackend>, replicas: number) {
    const v2 = templateHash(templateOf({ ...api.get('web')!.spec, image: V2 }));
    api.updateSpec('web', { image: V2 });
    let min = Number.POSITIVE_INFINITY;
    let max = 0;
    let maxPerHost = 0;
    const over: string[] = [];
    const t = await c.runUntil(
      () => {
        const r = running(c, 'web');
        min = Math.min(min, r.length);
        max = Math.max(max, r.length);
        const perHost = new Map<string, number>();
        for (const w of r) perHost.set(w.host, (perHost.get(w.host) ?? 0) + 1);
        maxPerHost = Math.max(maxPerHost, ...perHost.values());
        over.push(...c.placementViolations(false));
        return (
          r.length === replicas &&
          r.every((w) => w.version === v2) &&
          api.get('web')?.rollout?.state === 'done'
        );
      },
      60_000,
      20,
    );
    return { t, min, max, maxPerHost, over };
  }

  it('the new copy starts (on another host) before the old one stops: never fewer running', async () => {
    const c = await sized(51, 4);
    const api = deploysBackend(c.get(0).sync, c.get(0).placement, c.get(0).agent.membership);
    api.submit('web', { name: 'web', replicas: 2, strategy: 'spread', spec: spec(V1, startFirst) });
    expect(await c.runUntil(() => running(c, 'web').length === 2, 15_000, 20)).toBeGreaterThanOrEqual(0);
    await c.run(1_000);
    const before = new Map(running(c, 'web').map((w) => [w.id, w.host]));
    const r = await roll(c, api, 2);
    expect(r.t).toBeGreaterThanOrEqual(0);
    expect(r.min).toBe(2); // make before break
    expect(r.max).toBe(3); // parallelism 1: one extra copy at a time
    expect(r.over).toEqual([]);
    // Each replica moved: its new copy runs on another host than its old one.
    for (const w of running(c, 'web')) expect(w.host).not.toBe(before.get(w.id));
    expect(api.get('web')!.rollout?.notes).toBeUndefined();
    await c.run(2_000);
    expect(running(c, 'web')).toHaveLength(2);
    expect(c.placementViolations(true)).toEqual([]);
  });

  it('with a published port the new copy goes where the port is free; never two holders on a host', async () => {
    const c = await sized(52, 3);
    const api = deploysBackend(c.get(0).sync, c.get(0).placement, c.get(0).agent.membership);
    api.submit('web', {
      name: 'web',
      replicas: 2,
      strategy: 'spread',
      spec: spec(V1, { ...startFirst, ...port80 }),
    });
    expect(await c.runUntil(() => running(c, 'web').length === 2, 15_000, 20)).toBeGreaterThanOrEqual(0);
    await c.run(1_000);
    const r = await roll(c, api, 2);
    expect(r.t).toBeGreaterThanOrEqual(0);
    expect(r.min).toBe(2);
    expect(r.max).toBe(3);
    expect(r.maxPerHost).toBe(1); // port 80: one holder per host, throughout
    expect(r.over).toEqual([]);
    expect(api.get('web')!.rollout?.notes).toBeUndefined(); // start-first throughout
    expect(c.placementViolations(true)).toEqual([]);
  });

  it('when no other host can take the new copy (the port is held everywhere), it falls back to stop-first and says so', async () => {
    const c = await sized(53, 2);
    const api = deploysBackend(c.get(0).sync, c.get(0).placement, c.get(0).agent.membership);
    api.submit('web', {
      name: 'web',
      replicas: 2,
      strategy: 'spread',
      spec: spec(V1, { ...startFirst, ...port80 }),
    });
    expect(await c.runUntil(() => running(c, 'web').length === 2, 15_000, 20)).toBeGreaterThanOrEqual(0);
    await c.run(1_000);
    const r = await roll(c, api, 2);
    expect(r.t).toBeGreaterThanOrEqual(0);
    expect(r.min).toBeGreaterThanOrEqual(1); // stop-first, one at a time
    expect(r.maxPerHost).toBe(1);
    expect(r.over).toEqual([]);
    const notes = api.get('web')!.rollout?.notes ?? [];
    expect(notes).toHaveLength(2);
    for (const n of notes)
      expect(n).toMatch(
        /^replica \d: start-first not possible \(no other host can take a new copy: .*port 80\/tcp: in use.*\): replaced stop-first$/,
      );
    expect(c.placementViolations(true)).toEqual([]);
  });
});
