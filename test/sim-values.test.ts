import { describe, expect, it } from 'vitest';
import type { TransportError, TransportHandlers } from '../gossip/transport.ts';
import { TAG_PLACE } from '../node/core/placement-wire.ts';
import { Prng } from '../node/core/random.ts';
import { frameJson, jsonFrameLength, ProtocolValue } from '../node/core/wire.ts';
import { EventLoop } from '../sim/clock.ts';
import { SimCluster } from '../sim/cluster.ts';
import { SimNetwork, type SimTransport, type TraceEvent } from '../sim/network.ts';

/**
 * SimTransport.sendValue / requestValue (simulator only): values instead of bytes, charged the
 * given sizes — the same events, counters, latencies and errors as the byte path.
 */

function setup() {
  const loop = new EventLoop();
  const trace: TraceEvent[] = [];
  const net = new SimNetwork(loop, new Prng('values'), {
    trace: (ev) => trace.push(ev),
    maxMessageBytes: 1000,
  });
  const got: { from: string; value: unknown }[] = [];
  const handlers = (
    answer?: (from: string, v: object) => { value: object; bytes: number },
  ): TransportHandlers => ({
    onMessage() {},
    onTopic() {},
    onRequest: () => new Uint8Array(3),
    onValue: (from, value) => void got.push({ from, value }),
    onRequestValue: answer,
  });
  return { loop, net, trace, got, handlers };
}

async function settle<T>(loop: EventLoop, p: Promise<T>): Promise<T> {
  let done = false;
  const out = p.finally(() => {
    done = true;
  });
  out.catch(() => {});
  for (let i = 0; !done && i < 1000; i++) await loop.runForAsync(10);
  return out;
}

describe('SimTransport values', () => {
  it('sendValue delivers the very object, charged `bytes`; oversize and unknown peers are dropped', async () => {
    const { loop, net, trace, got, handlers } = setup();
    const a = net.createSimTransport('a');
    const b = net.createSimTransport('b');
    await a.start(handlers());
    await b.start(handlers());
    const v = Object.freeze({ hello: 1 });
    a.sendValue('b', v, 120); // b unknown to a yet (no routeById): dropped
    await settle(loop, a.dial('sim://b'));
    a.sendValue('b', v, 120);
    a.sendValue('b', v, 5000); // > maxMessageBytes
    await loop.runForAsync(50);
    expect(got).toEqual([{ from: 'a', value: v }]);
    expect(got[0]!.value).toBe(v);
    expect(net.stats('a')).toMatchObject({ sent: 1, sentBytes: 120 });
    expect(net.stats('b')).toMatchObject({ recv: 1, recvBytes: 120 });
    expect(trace.map((e) => [e.kind, e.bytes, e.drop])).toEqual([
      ['send', 120, 'unknown'],
      ['send', 5000, 'too-large'], // drops are recorded at send, deliveries on arrival
      ['send', 120, undefined],
    ]);
  });

  it('requestValue: answers, errors and sizes as request does', async () => {
    const { loop, net, handlers } = setup();
    const a = net.createSimTransport('a');
    const b = net.createSimTransport('b');
    const c = net.createSimTransport('c');
    await a.start(handlers());
    await b.start(
      handlers((_from, v) => {
        const q = v as { n: number };
        if (q.n === 1) throw new Error('nope');
        if (q.n === 2) return { value: { big: true }, bytes: 4000 };
        return { value: { echo: q.n }, bytes: 30 };
      }),
    );
    await c.start(handlers()); // no onRequestValue
    await settle(loop, a.dial('sim://b'));
    await settle(loop, a.dial('sim://c'));
    expect(await settle(loop, a.requestValue('b', { n: 7 }, 40, 1000))).toEqual({ echo: 7 });
    expect(net.stats('a')).toMatchObject({ sent: 1, sentBytes: 40, recv: 1, recvBytes: 30 });
    const code = async (p: Promise<unknown>) =>
      settle(loop, p).then(
        () => 'ok',
        (e: TransportError) => e.code,
      );
    expect(await code(a.requestValue('b', { n: 1 }, 40, 1000))).toBe('remote');
    expect(await code(a.requestValue('b', { n: 2 }, 40, 1000))).toBe('too-large');
    expect(await code(a.requestValue('b', { n: 3 }, 4000, 1000))).toBe('too-large');
    expect(await code(a.requestValue('c', { n: 3 }, 40, 1000))).toBe('remote');
    const heal = net.partition(['a'], ['b']);
    expect(await code(a.requestValue('b', { n: 3 }, 40, 300))).toBe('timeout');
    heal();
    net.crash('b');
    expect(await code(a.requestValue('b', { n: 3 }, 40, 1000))).toBe('unreachable');
    await (b as SimTransport).stop();
  });
});

describe('values beyond membership (ProtocolValue, freezeValues)', () => {
  it('jsonFrameLength is the length of frameJson, multi-byte text included', () => {
    for (const v of [
      { t: 'bid', round: 'r1', items: [] },
      { s: 'zoné 🚀 日本', n: [1.5, -2, null] },
      'x',
      [{}],
    ]) {
      expect(jsonFrameLength(v)).toBe(frameJson(4, v).length);
    }
  });

  it('freezeValues: a sent value is frozen all the way down (a later mutation throws)', async () => {
    const loop = new EventLoop();
    const net = new SimNetwork(loop, new Prng('freeze'), { routeById: true, freezeValues: true });
    const a = net.createSimTransport('a');
    const b = net.createSimTransport('b');
    const got: object[] = [];
    const h: TransportHandlers = {
      onMessage() {},
      onTopic() {},
      onRequest: () => new Uint8Array(),
      onValue: (_f, v) => void got.push(v),
    };
    await a.start(h);
    await b.start(h);
    const msg = { t: 'award', items: [{ slots: [{ replica: 0 }] }] };
    a.sendValue('b', new ProtocolValue(4, msg), 50);
    await loop.runForAsync(20);
    expect((got[0] as ProtocolValue).msg).toBe(msg);
    expect(() => {
      msg.items[0]!.slots[0]!.replica = 1;
    }).toThrow(TypeError);
  });

  it('an agent routes a ProtocolValue by tag; an unknown tag is a rejected message, not a crash', async () => {
    const c = new SimCluster({ seed: 4, size: 3, trace: true, shareDecoded: true });
    await c.start();
    await c.runUntil(() => c.membershipSettled(), 10_000);
    const from = c.get(1);
    const to = c.get(0);
    (from.agent.deps.transport as SimTransport).sendValue(to.id, new ProtocolValue(0x7e, { t: 'x' }), 10);
    // A placement release for a round nobody holds: handled by Placement.onValue, nothing changes.
    (from.agent.deps.transport as SimTransport).sendValue(
      to.id,
      new ProtocolValue(TAG_PLACE, { t: 'release', round: 'none', deployIds: ['d'] }),
      jsonFrameLength({ t: 'release', round: 'none', deployIds: ['d'] }),
    );
    await c.run(200);
    expect(to.agent.counters.badMessages).toBe(1);
    expect(c.trace!.some((l) => l.includes('rejected message') && l.includes('unknown value tag 126'))).toBe(
      true,
    );
  });
});
