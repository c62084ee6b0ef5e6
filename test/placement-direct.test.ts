import { describe, expect, it } from 'vitest';
import type { DeployIntent } from '../crdt/types.ts';
import { priceableFromView } from '../node/core/placement.ts';
import { defaultHost, type SimAgent, SimCluster } from '../sim/cluster.ts';

/**
 * Direct awards (docs/placement.md, "Direct awards"): a request whose allocation is amounts only
 * is priced by its coordinator from the gossiped view and awarded without a bid exchange; the
 * host still commits only what fits its exact books, and a refused direct award sends the
 * deploy's next round through the full auction.
 */

const GiB = 2 ** 30;

function intent(
  cpuMilli: number,
  constraints: string[],
  extra: Record<string, unknown> = {},
): Omit<DeployIntent, 'id' | 'revision'> {
  return {
    name: 'web',
    replicas: 1,
    strategy: 'binpack',
    spec: {
      resources: { cpu: { milli: cpuMilli, ...extra }, memoryBytes: 1 * GiB },
      constraints,
    },
  };
}

/** 3 hosts of 8 cores named h0, h1, h2 (label `name`). */
async function cluster(seed: number, directAward = true) {
  const c = new SimCluster({
    seed,
    size: 3,
    host: (i) => ({ ...defaultHost(i), labels: { ...defaultHost(i).labels, name: `h${i}` } }),
    placement: { directAward },
  });
  await c.start();
  await c.runUntil(() => c.converged() && c.membershipSettled(), 20_000);
  return c;
}

const sum = (c: SimCluster, k: 'bidsAsked' | 'directAwards' | 'awardsRefused' | 'decided') =>
  c.upAgents().reduce((n, a) => n + a.placement.counters[k], 0);

function holder(c: SimCluster, deployId: string): string[] {
  return c
    .upAgents()
    .filter((a) => a.placement.workloads().some((w) => w.deployId === deployId))
    .map((a) => a.sync.self()!.capacity.labels.name!);
}

function placed(c: SimCluster, ids: string[]): boolean {
  return ids.every((id) => holder(c, id).length === 1) && c.placementViolations(true).length === 0;
}

/** Every agent's view of every host lists the replicas that host holds of `deployId`. */
function seen(c: SimCluster, deployId: string): boolean {
  return c.upAgents().every((h) => {
    const n = h.placement.workloads().filter((w) => w.deployId === deployId).length;
    return c
      .upAgents()
      .every(
        (a) => a.sync.state.hosts.live(h.id)?.workloads.filter((w) => w.deployId === deployId).length === n,
      );
  });
}

/** The first deploy id `prefix-k` whose coordinator (in `agent`'s view) is `agent`. */
function idCoordinatedBy(prefix: string, agent: SimAgent): string {
  for (let k = 0; ; k++) {
    const id = `${prefix}-${k}`;
    if (agent.placement.coordinatorOf(id) === agent.id) return id;
  }
}

describe('direct awards', () => {
  it('only amount-only requests are priced from the view', () => {
    const req = (resources: Record<string, unknown>) =>
      ({ deployId: 'x', resources: { cpu: { milli: 500 }, memoryBytes: GiB, ...resources } }) as never;
    expect(priceableFromView(req({}))).toBe(true);
    expect(priceableFromView(req({ ports: [{ port: 80, protocol: 'tcp' }] }))).toBe(true);
    expect(priceableFromView(req({ cpu: { milli: 2000, bind: true } }))).toBe(false);
    expect(priceableFromView(req({ gpu: { milli: 500 } }))).toBe(false);
    expect(priceableFromView(req({ volumes: [{ name: 'data', bytes: GiB }] }))).toBe(false);
  });

  it('places a deploy with no bid exchange; deploys of one round see what the round gave before them', async () => {
    const c = await cluster(41);
    // h0 is the fullest host (binpack's first choice) once `pre` runs there.
    c.get(0).placement.submit('pre', intent(2000, ['name = h0']));
    // …and every agent's view shows it there.
    expect(await c.runUntil(() => placed(c, ['pre']) && seen(c, 'pre'), 10_000, 5)).toBeGreaterThanOrEqual(0);
    expect(sum(c, 'bidsAsked')).toBe(0);
    expect(sum(c, 'directAwards')).toBeGreaterThan(0);
    // Two 5-core deploys with one coordinator, submitted together: one round prices both, and the
    // second sees the first's allocation on h0 in the round's view, so it goes to h1: no refusal.
    const coord = c.get(1);
    const a = idCoordinatedBy('a', coord);
    const b = idCoordinatedBy('b', coord);
    coord.placement.submit(a, intent(5000, ['name in (h0, h1)']));
    coord.placement.submit(b, intent(5000, ['name in (h0, h1)']));
    expect(await c.runUntil(() => placed(c, [a, b]), 10_000, 5)).toBeGreaterThanOrEqual(0);
    expect([...holder(c, a), ...holder(c, b)].sort()).toEqual(['h0', 'h1']);
    expect(sum(c, 'awardsRefused')).toBe(0);
    expect(sum(c, 'bidsAsked')).toBe(0);
    expect(c.placementViolations(false)).toEqual([]);
  });

  it('a host refuses a direct award that no longer fits; the next round auctions on exact books', async () => {
    const c = await cluster(42);
    c.get(0).placement.submit('pre', intent(2000, ['name = h0']));
    // …and every agent's view shows it there.
    expect(await c.runUntil(() => placed(c, ['pre']) && seen(c, 'pre'), 10_000, 5)).toBeGreaterThanOrEqual(0);
    // Two coordinators price 5 cores on h0 (6 free in both views) at the same moment: h0 commits
    // the first award and refuses the second; its deploy is then auctioned and lands on h1.
    const a = idCoordinatedBy('a', c.get(1));
    const b = idCoordinatedBy('b', c.get(2));
    c.get(1).placement.submit(a, intent(5000, ['name in (h0, h1)']));
    c.get(2).placement.submit(b, intent(5000, ['name in (h0, h1)']));
    expect(await c.runUntil(() => placed(c, [a, b]), 10_000, 5)).toBeGreaterThanOrEqual(0);
    expect([...holder(c, a), ...holder(c, b)].sort()).toEqual(['h0', 'h1']);
    expect(sum(c, 'awardsRefused')).toBe(1);
    expect(sum(c, 'bidsAsked')).toBeGreaterThan(0); // the fallback auction
    expect(c.placementViolations(false)).toEqual([]);
  });

  it('bound cores are always auctioned (the host picks the cores), as is everything with directAward off', async () => {
    const c = await cluster(43);
    c.get(0).placement.submit('bound', intent(2000, [], { bind: true }));
    expect(await c.runUntil(() => placed(c, ['bound']), 10_000, 5)).toBeGreaterThanOrEqual(0);
    expect(sum(c, 'directAwards')).toBe(0);
    expect(sum(c, 'bidsAsked')).toBeGreaterThan(0);

    const off = await cluster(43, false);
    off.get(0).placement.submit('plain', intent(2000, []));
    expect(await off.runUntil(() => placed(off, ['plain']), 10_000, 5)).toBeGreaterThanOrEqual(0);
    expect(sum(off, 'directAwards')).toBe(0);
    expect(sum(off, 'bidsAsked')).toBeGreaterThan(0);
  });
});
