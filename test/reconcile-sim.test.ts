import { describe, expect, it } from 'vitest';
import { ledgerFrom } from '../allocator/ledger.ts';
import type { WorkloadInfo } from '../engines/engine.ts';
import { simProgram } from '../engines/sim.ts';
import { sameStatuses, type WorkloadStatusView } from '../node/core/placement.ts';
import { type DesiredWorkload, diff } from '../node/core/reconcile.ts';
import { SimCluster } from '../sim/cluster.ts';

const GiB = 2 ** 30;

function want(id: string, over: Partial<DesiredWorkload> = {}): DesiredWorkload {
  return {
    id,
    deployId: 'd',
    replica: 0,
    gen: 1,
    hash: 'h1',
    restart: 'always',
    spec: { id, deployId: 'd', hostId: 'h' },
    ...over,
  };
}

function info(id: string, over: Partial<WorkloadInfo> = {}): WorkloadInfo {
  return {
    id,
    deployId: 'd',
    hostId: 'h',
    labels: { 'shoal.spec-hash': 'h1', 'shoal.gen': '1' },
    state: 'running',
    createdAt: 0,
    spec: { id, deployId: 'd', hostId: 'h' },
    enforced: { cpu: true, cpuset: true, memory: true, gpus: true, notes: [] },
    ref: id,
    ...over,
  };
}

const none = { get: () => undefined };

describe('reconcile diff (pure)', () => {
  it('creates what is missing, removes what is not awarded, leaves what runs', () => {
    const acts = diff([want('a'), want('b')], [info('b'), info('z')], none, 0);
    expect(acts.map((a) => `${a.kind}:${a.kind === 'create' ? a.want.id : a.id}`)).toEqual([
      'create:a',
      'remove:z',
    ]);
  });
  it('replaces on a spec or generation change; starts a created one', () => {
    expect(diff([want('a', { hash: 'h2' })], [info('a')], none, 0)[0]!.kind).toBe('replace');
    expect(diff([want('a', { gen: 2 })], [info('a')], none, 0)[0]!.kind).toBe('replace');
    expect(diff([want('a')], [info('a', { state: 'created' })], none, 0)[0]!.kind).toBe('start');
  });
  it('restart policies and backoff', () => {
    const exited0 = info('a', { state: 'exited', exitCode: 0 });
    const exited3 = info('a', { state: 'exited', exitCode: 3 });
    expect(diff([want('a', { restart: 'no' })], [exited3], none, 0)).toEqual([]);
    expect(diff([want('a', { restart: 'on-failure' })], [exited0], none, 0)).toEqual([]);
    expect(diff([want('a', { restart: 'on-failure' })], [exited3], none, 0)[0]!.kind).toBe('restart');
    expect(diff([want('a', { restart: 'always' })], [exited0], none, 0)[0]!.kind).toBe('restart');
    const waiting = { get: () => ({ count: 2, notBefore: 5_000 }) };
    expect(diff([want('a')], [exited3], waiting, 4_999)).toEqual([]);
    expect(diff([want('a')], [exited3], waiting, 5_000)[0]!.kind).toBe('restart');
    // A failed create waits out its backoff too (no tight retry loop on, e.g., a missing image).
    expect(diff([want('a')], [], waiting, 4_999)).toEqual([]);
    expect(diff([want('a')], [], waiting, 5_000)[0]!.kind).toBe('create');
  });
});

