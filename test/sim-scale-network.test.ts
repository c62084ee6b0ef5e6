import { describe, expect, it } from 'vitest';
import type { TransportHandlers } from '../gossip/transport.ts';
import { Prng } from '../node/core/random.ts';
import { EventLoop } from '../sim/clock.ts';
import { type LinkModel, SimNetwork, type SimNetworkOptions } from '../sim/network.ts';

/** Latency distributions (heavy tails per link / zone pair) and per-host bandwidth of SimNetwork. */

function quantile(xs: number[], q: number): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

function draws(link: Partial<LinkModel>, n: number, seed = 1): number[] {
  const net = new SimNetwork(new EventLoop(), new Prng(seed), { link });
  net.createTransport('a');
  net.createTransport('b');
  return Array.from({ length: n }, () => net.latency('a', 'b'));
}

/** Nodes whose arrival times (loop ms) are recorded per receiver. */
async function arrivals(opts: SimNetworkOptions, ids: string[]) {
  const loop = new EventLoop();
  const net = new SimNetwork(loop, new Prng(3), { routeById: true, ...opts });
  const got = new Map<string, number[]>();
  const ts = ids.map((id) => net.createSimTransport(id));
  for (const t of ts) {
    got.set(t.id, []);
    const h: TransportHandlers = {
      onMessage: () => got.get(t.id)!.push(loop.now),
      onTopic: () => got.get(t.id)!.push(loop.now),
      onRequest: () => new Uint8Array(1),
    };
    await t.start(h);
    t.subscribe('x');
  }
  return { loop, net, ts, got };
}

describe('SimNetwork latency tails', () => {
  it('lognormal: the median and p99 of the tail match medianMs·e^(σ·z)', () => {
    const xs = draws({ baseMs: 1, jitterMs: 0, tail: { kind: 'lognormal', medianMs: 10, sigma: 1 } }, 40_000);
    expect(Math.min(...xs)).toBeGreaterThan(1);
    expect(quantile(xs, 0.5) - 1).toBeGreaterThan(9.5);
    expect(quantile(xs, 0.5) - 1).toBeLessThan(10.5);
    // p99 of a lognormal: median · e^(2.326 σ) ≈ 102.4
    expect(quantile(xs, 0.99) - 1).toBeGreaterThan(88);
    expect(quantile(xs, 0.99) - 1).toBeLessThan(118);
  });

  it('pareto (Lomax): median scale·(2^(1/α) − 1), mean scale/(α − 1), capped by maxMs', () => {
    const xs = draws({ baseMs: 2, jitterMs: 0, tail: { kind: 'pareto', scaleMs: 5, alpha: 3 } }, 40_000);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(2);
    expect(quantile(xs, 0.5) - 2).toBeCloseTo(5 * (2 ** (1 / 3) - 1), 0);
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length - 2;
    expect(mean).toBeGreaterThan(2.3);
    expect(mean).toBeLessThan(2.7);
    const capped = draws(
      { baseMs: 0, jitterMs: 0, tail: { kind: 'pareto', scaleMs: 5, alpha: 0.8, maxMs: 50 } },
      10_000,
    );
    expect(Math.max(...capped)).toBe(50);
    expect(capped.filter((x) => x === 50).length).toBeGreaterThan(100);
  });

  it('a zone pair can have its own tail; other pairs keep theirs; same seed → same draws', () => {
    const mk = () => {
      const net = new SimNetwork(new EventLoop(), new Prng(9), {
        link: { baseMs: 1, jitterMs: 0 },
        zoneLinks: { eu: { us: { baseMs: 40, tail: { kind: 'lognormal', medianMs: 5, sigma: 0.5 } } } },
      });
      net.createTransport('e1', { zone: 'eu' });
      net.createTransport('e2', { zone: 'eu' });
      net.createTransport('u1', { zone: 'us' });
      return net;
    };
    const net = mk();
    expect(net.latency('e1', 'e2')).toBe(1);
    const cross = Array.from({ length: 200 }, () => net.latency('u1', 'e1'));
    expect(Math.min(...cross)).toBeGreaterThan(40);
    expect(new Set(cross).size).toBe(200);
    const again = mk();
    expect(Array.from({ length: 200 }, () => again.latency('u1', 'e1'))).toEqual(cross);
  });

  it('rejects bad tails and bandwidths naming the field', () => {
    const loop = new EventLoop();
    expect(
      () => new SimNetwork(loop, new Prng(1), { link: { tail: { kind: 'pareto', scaleMs: 1, alpha: 0 } } }),
    ).toThrow(/tail\.alpha/);
    expect(
      () =>
        new SimNetwork(loop, new Prng(1), {
          link: { tail: { kind: 'lognormal', medianMs: -1, sigma: 1 } },
        }),
    ).toThrow(/tail\.medianMs/);
    expect(
      () =>
        new SimNetwork(loop, new Prng(1), {
          link: { tail: { kind: 'weibull' } as unknown as LinkModel['tail'] },
        }),
    ).toThrow(/tail\.kind/);
    const net = new SimNetwork(loop, new Prng(1));
    net.createTransport('h1');
    expect(() => net.setBandwidth('h1', { upBytesPerSec: 0 })).toThrow(/upBytesPerSec of h1/);
    expect(() => new SimNetwork(loop, new Prng(1), { bandwidth: { downBytesPerSec: -5 } })).toThrow(
      /downBytesPerSec/,
    );
  });
});