describe('workload status maps', () => {
  const v = (over: Partial<WorkloadStatusView> = {}): WorkloadStatusView => ({
    status: 'running',
    exitCode: null,
    startedAt: 5,
    health: null,
    ...over,
  });
  it('sameStatuses compares field by field, in any key order; an absent field equals undefined', () => {
    const a = new Map([
      ['x', v()],
      ['y', v({ version: 'h1', restarts: 2 })],
    ]);
    const b = new Map([
      ['y', v({ restarts: 2, version: 'h1' })],
      ['x', v({ error: undefined })],
    ]);
    expect(sameStatuses(a, b)).toBe(true);
    for (const over of [
      { status: 'exited' as const },
      { exitCode: 0 },
      { startedAt: 6 },
      { health: 'healthy' as const },
      { version: 'h2' },
      { restarts: 1 },
      { error: 'boom' },
    ]) {
      expect(sameStatuses(a, new Map([...b, ['x', v(over)]])), JSON.stringify(over)).toBe(false);
    }
    expect(sameStatuses(a, new Map([['x', v()]]))).toBe(false);
    expect(sameStatuses(a, new Map([...b, ['z', v()]]))).toBe(false);
    expect(sameStatuses(new Map([['x', v()]]), new Map([['z', v()]]))).toBe(false);
  });
});

describe('reconcile loop on the sim engine', () => {
  const spec = (program: Parameters<typeof simProgram>[0] = {}) => ({
    resources: { cpu: { milli: 500 }, memoryBytes: GiB },
    image: 'shoal/busybox:latest',
    command: simProgram(program),
  });

  async function cluster(seed: number) {
    const c = new SimCluster({ seed, size: 4, engine: { startDelayMs: [20, 80] } });
    await c.start();
    await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000);
    return c;
  }

  const running = (c: SimCluster, i: number) =>
    c.machines[i]!.all(c.get(i).id).filter((w) => w.state === 'running').length;

  it('placed replicas run on their hosts; an agent kill -9 + restart adopts them: no duplicates, books = engine', async () => {
    const c = await cluster(31);
    c.get(0).placement.submit('web', { name: 'web', replicas: 6, strategy: 'spread', spec: spec() });
    const t = await c.runUntil(() => [0, 1, 2, 3].reduce((n, i) => n + running(c, i), 0) === 6, 15_000, 20);
    expect(t).toBeGreaterThanOrEqual(0);
    const victim = [0, 1, 2, 3].find((i) => running(c, i) > 0 && i !== 0)!;
    const before = running(c, victim);
    // Lose the agent's workloads file too: the engine alone must tell the truth.
    c.crash(victim);
    c.get(victim).store.remove('workloads.json');
    const back = await c.restart(victim);
    await c.run(3_000);
    expect(running(c, victim)).toBe(before);
    expect(c.machines[victim]!.all(back.id).length).toBe(before); // nothing created twice
    expect(back.reconciler!.counters.adopted).toBe(before);
    const cap = back.placement.capacity();
    const fromEngine = ledgerFrom(
      cap,
      back.placement.workloads().map((w) => w.allocation),
    );
    expect(back.placement.workloads().length).toBe(before);
    expect(fromEngine.memoryBytes).toBe(before * GiB);
    expect(c.placementViolations(true)).toEqual([]);
  });

  it('a crashed agent stays dead: the machine events of its restarted successor do not wake its reconciler', async () => {
    const c = await cluster(34);
    c.get(0).placement.submit('web', { name: 'web', replicas: 4, strategy: 'spread', spec: spec() });
    await c.runUntil(() => [0, 1, 2, 3].every((i) => running(c, i) === 1), 15_000, 20);
    await c.run(2_000); // every reconcile pass done: the agent idles, waiting for events
    const old = c.get(2);
    let looked = 0;
    const list = old.engine!.list.bind(old.engine!);
    old.engine!.list = () => {
      looked++;
      return list();
    };
    c.crash(2);
    // While it is down the deploy goes away; the restarted agent stops and removes the container.
    // The killed agent still has 'web' in its books: had it stayed subscribed to the machine, those
    // events would have woken its reconciler, which would have acted on its stale books (fuzz seed
    // 7 once saw it remove the new agent's workloads, then re-adopt a deleted one: an overcommit).
    c.get(0).sync.removeIntent('web');
    await c.run(2_000);
    await c.restart(2);
    const gone = await c.runUntil(() => c.machines[2]!.all(c.get(2).id).length === 0, 10_000, 20);
    expect(gone).toBeGreaterThanOrEqual(0);
    await c.run(3_000);
    expect(looked).toBe(0);
    expect(
      await Promise.race([
        old.engine!.inspect('web.2').then(() => 'settled'),
        c.run(100).then(() => 'hangs'),
      ]),
    ).toBe('hangs');
  });

  it('statuses(): the same map while nothing changed; a change gives a new map that keeps the unchanged views', async () => {
    const c = await cluster(35);
    c.get(0).placement.submit('st', {
      name: 'st',
      replicas: 3,
      strategy: 'binpack',
      spec: { ...spec({ runMs: 4_000, exitCode: 3 }), restart: 'no' },
    });
    const h = () => c.agents.find((a) => a.placement.workloads().length === 3);
    await c.runUntil(() => !!h() && running(c, h()!.index) === 3, 15_000, 20);
    const r = h()!.reconciler!;
    const first = r.statuses();
    expect([...first.values()].map((s) => s.status)).toEqual(['running', 'running', 'running']);
    expect(r.statuses()).toBe(first);
    // They exit (code 3, restart: no) a few ms apart (their starts were): when the first has, its
    // view is new and the other two are the very objects of the first map.
    const oneExited = await c.runUntil(
      () => [...r.statuses().values()].filter((s) => s.status === 'failed').length === 1,
      10_000,
      1,
    );
    expect(oneExited).toBeGreaterThanOrEqual(0);
    const mid = r.statuses();
    expect(mid).not.toBe(first);
    for (const [id, v] of mid) {
      if (v.status === 'running') expect(v).toBe(first.get(id));
      else expect(v).not.toBe(first.get(id));
    }
    // Then all three: the record says so everywhere.
    await c.runUntil(() => running(c, h()!.index) === 0, 10_000, 20);
    await c.run(100);
    const after = r.statuses();
    expect(after).not.toBe(first);
    expect([...after.values()].map((s) => [s.status, s.exitCode])).toEqual([
      ['failed', 3],
      ['failed', 3],
      ['failed', 3],
    ]);
    expect(r.statuses()).toBe(after);
    await c.run(3_000);
    const rec = c.get((h()!.index + 1) % 4).sync.state.hosts.live(h()!.id)!;
    expect(rec.workloads.map((w) => w.status)).toEqual(['failed', 'failed', 'failed']);
  });

  it('a crashing workload is restarted per policy (on-failure, with backoff) and its status reaches the cluster', async () => {
    const c = await cluster(32);
    c.get(1).placement.submit('crashy', {
      name: 'crashy',
      replicas: 1,
      strategy: 'binpack',
      spec: { ...spec({ runMs: 300, exitCode: 3 }), restart: 'on-failure' },
    });
    const host = () => c.agents.find((a) => a.placement.workloads().some((w) => w.deployId === 'crashy'));
    await c.runUntil(() => !!host(), 10_000, 20);
    await c.run(5_000);
    const h = host()!;
    expect(h.reconciler!.counters.restarted).toBeGreaterThanOrEqual(2);
    const rec = c.get(0).sync.state.hosts.live(h.id)!;
    expect(rec.workloads.find((w) => w.deployId === 'crashy')?.engine).toBe('sim');
  });

  it('scale down and delete stop the engine workloads', async () => {
    const c = await cluster(33);
    c.get(2).placement.submit('s', { name: 's', replicas: 4, strategy: 'spread', spec: spec() });
    await c.runUntil(() => [0, 1, 2, 3].reduce((n, i) => n + running(c, i), 0) === 4, 15_000, 20);
    c.get(0).sync.updateIntent('s', { replicas: 1 });
    expect(
      await c.runUntil(() => [0, 1, 2, 3].reduce((n, i) => n + running(c, i), 0) === 1, 15_000, 20),
    ).toBeGreaterThanOrEqual(0);
    c.get(3).sync.removeIntent('s');
    expect(
      await c.runUntil(
        () => [0, 1, 2, 3].every((i) => c.machines[i]!.all(c.get(i).id).length === 0),
        15_000,
        20,
      ),
    ).toBeGreaterThanOrEqual(0);
  });

  it('realloc: raised resources apply live on every host; a change that does not fit is refused with the reason', async () => {
    const c = await cluster(34);
    c.get(0).placement.submit('r', { name: 'r', replicas: 2, strategy: 'spread', spec: spec() });
    await c.runUntil(() => [0, 1, 2, 3].reduce((n, i) => n + running(c, i), 0) === 2, 15_000, 20);
    const holders = () => c.agents.filter((a) => a.placement.workloads().some((w) => w.deployId === 'r'));
    const ids = () =>
      holders().flatMap((h) =>
        c.machines[h.index]!.all(h.id).map((w) => `${h.id}/${w.spec.id}/${w.createdAt}`),
      );
    const before = ids();
    c.get(3).sync.updateIntent('r', {
      spec: { ...spec(), resources: { cpu: { milli: 1500 }, memoryBytes: 3 * GiB } },
    });
    const t = await c.runUntil(
      () =>
        holders().every((h) =>
          c.machines[h.index]!.all(h.id).every(
            (w) => w.spec.resources?.memoryBytes === 3 * GiB && w.state === 'running',
          ),
        ),
      10_000,
      20,
    );
    expect(t).toBeGreaterThanOrEqual(0);
    expect(ids()).toEqual(before); // updated in place, not recreated
    for (const h of holders()) {
      expect(h.placement.workloads()[0]!.allocation.memoryBytes).toBe(3 * GiB);
      expect(h.reconciler!.counters.updated).toBeGreaterThanOrEqual(1);
    }
    // 64 GiB does not fit a 32 GiB host: refused, the old allocation (and limits) stay.
    c.get(1).sync.updateIntent('r', {
      spec: { ...spec(), resources: { cpu: { milli: 1500 }, memoryBytes: 64 * GiB } },
    });
    await c.run(3_000);
    for (const h of holders()) {
      const [why] = [...h.placement.reallocRefusals().values()];
      expect(why).toMatch(/memory/);
      expect(h.placement.workloads()[0]!.allocation.memoryBytes).toBe(3 * GiB);
      expect(h.placement.violations()).toEqual([]);
    }
  });

  it('health checks: a failing HTTP check turns the replica unhealthy everywhere and restarts it; a passing one is healthy', async () => {
    const c = await cluster(35);
    for (const p of c.probers) {
      p.script('sick.0', 'fail');
      p.script('fine.0', 'pass');
    }
    const hc = { type: 'http', port: 8080, path: '/health', interval: 500, timeout: 200, retries: 2 };
    c.get(0).placement.submit('sick', {
      name: 'sick',
      replicas: 1,
      strategy: 'binpack',
      spec: { ...spec(), healthcheck: hc },
    });
    c.get(0).placement.submit('fine', {
      name: 'fine',
      replicas: 1,
      strategy: 'binpack',
      spec: { ...spec(), healthcheck: hc },
    });
    const seen = (deploy: string, health: string) => () =>
      c
        .upAgents()
        .every((a) =>
          a.sync.state.hosts
            .allLive()
            .some((r) => r.workloads.some((w) => w.deployId === deploy && w.health === health)),
        );
    expect(await c.runUntil(seen('fine', 'healthy'), 15_000, 20)).toBeGreaterThanOrEqual(0);
    expect(await c.runUntil(seen('sick', 'unhealthy'), 15_000, 20)).toBeGreaterThanOrEqual(0);
    const host = () => c.agents.find((a) => a.placement.workloads().some((w) => w.deployId === 'sick'))!;
    expect(
      await c.runUntil(() => host().reconciler!.counters.restarted >= 1, 15_000, 20),
    ).toBeGreaterThanOrEqual(0);
    expect(() =>
      c.get(1).placement.submit('bad', {
        name: 'bad',
        replicas: 1,
        strategy: 'binpack',
        spec: { ...spec(), healthcheck: { type: 'http', port: 80, intervall: 5 } },
      }),
    ).toThrow(/spec\.healthcheck/);
  });
});