describe('SimNetwork bandwidth per host', () => {
  it('an uplink serialises messages: 10 × 100 B at 1000 B/s leave 100 ms apart', async () => {
    const { loop, net, ts, got } = await arrivals({ link: { baseMs: 1, jitterMs: 0 } }, ['a', 'b']);
    net.setBandwidth('a', { upBytesPerSec: 1000 });
    for (let i = 0; i < 10; i++) ts[0]!.send('b', new Uint8Array(100));
    loop.runFor(5_000);
    expect(got.get('b')!.map((t) => Math.round(t))).toEqual([
      101, 201, 301, 401, 501, 601, 701, 801, 901, 1001,
    ]);
  });

  it('a downlink is shared by senders: two 100 B messages at 1000 B/s in arrive 100 ms apart', async () => {
    const { loop, net, ts, got } = await arrivals({ link: { baseMs: 5, jitterMs: 0 } }, ['a', 'b', 'c']);
    net.setBandwidth('c', { downBytesPerSec: 1000 });
    ts[0]!.send('c', new Uint8Array(100));
    ts[1]!.send('c', new Uint8Array(100));
    loop.runFor(5_000);
    expect(got.get('c')!.map((t) => Math.round(t))).toEqual([105, 205]);
    // Unlimited links are untouched by another host's limits.
    ts[0]!.send('b', new Uint8Array(100));
    loop.runFor(100);
    expect(got.get('b')!.length).toBe(1);
  });

  it('a publish charges the uplink for min(D, subscribers) copies, once', async () => {
    const ids = Array.from({ length: 11 }, (_, i) => `p${i}`);
    const { loop, ts, got } = await arrivals(
      { link: { baseMs: 1, jitterMs: 0 }, bandwidth: { upBytesPerSec: 6000 } },
      ids,
    );
    ts[0]!.publish('x', new Uint8Array(1000));
    loop.runFor(5_000);
    // 6 copies × 1000 B at 6000 B/s = 1 s on the uplink, then two 1 ms hops, for all 10 receivers.
    for (const id of ids.slice(1)) expect(got.get(id)).toEqual([1002]);
    // A default-bandwidth network gives every host the limit; a per-host override replaces it.
    const small = await arrivals(
      { link: { baseMs: 1, jitterMs: 0 }, bandwidth: { upBytesPerSec: 6000 }, publishUplinkCopies: 1 },
      ['q0', 'q1'],
    );
    small.ts[0]!.publish('x', new Uint8Array(600));
    small.loop.runFor(5_000);
    expect(small.got.get('q1')).toEqual([102]);
  });
});

describe('SimNetwork shareTopicBytes', () => {
  for (const share of [false, true]) {
    it(`${share ? 'hands every subscriber the same bytes object' : 'copies a publish per subscriber'}`, async () => {
      const loop = new EventLoop();
      const net = new SimNetwork(loop, new Prng(1), { shareTopicBytes: share });
      const got: Uint8Array[] = [];
      const ts = ['a', 'b', 'c'].map((id) => net.createSimTransport(id));
      for (const t of ts) {
        await t.start({
          onMessage: () => {},
          onTopic: (_topic, _from, data) => got.push(data),
          onRequest: () => new Uint8Array(1),
        });
        t.subscribe('x');
      }
      const sent = Uint8Array.of(1, 2, 3);
      ts[0]!.publish('x', sent);
      sent[0] = 9; // the sender's buffer is copied at publish either way
      loop.runFor(100);
      expect(got.length).toBe(2);
      expect(got[0]).toEqual(Uint8Array.of(1, 2, 3));
      expect(got[0] === got[1]).toBe(share);
    });
  }
});
